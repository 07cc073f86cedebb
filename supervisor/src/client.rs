//! The supervisor's gRPC client, as the engine, `berth-ctr` and the tests use
//! it: a channel over the supervisor's unix socket, and the generated clients
//! with every call scoped to a namespace (and optionally a lease).
//!
//! Also reads registry credentials from a docker `config.json`, so that
//! clients pass the user's credentials with a pull or push.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use berth_proto::content::v1::content_client::ContentClient;
use berth_proto::images::v1::images_client::ImagesClient;
use berth_proto::images::v1::RegistryAuth;
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

/// The registry docker.io stands for, and the key `docker login` writes for it.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_KEYS: &[&str] = &[
    "https://index.docker.io/v1/",
    "index.docker.io",
    "registry-1.docker.io",
];

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
    #[error("read docker config {}", path.display())]
    ReadConfig { path: PathBuf, source: io::Error },
    #[error("parse docker config {}", path.display())]
    ParseConfig {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("docker config {}: auths.{registry:?}.auth is not base64 of user:password", path.display())]
    ConfigAuth { path: PathBuf, registry: String },
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

/// The registry an image reference names: the part before the first '/' when
/// it looks like a host (has a '.' or ':', or is "localhost"), else docker.io.
pub fn registry_host(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((host, _)) if host.contains(['.', ':']) || host == "localhost" => host,
        _ => DOCKER_HUB,
    }
}

#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(serde::Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The credentials for `registry_host` in a docker config file: `config_path`,
/// else `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. A missing
/// file, or one without an entry for the registry, gives `None`.
pub fn docker_credentials(
    config_path: Option<&Path>,
    registry_host: &str,
) -> Result<Option<RegistryAuth>, ClientError> {
    let path = match config_path {
        Some(p) => p.to_path_buf(),
        None => match default_docker_config() {
            Some(p) => p,
            None => return Ok(None),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ClientError::ReadConfig { path, source }),
    };
    let config: DockerConfig =
        serde_json::from_str(&text).map_err(|source| ClientError::ParseConfig {
            path: path.clone(),
            source,
        })?;
    let Some((key, entry)) = find_auth(&config.auths, registry_host) else {
        return Ok(None);
    };
    let mut auth = RegistryAuth::default();
    if let Some(encoded) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let bad = || ClientError::ConfigAuth {
            path: path.clone(),
            registry: key.to_string(),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (user, password) = decoded.split_once(':').ok_or_else(bad)?;
        auth.username = user.to_string();
        auth.password = password.to_string();
    }
    if let Some(user) = entry.username.as_deref().filter(|u| !u.is_empty()) {
        auth.username = user.to_string();
    }
    if let Some(password) = entry.password.as_deref().filter(|p| !p.is_empty()) {
        auth.password = password.to_string();
    }
    if let Some(token) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        auth.identity_token = token.to_string();
    }
    if auth == RegistryAuth::default() {
        // An entry kept by a credential helper (credsStore) has no secret here.
        return Ok(None);
    }
    Ok(Some(auth))
}

fn default_docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".docker").join("config.json"))
}

/// The entry for `host`: an exact key first, then (as docker does) a key
/// whose host part, without scheme or path, is `host`.
fn find_auth<'a>(
    auths: &'a HashMap<String, DockerAuth>,
    host: &str,
) -> Option<(&'a str, &'a DockerAuth)> {
    let mut names = vec![host];
    if host == DOCKER_HUB {
        names.extend_from_slice(DOCKER_HUB_KEYS);
    }
    for name in &names {
        if let Some((key, entry)) = auths.get_key_value(*name) {
            return Some((key, entry));
        }
    }
    // Sorted, so that the choice between two keys for one host is stable.
    let mut keys: Vec<&String> = auths.keys().collect();
    keys.sort();
    for name in &names {
        for key in &keys {
            if key_host(key) == *name {
                return Some((key, &auths[*key]));
            }
        }
    }
    None
}

fn key_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn registry_host_of_references() {
        assert_eq!(registry_host("busybox"), "docker.io");
        assert_eq!(registry_host("library/busybox:1.36"), "docker.io");
        assert_eq!(registry_host("docker.io/library/busybox"), "docker.io");
        assert_eq!(registry_host("127.0.0.1:5000/app:1"), "127.0.0.1:5000");
        assert_eq!(registry_host("localhost/app"), "localhost");
        assert_eq!(
            registry_host("registry.example/team/app@sha256:ab"),
            "registry.example"
        );
        assert_eq!(registry_host("team/app"), "docker.io");
    }

    #[test]
    fn auth_field_is_user_and_password() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{}"}}}}}}"#,
            b64("alice:s3cr:et")
        );
        let path = write_config(dir.path(), &text);
        let auth = docker_credentials(Some(&path), "127.0.0.1:5000")
            .unwrap()
            .unwrap();
        assert_eq!(auth.username, "alice");
        assert_eq!(auth.password, "s3cr:et");
        assert_eq!(auth.identity_token, "");
        assert_eq!(
            docker_credentials(Some(&path), "other.example").unwrap(),
            None
        );
    }

    #[test]
    fn username_password_and_identity_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            r#"{"auths": {
                "https://registry.example/v2/": {"username": "bob", "password": "pw"},
                "tokens.example": {"auth": "PHRva2VuPjo=", "identitytoken": "refresh"}
            }, "credsStore": "desktop"}"#,
        );
        let auth = docker_credentials(Some(&path), "registry.example")
            .unwrap()
            .unwrap();
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("bob", "pw")
        );
        let auth = docker_credentials(Some(&path), "tokens.example")
            .unwrap()
            .unwrap();
        assert_eq!(auth.username, "<token>");
        assert_eq!(auth.password, "");
        assert_eq!(auth.identity_token, "refresh");
    }

    #[test]
    fn docker_hub_uses_the_index_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}}}}}}"#,
            b64("carol:pw")
        );
        let path = write_config(dir.path(), &text);
        let host = registry_host("busybox:latest");
        let auth = docker_credentials(Some(&path), host).unwrap().unwrap();
        assert_eq!(auth.username, "carol");
    }

    #[test]
    fn entry_without_secret_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), r#"{"auths": {"registry.example": {}}}"#);
        assert_eq!(
            docker_credentials(Some(&path), "registry.example").unwrap(),
            None
        );
        let path = write_config(dir.path(), r#"{"credsStore": "pass"}"#);
        assert_eq!(
            docker_credentials(Some(&path), "registry.example").unwrap(),
            None
        );
    }

    #[test]
    fn missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.json");
        assert_eq!(docker_credentials(Some(&path), "docker.io").unwrap(), None);
    }

    #[test]
    fn malformed_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), "{ not json");
        let err = docker_credentials(Some(&path), "docker.io").unwrap_err();
        assert!(matches!(err, ClientError::ParseConfig { .. }));
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        let path = write_config(dir.path(), r#"{"auths": {"r.example": {"auth": "%%%"}}}"#);
        let err = docker_credentials(Some(&path), "r.example").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "docker config {}: auths.\"r.example\".auth is not base64 of user:password",
                path.display()
            )
        );
        let path = write_config(
            dir.path(),
            &format!(
                r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
                b64("nocolon")
            ),
        );
        assert!(docker_credentials(Some(&path), "r.example").is_err());
    }

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
