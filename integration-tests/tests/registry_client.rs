//! The supervisor's registry client against a real registry (Debian's
//! `docker-registry`, CNCF distribution 2.8) on a free 127.0.0.1 port, and
//! against a small hand-written HTTP server for what that registry cannot
//! show: the Bearer token flow, redirects to another host, a connection
//! dropped in the middle of a body.
//!
//! The image is the shared busybox test image (an OCI layout built with
//! umoci), copied into the registry with skopeo; what the client pushes is
//! read back with skopeo.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use berth_supervisor::content::Digest;
use berth_supervisor::oci::{Descriptor, MEDIA_OCI_MANIFEST};
use berth_supervisor::reference::Reference;
use berth_supervisor::registry::{
    BlobStream, Client, ClientOptions, Credentials, RegistryConfig, RegistryError,
};
use futures_util::StreamExt as _;
use integration_tests::{host, interop, wait_for};
use serde_json::Value;

const USER: &str = "berth";
const PASSWORD: &str = "s3cret-pw";

// ---------------------------------------------------------------------------
// A real registry

#[derive(Default)]
struct Options {
    /// Require Basic auth with USER / PASSWORD.
    htpasswd: bool,
    /// Serve HTTPS with a self-signed certificate.
    tls: bool,
}

/// A `docker-registry` on a free 127.0.0.1 port, killed when dropped.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    fn start(options: Options) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .expect("make registry temp dir");
        let port = free_port();
        let root = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-secret\n",
            root.display()
        );
        if options.tls {
            let cert = dir.path().join("cert.pem");
            let key = dir.path().join("key.pem");
            host(
                "openssl",
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-keyout",
                    path_str(&key),
                    "-out",
                    path_str(&cert),
                ],
            );
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if options.htpasswd {
            let line = host("htpasswd", &["-Bbn", USER, PASSWORD]);
            let file = dir.path().join("htpasswd");
            fs::write(&file, line.trim()).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).expect("write registry config");
        let log = fs::File::create(dir.path().join("registry.log")).expect("create registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry (apt-get install docker-registry)");
        let mut registry = Registry { child, dir, port };
        // Any HTTP answer on /v2/ means it serves (a TLS server answers
        // plain HTTP with a 400).
        wait_for(
            "docker-registry to answer GET /v2/",
            Duration::from_secs(20),
            || {
                if let Ok(Some(status)) = registry.child.try_wait() {
                    panic!("docker-registry exited ({status}):\n{}", registry.log());
                }
                let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
                stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                stream
                    .write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    .ok()?;
                let mut answer = [0u8; 5];
                stream.read_exact(&mut answer).ok()?;
                (&answer == b"HTTP/").then_some(())
            },
        );
        registry
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn reference(&self, name: &str) -> Reference {
        Reference::parse(&format!("{}/{name}", self.host())).expect("parse reference")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The file the registry stores a blob (or manifest) in.
    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Copies the busybox test image in as `name:latest`.
    fn seed(&self, name: &str, creds: Option<&str>) {
        let layout = &interop::image().layout;
        let src = format!("oci:{}:latest", layout.display());
        let dest = format!("docker://{}/{name}:latest", self.host());
        let mut args = vec![
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ];
        if let Some(creds) = creds {
            args.extend(["--dest-creds", creds]);
        }
        args.extend([src.as_str(), dest.as_str()]);
        skopeo(&args, self);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- docker-registry log ---\n{}", self.log());
        }
    }
}

fn skopeo(args: &[&str], registry: &Registry) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn skopeo (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed ({}): {}\n--- registry log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        registry.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

// ---------------------------------------------------------------------------
// The test image's files

struct Image {
    manifest_digest: String,
    manifest: Vec<u8>,
    config: Descriptor,
    layer: Descriptor,
    layout: PathBuf,
}

impl Image {
    fn load() -> Image {
        let layout = interop::image().layout.clone();
        let index: Value =
            serde_json::from_slice(&fs::read(layout.join("index.json")).expect("read index.json"))
                .expect("index.json is JSON");
        let manifest_digest = index["manifests"][0]["digest"]
            .as_str()
            .expect("index names a manifest")
            .to_string();
        let manifest = blob(&layout, &manifest_digest);
        let doc: Value = serde_json::from_slice(&manifest).expect("manifest is JSON");
        let descriptor =
            |v: &Value| -> Descriptor { serde_json::from_value(v.clone()).expect("descriptor") };
        let config = descriptor(&doc["config"]);
        let layer = descriptor(&doc["layers"][0]);
        Image {
            manifest_digest,
            manifest,
            config,
            layer,
            layout,
        }
    }

    fn blob(&self, digest: &str) -> Vec<u8> {
        blob(&self.layout, digest)
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        blob_path(&self.layout, digest)
    }
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("sha256 digest"))
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let path = blob_path(layout, digest);
    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Deterministic bytes that do not compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn descriptor_of(data: &[u8]) -> Descriptor {
    Descriptor {
        media_type: "application/octet-stream".to_string(),
        digest: Digest::of(data).to_string(),
        size: data.len() as i64,
        urls: Vec::new(),
        annotations: Default::default(),
        platform: None,
    }
}

async fn collect(mut blob: BlobStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = blob.body.next().await {
        out.extend_from_slice(&chunk.expect("blob body"));
    }
    out
}

fn missing_digest() -> String {
    Digest::of(b"no such blob in any registry").to_string()
}

fn client() -> Client {
    Client::new(RegistryConfig::default()).expect("make client")
}

// ---------------------------------------------------------------------------
// Pulling

#[tokio::test]
async fn resolves_manifests_and_fetches_blobs() {
    let registry = Registry::start(Options::default());
    registry.seed("busybox", None);
    let image = Image::load();
    let client = client();

    // By tag: the descriptor comes from the registry's answer.
    let by_tag = registry.reference("busybox");
    assert_eq!(by_tag.tag_or_digest(), "latest");
    let (desc, bytes) = client.resolve(&by_tag, None).await.expect("resolve by tag");
    assert_eq!(desc.media_type, MEDIA_OCI_MANIFEST);
    assert_eq!(desc.digest, image.manifest_digest);
    assert_eq!(desc.size as usize, image.manifest.len());
    assert_eq!(&bytes[..], &image.manifest[..]);

    // By digest.
    let by_digest = registry.reference(&format!("busybox@{}", image.manifest_digest));
    let (desc2, bytes2) = client
        .resolve(&by_digest, None)
        .await
        .expect("resolve by digest");
    assert_eq!(desc2, desc);
    assert_eq!(bytes2, bytes);
    let fetched = client
        .fetch_manifest(&by_tag, &image.manifest_digest, None)
        .await
        .expect("fetch manifest");
    assert_eq!(&fetched[..], &image.manifest[..]);

    // Unknown tags and digests.
    let err = client
        .resolve(&registry.reference("busybox:nope"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::NotFound {
                what: "manifest",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("busybox:nope"), "{err}");
    let err = client
        .fetch_manifest(&by_tag, &missing_digest(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    let err = client
        .resolve(&registry.reference("never-pushed"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");

    // Whole blobs.
    let config = image.blob(&image.config.digest);
    let blob = client
        .fetch_blob(&by_tag, &image.config.digest, 0, None)
        .await
        .expect("fetch config");
    assert_eq!((blob.offset, blob.total), (0, Some(config.len() as u64)));
    assert_eq!(collect(blob).await, config);

    // From an offset: the tail.
    let layer = image.blob(&image.layer.digest);
    assert!(layer.len() > 5000, "layer of {} bytes", layer.len());
    let offset = 4321;
    let blob = client
        .fetch_blob(&by_tag, &image.layer.digest, offset, None)
        .await
        .expect("fetch layer from an offset");
    assert_eq!(blob.offset, offset);
    assert_eq!(blob.total, Some(layer.len() as u64));
    assert_eq!(collect(blob).await, &layer[offset as usize..]);

    // From the very end: nothing left.
    let end = layer.len() as u64;
    let blob = client
        .fetch_blob(&by_tag, &image.layer.digest, end, None)
        .await
        .expect("fetch layer from its end");
    assert_eq!((blob.offset, blob.total), (end, Some(end)));
    assert!(collect(blob).await.is_empty());

    assert!(client
        .blob_exists(&by_tag, &image.layer.digest, None)
        .await
        .expect("HEAD layer"));
    assert!(!client
        .blob_exists(&by_tag, &missing_digest(), None)
        .await
        .expect("HEAD missing blob"));
    let err = client
        .fetch_blob(&by_tag, &missing_digest(), 0, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::NotFound { what: "blob", .. }),
        "{err}"
    );
    let err = client
        .fetch_blob(&by_tag, "sha256:../../etc", 0, None)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::InvalidDigest(_)), "{err}");

    // A registry that serves other bytes than the digest names is caught.
    let stored = registry.blob_data(&image.manifest_digest);
    let mut tampered = image.manifest.clone();
    tampered.extend_from_slice(b"\n");
    fs::write(&stored, &tampered).expect("tamper with the stored manifest");
    let err = client
        .fetch_manifest(&by_tag, &image.manifest_digest, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::DigestMismatch { expected, .. } if *expected == image.manifest_digest),
        "{err}"
    );
    let err = client.resolve(&by_digest, None).await.unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    // By tag there is nothing to check against: the digest is of what came.
    let (desc, _) = client.resolve(&by_tag, None).await.expect("resolve by tag");
    assert_eq!(desc.digest, Digest::of(&tampered).to_string());
}

// ---------------------------------------------------------------------------
// Pushing

#[tokio::test]
async fn pushes_blobs_and_manifests_that_skopeo_reads_back() {
    let registry = Registry::start(Options::default());
    let image = Image::load();
    let client = client();
    let target = registry.reference("pushed/busybox:v1");

    for desc in [&image.config, &image.layer] {
        assert!(!client
            .blob_exists(&target, &desc.digest, None)
            .await
            .expect("HEAD before push"));
    }

    // The config in one PUT, the layer in 64 KiB chunks.
    let seen = Mutex::new(Vec::new());
    let record = |n: u64| seen.lock().unwrap().push(n);
    let file = fs::File::open(image.blob_path(&image.config.digest)).expect("open config");
    client
        .push_blob(&target, &image.config, file, None, None, &record)
        .await
        .expect("push config monolithic");
    assert_eq!(
        seen.lock().unwrap().last(),
        Some(&(image.config.size as u64))
    );

    seen.lock().unwrap().clear();
    let file = fs::File::open(image.blob_path(&image.layer.digest)).expect("open layer");
    client
        .push_blob(&target, &image.layer, file, Some(64 << 10), None, &record)
        .await
        .expect("push layer chunked");
    let reports = seen.lock().unwrap().clone();
    assert!(reports.windows(2).all(|w| w[0] <= w[1]), "{reports:?}");
    assert_eq!(reports.last(), Some(&(image.layer.size as u64)));
    assert!(
        reports.len() as i64 >= image.layer.size / (64 << 10),
        "progress at least once a chunk: {reports:?}"
    );

    for desc in [&image.config, &image.layer] {
        assert!(client
            .blob_exists(&target, &desc.digest, None)
            .await
            .expect("HEAD after push"));
    }

    // A blob whose size is not a multiple of the chunk, and one of zero bytes.
    let tmp = tempfile::tempdir().expect("temp dir");
    for (i, data) in [noise(300_001, 7), Vec::new()].into_iter().enumerate() {
        let path = tmp.path().join(format!("blob{i}"));
        fs::write(&path, &data).expect("write blob");
        let desc = descriptor_of(&data);
        let file = fs::File::open(&path).expect("open blob");
        client
            .push_blob(&target, &desc, file, Some(100_000), None, &|_| {})
            .await
            .expect("push odd-sized blob chunked");
        let blob = client
            .fetch_blob(&target, &desc.digest, 0, None)
            .await
            .expect("fetch pushed blob");
        assert_eq!(collect(blob).await, data);
    }

    // The registry refuses content that does not match its digest.
    let data = noise(1000, 9);
    let path = tmp.path().join("liar");
    fs::write(&path, &data).expect("write blob");
    let mut lying = descriptor_of(&data);
    lying.digest = Digest::of(b"something else").to_string();
    let file = fs::File::open(&path).expect("open blob");
    let err = client
        .push_blob(&target, &lying, file, None, None, &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::Status { status: 400, message, .. } if message.contains("digest")),
        "{err}"
    );
    // A file that is not the descriptor's size is not sent at all.
    let mut short = descriptor_of(&data);
    short.size += 1;
    let file = fs::File::open(&path).expect("open blob");
    let err = client
        .push_blob(&target, &short, file, None, None, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::BlobFileSize { .. }), "{err}");

    // The manifest under a tag: skopeo reads it back and copies the image.
    client
        .push_manifest(
            &target,
            "v1",
            MEDIA_OCI_MANIFEST,
            image.manifest.clone().into(),
            None,
        )
        .await
        .expect("push manifest");
    let raw = skopeo(
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/pushed/busybox:v1", registry.host()),
        ],
        &registry,
    );
    assert_eq!(raw.as_bytes(), &image.manifest[..]);
    let copy = tmp.path().join("copy");
    skopeo(
        &[
            "--insecure-policy",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{}/pushed/busybox:v1", registry.host()),
            &format!("oci:{}:v1", copy.display()),
        ],
        &registry,
    );
    assert_eq!(
        fs::read(blob_path(&copy, &image.layer.digest)).expect("copied layer"),
        image.blob(&image.layer.digest)
    );

    // By digest too; a digest that does not match the bytes is refused here.
    let (desc, _) = client
        .resolve(&target, None)
        .await
        .expect("resolve pushed tag");
    assert_eq!(desc.digest, image.manifest_digest);
    client
        .push_manifest(
            &target,
            &image.manifest_digest,
            MEDIA_OCI_MANIFEST,
            image.manifest.clone().into(),
            None,
        )
        .await
        .expect("push manifest by digest");
    let err = client
        .push_manifest(
            &target,
            &missing_digest(),
            MEDIA_OCI_MANIFEST,
            image.manifest.clone().into(),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
}

// ---------------------------------------------------------------------------
// Basic auth and TLS

#[tokio::test]
async fn basic_auth_needs_the_right_credentials() {
    let registry = Registry::start(Options {
        htpasswd: true,
        ..Options::default()
    });
    registry.seed("private", Some(&format!("{USER}:{PASSWORD}")));
    let image = Image::load();
    let r = registry.reference("private");
    let right = Credentials::Basic {
        username: USER.to_string(),
        password: PASSWORD.to_string(),
    };
    let wrong = Credentials::Basic {
        username: USER.to_string(),
        password: "guess".to_string(),
    };

    let anonymous = client();
    let err = anonymous.resolve(&r, None).await.unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::Unauthorized {
                had_credentials: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("requires credentials"), "{err}");

    let err = anonymous.resolve(&r, Some(&wrong)).await.unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::Unauthorized {
                had_credentials: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("refused the credentials"), "{err}");

    let (desc, _) = anonymous
        .resolve(&r, Some(&right))
        .await
        .expect("resolve with credentials");
    assert_eq!(desc.digest, image.manifest_digest);
    // Credentials the host is known to want go with the first request,
    // streamed upload bodies included.
    let data = noise(200_000, 3);
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("blob");
    fs::write(&path, &data).expect("write blob");
    let desc = descriptor_of(&data);
    for chunk in [None, Some(50_000)] {
        let file = fs::File::open(&path).expect("open blob");
        anonymous
            .push_blob(&r, &desc, file, chunk, Some(&right), &|_| {})
            .await
            .expect("push with credentials");
    }
    assert!(anonymous
        .blob_exists(&r, &desc.digest, Some(&right))
        .await
        .expect("HEAD with credentials"));
    let err = anonymous
        .blob_exists(&r, &desc.digest, None)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    // Credentials from a config file; per-call credentials win over them.
    let config_path = tmp.path().join("config.json");
    fs::write(
        &config_path,
        serde_json::json!({
            "auths": { registry.host(): { "username": USER, "password": PASSWORD } }
        })
        .to_string(),
    )
    .expect("write config.json");
    let config = RegistryConfig::load(&config_path).expect("load config.json");
    let configured = Client::new(config).expect("make client");
    let blob = configured
        .fetch_blob(&r, &image.config.digest, 0, None)
        .await
        .expect("fetch with configured credentials");
    assert_eq!(collect(blob).await, image.blob(&image.config.digest));
    let err = configured.resolve(&r, Some(&wrong)).await.unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::Unauthorized {
                had_credentials: true,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn loopback_registries_may_use_self_signed_tls() {
    let registry = Registry::start(Options {
        tls: true,
        ..Options::default()
    });
    let client = client();
    let r = registry.reference("tls/app:v1");
    let data = noise(70_000, 5);
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("blob");
    fs::write(&path, &data).expect("write blob");
    let desc = descriptor_of(&data);
    assert!(!client
        .blob_exists(&r, &desc.digest, None)
        .await
        .expect("HEAD over TLS"));
    let file = fs::File::open(&path).expect("open blob");
    client
        .push_blob(&r, &desc, file, Some(30_000), None, &|_| {})
        .await
        .expect("push over TLS");
    let blob = client
        .fetch_blob(&r, &desc.digest, 1, None)
        .await
        .expect("fetch over TLS");
    assert_eq!(collect(blob).await, &data[1..]);
    // Plain HTTP would have got a 400 from this server: it was HTTPS.
    assert!(
        !registry.log().contains("http: TLS handshake error"),
        "{}",
        registry.log()
    );
}

// ---------------------------------------------------------------------------
// A hand-written server: Bearer tokens, redirects, truncated bodies

#[derive(Debug, Clone)]
struct Request {
    method: String,
    target: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// Query (or form body) parameters.
    fn params(&self) -> Vec<(String, String)> {
        let query = match self.target.split_once('?') {
            Some((_, q)) => q.to_string(),
            None => String::from_utf8_lossy(&self.body).into_owned(),
        };
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect()
    }
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Announces `declared` bytes, sends `body`, and hangs up.
    Truncated { declared: usize, body: Vec<u8> },
    /// Announces `declared` bytes, sends `body`, and then nothing for a while.
    Stalled { declared: usize, body: Vec<u8> },
}

fn reply(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    Reply::Full {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
    }
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// An HTTP/1.1 server on a free 127.0.0.1 port: one request per
/// connection, every request recorded. TLS handshakes are hung up on, so
/// the client falls back to plain HTTP.
struct FakeServer {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    /// Connections that started with a TLS handshake.
    tls_hellos: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    fn start(handler: Handler) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake server");
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let tls_hellos = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, hellos, stopped) = (requests.clone(), tls_hellos.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (handler, log, hellos) = (handler.clone(), log.clone(), hellos.clone());
                thread::spawn(move || serve_one(stream, &handler, &log, &hellos));
            }
        });
        FakeServer {
            port,
            requests,
            tls_hellos,
            stop,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("request log lock").clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve_one(
    mut stream: TcpStream,
    handler: &Handler,
    log: &Mutex<Vec<Request>>,
    tls_hellos: &AtomicUsize,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf[0] == 0x16 {
            // A TLS ClientHello: hang up.
            tls_hellos.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let request = Request {
        method,
        target,
        headers,
        body,
    };
    let answer = handler(&request);
    log.lock().expect("request log lock").push(request);
    let stall = matches!(answer, Reply::Stalled { .. });
    let mut out = Vec::new();
    match answer {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            out.extend(format!("HTTP/1.1 {status} X\r\nConnection: close\r\n").bytes());
            for (k, v) in headers {
                out.extend(format!("{k}: {v}\r\n").bytes());
            }
            out.extend(format!("Content-Length: {}\r\n\r\n", body.len()).bytes());
            out.extend(body);
        }
        Reply::Truncated { declared, body } | Reply::Stalled { declared, body } => {
            out.extend(
                format!(
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {declared}\r\n\r\n"
                )
                .bytes(),
            );
            out.extend(body);
            if stall {
                let _ = stream.write_all(&out);
                let _ = stream.flush();
                thread::sleep(Duration::from_secs(5));
            }
        }
    }
    let _ = stream.write_all(&out);
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

#[tokio::test]
async fn bearer_tokens_redirects_and_broken_bodies() {
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#.to_vec();
    let stored = noise(5000, 11);
    let stored_digest = Digest::of(&stored).to_string();
    let truncated_digest = Digest::of(b"truncated").to_string();
    let insecure_digest = Digest::of(b"insecure").to_string();
    let stalled_digest = Digest::of(b"stalled").to_string();

    // Storage on "localhost": another host name than the registry's 127.0.0.1.
    let storage = {
        let stored = stored.clone();
        FakeServer::start(Arc::new(move |_req: &Request| {
            reply(
                200,
                &[("Content-Type", "application/octet-stream")],
                &stored,
            )
        }))
    };
    let storage_url = format!("http://localhost:{}/storage/blob", storage.port);

    let port = Arc::new(Mutex::new(0u16));
    let registry = {
        let port = port.clone();
        let manifest = manifest.clone();
        let storage_url = storage_url.clone();
        let (stored_digest, truncated_digest, insecure_digest, stalled_digest) = (
            stored_digest.clone(),
            truncated_digest.clone(),
            insecure_digest.clone(),
            stalled_digest.clone(),
        );
        FakeServer::start(Arc::new(move |req: &Request| {
            let port = *port.lock().unwrap();
            if req.path() == "/token" {
                let params = req.params();
                let has = |k: &str, v: &str| params.iter().any(|(pk, pv)| pk == k && pv == v);
                if !has("service", "fake-registry") || !has("scope", "repository:app:pull") {
                    return reply(400, &[], b"bad service or scope");
                }
                let token = match (req.method.as_str(), req.header("authorization")) {
                    // base64("berth:s3cret-pw")
                    ("GET", Some("Basic YmVydGg6czNjcmV0LXB3")) => "abc",
                    ("GET", Some(_)) => return reply(401, &[], b"{\"details\":\"bad password\"}"),
                    ("GET", None) => "anonymous",
                    ("POST", _)
                        if has("grant_type", "refresh_token")
                            && has("refresh_token", "refresh-1") =>
                    {
                        return reply(200, &[], br#"{"access_token":"abc","expires_in":300}"#)
                    }
                    _ => return reply(401, &[], b""),
                };
                let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
                return reply(
                    200,
                    &[("Content-Type", "application/json")],
                    body.as_bytes(),
                );
            }
            if req.header("authorization") != Some("Bearer abc") {
                let challenge = format!(
                    "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake-registry\",scope=\"repository:app:pull\""
                );
                return reply(
                    401,
                    &[("WWW-Authenticate", challenge.as_str())],
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                );
            }
            let path = req.path();
            if path == "/v2/app/manifests/v1" {
                return reply(200, &[("Content-Type", MEDIA_OCI_MANIFEST)], &manifest);
            }
            if path == format!("/v2/app/blobs/{stored_digest}") {
                return reply(307, &[("Location", storage_url.as_str())], b"");
            }
            if path == format!("/v2/app/blobs/{truncated_digest}") {
                return Reply::Truncated {
                    declared: 100,
                    body: b"only ten b".to_vec(),
                };
            }
            if path == format!("/v2/app/blobs/{stalled_digest}") {
                return Reply::Stalled {
                    declared: 100,
                    body: b"a start".to_vec(),
                };
            }
            if path == format!("/v2/app/blobs/{insecure_digest}") {
                return reply(307, &[("Location", "http://storage.invalid/blob")], b"");
            }
            reply(
                404,
                &[],
                br#"{"errors":[{"code":"NOT_FOUND","message":"nothing here"}]}"#,
            )
        }))
    };
    *port.lock().unwrap() = registry.port;

    let r = Reference::parse(&format!("127.0.0.1:{}/app:v1", registry.port)).expect("reference");
    let creds = Credentials::Basic {
        username: USER.to_string(),
        password: PASSWORD.to_string(),
    };
    let client = client();

    // Token with Basic credentials, then reused from the cache.
    let (desc, bytes) = client
        .resolve(&r, Some(&creds))
        .await
        .expect("resolve with a token");
    assert_eq!(&bytes[..], &manifest[..]);
    assert_eq!(desc.media_type, MEDIA_OCI_MANIFEST);
    client
        .resolve(&r, Some(&creds))
        .await
        .expect("resolve again");
    let token_requests = |server: &FakeServer| {
        server
            .requests()
            .iter()
            .filter(|q| q.path() == "/token")
            .count()
    };
    assert_eq!(token_requests(&registry), 1, "{:#?}", registry.requests());
    let last = registry.requests().pop().expect("a request");
    assert_eq!(last.header("authorization"), Some("Bearer abc"));

    // Redirected to another host: the token does not go along.
    let blob = client
        .fetch_blob(&r, &stored_digest, 0, Some(&creds))
        .await
        .expect("fetch redirected blob");
    assert_eq!(collect(blob).await, stored);
    let at_storage = storage.requests();
    assert_eq!(at_storage.len(), 1, "{at_storage:#?}");
    assert_eq!(
        at_storage[0].header("authorization"),
        None,
        "{at_storage:#?}"
    );

    // A body cut short is an error, not a short blob.
    let mut blob = client
        .fetch_blob(&r, &truncated_digest, 0, Some(&creds))
        .await
        .expect("start of a truncated blob");
    assert_eq!(blob.total, Some(100));
    let mut got = Vec::new();
    let mut failed = None;
    while let Some(item) = blob.body.next().await {
        match item {
            Ok(chunk) => got.extend_from_slice(&chunk),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let err = failed.expect("the stream ends with an error");
    assert!(matches!(err, RegistryError::Transport { .. }), "{err}");
    assert!(got.len() < 100);

    // No plain HTTP to a host that is neither loopback nor insecure, even by redirect.
    let err = client
        .fetch_blob(&r, &insecure_digest, 0, Some(&creds))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::InsecureRefused { host } if host == "storage.invalid"),
        "{err}"
    );

    // 404 with the registry's message.
    let err = client
        .fetch_blob(&r, &missing_digest(), 0, Some(&creds))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");

    // A body that stops coming fails after the stall timeout.
    let impatient = Client::with_options(
        RegistryConfig::default(),
        ClientOptions {
            stall_timeout: Duration::from_secs(1),
            ..ClientOptions::default()
        },
    )
    .expect("make client");
    let mut blob = impatient
        .fetch_blob(&r, &stalled_digest, 0, Some(&creds))
        .await
        .expect("start of a stalling blob");
    let first = blob.body.next().await.expect("a first item");
    assert_eq!(&first.expect("first bytes")[..], b"a start");
    let err = blob
        .body
        .next()
        .await
        .expect("an item after the stall")
        .unwrap_err();
    assert!(matches!(err, RegistryError::Stalled { .. }), "{err}");

    // HTTPS was tried once per client; plain HTTP was remembered after that.
    assert_eq!(registry.tls_hellos.load(Ordering::SeqCst), 2);

    // An identity token: the OAuth2 refresh-token grant.
    let before = token_requests(&registry);
    let identity = Credentials::IdentityToken("refresh-1".to_string());
    let fresh = self::client();
    fresh
        .resolve(&r, Some(&identity))
        .await
        .expect("resolve with an identity token");
    let posts: Vec<Request> = registry
        .requests()
        .into_iter()
        .filter(|q| q.path() == "/token")
        .skip(before)
        .collect();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(posts[0].method, "POST");

    // The token server refuses a wrong password; an anonymous token is not enough.
    let wrong = Credentials::Basic {
        username: USER.to_string(),
        password: "guess".to_string(),
    };
    let err = fresh.resolve(&r, Some(&wrong)).await.unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::Unauthorized {
                had_credentials: true,
                ..
            }
        ),
        "{err}"
    );
    let err = fresh.resolve(&r, None).await.unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::Unauthorized {
                had_credentials: false,
                ..
            }
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Checking credentials (`docker login`)

#[tokio::test]
async fn check_auth_asks_the_registry() {
    use integration_tests::registry::{Auth, Registry as Fixture};
    let basic = Fixture::start(Auth::basic(USER, PASSWORD));
    let token = Fixture::start(Auth::token(USER, PASSWORD));
    let open = Fixture::start(Auth::None);
    let good = Credentials::Basic {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    let bad = Credentials::Basic {
        username: USER.into(),
        password: "wrong".into(),
    };
    for registry in [&basic, &token] {
        let host = registry.host();
        client()
            .check_auth(&host, Some(&good))
            .await
            .unwrap_or_else(|e| panic!("{host}: good credentials refused: {e}"));
        let err = client().check_auth(&host, Some(&bad)).await.unwrap_err();
        assert!(
            matches!(
                err,
                RegistryError::Unauthorized {
                    had_credentials: true,
                    ..
                }
            ),
            "{host}: {err}"
        );
        let err = client().check_auth(&host, None).await.unwrap_err();
        assert!(
            matches!(
                err,
                RegistryError::Unauthorized {
                    had_credentials: false,
                    ..
                }
            ),
            "{host}: {err}"
        );
    }
    client()
        .check_auth(&open.host(), None)
        .await
        .expect("an open registry asks nothing");
}
