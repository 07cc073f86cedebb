//! Image references: `[registry/]repository[:tag][@digest]`.
//! PLACEHOLDER until the registry branch lands.

#[derive(Debug, thiserror::Error)]
#[error("not built yet")]
pub struct ReferenceError;

#[derive(Debug, Clone)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(_s: &str) -> Result<Reference, ReferenceError> {
        Err(ReferenceError)
    }
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
    pub fn tag_or_digest(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())
    }
}
