//! Layer archives: apply a layer tar into a snapshot directory, and turn a snapshot's changes into a layer tar.
//! PLACEHOLDER until the archive branch lands.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not built yet")]
    NotBuilt,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ApplyStats {
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct DiffStats {
    pub entries: u64,
    pub bytes: u64,
}

pub fn apply_layer<R: std::io::Read>(
    _reader: R,
    _root: &Path,
    _lowers: &[PathBuf],
) -> Result<ApplyStats, ArchiveError> {
    Err(ArchiveError::NotBuilt)
}

pub fn write_diff<W: std::io::Write>(_upper: &Path, _writer: W) -> Result<DiffStats, ArchiveError> {
    Err(ArchiveError::NotBuilt)
}
