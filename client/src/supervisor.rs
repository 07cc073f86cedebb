//! The supervisor's gRPC client, as the engine, `berth-ctr` and the tests use
//! it: a channel over the supervisor's unix socket, and the generated clients
//! with every call scoped to a namespace (and optionally a lease).

use std::io;
use std::path::{Path, PathBuf};

use berth_proto::content::v1::content_client::ContentClient;
use berth_proto::images::v1::images_client::ImagesClient;
use berth_proto::leases::v1::leases_client::LeasesClient;
use berth_proto::namespaces::v1::namespaces_client::NamespacesClient;
use berth_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::version::v1::version_client::VersionClient;
use berth_proto::{LEASE_KEY, NAMESPACE_KEY};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("supervisor socket {} does not exist (is berth-supervisord running?)", socket.display())]
    SocketMissing { socket: PathBuf },
    #[error("supervisor socket {} refused the connection (is berth-supervisord running?)", socket.display())]
    SocketRefused { socket: PathBuf },
    #[error("supervisor socket {} is not a socket", socket.display())]
    NotASocket { socket: PathBuf },
    #[error("connect to supervisor socket {}", socket.display())]
    Connect { socket: PathBuf, source: io::Error },
    #[error("connect to supervisor socket {}", socket.display())]
    Transport {
        socket: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("invalid namespace {namespace:?}: must be non-empty visible ascii")]
    InvalidNamespace { namespace: String },
    #[error("invalid lease id {id:?}: must be non-empty visible ascii")]
    InvalidLease { id: String },
}

/// Opens a gRPC channel to the supervisor listening on `socket`.
pub async fn connect(socket: &Path) -> Result<Channel, ClientError> {
    // The URI is a placeholder: the connector below ignores it.
    let endpoint =
        Endpoint::try_from("http://[::]:50051").map_err(|source| ClientError::Transport {
            socket: socket.to_path_buf(),
            source,
        })?;
    let path = socket.to_path_buf();
    let connector = tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| connect_error(socket, e))
}

/// Names the socket and, when the cause is an I/O error, says what it was.
fn connect_error(socket: &Path, error: tonic::transport::Error) -> ClientError {
    let socket = socket.to_path_buf();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::NotFound => ClientError::SocketMissing { socket },
                io::ErrorKind::ConnectionRefused if !is_socket(&socket) => {
                    ClientError::NotASocket { socket }
                }
                io::ErrorKind::ConnectionRefused => ClientError::SocketRefused { socket },
                kind => ClientError::Connect {
                    socket,
                    source: io::Error::new(kind, io.to_string()),
                },
            };
        }
        cause = e.source();
    }
    ClientError::Transport {
        socket,
        source: error,
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Adds the namespace (and lease) metadata to every call.
#[derive(Clone, Debug)]
pub struct Scope {
    namespace: MetadataValue<Ascii>,
    lease: Option<MetadataValue<Ascii>>,
}

impl Scope {
    fn new(namespace: &str) -> Result<Scope, ClientError> {
        let namespace = metadata_value(namespace).ok_or_else(|| ClientError::InvalidNamespace {
            namespace: namespace.to_string(),
        })?;
        Ok(Scope {
            namespace,
            lease: None,
        })
    }
}

impl Interceptor for Scope {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let metadata = request.metadata_mut();
        metadata.insert(NAMESPACE_KEY, self.namespace.clone());
        if let Some(lease) = &self.lease {
            metadata.insert(LEASE_KEY, lease.clone());
        }
        Ok(request)
    }
}

/// A channel wrapped by the namespace interceptor: the transport of every
/// client [`Client`] hands out.
pub type Scoped = InterceptedService<Channel, Scope>;

/// A connection to the supervisor, scoped to one namespace.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    namespace: String,
    scope: Scope,
}

impl Client {
    /// Connects to the supervisor on `socket`; every call is made in `namespace`.
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Client, ClientError> {
        // Checked first: a bad namespace is the same error with or without a supervisor.
        let scope = Scope::new(namespace)?;
        let channel = connect(socket).await?;
        Ok(Client {
            channel,
            namespace: namespace.to_string(),
            scope,
        })
    }

    /// Uses an existing channel (for example an in-process one in tests).
    pub fn new(channel: Channel, namespace: &str) -> Result<Client, ClientError> {
        Ok(Client {
            channel,
            namespace: namespace.to_string(),
            scope: Scope::new(namespace)?,
        })
    }

    /// The same connection, adding what its calls create to lease `id`.
    pub fn with_lease(&self, id: &str) -> Result<Client, ClientError> {
        let value =
            metadata_value(id).ok_or_else(|| ClientError::InvalidLease { id: id.to_string() })?;
        let mut client = self.clone();
        client.scope.lease = Some(value);
        Ok(client)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    fn scoped(&self) -> Scoped {
        InterceptedService::new(self.channel.clone(), self.scope.clone())
    }

    pub fn images(&self) -> ImagesClient<Scoped> {
        ImagesClient::new(self.scoped())
    }

    pub fn content(&self) -> ContentClient<Scoped> {
        ContentClient::new(self.scoped())
    }

    pub fn snapshots(&self) -> SnapshotsClient<Scoped> {
        SnapshotsClient::new(self.scoped())
    }

    pub fn leases(&self) -> LeasesClient<Scoped> {
        LeasesClient::new(self.scoped())
    }

    pub fn namespaces(&self) -> NamespacesClient<Scoped> {
        NamespacesClient::new(self.scoped())
    }

    pub fn version(&self) -> VersionClient<Scoped> {
        VersionClient::new(self.scoped())
    }

    pub fn containers(
        &self,
    ) -> berth_proto::containers::v1::containers_client::ContainersClient<Scoped> {
        berth_proto::containers::v1::containers_client::ContainersClient::new(self.scoped())
    }

    pub fn events(&self) -> berth_proto::events::v1::events_client::EventsClient<Scoped> {
        berth_proto::events::v1::events_client::EventsClient::new(self.scoped())
    }

    pub fn tasks(&self) -> berth_proto::tasks::v1::tasks_client::TasksClient<Scoped> {
        berth_proto::tasks::v1::tasks_client::TasksClient::new(self.scoped())
    }
}

/// A metadata value from a namespace or lease id: non-empty visible ASCII.
fn metadata_value(s: &str) -> Option<MetadataValue<Ascii>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_and_lease_must_be_metadata() {
        assert!(metadata_value("default").is_some());
        assert!(metadata_value("").is_none());
        assert!(metadata_value("a b").is_none());
        assert!(metadata_value("é").is_none());
    }

    #[tokio::test]
    async fn missing_socket_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("supervisor.sock");
        let err = connect(&socket).await.unwrap_err();
        assert!(matches!(err, ClientError::SocketMissing { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "supervisor socket {} does not exist (is berth-supervisord running?)",
                socket.display()
            )
        );
    }

    /// Answers with the namespace and lease metadata it received.
    struct EchoScope;

    #[tonic::async_trait]
    impl berth_proto::version::v1::version_server::Version for EchoScope {
        async fn version(
            &self,
            request: tonic::Request<()>,
        ) -> Result<tonic::Response<berth_proto::version::v1::VersionResponse>, tonic::Status>
        {
            let get = |key: &str| {
                request
                    .metadata()
                    .get(key)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            Ok(tonic::Response::new(
                berth_proto::version::v1::VersionResponse {
                    version: get(NAMESPACE_KEY),
                    revision: get(LEASE_KEY),
                },
            ))
        }
    }

    #[tokio::test]
    async fn calls_carry_namespace_and_lease() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("supervisor.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    berth_proto::version::v1::version_server::VersionServer::new(EchoScope),
                )
                .serve_with_incoming(incoming),
        );

        let client = Client::connect(&socket, "team-a").await.unwrap();
        assert_eq!(client.namespace(), "team-a");
        let answer = client.version().version(()).await.unwrap().into_inner();
        assert_eq!(
            (answer.version.as_str(), answer.revision.as_str()),
            ("team-a", "")
        );

        let leased = client.with_lease("lease-1").unwrap();
        let answer = leased.version().version(()).await.unwrap().into_inner();
        assert_eq!(
            (answer.version.as_str(), answer.revision.as_str()),
            ("team-a", "lease-1")
        );
        assert!(client.with_lease("bad lease").is_err());
        assert!(Client::new(client.channel().clone(), "").is_err());
        server.abort();
    }

    #[tokio::test]
    async fn refused_socket_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("supervisor.sock");
        // A socket file nobody listens on: bound, then closed.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let err = connect(&socket).await.unwrap_err();
        assert!(matches!(err, ClientError::SocketRefused { .. }), "{err:?}");

        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = connect(&file).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("supervisor socket {} is not a socket", file.display())
        );
    }
}
