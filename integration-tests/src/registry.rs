//! A real image registry for the tests, and a proxy that breaks downloads.
//!
//! - [`Registry`] runs CNCF distribution (`docker-registry`) on a free
//!   127.0.0.1 port with its own temporary tree: the configuration, the
//!   filesystem storage (deletes enabled, no blob-descriptor cache, so a
//!   test that corrupts or deletes a blob file under [`Registry::blob_path`]
//!   sees the registry serve exactly what is on disk) and the log. It is
//!   plain HTTP: clients treat it as an insecure registry.
//! - [`Auth`] picks how the registry checks clients: not at all, HTTP Basic
//!   against an htpasswd file, or bearer tokens from a token server that the
//!   fixture runs itself (the flow Docker Hub and most registries use).
//! - [`FaultyProxy`] sits in front of a registry and cuts blob downloads
//!   after a set number of body bytes, until it is healed.
//!
//! Dropping a fixture, even while a test panics, stops its processes and
//! threads and removes its tree; when the test is panicking, the registry's
//! log is printed first.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::host;

/// The `service` the registry names in its bearer challenges, and the
/// audience of the tokens.
pub const SERVICE: &str = "berth-test-registry";
/// The issuer of the tokens, and the subject of the signing certificate.
pub const ISSUER: &str = "berth-test-issuer";
/// How long the registry may take to answer after it was started.
pub const REGISTRY_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Lifetime of an issued token, in seconds.
pub const TOKEN_LIFETIME: u64 = 300;

/// Fails the test unless `program` is on PATH, naming the package to install.
pub fn require_program(program: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{program} is not installed: `apt-get install {package}` (or `make deps`)")
    })
}

/// Runs `cmd` with stdin from /dev/null and collects its output; kills it
/// and panics when it has not exited after `timeout`.
#[track_caller]
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not exit within {timeout:?}; killed it");
            }
            Err(e) => panic!("wait for {what}: {e}"),
        }
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Picks a free 127.0.0.1 port: binds port 0 and lets it go again.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

// ---------------------------------------------------------------------------
// Authentication modes

/// How the registry authenticates clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Anyone may pull and push.
    None,
    /// HTTP Basic against an htpasswd file with this one user.
    Basic { user: String, password: String },
    /// Bearer tokens from the fixture's token server, which hands them to
    /// this one user (HTTP Basic on the token request), for any scope asked.
    Token { user: String, password: String },
}

impl Auth {
    /// [`Auth::Basic`] from string slices.
    pub fn basic(user: &str, password: &str) -> Auth {
        Auth::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        }
    }

    /// [`Auth::Token`] from string slices.
    pub fn token(user: &str, password: &str) -> Auth {
        Auth::Token {
            user: user.to_owned(),
            password: password.to_owned(),
        }
    }

    /// The user and password, unless the registry is open.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        match self {
            Auth::None => None,
            Auth::Basic { user, password } | Auth::Token { user, password } => {
                Some((user, password))
            }
        }
    }

    /// `user:password` as skopeo's `--creds` wants it, unless the registry is open.
    pub fn creds_arg(&self) -> Option<String> {
        self.credentials().map(|(u, p)| format!("{u}:{p}"))
    }
}

// ---------------------------------------------------------------------------
// The registry

/// A running `docker-registry` on 127.0.0.1; see the module documentation.
pub struct Registry {
    child: Option<Child>,
    port: u16,
    auth: Auth,
    tokens: Option<TokenServer>,
    storage: PathBuf,
    log: PathBuf,
    tmp: Option<tempfile::TempDir>,
}

impl Registry {
    /// Starts a registry with `auth` (and its token server for
    /// [`Auth::Token`]) and waits until `/v2/` answers (200, or 401 when it
    /// wants credentials).
    #[track_caller]
    pub fn start(auth: Auth) -> Registry {
        let program = require_program("docker-registry", "docker-registry");
        let tmp = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .expect("make registry temp dir");
        let dir = tmp.path().to_path_buf();
        let storage = dir.join("storage");
        fs::create_dir_all(&storage).expect("mkdir registry storage");
        let log = dir.join("registry.log");
        let mut registry = Registry {
            child: None,
            port: 0,
            tokens: None,
            auth: auth.clone(),
            storage,
            log,
            tmp: Some(tmp),
        };
        let auth_section = match &auth {
            Auth::None => String::new(),
            Auth::Basic { user, password } => {
                require_program("htpasswd", "apache2-utils");
                let line = host("htpasswd", &["-Bbn", user, password]);
                let file = dir.join("htpasswd");
                fs::write(&file, line.trim_end().to_owned() + "\n").expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: berth-test-registry\n    path: {}\n",
                    file.display()
                )
            }
            Auth::Token { user, password } => {
                let tokens = TokenServer::start(&dir, user, password);
                let section = format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: {SERVICE}\n    \
                     issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    tokens.addr,
                    tokens.cert.display()
                );
                registry.tokens = Some(tokens);
                section
            }
        };
        // Another process may take the port between picking and binding it:
        // then the registry exits at once, and we try another.
        for attempt in 1.. {
            let port = free_port();
            let config = dir.join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: warn\n  formatter: text\n  accesslog:\n    disabled: true\n\
                     storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
                     maintenance:\n    uploadpurging:\n      enabled: false\n\
                     http:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-secret\n\
                     {auth_section}",
                    storage = registry.storage.display()
                ),
            )
            .expect("write registry config");
            let log = File::create(&registry.log).expect("create registry log");
            let child = Command::new(&program)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
            registry.child = Some(child);
            registry.port = port;
            match registry.wait_ready() {
                Ok(()) => return registry,
                Err(log) if attempt < 5 && log.contains("address already in use") => {
                    if let Some(mut child) = registry.child.take() {
                        let _ = child.wait();
                    }
                }
                Err(log) => panic!("docker-registry exited while starting; its log:\n{log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Polls `GET /v2/` until it answers; `Err(log)` if the process exits first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + REGISTRY_START_TIMEOUT;
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return Err(self.log_tail());
                }
            }
            if let Ok(status) = http_status(&self.host(), "/v2/") {
                if status == 200 || status == 401 {
                    return Ok(());
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer within {REGISTRY_START_TIMEOUT:?}; its log:\n{}",
                self.log_tail()
            );
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// How the registry authenticates clients.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The root of the registry's filesystem storage.
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// The file holding a blob (`sha256:<hex>` or just the hex) in the storage.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        assert!(
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "not a sha256 digest: {digest:?}"
        );
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The token endpoint (`http://127.0.0.1:PORT/token`) in token mode.
    pub fn token_realm(&self) -> Option<String> {
        self.tokens
            .as_ref()
            .map(|t| format!("http://{}/token", t.addr))
    }

    /// How many tokens the token server issued (0 unless in token mode).
    pub fn token_requests(&self) -> usize {
        self.tokens
            .as_ref()
            .map_or(0, |t| t.state.issued.load(Ordering::SeqCst))
    }

    /// How many token requests the token server refused (missing or wrong
    /// credentials).
    pub fn token_refusals(&self) -> usize {
        self.tokens
            .as_ref()
            .map_or(0, |t| t.state.refused.load(Ordering::SeqCst))
    }

    /// The last lines of the registry's log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.tokens.take();
        if thread::panicking() {
            eprintln!(
                "--- docker-registry log ({}) ---\n{}",
                self.host(),
                self.log_tail()
            );
        }
        if let Some(tmp) = self.tmp.take() {
            if let Err(e) = tmp.close() {
                eprintln!("removing the registry's temp dir: {e}");
            }
        }
    }
}

/// The status code of `GET path` on `host`, over one short connection.
fn http_status(host: &str, path: &str) -> io::Result<u16> {
    let addr: SocketAddr = host
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("status line {line:?}")))
}

// ---------------------------------------------------------------------------
// The token server

/// A bearer-token server (the Docker registry token protocol) on its own
/// 127.0.0.1 port: `GET /token?service=S&scope=T:NAME:ACTIONS` with HTTP
/// Basic credentials returns an RS256 JWT granting exactly the scopes asked;
/// missing or wrong credentials get 401.
struct TokenServer {
    addr: SocketAddr,
    cert: PathBuf,
    state: Arc<TokenState>,
    thread: Option<JoinHandle<()>>,
}

struct TokenState {
    user: String,
    password: String,
    key: PathBuf,
    /// The certificate as base64 DER, for the `x5c` header.
    x5c: String,
    issued: AtomicUsize,
    refused: AtomicUsize,
    stop: AtomicBool,
}

impl TokenServer {
    /// Makes a signing key and a self-signed certificate in `dir` and
    /// starts serving.
    fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        require_program("openssl", "openssl");
        let key = dir.join("token-key.pem");
        let cert = dir.join("token-cert.pem");
        host(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={ISSUER}"),
                "-days",
                "2",
                "-keyout",
                key.to_str().expect("utf-8 path"),
                "-out",
                cert.to_str().expect("utf-8 path"),
            ],
        );
        // A PEM body is the base64 of the DER: exactly what x5c wants.
        let pem = fs::read_to_string(&cert).expect("read token certificate");
        let x5c: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token server");
        let addr = listener.local_addr().expect("token server address");
        let state = Arc::new(TokenState {
            user: user.to_owned(),
            password: password.to_owned(),
            key,
            x5c,
            issued: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let shared = Arc::clone(&state);
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    let _ = serve_token_request(conn, &shared);
                });
            }
        });
        TokenServer {
            addr,
            cert,
            state,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads an HTTP request head (up to the blank line); `None` on EOF first.
fn read_request_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 64 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "huge head"));
        }
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

fn respond(stream: &mut TcpStream, status: &str, extra: &str, body: &str) -> io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra}\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn serve_token_request(mut stream: TcpStream, state: &TokenState) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let Some(head) = read_request_head(&mut stream)? else {
        return Ok(());
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" || path != "/token" {
        let body = json!({"errors": [{"code": "NOT_FOUND", "message": "only GET /token"}]});
        return respond(&mut stream, "404 Not Found", "", &body.to_string());
    }
    let authorization = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_owned())
    });
    let authorized = authorization
        .as_deref()
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| base64_decode(b64.trim()))
        .is_some_and(|pair| pair == format!("{}:{}", state.user, state.password).as_bytes());
    if !authorized {
        state.refused.fetch_add(1, Ordering::SeqCst);
        let body =
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]});
        return respond(
            &mut stream,
            "401 Unauthorized",
            "WWW-Authenticate: Basic realm=\"berth-test-token\"\r\n",
            &body.to_string(),
        );
    }
    let mut service = SERVICE.to_owned();
    let mut scopes = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "service" => service = percent_decode(value),
            "scope" => scopes.extend(percent_decode(value).split(' ').map(str::to_owned)),
            _ => {}
        }
    }
    let access: Vec<Value> = scopes.iter().filter_map(|s| parse_scope(s)).collect();
    let token = match sign_token(state, &service, access) {
        Ok(token) => token,
        Err(e) => {
            let body = json!({"errors": [{"code": "UNKNOWN", "message": e}]});
            return respond(
                &mut stream,
                "500 Internal Server Error",
                "",
                &body.to_string(),
            );
        }
    };
    state.issued.fetch_add(1, Ordering::SeqCst);
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": TOKEN_LIFETIME,
        "issued_at": rfc3339_now(),
    });
    respond(&mut stream, "200 OK", "", &body.to_string())
}

/// `repository:library/busybox:pull,push` → `{type, name, actions}`. The
/// name may itself hold colons (a registry host with a port): the type ends
/// at the first colon and the actions start after the last.
fn parse_scope(scope: &str) -> Option<Value> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
    Some(json!({"type": kind, "name": name, "actions": actions}))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The current time as RFC 3339 in UTC.
fn rfc3339_now() -> String {
    let secs = unix_now();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An RS256 JWT for `audience` granting `access`, its header carrying the
/// signing certificate (`x5c`), which distribution checks against its
/// `rootcertbundle`.
fn sign_token(state: &TokenState, audience: &str, access: Vec<Value>) -> Result<String, String> {
    static JTI: AtomicU32 = AtomicU32::new(0);
    let now = unix_now();
    let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [state.x5c]});
    let claims = json!({
        "iss": ISSUER,
        "sub": state.user,
        "aud": audience,
        "exp": now + TOKEN_LIFETIME,
        // A little slack for clocks that disagree by a second.
        "nbf": now.saturating_sub(10),
        "iat": now,
        "jti": format!("berth-{}-{}", std::process::id(), JTI.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&state.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn openssl: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("openssl stdin")?;
    stdin
        .write_all(signing_input.as_bytes())
        .map_err(|e| format!("write to openssl: {e}"))?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for openssl: {e}"))?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(format!(
            "openssl dgst -sign failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(format!("{signing_input}.{}", base64url(&out.stdout)))
}

/// Base64url without padding (JWT segments).
fn base64url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// Standard base64, padding optional; `None` if malformed.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

/// Decodes `%XX` escapes and `+` (a query string's space).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let escaped = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = escaped {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// The faulty proxy

/// A TCP proxy on a free 127.0.0.1 port in front of a registry that cuts
/// blob downloads short.
///
/// Each client connection gets its own upstream connection and carries one
/// request: the proxy reads the first request head, replaces any
/// `Connection` header with `Connection: close` (so the registry closes the
/// connection after its response, and the client opens a new one for its
/// next request), and then copies bytes both ways. When that request is a
/// `GET /v2/<name>/blobs/sha256:<hex>` and the response is 200 or 206, the
/// proxy forwards the status line and headers whole and then only
/// `cut_after` bytes of the body, and closes both connections: the client
/// sees a body shorter than its Content-Length. Everything else (manifests,
/// HEAD requests, errors, uploads, a TLS probe) passes untouched.
pub struct FaultyProxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    thread: Option<JoinHandle<()>>,
}

struct ProxyShared {
    upstream: String,
    /// Body bytes to let through; `u64::MAX` when healed.
    cut_after: AtomicU64,
    cuts: AtomicUsize,
    blob_gets: AtomicUsize,
    stop: AtomicBool,
    /// The open connections (client, upstream) by number, to shut them
    /// down when the proxy goes.
    conns: Mutex<HashMap<u64, [TcpStream; 2]>>,
    next_conn: AtomicU64,
}

const HEALED: u64 = u64::MAX;

impl FaultyProxy {
    /// Starts a proxy to `upstream` (`127.0.0.1:PORT`) that cuts blob
    /// downloads after `cut_after` body bytes.
    pub fn start(upstream: &str, cut_after: u64) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(ProxyShared {
            upstream: upstream.to_owned(),
            cut_after: AtomicU64::new(cut_after),
            cuts: AtomicUsize::new(0),
            blob_gets: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if accept_shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = Arc::clone(&accept_shared);
                thread::spawn(move || {
                    let n = shared.next_conn.fetch_add(1, Ordering::SeqCst);
                    let _ = proxy_connection(conn, n, &shared);
                    shared
                        .conns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&n);
                });
            }
        });
        FaultyProxy {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT` of the proxy: use it in place of the registry's.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Cuts later blob downloads after `bytes` body bytes, or (`None`)
    /// lets them through whole. Connections already open keep their setting.
    pub fn set_cut_after(&self, bytes: Option<u64>) {
        self.shared
            .cut_after
            .store(bytes.unwrap_or(HEALED), Ordering::SeqCst);
    }

    /// How many responses the proxy has cut short.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// How many blob GETs passed through the proxy, cut or not.
    pub fn blob_gets(&self) -> usize {
        self.shared.blob_gets.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let conns =
            std::mem::take(&mut *self.shared.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for conn in conns.values().flatten() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

/// Whether `bytes` begin like an HTTP request line (an upper-case method
/// and a space), as opposed to, say, a TLS ClientHello.
fn looks_like_http(bytes: &[u8]) -> bool {
    let method_len = bytes.iter().take_while(|b| b.is_ascii_uppercase()).count();
    method_len > 0 && bytes.get(method_len) == Some(&b' ')
}

/// Whether a request line is `GET /v2/<name>/blobs/sha256:<hex> ...`.
fn is_blob_get(request_line: &str) -> bool {
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    method == "GET"
        && path.starts_with("/v2/")
        && path
            .rsplit_once("/blobs/")
            .is_some_and(|(name, digest)| name.len() > 3 && digest.starts_with("sha256:"))
}

fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

fn proxy_connection(mut client: TcpStream, n: u64, shared: &ProxyShared) -> io::Result<()> {
    let mut upstream = TcpStream::connect(&shared.upstream)?;
    let clones = [client.try_clone()?, upstream.try_clone()?];
    shared
        .conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(n, clones);
    let cut_after = shared.cut_after.load(Ordering::SeqCst);

    // The first request head (or whatever the client sends, if not HTTP).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut cut = None;
    loop {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            upstream.write_all(&buf)?;
            let _ = upstream.shutdown(Shutdown::Write);
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !looks_like_http(&buf) || buf.len() > 64 * 1024 {
            upstream.write_all(&buf)?;
            break;
        }
        if let Some(end) = find_head_end(&buf) {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
            let request_line = lines.next().unwrap_or_default();
            if is_blob_get(request_line) {
                shared.blob_gets.fetch_add(1, Ordering::SeqCst);
                if cut_after != HEALED {
                    cut = Some(cut_after);
                }
            }
            let mut rewritten = format!("{request_line}\r\n");
            for line in lines {
                let name = line.split(':').next().unwrap_or("").trim();
                if !name.eq_ignore_ascii_case("connection")
                    && !name.eq_ignore_ascii_case("keep-alive")
                {
                    rewritten.push_str(line);
                    rewritten.push_str("\r\n");
                }
            }
            rewritten.push_str("Connection: close\r\n\r\n");
            upstream.write_all(rewritten.as_bytes())?;
            upstream.write_all(&buf[end..])?;
            break;
        }
    }

    // The rest of the client's bytes (a request body) go up in a thread.
    let mut client_read = client.try_clone()?;
    let mut upstream_write = upstream.try_clone()?;
    let up = thread::spawn(move || {
        let _ = io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(Shutdown::Write);
    });

    let result = match cut {
        None => io::copy(&mut upstream, &mut client).map(|_| ()),
        Some(limit) => forward_cut(&mut upstream, &mut client, limit, shared),
    };
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = up.join();
    result
}

/// Forwards a response's head whole and then at most `limit` body bytes of
/// a 200 or 206 response; counts a cut when the body was longer.
fn forward_cut(
    upstream: &mut TcpStream,
    client: &mut TcpStream,
    limit: u64,
    shared: &ProxyShared,
) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let end = loop {
        let n = upstream.read(&mut chunk)?;
        if n == 0 {
            return client.write_all(&buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
    };
    let status_line = String::from_utf8_lossy(&buf[..end]);
    let status = status_line.split(' ').nth(1).unwrap_or("");
    if status != "200" && status != "206" {
        client.write_all(&buf)?;
        io::copy(upstream, client)?;
        return Ok(());
    }
    client.write_all(&buf[..end])?;
    let mut body = buf[end..].to_vec();
    let mut sent = 0u64;
    loop {
        let room = limit - sent;
        if body.len() as u64 > room {
            client.write_all(&body[..room as usize])?;
            shared.cuts.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        client.write_all(&body)?;
        sent += body.len() as u64;
        let n = upstream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        body = chunk[..n].to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_with_colons_in_names() {
        assert_eq!(
            parse_scope("repository:127.0.0.1:5000/a/b:pull,push"),
            Some(
                json!({"type": "repository", "name": "127.0.0.1:5000/a/b", "actions": ["pull", "push"]})
            )
        );
        assert_eq!(
            percent_decode("repository%3Aa%2Fb%3Apull+x%"),
            "repository:a/b:pull x%"
        );
    }

    #[test]
    fn blob_gets_are_recognised() {
        assert!(is_blob_get("GET /v2/a/b/blobs/sha256:00ab HTTP/1.1"));
        assert!(!is_blob_get("HEAD /v2/a/blobs/sha256:00ab HTTP/1.1"));
        assert!(!is_blob_get("GET /v2/a/manifests/sha256:00ab HTTP/1.1"));
        assert!(!is_blob_get("GET /v2/a/blobs/uploads/x HTTP/1.1"));
        assert!(looks_like_http(b"GET / HTTP/1.1"));
        assert!(!looks_like_http(b"\x16\x03\x01"));
    }

    #[test]
    fn dates_are_rfc3339() {
        let now = rfc3339_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    }
}
