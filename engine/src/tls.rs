//! TLS for berthd's TCP listeners, with rustls, as dockerd takes it:
//! `--tls` serves TLS with `--tlscert` and `--tlskey`; `--tlsverify` (which
//! implies `--tls`) also requires a client certificate signed by
//! `--tlscacert`. Files default to `ca.pem`, `cert.pem` and `key.pem` in
//! `$DOCKER_CERT_PATH`, else `$DOCKER_CONFIG`, else `~/.docker`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {path}: {reason}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} {path} holds no certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("the CA certificate {path}: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The TLS flags (`None`: not given).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub tls: Option<bool>,
    pub verify: Option<bool>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsOptions {
    /// TLS is served: `--tls` or `--tlsverify`.
    pub fn enabled(&self) -> bool {
        self.tls == Some(true) || self.verify == Some(true)
    }

    /// The user turned TLS off by name (`--tls=false`, `--tlsverify=false`):
    /// plain TCP off loopback is what they mean.
    pub fn explicitly_off(&self) -> bool {
        !self.enabled() && (self.tls == Some(false) || self.verify == Some(false))
    }
}

/// Where dockerd looks for its certificates by default.
pub fn default_cert_dir() -> PathBuf {
    for var in ["DOCKER_CERT_PATH", "DOCKER_CONFIG"] {
        if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return PathBuf::from(dir);
        }
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".docker")
}

/// The file `path` (`what` names it in the error).
pub fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The PEM certificates in `path`; none is an error. berthd and the
/// `berth` client read their certificate files with this.
pub fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The server's rustls configuration; `None` when TLS is not served.
pub fn server_config(opts: &TlsOptions) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    if !opts.enabled() {
        return Ok(None);
    }
    let dir = default_cert_dir();
    let cert_path = opts.cert.clone().unwrap_or_else(|| dir.join("cert.pem"));
    let key_path = opts.key.clone().unwrap_or_else(|| dir.join("key.pem"));
    let chain = certificates("certificate", &cert_path)?;
    let key_pem = read("key", &key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        what: "key",
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if opts.verify == Some(true) {
        let ca_path = opts.ca.clone().unwrap_or_else(|| dir.join("ca.pem"));
        let mut roots = rustls::RootCertStore::empty();
        for ca in certificates("CA certificate", &ca_path)? {
            roots.add(ca).map_err(|e| TlsError::BadCa {
                path: ca_path.clone(),
                reason: e.to_string(),
            })?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::BadCa {
                    path: ca_path.clone(),
                    reason: e.to_string(),
                })?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError::Config(format!(
            "{} and {}: {e}",
            cert_path.display(),
            key_path.display()
        ))
    })?;
    // The docker CLI speaks HTTP/1.1 (attach and exec upgrade it).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_implies_tls_and_false_is_explicit() {
        let mut o = TlsOptions::default();
        assert!(!o.enabled() && !o.explicitly_off());
        o.verify = Some(true);
        assert!(o.enabled());
        let o = TlsOptions {
            tls: Some(false),
            ..TlsOptions::default()
        };
        assert!(o.explicitly_off());
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let o = TlsOptions {
            tls: Some(true),
            cert: Some(dir.path().join("nope.pem")),
            key: Some(dir.path().join("key.pem")),
            ..TlsOptions::default()
        };
        let err = server_config(&o).unwrap_err().to_string();
        assert!(err.contains("nope.pem"), "{err}");
        std::fs::write(dir.path().join("nope.pem"), "not a pem").unwrap();
        let err = server_config(&o).unwrap_err().to_string();
        assert!(err.contains("holds no certificate"), "{err}");
    }
}
