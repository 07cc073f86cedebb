//! Registry access over the OCI distribution spec.
//! PLACEHOLDER until the registry branch lands.

use std::path::Path;

use crate::oci::Descriptor;
use crate::reference::Reference;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("not built yet")]
    NotBuilt,
}

#[derive(Debug, Clone, Default)]
pub struct RegistryConfig;

impl RegistryConfig {
    pub fn load(_path: &Path) -> Result<RegistryConfig, RegistryError> {
        Ok(RegistryConfig)
    }
}

#[derive(Clone, Debug)]
pub enum Credentials {
    Basic { username: String, password: String },
    IdentityToken(String),
}

#[derive(Clone)]
pub struct Client;

pub struct BlobStream {
    pub offset: u64,
    pub total: Option<u64>,
    pub body: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, RegistryError>>,
}

impl Client {
    pub fn new(_config: RegistryConfig) -> Result<Client, RegistryError> {
        Ok(Client)
    }
    pub async fn resolve(
        &self,
        _r: &Reference,
        _creds: Option<&Credentials>,
    ) -> Result<(Descriptor, bytes::Bytes), RegistryError> {
        Err(RegistryError::NotBuilt)
    }
    pub async fn fetch_manifest(
        &self,
        _r: &Reference,
        _digest: &str,
        _creds: Option<&Credentials>,
    ) -> Result<bytes::Bytes, RegistryError> {
        Err(RegistryError::NotBuilt)
    }
    pub async fn fetch_blob(
        &self,
        _r: &Reference,
        _digest: &str,
        _offset: u64,
        _creds: Option<&Credentials>,
    ) -> Result<BlobStream, RegistryError> {
        Err(RegistryError::NotBuilt)
    }
    pub async fn blob_exists(
        &self,
        _r: &Reference,
        _digest: &str,
        _creds: Option<&Credentials>,
    ) -> Result<bool, RegistryError> {
        Err(RegistryError::NotBuilt)
    }
    pub async fn push_blob(
        &self,
        _r: &Reference,
        _desc: &Descriptor,
        _file: std::fs::File,
        _chunk_size: Option<u64>,
        _creds: Option<&Credentials>,
        _progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), RegistryError> {
        Err(RegistryError::NotBuilt)
    }
    pub async fn push_manifest(
        &self,
        _r: &Reference,
        _tag_or_digest: &str,
        _media_type: &str,
        _bytes: bytes::Bytes,
        _creds: Option<&Credentials>,
    ) -> Result<(), RegistryError> {
        Err(RegistryError::NotBuilt)
    }
}
