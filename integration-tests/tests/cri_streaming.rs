//! The CRI's streaming end to end: ExecSync by raw gRPC (output, exit
//! codes, the timeout that kills), and the real `crictl` through our
//! streaming server: `exec` over SPDY and WebSocket, with stdin, with a
//! terminal (under `script`), `exec --sync`, `attach`, `port-forward` to
//! a busybox httpd.
//!
//! Two set-ups: containers made through the supervisor's own API in the
//! CRI's namespace (`k8s.io`), for the most combinations; and a daemon in
//! a network namespace of the test's with CNI, a pod and its containers
//! made with crictl, and crictl run beside the daemon.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_client::Client;
use berth_proto::containers::v1 as cpb;
use berth_proto::cri::v1 as cri;
use berth_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use berth_proto::tasks::v1 as tpb;
use integration_tests::cri::tool;
use integration_tests::registry::{Auth, Registry};
use integration_tests::supervisor::{connect, push_layered, runtime, Supervisor};
use tonic::Code;

const NS: &str = "k8s.io";

struct Setup {
    _registry: Registry,
    sup: Supervisor,
    image: String,
}

fn setup(repo: &str) -> Setup {
    integration_tests::require_root();
    let registry = Registry::start(Auth::None);
    push_layered(&registry, &format!("{repo}:v1"));
    let sup = Supervisor::start();
    let image = format!("{}/{repo}:v1", registry.host());
    sup.ctr_ns(NS, &["images", "pull", &image]).ok();
    integration_tests::wait_until("the CRI socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(sup.cri_socket()).is_ok()
    });
    Setup {
        _registry: registry,
        sup,
        image,
    }
}

/// Creates and starts a container running `args` (its stdin open when
/// `stdin`).
fn run_container(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    id: &str,
    image: &str,
    args: &[&str],
    stdin: bool,
) {
    rt.block_on(async {
        client
            .containers()
            .create(cpb::CreateContainerRequest {
                id: id.to_string(),
                image: image.to_string(),
                overrides: Some(cpb::Overrides {
                    args: args.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("create container");
        client
            .tasks()
            .create(tpb::CreateTaskRequest {
                container_id: id.to_string(),
                stdin,
                ..Default::default()
            })
            .await
            .expect("create task");
        client
            .tasks()
            .start(tpb::StartRequest {
                container_id: id.to_string(),
                ..Default::default()
            })
            .await
            .expect("start task");
    });
}

/// Kills and deletes the container's task and the container.
fn remove_container(rt: &tokio::runtime::Runtime, client: &Client, id: &str) {
    rt.block_on(async {
        let _ = client
            .tasks()
            .kill(tpb::KillRequest {
                container_id: id.to_string(),
                signal: 9,
                all: true,
                ..Default::default()
            })
            .await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let deleted = client
                .tasks()
                .delete(tpb::DeleteTaskRequest {
                    container_id: id.to_string(),
                })
                .await;
            match deleted {
                Ok(_) => break,
                Err(e) if e.code() == Code::NotFound => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let _ = client
            .containers()
            .delete(cpb::DeleteContainerRequest { id: id.to_string() })
            .await;
    });
}

/// crictl against the supervisor's CRI, with `input` on its stdin (kept
/// open until it exits), optionally under a terminal (`script`).
fn crictl_with(sup: &Supervisor, args: &[&str], input: &str, tty: bool) -> (i32, String, String) {
    crictl_in(&[], &sup.cri_socket(), sup.dir(), args, input, tty)
}

/// crictl against the CRI socket `cri`, run under `prefix` (e.g. nsenter
/// into the daemon's network namespace, where its streaming server is).
fn crictl_in(
    prefix: &[String],
    cri: &std::path::Path,
    dir: &std::path::Path,
    args: &[&str],
    input: &str,
    tty: bool,
) -> (i32, String, String) {
    let endpoint = format!("unix://{}", cri.display());
    let config = dir.join("crictl.yaml");
    std::fs::write(
        &config,
        format!("runtime-endpoint: {endpoint}\nimage-endpoint: {endpoint}\n"),
    )
    .expect("write crictl.yaml");
    let mut argv: Vec<String> = prefix.to_vec();
    argv.extend([
        tool("crictl").display().to_string(),
        "--config".into(),
        config.display().to_string(),
        "--runtime-endpoint".into(),
        endpoint.clone(),
        "--image-endpoint".into(),
        endpoint,
        "--timeout".into(),
        "60s".into(),
    ]);
    argv.extend(args.iter().map(|s| s.to_string()));
    let mut cmd = if tty {
        // A terminal for crictl: script(1) runs it on a pty and relays.
        let line = argv
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" ");
        let mut c = Command::new("script");
        c.args(["-q", "-e", "-c", &line, "/dev/null"]);
        c
    } else {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run crictl");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    if !tty {
        drop(stdin);
    } else {
        // script ends the session at its input's end: kept open until
        // crictl is done.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(60));
            drop(stdin);
        });
    }
    let out = integration_tests::supervisor::child_output(child, Duration::from_secs(90), "crictl");
    (
        integration_tests::exit_code(&out.status),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn crictl(sup: &Supervisor, args: &[&str]) -> (i32, String, String) {
    crictl_with(sup, args, "", false)
}

#[test]
fn exec_sync_collects_output_and_exit_codes_and_times_out() {
    let s = setup("test/cri-execsync");
    let rt = runtime();
    let client = connect(&rt, &s.sup, NS);
    run_container(
        &rt,
        &client,
        "es1",
        &s.image,
        &["busybox", "sleep", "1000"],
        false,
    );
    let channel = rt
        .block_on(berth_client::connect(&s.sup.cri_socket()))
        .expect("connect to the CRI");
    let mut rs = RuntimeServiceClient::new(channel);
    let exec_sync = |rs: &mut RuntimeServiceClient<_>, cmd: &[&str], timeout: i64| {
        rt.block_on(rs.exec_sync(cri::ExecSyncRequest {
            container_id: "es1".into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        }))
        .map(|r| r.into_inner())
    };
    let r = exec_sync(&mut rs, &["sh", "-c", "echo out; echo err >&2; exit 3"], 0).unwrap();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 3)
    );
    let started = Instant::now();
    for _ in 0..10 {
        let r = exec_sync(&mut rs, &["busybox", "true"], 10).unwrap();
        assert_eq!(r.exit_code, 0);
    }
    eprintln!("ExecSync of `true`: {:?} each", started.elapsed() / 10);
    // The container's environment and root.
    let r = exec_sync(
        &mut rs,
        &["sh", "-c", "echo $PATH; busybox ls /etc/berth-test"],
        10,
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&r.stdout).contains("/bin"), "{r:?}");

    // Past its timeout the process is killed and the call fails, as
    // containerd's does.
    let started = Instant::now();
    let e = exec_sync(&mut rs, &["busybox", "sleep", "300"], 1).unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(e.message().contains("timeout"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let r = exec_sync(&mut rs, &["busybox", "ps"], 10).unwrap();
    let ps = String::from_utf8_lossy(&r.stdout);
    assert!(
        !ps.contains("sleep 300"),
        "the timed-out process is gone:\n{ps}"
    );

    // Bad input.
    let e = exec_sync(&mut rs, &[], 0).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let e = rt
        .block_on(rs.exec_sync(cri::ExecSyncRequest {
            container_id: "nope".into(),
            cmd: vec!["true".into()],
            timeout: 0,
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = rt
        .block_on(rs.exec(cri::ExecRequest {
            container_id: "es1".into(),
            cmd: vec!["sh".into()],
            tty: true,
            stderr: true,
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let e = rt
        .block_on(rs.exec(cri::ExecRequest {
            container_id: "es1".into(),
            cmd: vec!["sh".into()],
            ..Default::default()
        }))
        .unwrap_err();
    assert!(
        e.message().contains("one of stdin, stdout, or stderr"),
        "{e}"
    );
    let e = rt
        .block_on(rs.port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "nope".into(),
            port: vec![80],
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    // An Exec URL: ours, one per call.
    let url = |rs: &mut RuntimeServiceClient<_>| {
        rt.block_on(rs.exec(cri::ExecRequest {
            container_id: "es1".into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        }))
        .unwrap()
        .into_inner()
        .url
    };
    let (a, b) = (url(&mut rs), url(&mut rs));
    assert!(
        a.starts_with("http://127.0.0.1:") && a.contains("/exec/"),
        "{a}"
    );
    assert_ne!(a, b);
    remove_container(&rt, &client, "es1");
}

#[test]
fn crictl_exec_attach_and_port_forward() {
    let s = setup("test/cri-stream");
    let rt = runtime();
    let client = connect(&rt, &s.sup, NS);
    run_container(
        &rt,
        &client,
        "ex1",
        &s.image,
        &["busybox", "sleep", "1000"],
        false,
    );

    // Over SPDY (crictl's default) and WebSocket: output, the exit code.
    for transport in ["spdy", "websocket"] {
        let (code, out, err) = crictl(
            &s.sup,
            &[
                "exec",
                "--transport",
                transport,
                "ex1",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
        );
        // crictl reports the exit code and exits with 1.
        assert_eq!((code, out.as_str()), (1, "out\n"), "{transport}: {err}");
        assert!(err.starts_with("err\n"), "{transport}: {err}");
        assert!(
            err.contains("command terminated with exit code 3"),
            "{transport}: {err}"
        );
        // Stdin, to its end.
        let (code, out, err) = crictl_with(
            &s.sup,
            &[
                "exec",
                "-i",
                "--transport",
                transport,
                "ex1",
                "busybox",
                "tr",
                "a-z",
                "A-Z",
            ],
            "hello\nworld\n",
            false,
        );
        assert_eq!(
            (code, out.as_str()),
            (0, "HELLO\nWORLD\n"),
            "{transport}: {err}"
        );
    }
    // 32 MiB of output, whole, over each transport.
    for transport in ["spdy", "websocket"] {
        let started = Instant::now();
        let (code, out, err) = crictl(
            &s.sup,
            &[
                "exec",
                "--transport",
                transport,
                "ex1",
                "busybox",
                "head",
                "-c",
                "33554432",
                "/dev/zero",
            ],
        );
        assert_eq!((code, out.len()), (0, 32 << 20), "{transport}: {err}");
        eprintln!(
            "32 MiB through crictl exec over {transport}: {:?}",
            started.elapsed()
        );
    }
    // A client that reads late: the exec'd process waits for it (the shim
    // holds its output back), and nothing is cut.
    let endpoint = format!("unix://{}", s.sup.cri_socket().display());
    let line = format!(
        "'{}' --config '{}' --runtime-endpoint '{endpoint}' --image-endpoint '{endpoint}' \
         --timeout 60s exec ex1 head -c 33554432 /dev/zero | (sleep 3; wc -c)",
        tool("crictl").display(),
        s.sup.dir().join("crictl.yaml").display(),
    );
    let out = Command::new("sh")
        .args(["-c", &line])
        .output()
        .expect("run sh");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "33554432",
        "a slow reader got all 32 MiB: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // exec --sync is ExecSync.
    let (code, out, err) = crictl(&s.sup, &["exec", "--sync", "ex1", "sh", "-c", "echo sync"]);
    // (crictl prints each stream with a newline of its own.)
    assert_eq!((code, out.trim_end()), (0, "sync"), "{err}");
    let (code, _, err) = crictl(&s.sup, &["exec", "--sync", "ex1", "sh", "-c", "exit 2"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exited with 2"), "{err}");
    // A terminal: the process has one (its output comes with the
    // terminal's CRLF), and the exit code still comes back.
    let (code, out, err) = crictl_with(
        &s.sup,
        &["exec", "-it", "ex1", "sh", "-c", "busybox tty; exit 5"],
        "",
        true,
    );
    assert!(out.contains("/dev/pts/0\r\n"), "a terminal: {out:?} {err}");
    assert!(
        out.contains("command terminated with exit code 5"),
        "{out:?} {err}"
    );
    assert_eq!(code, 1, "{out:?} {err}");

    // Attach to a shell reading its stdin.
    run_container(&rt, &client, "at1", &s.image, &["sh"], true);
    let (code, out, err) = crictl_with(
        &s.sup,
        &["attach", "-i", "at1"],
        "echo attached-$((6*7))\nexit 0\n",
        false,
    );
    assert!(out.contains("attached-42"), "{code} {out:?} {err}");

    // Port-forward to an httpd inside the container's network namespace.
    run_container(
        &rt,
        &client,
        "pf1",
        &s.image,
        &[
            "sh",
            "-c",
            "busybox mkdir -p /www && echo forwarded-page > /www/index.html && exec busybox httpd -f -p 8080 -h /www",
        ],
        false,
    );
    // Its namespace's loopback is down until something brings it up (for
    // a pod, CNI's loopback plugin): the test does, from outside.
    let pid = rt
        .block_on(client.tasks().get(tpb::GetRequest {
            container_id: "pf1".into(),
            ..Default::default()
        }))
        .expect("get pf1")
        .into_inner()
        .process
        .expect("process")
        .pid;
    let up = Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-n",
            "ip",
            "link",
            "set",
            "lo",
            "up",
        ])
        .status()
        .expect("nsenter");
    assert!(up.success());
    let local = 20000 + (std::process::id() % 20000) as u16;
    let endpoint = format!("unix://{}", s.sup.cri_socket().display());
    let mut forward = Command::new(tool("crictl"))
        .args([
            "--runtime-endpoint",
            &endpoint,
            "port-forward",
            "pf1",
            &format!("{local}:8080"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("crictl port-forward");
    let fetch = || {
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{local}/"),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page = fetch();
        if page.contains("forwarded-page") {
            break page;
        }
        if Instant::now() > deadline || forward.try_wait().ok().flatten().is_some() {
            let _ = forward.kill();
            let out = forward
                .wait_with_output()
                .expect("crictl port-forward output");
            panic!(
                "no page through crictl port-forward:\nstdout: {}\nstderr: {}\nsupervisor log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                s.sup.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(page, "forwarded-page\n");
    // Twice: each connection is its own pair of streams.
    assert_eq!(fetch(), "forwarded-page\n");
    let _ = forward.kill();
    let _ = forward.wait();

    for id in ["ex1", "at1", "pf1"] {
        remove_container(&rt, &client, id);
    }
}

/// The daemon in a network namespace of the test's with a CNI network, a
/// pod and containers made with `crictl runp`/`create`/`start` from the
/// test busybox (imported, nothing pulled), and crictl's streaming
/// commands run beside the daemon, where its streaming server listens:
/// exec over SPDY and WebSocket, with a terminal, attach to a shell with
/// `stdin_once`, port-forward to a busybox httpd container of the pod.
#[test]
fn crictl_streams_into_pod_containers() {
    use integration_tests::cri::{PodOptions, PodSupervisor};
    const IMAGE: &str = "docker.io/library/busybox:latest";
    let sup = PodSupervisor::start(PodOptions::default());
    sup.import_busybox(IMAGE);
    let write = |name: &str, v: serde_json::Value| {
        let path = sup.dir().join(name);
        std::fs::write(&path, v.to_string()).expect("write config");
        path.display().to_string()
    };
    let pod = write(
        "pod.json",
        serde_json::json!({
            "metadata": {"name": "streams", "namespace": "default", "uid": "uid-streams", "attempt": 0},
            "log_directory": sup.dir().join("logs"),
            "linux": {}
        }),
    );
    let container = |name: &str, command: &[&str], stdin: bool| {
        write(
            &format!("{name}.json"),
            serde_json::json!({
                "metadata": {"name": name, "attempt": 0},
                "image": {"image": IMAGE},
                "command": command,
                "stdin": stdin,
                "stdin_once": stdin,
                "log_path": format!("{name}.log"),
                "linux": {}
            }),
        )
    };
    let pod_id = sup.crictl_ok(&["runp", &pod]).trim().to_string();
    let run = |name: &str, command: &[&str], stdin: bool| {
        let config = container(name, command, stdin);
        let id = sup
            .crictl_ok(&["create", &pod_id, &config, &pod])
            .trim()
            .to_string();
        sup.crictl_ok(&["start", &id]);
        id
    };
    let prefix = vec![
        "nsenter".to_string(),
        format!("--net={}", sup.netns().display()),
        "--".to_string(),
    ];
    let crictl = |args: &[&str], input: &str, tty: bool| {
        crictl_in(&prefix, &sup.cri_socket(), sup.dir(), args, input, tty)
    };

    let sleeper = run("sleeper", &["sh", "-c", "exec sleep 1000"], false);
    for transport in ["spdy", "websocket"] {
        let (code, out, err) = crictl(
            &[
                "exec",
                "-i",
                "--transport",
                transport,
                &sleeper,
                "sh",
                "-c",
                "tr a-z A-Z; echo err >&2; exit 3",
            ],
            "in the pod\n",
            false,
        );
        assert_eq!(
            (code, out.as_str()),
            (1, "IN THE POD\n"),
            "{transport}: {err}"
        );
        assert!(
            err.contains("command terminated with exit code 3"),
            "{transport}: {err}"
        );
    }
    let (code, out, err) = crictl(
        &["exec", "-it", &sleeper[..12], "sh", "-c", "tty; hostname"],
        "",
        true,
    );
    assert!(out.contains("/dev/pts/0\r\n"), "{code} {out:?} {err}");
    let (code, out, err) = crictl(
        &[
            "exec",
            "--sync",
            &sleeper,
            "sh",
            "-c",
            "echo $GREETING sync",
        ],
        "",
        false,
    );
    assert_eq!((code, out.trim_end()), (0, "sync"), "{err}");

    // Attach: the shell reads what crictl sends; the end of crictl's
    // input closes its stdin (stdin_once), so it exits and attach ends.
    let shell = run("shell", &["sh"], true);
    let (code, out, err) = crictl(&["attach", "-i", &shell], "echo attached-$((6*7))\n", false);
    assert!(out.contains("attached-42"), "{code} {out:?} {err}");
    let status = sup.crictl_ok(&["inspect", "-o", "json", &shell]);
    assert!(status.contains("CONTAINER_EXITED"), "{status}");

    // Port-forward to a web server in the pod.
    run(
        "web",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo pod-page > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
        false,
    );
    let endpoint = format!("unix://{}", sup.cri_socket().display());
    let mut forward = sup
        .in_netns(&tool("crictl").display().to_string())
        .args([
            "--runtime-endpoint",
            &endpoint,
            "port-forward",
            &pod_id[..12],
            "18080:8080",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("crictl port-forward");
    let fetch = |port: u16| {
        let out = sup
            .in_netns("curl")
            .args([
                "-s",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{port}/"),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while fetch(18080) != "pod-page\n" {
        if Instant::now() > deadline || forward.try_wait().ok().flatten().is_some() {
            let _ = forward.kill();
            let out = forward.wait_with_output().expect("crictl output");
            panic!(
                "no page through crictl port-forward:\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                sup.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(fetch(18080), "pod-page\n", "a second connection");
    // A port nothing listens on: the client hears why.
    let mut refused = sup
        .in_netns(&tool("crictl").display().to_string())
        .args([
            "--runtime-endpoint",
            &endpoint,
            "port-forward",
            &pod_id,
            "18081:8081",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("crictl port-forward");
    std::thread::sleep(Duration::from_millis(500));
    let _ = fetch(18081);
    let _ = refused.kill();
    let out = refused.wait_with_output().expect("crictl output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("onnection refused"), "{err}");
    let _ = forward.kill();
    let _ = forward.wait();
    sup.crictl_ok(&["rmp", "-f", &pod_id]);
}
