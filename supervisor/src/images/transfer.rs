//! Import and export of image archives: OCI image layout tarballs and
//! `docker save` tarballs. PLACEHOLDER: being written.

use std::io::{Read, Write};

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    Oci,
    Docker,
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Names images the archive leaves unnamed.
    pub name: Option<String>,
    pub platform: Option<Platform>,
    pub unpack: bool,
}

impl Images {
    pub fn import(
        &self,
        ns: &str,
        reader: impl Read,
        opts: ImportOptions,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let _ = (ns, reader, opts);
        Err(ImageError::Internal("import is not built yet".into()))
    }

    pub fn export(
        &self,
        ns: &str,
        names: &[String],
        format: ArchiveFormat,
        platform: Option<Platform>,
        writer: impl Write,
    ) -> Result<(), ImageError> {
        let _ = (ns, names, format, platform, writer);
        Err(ImageError::Internal("export is not built yet".into()))
    }
}
