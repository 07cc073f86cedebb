//! How berth reaches a daemon: a unix socket, plain TCP, or TCP with TLS
//! (rustls), as the docker CLI does. An [`Endpoint`] opens a byte stream;
//! `client` speaks HTTP/1.1 on it, and the connection upgrade of attach and
//! exec works the same on each.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use berth_engine::tls::{certificates, read};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("unsupported daemon address {0:?}: berth speaks to unix:// and tcp:// addresses")]
    Address(String),
    #[error("invalid daemon address {address:?}: {reason}")]
    BadTcp { address: String, reason: String },
    #[error("{what} {path}: {reason}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Files(#[from] berth_engine::tls::TlsError),
}

/// A byte stream to the daemon.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Stream = Pin<Box<dyn Io>>;

/// Where the daemon listens.
#[derive(Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp {
        /// `host:port`, as dialled.
        addr: String,
        /// The host part, the name the server's certificate must carry.
        host: String,
        tls: Option<Arc<rustls::ClientConfig>>,
    },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url())
    }
}

impl Endpoint {
    /// The endpoint of `address` (`unix:///path`, a bare `/path`,
    /// `tcp://host[:port]`); `tls` is used on TCP only.
    pub fn parse(
        address: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Endpoint, TransportError> {
        if let Some(path) = address.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if address.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(address)));
        }
        let Some(rest) = address.strip_prefix("tcp://") else {
            return Err(TransportError::Address(address.to_string()));
        };
        let bad = |reason: &str| TransportError::BadTcp {
            address: address.to_string(),
            reason: reason.to_string(),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(bad("a path after the port is not supported"));
        }
        // docker's defaults: localhost, 2376 with TLS, else 2375.
        let default_port = if tls.is_some() { "2376" } else { "2375" };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (
                h.to_string(),
                after.strip_prefix(':').unwrap_or(default_port),
            )
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (rest.to_string(), default_port),
            }
        };
        let host = if host.is_empty() {
            "localhost".to_string()
        } else {
            host
        };
        let port: u16 = port
            .parse()
            .map_err(|_| bad(&format!("invalid port {port:?}")))?;
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Endpoint::Tcp { addr, host, tls })
    }

    /// The address as a URL: `unix:///path`, `tcp://host:port`.
    pub fn url(&self) -> String {
        match self {
            Endpoint::Unix(path) => format!("unix://{}", path.display()),
            Endpoint::Tcp { addr, .. } => format!("tcp://{addr}"),
        }
    }

    /// Opens a stream: the connection, and the TLS handshake on TCP with
    /// TLS. An error in the handshake is kept apart from one connecting.
    pub async fn connect(&self) -> Result<Stream, ConnectError> {
        match self {
            Endpoint::Unix(path) => Ok(Box::pin(
                UnixStream::connect(path)
                    .await
                    .map_err(ConnectError::Dial)?,
            )),
            Endpoint::Tcp { addr, host, tls } => {
                let tcp = TcpStream::connect(addr.as_str())
                    .await
                    .map_err(ConnectError::Dial)?;
                let _ = tcp.set_nodelay(true);
                let Some(config) = tls else {
                    return Ok(Box::pin(tcp));
                };
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| ConnectError::Tls(io::Error::other(e)))?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(ConnectError::Tls)?;
                Ok(Box::pin(stream))
            }
        }
    }
}

/// Why a stream could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// Nothing answered at the address.
    Dial(io::Error),
    /// The TLS handshake failed.
    Tls(io::Error),
}

/// The TLS files of a client (`--tlscacert`, `--tlscert`, `--tlskey`, or a
/// context's material) and whether the server is verified.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Skip verifying the server's certificate (`--tls` without
    /// `--tlsverify`, a context's skip-tls-verify).
    pub skip_verify: bool,
}

/// The rustls configuration of a client with these files.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Config(e.to_string()))?;
    let builder = if files.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerifier(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &files.ca {
            for cert in certificates("CA certificate", ca)? {
                roots.add(cert).map_err(|e| TransportError::Pem {
                    what: "CA certificate",
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = certificates("certificate", cert)?;
            let pem = read("key", key)?;
            let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TransportError::Pem {
                what: "key",
                path: key.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                TransportError::Config(format!("{} and {}: {e}", cert.display(), key.display()))
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TransportError::Config(
                "a client certificate needs its key, and a key its certificate".into(),
            ))
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The verifier of `--tls` without `--tlsverify`: any certificate is taken
/// (its signatures on the handshake are still checked).
#[derive(Debug)]
struct NoVerifier(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            Endpoint::parse("unix:///tmp/d.sock", None).unwrap().url(),
            "unix:///tmp/d.sock"
        );
        assert_eq!(
            Endpoint::parse("/tmp/d.sock", None).unwrap().url(),
            "unix:///tmp/d.sock"
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:1234", None).unwrap().url(),
            "tcp://127.0.0.1:1234"
        );
        assert_eq!(
            Endpoint::parse("tcp://example.org", None).unwrap().url(),
            "tcp://example.org:2375"
        );
        assert_eq!(
            Endpoint::parse("tcp://[::1]:99", None).unwrap().url(),
            "tcp://[::1]:99"
        );
        assert!(Endpoint::parse("ssh://host", None).is_err());
        assert!(Endpoint::parse("tcp://host:port", None).is_err());
    }

    #[test]
    fn missing_tls_files_are_named() {
        let files = TlsFiles {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        };
        let err = client_config(&files).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
