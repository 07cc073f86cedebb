//! Operating berthd: `-H` listeners (unix, TCP, systemd's fd://), mutual TLS
//! with the real docker CLI and with berth (flags, environment, and a
//! context both CLIs share), daemon.json, and the Prometheus endpoints of
//! berthd and berth-supervisord, scraped and parsed with a text-format
//! parser.
//!
//! TCP listeners are on the host's loopback (as the registry fixtures'),
//! except the one on 0.0.0.0, which lives in a network namespace of its own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::engine::{
    berth_binary, berthd_binary, busybox_tar, docker_binary, Berthd, DockerOutput,
};
use integration_tests::images::{image_set, push};
use integration_tests::registry::{require_program, Auth, Registry};
use integration_tests::require_root;
use integration_tests::supervisor::{child_output, Supervisor};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A port free on the loopback now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A CA that signs certificates for the tests.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("test set-up");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("test set-up");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).expect("test set-up").pem();
        Ca { params, key, pem }
    }

    /// A certificate and its key, in PEM.
    fn sign(&self, names: &[&str], server: bool, expired: bool) -> (String, String) {
        let key = KeyPair::generate().expect("test set-up");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("test set-up");
        params
            .distinguished_name
            .push(DnType::CommonName, if server { "berthd" } else { "client" });
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("test set-up");
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes ca.pem, cert.pem and key.pem into `dir` (DOCKER_CERT_PATH's layout).
fn write_cert_dir(dir: &Path, ca: &str, cert: &(String, String)) -> PathBuf {
    std::fs::create_dir_all(dir).expect("test set-up");
    std::fs::write(dir.join("ca.pem"), ca).expect("test set-up");
    std::fs::write(dir.join("cert.pem"), &cert.0).expect("test set-up");
    std::fs::write(dir.join("key.pem"), &cert.1).expect("test set-up");
    dir.to_path_buf()
}

/// The docker CLI with no daemon preset (the test says which).
fn docker(d: &Berthd, envs: &[(&str, String)], args: &[&str]) -> DockerOutput {
    docker_input(d, envs, args, None)
}

fn docker_input(
    d: &Berthd,
    envs: &[(&str, String)],
    args: &[&str],
    input: Option<&[u8]>,
) -> DockerOutput {
    cli_input(&docker_binary(), d, envs, args, input)
}

/// berth with no daemon preset, the same docker config directory as
/// [`docker`]'s.
fn berth(d: &Berthd, envs: &[(&str, String)], args: &[&str]) -> DockerOutput {
    cli_input(&berth_binary(), d, envs, args, None)
}

fn cli_input(
    program: &Path,
    d: &Berthd,
    envs: &[(&str, String)],
    args: &[&str],
    input: Option<&[u8]>,
) -> DockerOutput {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("DOCKER_CONFIG", d.dir().join("docker-config"))
        .env_remove("DOCKER_HOST")
        .env_remove("BERTH_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn docker");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("test set-up");
        stdin.write_all(input).expect("test set-up");
    }
    let out = child_output(child, Duration::from_secs(60), "docker");
    DockerOutput {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A berthd serving mutual TLS on a loopback port, its CA (which signed
/// its certificate and a client's, in `client_dir`), another CA, and the
/// directory the certificates live in.
struct TlsDaemon {
    certs: tempfile::TempDir,
    ca: Ca,
    other_ca: Ca,
    client_dir: PathBuf,
    host: String,
    d: Berthd,
}

fn tls_daemon() -> TlsDaemon {
    let certs = tempfile::tempdir().expect("test set-up");
    let ca = Ca::new("berth test CA");
    let other_ca = Ca::new("another CA");
    let server = ca.sign(&["localhost", "127.0.0.1"], true, false);
    let server_dir = write_cert_dir(&certs.path().join("server"), &ca.pem, &server);
    let client_dir = write_cert_dir(
        &certs.path().join("client"),
        &ca.pem,
        &ca.sign(&["client"], false, false),
    );
    let port = free_port();
    let host = format!("tcp://127.0.0.1:{port}");
    let d = Berthd::start_with_args(&[
        "--bridge",
        "none",
        "-H",
        &host,
        "--tlsverify",
        "--tlscacert",
        &server_dir.join("ca.pem").to_string_lossy(),
        "--tlscert",
        &server_dir.join("cert.pem").to_string_lossy(),
        "--tlskey",
        &server_dir.join("key.pem").to_string_lossy(),
    ]);
    TlsDaemon {
        certs,
        ca,
        other_ca,
        client_dir,
        host,
        d,
    }
}

#[test]
fn mutual_tls_with_the_docker_cli() {
    require_root();
    let TlsDaemon {
        certs,
        ca,
        other_ca,
        client_dir,
        host,
        d,
    } = tls_daemon();
    // The flags, as a user types them.
    let flags: Vec<String> = vec![
        "--tlsverify".into(),
        "--tlscacert".into(),
        client_dir.join("ca.pem").to_string_lossy().into_owned(),
        "--tlscert".into(),
        client_dir.join("cert.pem").to_string_lossy().into_owned(),
        "--tlskey".into(),
        client_dir.join("key.pem").to_string_lossy().into_owned(),
        "-H".into(),
        host.clone(),
    ];
    let with_flags = |args: &[&str]| {
        let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        docker(&d, &[], &all)
    };
    let out = with_flags(&["version", "--format", "{{.Server.APIVersion}}"]).ok();
    assert_eq!(out.stdout.trim(), berth_engine::API_VERSION);
    let out = with_flags(&["run", "--rm", "busybox", "echo", "over tls"]).ok();
    assert_eq!(out.stdout, "over tls\n");
    // The environment, as scripts set it.
    let env = vec![
        ("DOCKER_HOST", host.clone()),
        ("DOCKER_TLS_VERIFY", "1".to_string()),
        (
            "DOCKER_CERT_PATH",
            client_dir.to_string_lossy().into_owned(),
        ),
    ];
    let out = docker(
        &d,
        &env,
        &["run", "-d", "--name", "long", "busybox", "sleep", "300"],
    )
    .ok();
    let id = out.stdout.trim().to_string();
    let out = docker(&d, &env, &["ps", "--format", "{{.ID}} {{.Names}}"]).ok();
    assert!(out.stdout.contains("long"), "{}", out.stdout);
    assert!(id.starts_with(out.stdout.split_whitespace().next().expect("test set-up")));
    // The hijacked streams over TLS: exec with stdin, run -i.
    let out = docker_input(
        &d,
        &env,
        &["exec", "-i", "long", "sh", "-c", "cat; echo done"],
        Some(b"through exec\n"),
    )
    .ok();
    assert_eq!(out.stdout, "through exec\ndone\n");
    let out = docker_input(
        &d,
        &env,
        &["run", "--rm", "-i", "busybox", "tr", "a-z", "A-Z"],
        Some(b"attached\n"),
    )
    .ok();
    assert_eq!(out.stdout, "ATTACHED\n");
    docker(&d, &env, &["rm", "-f", "long"]).ok();

    // Refused: no client certificate, one from another CA, an expired one.
    let out = docker(
        &d,
        &[],
        &[
            "--tls",
            "--tlscacert",
            &client_dir.join("ca.pem").to_string_lossy(),
            "-H",
            &host,
            "version",
            "--format",
            "{{.Server.APIVersion}}",
        ],
    );
    assert_ne!(out.code, 0, "no client certificate: {out:?}");
    assert!(out.stdout.trim().is_empty(), "{out:?}");
    let foreign_dir = write_cert_dir(
        &certs.path().join("foreign"),
        &ca.pem,
        &other_ca.sign(&["client"], false, false),
    );
    let expired_dir = write_cert_dir(
        &certs.path().join("expired"),
        &ca.pem,
        &ca.sign(&["client"], false, true),
    );
    for dir in [&foreign_dir, &expired_dir] {
        let env = vec![
            ("DOCKER_HOST", host.clone()),
            ("DOCKER_TLS_VERIFY", "1".to_string()),
            ("DOCKER_CERT_PATH", dir.to_string_lossy().into_owned()),
        ];
        let out = docker(&d, &env, &["version", "--format", "{{.Server.APIVersion}}"]);
        assert_ne!(out.code, 0, "{}: {out:?}", dir.display());
        assert!(out.stdout.trim().is_empty(), "{out:?}");
    }
    // Plain HTTP on the TLS port is not served.
    let out = docker(
        &d,
        &[],
        &["-H", &host, "version", "--format", "{{.Server.APIVersion}}"],
    );
    assert_ne!(out.code, 0, "{out:?}");
    let log = d.log();
    assert!(log.contains("TLS handshake refused"), "{log}");
}

#[test]
fn berth_over_mutual_tls_with_flags_environment_and_a_shared_context() {
    require_root();
    let TlsDaemon {
        certs,
        ca: _,
        other_ca,
        client_dir,
        host,
        d,
    } = tls_daemon();
    let file = |dir: &Path, f: &str| dir.join(f).to_string_lossy().into_owned();
    // The flags, as a user types them.
    let flags: Vec<String> = vec![
        "--tlsverify".into(),
        "--tlscacert".into(),
        file(&client_dir, "ca.pem"),
        "--tlscert".into(),
        file(&client_dir, "cert.pem"),
        "--tlskey".into(),
        file(&client_dir, "key.pem"),
        "-H".into(),
        host.clone(),
    ];
    let with_flags = |args: &[&str], input: Option<&[u8]>| {
        let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        cli_input(&berth_binary(), &d, &[], &all, input)
    };
    let out = with_flags(&["version", "--format", "{{.Server.APIVersion}}"], None).ok();
    assert_eq!(out.stdout.trim(), berth_engine::API_VERSION);
    let out = with_flags(&["run", "--rm", "busybox", "echo", "over tls"], None).ok();
    assert_eq!(out.stdout, "over tls\n");
    with_flags(
        &["run", "-d", "--name", "long", "busybox", "sleep", "300"],
        None,
    )
    .ok();
    // The hijacked streams over TLS: exec and run with stdin, its end
    // passed on (the write side closed) so `cat` ends.
    let out = with_flags(
        &["exec", "-i", "long", "sh", "-c", "cat; echo done"],
        Some(b"through exec\n"),
    )
    .ok();
    assert_eq!(out.stdout, "through exec\ndone\n");
    let out = with_flags(
        &["run", "--rm", "-i", "busybox", "tr", "a-z", "A-Z"],
        Some(b"attached\n"),
    )
    .ok();
    assert_eq!(out.stdout, "ATTACHED\n");
    // The environment, as scripts set it.
    let env = vec![
        ("DOCKER_HOST", host.clone()),
        ("DOCKER_TLS_VERIFY", "1".to_string()),
        (
            "DOCKER_CERT_PATH",
            client_dir.to_string_lossy().into_owned(),
        ),
    ];
    let out = berth(&d, &env, &["ps", "--format", "{{.Names}}"]).ok();
    assert_eq!(out.stdout, "long\n");

    // Refused: the server's certificate checked against another CA; no
    // client certificate; one from another CA.
    let foreign_dir = write_cert_dir(
        &certs.path().join("foreign"),
        &other_ca.pem,
        &other_ca.sign(&["client"], false, false),
    );
    for (what, args) in [
        (
            "server from an unknown CA",
            vec!["--tlsverify", "--tlscacert", &file(&foreign_dir, "ca.pem")],
        ),
        (
            "no client certificate",
            vec!["--tlsverify", "--tlscacert", &file(&client_dir, "ca.pem")],
        ),
        (
            "client from another CA",
            vec![
                "--tls",
                "--tlscert",
                &file(&foreign_dir, "cert.pem"),
                "--tlskey",
                &file(&foreign_dir, "key.pem"),
            ],
        ),
    ] {
        let mut all = args.clone();
        all.extend(["-H", &host, "ps"]);
        let out = berth(&d, &[], &all);
        assert_ne!(out.code, 0, "{what}: {out:?}");
        assert!(out.stdout.is_empty(), "{what}: {out:?}");
        let err = out.stderr.to_lowercase();
        assert!(
            err.contains("certificate") || err.contains("alert"),
            "{what}: {out:?}"
        );
    }
    // Plain HTTP to the TLS port gets no answer it takes.
    let out = berth(&d, &[], &["-H", &host, "ps"]);
    assert_ne!(out.code, 0, "{out:?}");

    // A context made by berth, used by berth and seen by docker.
    let spec = format!(
        "host={host},ca={},cert={},key={}",
        file(&client_dir, "ca.pem"),
        file(&client_dir, "cert.pem"),
        file(&client_dir, "key.pem")
    );
    let out = berth(
        &d,
        &[],
        &[
            "context",
            "create",
            "tlsbox",
            "--description",
            "berthd over TLS",
            "--docker",
            &spec,
        ],
    )
    .ok();
    assert_eq!(out.stdout, "tlsbox\n");
    assert!(
        out.stderr.contains("Successfully created context"),
        "{out:?}"
    );
    berth(&d, &[], &["context", "create", "tlsbox", "--docker", &spec])
        .fails_with(1, "already exists");
    let out = berth(
        &d,
        &[],
        &["--context", "tlsbox", "ps", "--format", "{{.Names}}"],
    )
    .ok();
    assert_eq!(out.stdout, "long\n");
    let out = berth(
        &d,
        &[("DOCKER_CONTEXT", "tlsbox".into())],
        &["exec", "long", "echo", "from DOCKER_CONTEXT"],
    )
    .ok();
    assert_eq!(out.stdout, "from DOCKER_CONTEXT\n");
    berth(&d, &[], &["-H", &host, "--context", "tlsbox", "ps"])
        .fails_with(1, "either specify --host or --context");
    berth(&d, &[], &["context", "use", "tlsbox"]).ok();
    let out = berth(&d, &[], &["ps", "--format", "{{.Names}}"]).ok();
    assert_eq!(out.stdout, "long\n");
    let out = berth(&d, &[], &["context", "show"]).ok();
    assert_eq!(out.stdout, "tlsbox\n");
    // docker reads berth's store: the list, the current one, and the
    // daemon through the context's TLS files.
    let out = docker(
        &d,
        &[],
        &[
            "context",
            "ls",
            "--format",
            "{{.Name}} {{.Current}} {{.DockerEndpoint}} {{.Description}}",
        ],
    )
    .ok();
    assert!(
        out.stdout
            .contains(&format!("tlsbox true {host} berthd over TLS\n")),
        "{}",
        out.stdout
    );
    let out = docker(&d, &[], &["context", "inspect", "tlsbox"]).ok();
    let berth_view = berth(&d, &[], &["context", "inspect", "tlsbox"]).ok();
    assert_eq!(out.stdout, berth_view.stdout);
    let out = docker(&d, &[], &["ps", "--format", "{{.Names}}"]).ok();
    assert_eq!(out.stdout, "long\n");
    // A context docker made, used by berth.
    docker(
        &d,
        &[],
        &["context", "create", "fromdocker", "--docker", &spec],
    )
    .ok();
    let out = berth(
        &d,
        &[],
        &["--context", "fromdocker", "ps", "--format", "{{.Names}}"],
    )
    .ok();
    assert_eq!(out.stdout, "long\n");
    // In use: removed only with -f, and then the default is current again.
    berth(&d, &[], &["context", "rm", "tlsbox"]).fails_with(1, "in use");
    berth(&d, &[], &["context", "rm", "-f", "tlsbox", "fromdocker"]).ok();
    let out = docker(&d, &[], &["context", "show"]).ok();
    assert_eq!(out.stdout, "default\n");
    with_flags(&["rm", "-f", "long"], None).ok();
}

/// Runs berthd to its exit (it is expected to refuse to start).
fn berthd_refuses(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("test set-up");
    let mut cmd = Command::new(berthd_binary());
    cmd.args(args)
        .arg("--data-root")
        .arg(dir.path().join("data"))
        .arg("--exec-root")
        .arg(dir.path().join("run"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = child_output(
        cmd.spawn().expect("test set-up"),
        Duration::from_secs(30),
        "berthd",
    );
    assert!(!out.status.success(), "berthd {args:?} started");
    // Nothing was made.
    assert!(
        !dir.path().join("data").exists(),
        "berthd {args:?} made its data root"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn plain_tcp_off_loopback_needs_tls_false() {
    require_root();
    let err = berthd_refuses(&["--bridge", "none", "-H", "tcp://0.0.0.0:2375"]);
    assert!(
        err.contains("without encryption") && err.contains("--tls=false"),
        "{err}"
    );
    let err = berthd_refuses(&["-H", "ssh://host"]);
    assert!(err.contains("unix://, tcp:// or fd://"), "{err}");
    let err = berthd_refuses(&["-H", "fd://"]);
    assert!(err.contains("no sockets were passed by systemd"), "{err}");
    let err = berthd_refuses(&[
        "-H",
        "tcp://127.0.0.1:2376",
        "--tlsverify",
        "--tlscert",
        "/nonexistent/cert.pem",
        "--tlskey",
        "/nonexistent/key.pem",
    ]);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");

    // Said plainly, it is served (on every address of its own namespace).
    let d = Berthd::start_networked(&[
        "--bridge",
        "none",
        "-H",
        "tcp://0.0.0.0:2375",
        "--tls=false",
    ]);
    let out = d
        .in_netns(&docker_binary().to_string_lossy())
        .args([
            "-H",
            "tcp://127.0.0.1:2375",
            "version",
            "--format",
            "{{.Server.APIVersion}}",
        ])
        .env("DOCKER_CONFIG", d.dir().join("docker-config"))
        .output()
        .expect("test set-up");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        d.log().contains("without encryption (--tls=false)"),
        "{}",
        d.log()
    );
}

#[test]
fn plain_tcp_on_loopback_is_served_with_a_warning() {
    let port = free_port();
    let host = format!("tcp://127.0.0.1:{port}");
    let d = Berthd::start_with_args(&["--bridge", "none", "-H", &host]);
    let out = docker(
        &d,
        &[("DOCKER_HOST", host.clone())],
        &["run", "--rm", "busybox", "echo", "tcp"],
    )
    .ok();
    assert_eq!(out.stdout, "tcp\n");
    // The unix socket given with it is served too.
    d.docker(&["ps"]).ok();
    assert!(d.log().contains("without encryption"), "{}", d.log());
}

#[test]
fn socket_activation_and_readiness() {
    require_root();
    let dir = tempfile::Builder::new()
        .prefix("bsa")
        .tempdir_in("/tmp")
        .expect("test set-up");
    let sock = dir.path().join("activated.sock");
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("test set-up");
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("test set-up");
    let log = std::fs::File::create(dir.path().join("berthd.log")).expect("test set-up");
    let child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&sock)
        .arg("-E")
        .arg(format!("NOTIFY_SOCKET={}", notify_path.display()))
        .arg(berthd_binary())
        .args(["-H", "fd://", "--bridge", "none", "--data-root"])
        .arg(dir.path().join("data"))
        .arg("--exec-root")
        .arg(dir.path().join("run"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("test set-up"))
        .stderr(log)
        .spawn()
        .expect("systemd-socket-activate");
    let guard_child = Kill(child, dir.path().to_string_lossy().into_owned());
    /// berthd, stopped; then the supervisor it started, which outlives it
    /// by design (as containerd outlives dockerd), killed.
    struct Kill(std::process::Child, String);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) of the test's own child.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut stopped = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    stopped = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !stopped {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
            let tree = self.1.clone();
            for line in integration_tests::host_processes(|_, cmdline| {
                cmdline.contains("berth-supervisord") && cmdline.contains(&tree)
            }) {
                if let Some(pid) = line.split_whitespace().next().and_then(|p| p.parse().ok()) {
                    // SAFETY: kill(2) of the supervisor this test's berthd started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
    // systemd-socket-activate listens first, and execs berthd at the
    // first connection, as systemd does with a .socket unit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "systemd-socket-activate did not listen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, body) =
        integration_tests::engine::http(&sock, "GET", "/_ping", None).expect("first request");
    assert_eq!((status, body.as_slice()), (200, &b"OK"[..]));
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 on NOTIFY_SOCKET");
    assert_eq!(&buf[..n], b"READY=1");
    drop(guard_child);
    let log = std::fs::read_to_string(dir.path().join("berthd.log")).expect("test set-up");
    assert!(log.contains("from systemd"), "{log}");
    // The socket is systemd's: berthd leaves it.
    assert!(sock.exists());
    let _ = Command::new("umount")
        .arg("-R")
        .arg(dir.path().join("run"))
        .stderr(Stdio::null())
        .status();
}

#[test]
fn daemon_json_as_dockerd_reads_it() {
    require_root();
    let dir = tempfile::tempdir().expect("test set-up");
    let file = dir.path().join("daemon.json");
    std::fs::write(&file, r#"{"debug": true, "storage-driver": "overlay2"}"#).expect("test set-up");
    let err = berthd_refuses(&["--config-file", &file.to_string_lossy()]);
    assert!(
        err.contains("don't match any configuration option: storage-driver"),
        "{err}"
    );
    std::fs::write(&file, r#"{"debug": true, "bip": "10.9.0.1/24"}"#).expect("test set-up");
    let err = berthd_refuses(&["--config-file", &file.to_string_lossy(), "-D"]);
    assert!(
        err.contains("specified both as a flag and in the configuration file: debug"),
        "{err}"
    );
    std::fs::write(&file, "{\n  \"debug\": true\n  \"bip\": \"x\"\n}\n").expect("test set-up");
    let err = berthd_refuses(&["--config-file", &file.to_string_lossy()]);
    assert!(err.contains("invalid JSON at line 3"), "{err}");
    let err = berthd_refuses(&["--config-file", "/nonexistent/daemon.json"]);
    assert!(err.contains("/nonexistent/daemon.json"), "{err}");

    // A good one: its hosts and metrics address are used.
    let port = free_port();
    let metrics_port = free_port();
    let d = Berthd::start_configured(|d| {
        let file = d.dir().join("daemon.json");
        let text = serde_json::json!({
            "hosts": [format!("unix://{}", d.socket().display()), format!("tcp://127.0.0.1:{port}")],
            "bridge": "none",
            "metrics-addr": format!("127.0.0.1:{metrics_port}"),
            "log-level": "debug",
        });
        std::fs::write(&file, text.to_string()).expect("test set-up");
        vec![
            "--config-file".to_string(),
            file.to_string_lossy().into_owned(),
        ]
    });
    let out = docker(
        &d,
        &[("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"))],
        &["version", "--format", "{{.Server.APIVersion}}"],
    )
    .ok();
    assert_eq!(out.stdout.trim(), berth_engine::API_VERSION);
    let out = d.docker(&["ps"]).ok();
    assert!(out.stdout.contains("CONTAINER ID"));
    assert!(scrape(metrics_port).contains("berth_engine_api_requests_total"));
}

/// `GET /metrics` on the loopback: the body.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("test set-up");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("test set-up");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("test set-up");
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    }
}

fn dechunk(mut data: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = data.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        data = &rest[size + 2..];
    }
    out
}

/// The scrape, parsed.
fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("a Prometheus text exposition")
}

/// A sample's value: `name` (or `name_total`) with these labels.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name || s.metric == format!("{name}_total"))
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(*v),
            prometheus_parse::Value::Histogram(buckets) => buckets
                .iter()
                .map(|b| b.count)
                .fold(None, |m, c| Some(m.map_or(c, |m: f64| m.max(c)))),
            prometheus_parse::Value::Summary(_) => None,
        })
}

#[test]
fn berthd_metrics_move_as_the_test_acts() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Berthd::start_with_args(&["--bridge", "none", "--metrics-addr", &addr]);
    let before = parse(&scrape(port));
    let starts = |s: &prometheus_parse::Scrape| {
        value(s, "berth_engine_container_starts", &[]).unwrap_or(0.0)
    };
    let running = |s: &prometheus_parse::Scrape| {
        value(s, "berth_engine_containers", &[("state", "running")]).unwrap_or(-1.0)
    };
    assert_eq!(running(&before), 0.0, "{:?}", before.samples);
    d.docker(&["run", "-d", "--name", "m1", "busybox", "sleep", "300"])
        .ok();
    d.docker(&["create", "--name", "m2", "busybox", "true"])
        .ok();
    let after = parse(&scrape(port));
    assert_eq!(starts(&after), starts(&before) + 1.0);
    assert_eq!(running(&after), 1.0);
    assert_eq!(
        value(&after, "berth_engine_containers", &[("state", "created")]),
        Some(1.0)
    );
    // The start's latency was observed (its histogram's count).
    let count = after
        .samples
        .iter()
        .find(|s| s.metric == "berth_engine_container_start_duration_seconds_count")
        .map(|s| match s.value {
            prometheus_parse::Value::Untyped(v) | prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        });
    assert_eq!(count, Some(1.0), "{:?}", after.samples);
    // API requests by route template and status.
    let started = value(
        &after,
        "berth_engine_api_requests",
        &[
            ("route", "/containers/:id/start"),
            ("status", "204"),
            ("method", "POST"),
        ],
    );
    assert_eq!(started, Some(1.0), "{:?}", after.samples);
    d.docker(&["inspect", "nosuch"]).fails_with(1, "No such");
    let later = parse(&scrape(port));
    assert!(
        value(
            &later,
            "berth_engine_api_requests",
            &[("route", "/containers/:id/json"), ("status", "404")]
        )
        .is_some_and(|v| v >= 1.0),
        "{:?}",
        later.samples
    );
    // Pulls and the bytes they fetched; a pull of an image already here
    // fetches nothing.
    require_program("docker-registry", "docker-registry");
    let set = image_set();
    let registry = Registry::start(Auth::None);
    push(&set.layered_ref(), &registry, "pulled:1");
    let image = format!("{}/pulled:1", registry.host());
    d.docker(&["pull", &image]).ok();
    let pulled = parse(&scrape(port));
    let layers: u64 = set.layered.layers.iter().map(|l| l.descriptor.size).sum();
    let all = layers + set.layered.config.size + set.layered.manifest.size;
    let bytes = value(&pulled, "berth_engine_image_pulled_bytes", &[]).unwrap_or(0.0) as u64;
    assert!(
        (layers..=all).contains(&bytes),
        "pulled {bytes} bytes; layers {layers}, with config and manifest {all}"
    );
    assert_eq!(value(&pulled, "berth_engine_image_pulls", &[]), Some(1.0));
    d.docker(&["pull", &image]).ok();
    let again = parse(&scrape(port));
    assert_eq!(value(&again, "berth_engine_image_pulls", &[]), Some(2.0));
    assert_eq!(
        value(&again, "berth_engine_image_pulled_bytes", &[]).map(|v| v as u64),
        Some(bytes)
    );
    // Builds: steps and cache hits.
    let ctx = tempfile::tempdir().expect("test set-up");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN echo one > /one\nENV A=b\n",
    )
    .expect("test set-up");
    let ctx_path = ctx.path().to_string_lossy().into_owned();
    let build = |d: &Berthd| {
        d.docker_command(&["build", "-q", "-t", "metrics:1", &ctx_path])
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("test set-up")
    };
    assert!(build(&d).status.success());
    let built = parse(&scrape(port));
    let steps = value(&built, "berth_engine_build_steps", &[]).unwrap_or(0.0);
    let hits = value(&built, "berth_engine_build_cache_hits", &[]).unwrap_or(0.0);
    assert_eq!((steps, hits), (2.0, 0.0), "{:?}", built.samples);
    assert!(build(&d).status.success());
    let rebuilt = parse(&scrape(port));
    assert_eq!(value(&rebuilt, "berth_engine_build_steps", &[]), Some(4.0));
    assert_eq!(
        value(&rebuilt, "berth_engine_build_cache_hits", &[]),
        Some(2.0)
    );
}

#[test]
fn supervisord_metrics_count_calls_tasks_and_content() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let sup = Supervisor::start_with_args(&["--metrics-addr", &addr]);
    let first = parse(&scrape(port));
    assert_eq!(
        value(&first, "berth_supervisor_content_bytes", &[]),
        Some(0.0)
    );
    sup.ctr_ns(
        "m",
        &[
            "images",
            "import",
            "--name",
            "busybox:latest",
            &busybox_tar().to_string_lossy(),
        ],
    )
    .ok();
    sup.ctr_ns(
        "m",
        &[
            "run",
            "-d",
            "--name",
            "t1",
            "busybox:latest",
            "sleep",
            "300",
        ],
    )
    .ok();
    let after = parse(&scrape(port));
    let bytes = value(&after, "berth_supervisor_content_bytes", &[]).unwrap_or(0.0);
    let tar_size = std::fs::metadata(busybox_tar()).expect("test set-up").len() as f64;
    assert!(
        bytes > tar_size / 4.0,
        "content bytes {bytes} for a {tar_size}-byte image"
    );
    assert_eq!(
        value(&after, "berth_supervisor_tasks", &[("state", "running")]),
        Some(1.0),
        "{:?}",
        after.samples
    );
    let ok_calls = |s: &prometheus_parse::Scrape, method: &str| {
        value(
            s,
            "berth_supervisor_grpc_calls",
            &[("method", method), ("code", "Ok")],
        )
        .unwrap_or(0.0)
    };
    let start = "/berth.tasks.v1.Tasks/Start";
    let start_calls = ok_calls(&after, start);
    assert!(start_calls >= 1.0, "{:?}", after.samples);
    // A refused call is counted by its code.
    sup.ctr_ns("m", &["tasks", "kill", "nosuch"])
        .failed_with("");
    sup.ctr_ns("m", &["tasks", "kill", "-s", "SIGKILL", "t1"])
        .ok();
    let later = parse(&scrape(port));
    let not_found = value(
        &later,
        "berth_supervisor_grpc_calls",
        &[
            ("method", "/berth.tasks.v1.Tasks/Kill"),
            ("code", "NotFound"),
        ],
    );
    assert_eq!(not_found, Some(1.0), "{:?}", later.samples);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = parse(&scrape(port));
        if value(&s, "berth_supervisor_tasks", &[("state", "stopped")]) == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the task never showed stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    sup.ctr_ns("m", &["tasks", "rm", "t1"]).ok();
    sup.ctr_ns("m", &["containers", "rm", "t1"]).ok();
}
