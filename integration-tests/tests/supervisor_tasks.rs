//! The supervisor's tasks end to end, on busybox pulled from a real
//! registry and run by berth-shim and berth-runtime: output, exit status,
//! stdin, a terminal, exec, signals, pause and resume, metrics, an OOM kill
//! reported as an event; reattaching after `kill -9` of the supervisor with
//! an exit that happened while it was down; 100 containers at once; bad
//! input refused with the daemon still serving. Every test checks that no
//! shim, mount or cgroup is left.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_client::Client;
use berth_proto::containers::v1 as cpb;
use berth_proto::events::v1 as epb;
use berth_proto::tasks::v1 as tpb;
use integration_tests::registry::{Auth, Registry};
use integration_tests::supervisor::{connect, ctr_binary, push_layered, runtime, Supervisor};
use tokio::runtime::Runtime;
use tonic::Code;

const DEADLINE: Duration = Duration::from_secs(30);

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A supervisor with the test image pulled; the image's name.
fn setup(repo: &str) -> (Registry, Supervisor, String) {
    let registry = Registry::start(Auth::None);
    push_layered(&registry, &format!("{repo}:v1"));
    let sup = Supervisor::start();
    let image = format!("{}/{repo}:v1", registry.host());
    (registry, sup, image)
}

fn pull(sup: &Supervisor, ns: &str, image: &str) {
    sup.ctr_ns(ns, &["images", "pull", image]).ok();
}

async fn create_container(
    client: &Client,
    id: &str,
    image: &str,
    args: &[&str],
    memory_limit: i64,
) -> Result<cpb::Container, tonic::Status> {
    client
        .containers()
        .create(cpb::CreateContainerRequest {
            id: id.to_string(),
            image: image.to_string(),
            overrides: Some(cpb::Overrides {
                args: strings(args),
                memory_limit,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn create_task(client: &Client, id: &str, stdin: bool) -> Result<u32, tonic::Status> {
    client
        .tasks()
        .create(tpb::CreateTaskRequest {
            container_id: id.to_string(),
            stdin,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().pid)
}

async fn start(client: &Client, id: &str, exec_id: &str) -> Result<u32, tonic::Status> {
    client
        .tasks()
        .start(tpb::StartRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        })
        .await
        .map(|r| r.into_inner().pid)
}

async fn wait(client: &Client, id: &str, exec_id: &str) -> u32 {
    let mut tasks = client.tasks();
    let waited = tasks.wait(tpb::WaitRequest {
        container_id: id.to_string(),
        exec_id: exec_id.to_string(),
    });
    tokio::time::timeout(DEADLINE, waited)
        .await
        .unwrap_or_else(|_| panic!("{id}/{exec_id} did not exit within {DEADLINE:?}"))
        .expect("wait")
        .into_inner()
        .exit_status
}

async fn get(client: &Client, id: &str) -> tpb::Process {
    client
        .tasks()
        .get(tpb::GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        })
        .await
        .expect("get task")
        .into_inner()
        .process
        .expect("process")
}

async fn kill(client: &Client, id: &str, signal: i32) {
    client
        .tasks()
        .kill(tpb::KillRequest {
            container_id: id.to_string(),
            signal: signal as u32,
            ..Default::default()
        })
        .await
        .expect("kill");
}

async fn delete_all(client: &Client, id: &str) {
    client
        .tasks()
        .delete(tpb::DeleteTaskRequest {
            container_id: id.to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("delete task {id}: {e}"));
    client
        .containers()
        .delete(cpb::DeleteContainerRequest { id: id.to_string() })
        .await
        .unwrap_or_else(|e| panic!("delete container {id}: {e}"));
}

/// Attaches to a process and collects its (stdout, stderr) until it ends,
/// after sending `input` (then closing its stdin) when given.
async fn attach_collect(
    client: &Client,
    id: &str,
    exec_id: &str,
    input: Option<&[u8]>,
) -> tokio::task::JoinHandle<(Vec<u8>, Vec<u8>)> {
    let mut requests = vec![tpb::AttachRequest {
        container_id: id.to_string(),
        exec_id: exec_id.to_string(),
        stdin: input.is_some(),
        ..Default::default()
    }];
    if let Some(data) = input {
        requests.push(tpb::AttachRequest {
            data: data.to_vec(),
            close_stdin: true,
            ..Default::default()
        });
    }
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    for r in requests {
        tx.send(r).await.expect("queue");
    }
    let mut stream = client
        .tasks()
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("attach")
        .into_inner();
    tokio::spawn(async move {
        let _keep_open = tx;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(msg) = stream.message().await.expect("attach stream") {
            match msg.stream {
                2 => err.extend(msg.data),
                _ => out.extend(msg.data),
            }
        }
        (out, err)
    })
}

type Event = (String, BTreeMap<String, String>);

/// (topic, attributes) of the events of `ns` after `after` whose topics
/// start with `prefix`, up to the first for which `last` holds.
fn events_until(
    rt: &Runtime,
    client: &Client,
    after: u64,
    prefix: &str,
    mut last: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    rt.block_on(async {
        let mut stream = client
            .events()
            .subscribe(epb::SubscribeRequest {
                topics: vec![prefix.to_string()],
                after_sequence: Some(after),
            })
            .await
            .expect("subscribe")
            .into_inner();
        let mut out: Vec<Event> = Vec::new();
        loop {
            let e = tokio::time::timeout(DEADLINE, stream.message())
                .await
                .unwrap_or_else(|_| panic!("the last event did not come: {out:?}"))
                .expect("event")
                .expect("stream ended");
            out.push((e.topic, e.attributes.into_iter().collect()));
            if out.last().is_some_and(&mut last) {
                return out;
            }
        }
    })
}

/// The newest event sequence number of `ns` so far.
fn last_sequence(rt: &Runtime, client: &Client) -> u64 {
    rt.block_on(async {
        // A marker event: what comes after it is this test's.
        client
            .events()
            .publish(epb::PublishRequest {
                topic: "/test/marker".into(),
                attributes: Default::default(),
            })
            .await
            .expect("publish");
        let mut stream = client
            .events()
            .subscribe(epb::SubscribeRequest {
                topics: vec!["/test/marker".into()],
                after_sequence: Some(0),
            })
            .await
            .expect("subscribe")
            .into_inner();
        let mut last = 0;
        while let Ok(Some(Ok(e))) =
            tokio::time::timeout(Duration::from_millis(300), stream.message())
                .await
                .map(|m| m.transpose())
        {
            last = e.sequence;
        }
        last
    })
}

/// The namespace's parent cgroup, `/berth/<ns>`, in every mounted hierarchy.
fn namespace_cgroups(ns: &str) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mut found = Vec::new();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if matches!(fields.get(sep + 1), Some(&"cgroup") | Some(&"cgroup2")) {
            found.push(PathBuf::from(fields[4]).join("berth").join(ns));
        }
    }
    found
}

/// Cgroup directories of namespace `ns`'s containers.
fn cgroups_of(ns: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in namespace_cgroups(ns) {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Whether the freezer of `pid`'s cgroup holds it (cgroup v1's
/// `freezer.state`, or v2's `cgroup.freeze`).
fn frozen(pid: u32) -> bool {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    for line in cgroups.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        if controllers.split(',').any(|c| c == "freezer") {
            let state = format!("/sys/fs/cgroup/freezer{path}/freezer.state");
            return std::fs::read_to_string(state).is_ok_and(|s| s.trim() == "FROZEN");
        }
    }
    let path = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default();
    std::fs::read_to_string(format!("/sys/fs/cgroup{path}/cgroup.freeze"))
        .is_ok_and(|s| s.trim() == "1")
}

fn process_alive(pid: u32) -> bool {
    // A zombie is as good as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Pids of the shims running under the supervisor's state directory.
fn shims_of(sup: &Supervisor) -> Vec<u32> {
    let needle = sup.dir().join("state/shims").to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("berth-shim") && cmdline.contains(&needle) && process_alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

fn assert_nothing_left(sup: &Supervisor, ns: &str) {
    let dirs: Vec<_> = sup
        .task_dirs()
        .into_iter()
        .filter(|(n, _)| n == ns)
        .collect();
    assert!(dirs.is_empty(), "task bundles left: {dirs:?}");
    // A shim exits right after answering its delete.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !shims_of(sup).is_empty() {
        assert!(Instant::now() < deadline, "shims left: {:?}", shims_of(sup));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        cgroups_of(ns).is_empty(),
        "cgroups left: {:?}",
        cgroups_of(ns)
    );
    // The parents the runtime made (as containerd's namespaces, they stay).
    for dir in namespace_cgroups(ns) {
        let _ = std::fs::remove_dir(dir);
    }
}

#[test]
fn run_busybox_from_a_pulled_image() {
    let (_registry, sup, image) = setup("test/tasks-run");
    let ns = "tasks-run";
    pull(&sup, ns, &image);

    // berth-ctr run: output, stderr, exit status.
    let out = sup.ctr_ns(
        ns,
        &[
            "run",
            "--rm",
            "--name",
            "out",
            &image,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.stdout, "out\n");
    assert!(out.stderr.contains("err"), "{out:?}");
    // Stdin reaches the process, and its end closes the process's stdin.
    let input = sup.dir().join("input.txt");
    std::fs::write(&input, "line one\nline two\n").unwrap();
    let out = sup.ctr_input(
        ns,
        &[
            "run", "--rm", "-i", "--name", "in", &image, "busybox", "cat",
        ],
        Some(&input),
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "line one\nline two\n"),
        "{out:?}"
    );
    // A user named in the image's /etc/passwd.
    let out = sup.ctr_ns(
        ns,
        &[
            "run",
            "--rm",
            "-u",
            "user",
            "--name",
            "user",
            &image,
            "sh",
            "-c",
            "busybox id -u; busybox id -g",
        ],
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "1000\n1000\n"),
        "{out:?}"
    );
    // A terminal: the process sees a pty, and output comes with CRLF.
    let out = sup.ctr_ns(
        ns,
        &[
            "run",
            "--rm",
            "-t",
            "--name",
            "tty",
            &image,
            "sh",
            "-c",
            "tty; echo x",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("/dev/pts/"), "{out:?}");
    assert!(out.stdout.ends_with("x\r\n"), "{out:?}");

    // Another runc-compatible runtime runs the same container: runc itself.
    let out = sup.ctr_ns(
        ns,
        &[
            "run",
            "--rm",
            "--runtime",
            "runc",
            "--name",
            "runc",
            &image,
            "sh",
            "-c",
            "echo via runc; exit 4",
        ],
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (4, "via runc\n"),
        "{out:?}"
    );

    // Ctrl-C on berth-ctr run reaches the process, whose status it returns.
    let mut child = std::process::Command::new(ctr_binary())
        .arg("--address")
        .arg(sup.socket())
        .args(["-n", ns, "run", "--rm", "--name", "sig", &image, "sh", "-c"])
        .arg("trap 'exit 9' INT; echo ready; while :; do busybox sleep 0.1; done")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("berth-ctr run");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .expect("read");
    assert_eq!(line, "ready\n");
    // SAFETY: kill(2) of the test's own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth-ctr run did not end after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(9));

    let rt = runtime();
    let client = connect(&rt, &sup, ns);
    let after = last_sequence(&rt, &client);
    rt.block_on(async {
        // A long-running init that exits 42 on SIGTERM.
        let script = "trap 'exit 42' TERM; echo ready; while :; do busybox sleep 0.1; done";
        create_container(&client, "c1", &image, &["sh", "-c", script], 0)
            .await
            .expect("create container");
        let pid = create_task(&client, "c1", false)
            .await
            .expect("create task");
        assert_eq!(get(&client, "c1").await.status, tpb::Status::Created as i32);
        let output = attach_collect(&client, "c1", "", None).await;
        assert_eq!(start(&client, "c1", "").await.expect("start"), pid);
        assert!(process_alive(pid));
        assert_eq!(get(&client, "c1").await.status, tpb::Status::Running as i32);

        // exec: its own output and exit status.
        let process = serde_json::json!({
            "args": ["sh", "-c", "read x; echo got $x; echo oops >&2; exit 5"],
            "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}
        });
        client
            .tasks()
            .exec(tpb::ExecProcessRequest {
                container_id: "c1".into(),
                exec_id: "e1".into(),
                stdin: true,
                terminal: false,
                spec: serde_json::to_vec(&process).unwrap(),
            })
            .await
            .expect("exec");
        let exec_out = attach_collect(&client, "c1", "e1", Some(b"hello\n")).await;
        let exec_pid = start(&client, "c1", "e1").await.expect("start exec");
        assert_ne!(exec_pid, pid);
        assert_eq!(wait(&client, "c1", "e1").await, 5);
        let (out, err) = exec_out.await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out), "got hello\n");
        assert_eq!(String::from_utf8_lossy(&err), "oops\n");
        let deleted = client
            .tasks()
            .delete_process(tpb::DeleteProcessRequest {
                container_id: "c1".into(),
                exec_id: "e1".into(),
            })
            .await
            .expect("delete exec")
            .into_inner();
        assert_eq!(deleted.exit_status, 5);

        // pids and metrics.
        let pids = client
            .tasks()
            .list_pids(tpb::ListPidsRequest {
                container_id: "c1".into(),
            })
            .await
            .expect("pids")
            .into_inner()
            .pids;
        assert!(pids.contains(&pid), "{pids:?} lacks {pid}");
        let stats = client
            .tasks()
            .stats(tpb::StatsRequest {
                container_id: "c1".into(),
            })
            .await
            .expect("stats")
            .into_inner();
        assert!(stats.memory_usage > 0, "{stats:?}");
        assert!(stats.pids_current >= 1, "{stats:?}");
        assert!(stats.cpu_usage_ns > 0, "{stats:?}");

        // pause: the init's state in /proc is stopped by the freezer.
        client
            .tasks()
            .pause(tpb::PauseRequest {
                container_id: "c1".into(),
            })
            .await
            .expect("pause");
        assert_eq!(get(&client, "c1").await.status, tpb::Status::Paused as i32);
        assert!(frozen(pid), "the paused init's cgroup is not frozen");
        client
            .tasks()
            .resume(tpb::ResumeRequest {
                container_id: "c1".into(),
            })
            .await
            .expect("resume");
        assert_eq!(get(&client, "c1").await.status, tpb::Status::Running as i32);
        assert!(!frozen(pid), "the resumed init's cgroup is still frozen");

        // A new memory limit reaches the cgroup.
        client
            .tasks()
            .update(tpb::UpdateTaskRequest {
                container_id: "c1".into(),
                resources: br#"{"memory":{"limit":67108864}}"#.to_vec(),
            })
            .await
            .expect("update");
        let stats = client
            .tasks()
            .stats(tpb::StatsRequest {
                container_id: "c1".into(),
            })
            .await
            .expect("stats")
            .into_inner();
        assert_eq!(stats.memory_limit, 64 << 20, "{stats:?}");

        // SIGTERM reaches the init's trap.
        kill(&client, "c1", libc::SIGTERM).await;
        assert_eq!(wait(&client, "c1", "").await, 42);
        let (out, _) = output.await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out), "ready\n");
        let p = get(&client, "c1").await;
        assert_eq!((p.status, p.exit_status), (tpb::Status::Stopped as i32, 42));
        delete_all(&client, "c1").await;
        assert!(!process_alive(pid));

        // An OOM kill under a 16 MiB limit: dd's 64 MiB buffer.
        create_container(
            &client,
            "oom",
            &image,
            &[
                "busybox",
                "dd",
                "if=/dev/zero",
                "of=/dev/null",
                "bs=64M",
                "count=1",
            ],
            16 << 20,
        )
        .await
        .expect("create oom container");
        create_task(&client, "oom", false)
            .await
            .expect("create oom task");
        start(&client, "oom", "").await.expect("start oom");
        assert_eq!(wait(&client, "oom", "").await, 137);
        delete_all(&client, "oom").await;
    });

    // The events, in order.
    let got = events_until(&rt, &client, after, "/tasks/", |(t, a)| {
        t == "/tasks/delete" && a["container_id"] == "oom"
    });
    let of = |id: &str| -> Vec<String> {
        got.iter()
            .filter(|(_, a)| a.get("container_id").map(String::as_str) == Some(id))
            .map(|(t, a)| match a.get("exec_id") {
                Some(e) => format!("{t} {e}"),
                None => t.clone(),
            })
            .collect()
    };
    assert_eq!(
        of("c1"),
        strings(&[
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added e1",
            "/tasks/exec-started e1",
            "/tasks/exit e1",
            "/tasks/paused",
            "/tasks/resumed",
            "/tasks/exit",
            "/tasks/delete",
        ])
    );
    let mut oom = of("oom");
    oom.dedup();
    assert_eq!(
        oom,
        strings(&[
            "/tasks/create",
            "/tasks/start",
            "/tasks/oom",
            "/tasks/exit",
            "/tasks/delete"
        ])
    );
    let exit = got
        .iter()
        .find(|(t, a)| {
            t == "/tasks/exit" && a["container_id"] == "c1" && !a.contains_key("exec_id")
        })
        .unwrap();
    assert_eq!(exit.1["exit_status"], "42");
    assert_nothing_left(&sup, ns);
}

#[test]
fn bad_input_gets_clear_errors() {
    let (_registry, sup, image) = setup("test/tasks-bad");
    let ns = "tasks-bad";
    pull(&sup, ns, &image);
    let rt = runtime();
    let client = connect(&rt, &sup, ns);
    let code = |r: Result<(), tonic::Status>, want: Code, needle: &str| {
        let e = r.expect_err("should fail");
        assert_eq!(e.code(), want, "{e:?}");
        assert!(
            e.message().contains(needle),
            "{:?} lacks {needle:?}",
            e.message()
        );
    };
    rt.block_on(async {
        code(
            create_container(&client, "x", "nosuch/image:v1", &["true"], 0)
                .await
                .map(drop),
            Code::NotFound,
            "nosuch/image",
        );
        create_container(&client, "c1", &image, &["busybox", "sleep", "1000"], 0)
            .await
            .expect("create");
        code(
            create_container(&client, "c1", &image, &["true"], 0)
                .await
                .map(drop),
            Code::AlreadyExists,
            "c1",
        );
        // A hostile override: nothing is created.
        code(
            create_container(&client, "c2", &image, &["sh", "-c\0rm"], 0)
                .await
                .map(drop),
            Code::InvalidArgument,
            "NUL",
        );
        code(
            create_task(&client, "missing", false).await.map(drop),
            Code::NotFound,
            "missing",
        );
        create_task(&client, "c1", false).await.expect("task");
        code(
            create_task(&client, "c1", false).await.map(drop),
            Code::AlreadyExists,
            "c1",
        );
        start(&client, "c1", "").await.expect("start");
        // Delete of a running container, and of its running task.
        code(
            client
                .containers()
                .delete(cpb::DeleteContainerRequest { id: "c1".into() })
                .await
                .map(drop),
            Code::FailedPrecondition,
            "has a task",
        );
        code(
            client
                .tasks()
                .delete(tpb::DeleteTaskRequest {
                    container_id: "c1".into(),
                })
                .await
                .map(drop),
            Code::FailedPrecondition,
            "running",
        );
        let exec = |exec_id: &str, spec: &[u8]| {
            let mut tasks = client.tasks();
            let request = tpb::ExecProcessRequest {
                container_id: "c1".into(),
                exec_id: exec_id.into(),
                spec: spec.to_vec(),
                ..Default::default()
            };
            async move { tasks.exec(request).await.map(drop) }
        };
        code(
            exec("../e", br#"{"args":["true"],"cwd":"/"}"#).await,
            Code::InvalidArgument,
            "exec id",
        );
        code(exec("e1", b"[1,2]").await, Code::InvalidArgument, "process");
        code(
            exec("e1", br#"{"args":[],"cwd":"/"}"#).await,
            Code::InvalidArgument,
            "args",
        );
        code(
            client
                .tasks()
                .kill(tpb::KillRequest {
                    container_id: "c1".into(),
                    signal: 999,
                    ..Default::default()
                })
                .await
                .map(drop),
            Code::InvalidArgument,
            "signal",
        );
        code(
            client
                .tasks()
                .update(tpb::UpdateTaskRequest {
                    container_id: "c1".into(),
                    resources: b"{\"memory\":7}".to_vec(),
                })
                .await
                .map(drop),
            Code::InvalidArgument,
            "resources",
        );
        kill(&client, "c1", libc::SIGKILL).await;
        assert_eq!(wait(&client, "c1", "").await, 137);
        // Exec into a stopped task.
        code(
            exec("e2", br#"{"args":["true"],"cwd":"/"}"#).await,
            Code::FailedPrecondition,
            "stopped",
        );
        delete_all(&client, "c1").await;
        code(
            client
                .tasks()
                .delete(tpb::DeleteTaskRequest {
                    container_id: "c1".into(),
                })
                .await
                .map(drop),
            Code::NotFound,
            "c1",
        );
        // An unknown runtime: refused before anything is made.
        client
            .containers()
            .create(cpb::CreateContainerRequest {
                id: "c3".into(),
                image: image.clone(),
                runtime: "no-such-runtime".into(),
                overrides: Some(cpb::Overrides {
                    args: strings(&["true"]),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("create c3");
        code(
            create_task(&client, "c3", false).await.map(drop),
            Code::InvalidArgument,
            "no-such-runtime",
        );
        // A spec the runtime refuses: the shim's reason, nothing left.
        let bad_spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/no/such/program"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "bogus"}]}
        });
        let made = client
            .containers()
            .create(cpb::CreateContainerRequest {
                id: "c4".into(),
                image: image.clone(),
                spec: serde_json::to_vec(&bad_spec).unwrap(),
                ..Default::default()
            })
            .await;
        if made.is_ok() {
            let e = create_task(&client, "c4", false)
                .await
                .expect_err("bogus namespace");
            assert!(e.message().contains("c4"), "{e:?}");
            client
                .containers()
                .delete(cpb::DeleteContainerRequest { id: "c4".into() })
                .await
                .expect("rm c4");
        }
        client
            .containers()
            .delete(cpb::DeleteContainerRequest { id: "c3".into() })
            .await
            .expect("rm c3");
        // Still serving.
        client
            .version()
            .version(())
            .await
            .expect("the daemon still serves");
    });
    assert_nothing_left(&sup, ns);
}

#[test]
fn restart_reattaches_and_reports_exits() {
    let (_registry, mut sup, image) = setup("test/tasks-restart");
    let ns = "tasks-restart";
    pull(&sup, ns, &image);
    let rt = runtime();
    let client = connect(&rt, &sup, ns);
    let ids: Vec<String> = (0..20).map(|i| format!("r{i:02}")).collect();
    let mut pids = BTreeMap::new();
    rt.block_on(async {
        for id in &ids {
            // r19 exits 7 once /go exists; the rest run until killed.
            let script = if id == "r19" {
                "while [ ! -e /go ]; do busybox sleep 0.05; done; exit 7"
            } else {
                "trap 'exit 0' TERM; while :; do busybox sleep 0.1; done"
            };
            create_container(&client, id, &image, &["sh", "-c", script], 0)
                .await
                .expect("create");
            pids.insert(
                id.clone(),
                create_task(&client, id, false).await.expect("task"),
            );
            start(&client, id, "").await.expect("start");
        }
    });
    let after = last_sequence(&rt, &client);
    drop(client);
    assert_eq!(shims_of(&sup).len(), 20, "one shim per container");

    sup.kill9();
    // While the supervisor is down, r19 exits: its shim records it.
    let bundle = sup.dir().join("state/shims").join(ns).join("r19");
    std::fs::write(bundle.join("rootfs/go"), "").expect("touch /go");
    let deadline = Instant::now() + DEADLINE;
    while !bundle.join("exit.json").exists() {
        assert!(Instant::now() < deadline, "r19 did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    sup.start_again();

    let client = connect(&rt, &sup, ns);
    rt.block_on(async {
        let list = client
            .tasks()
            .list(tpb::ListTasksRequest {})
            .await
            .expect("list")
            .into_inner()
            .tasks;
        assert_eq!(list.len(), 20, "{list:?}");
        for t in &list {
            let want = if t.container_id == "r19" {
                tpb::Status::Stopped
            } else {
                tpb::Status::Running
            };
            assert_eq!(t.status, want as i32, "{t:?}");
            assert_eq!(t.pid, pids[&t.container_id], "{t:?}");
        }
        assert_eq!(wait(&client, "r19", "").await, 7);
        // The reattached ones still take orders.
        for id in &ids[..19] {
            kill(&client, id, libc::SIGTERM).await;
        }
        for id in &ids[..19] {
            assert_eq!(wait(&client, id, "").await, 0, "{id}");
        }
        for id in &ids {
            delete_all(&client, id).await;
        }
    });
    // r19's exit was reported once, with its true status, after the restart.
    let mut seen = 0;
    let got = events_until(&rt, &client, after, "/tasks/exit", |_| {
        seen += 1;
        seen == 20
    });
    let r19: Vec<_> = got
        .iter()
        .filter(|(_, a)| a["container_id"] == "r19")
        .collect();
    assert_eq!(r19.len(), 1, "{got:?}");
    assert_eq!(r19[0].1["exit_status"], "7");
    for pid in pids.values() {
        assert!(!process_alive(*pid), "process {pid} still runs");
    }
    assert_nothing_left(&sup, ns);
}

/// Runs `busybox sleep 1000` as task `id`, then kills the supervisor with
/// SIGKILL; the container's init pid and its shim's pid.
fn sleeper_then_crash(
    rt: &Runtime,
    sup: &mut Supervisor,
    ns: &str,
    image: &str,
    id: &str,
) -> (u32, i32) {
    let client = connect(rt, sup, ns);
    let pid = rt.block_on(async {
        create_container(&client, id, image, &["busybox", "sleep", "1000"], 0)
            .await
            .expect("create");
        let pid = create_task(&client, id, false).await.expect("task");
        start(&client, id, "").await.expect("start");
        pid
    });
    drop(client);
    sup.kill9();
    let pid_file = sup
        .dir()
        .join("state/shims")
        .join(ns)
        .join(id)
        .join("shim.pid");
    let shim = std::fs::read_to_string(pid_file)
        .expect("shim.pid")
        .trim()
        .parse()
        .expect("a pid");
    (pid, shim)
}

#[test]
fn a_dead_shim_is_cleaned_up_at_restart() {
    let (_registry, mut sup, image) = setup("test/tasks-dead");
    let ns = "tasks-dead";
    pull(&sup, ns, &image);
    let rt = runtime();
    let (pid, shim) = sleeper_then_crash(&rt, &mut sup, ns, &image, "d1");
    // SAFETY: kill(2) of the test's own shim.
    unsafe { libc::kill(shim, libc::SIGKILL) };
    sup.start_again();
    let client = connect(&rt, &sup, ns);
    // The container it held is killed, and the task is gone.
    let deadline = Instant::now() + DEADLINE;
    while process_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the orphaned container still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.block_on(async {
        let e = client
            .tasks()
            .get(tpb::GetRequest {
                container_id: "d1".into(),
                exec_id: String::new(),
            })
            .await
            .expect_err("the task is gone");
        assert_eq!(e.code(), Code::NotFound);
        client
            .containers()
            .delete(cpb::DeleteContainerRequest { id: "d1".into() })
            .await
            .expect("delete the container");
    });
    let got = events_until(&rt, &client, 0, "/tasks/delete", |_| true);
    assert_eq!(got[0].1["container_id"], "d1");
    assert_nothing_left(&sup, ns);
}

#[test]
fn a_hundred_containers_at_once() {
    let (_registry, sup, image) = setup("test/tasks-many");
    let ns = "tasks-many";
    pull(&sup, ns, &image);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Ten clients, each on its own connection, ten containers each.
    let clients: Vec<Client> = (0..10).map(|_| connect(&rt, &sup, ns)).collect();
    let started = Instant::now();
    rt.block_on(async {
        let mut all = Vec::new();
        for i in 0..100 {
            let client = clients[i % 10].clone();
            let image = image.clone();
            all.push(tokio::spawn(async move {
                let id = format!("m{i:03}");
                let text = format!("echo {id}");
                create_container(&client, &id, &image, &["sh", "-c", &text], 0).await?;
                create_task(&client, &id, false).await?;
                let output = attach_collect(&client, &id, "", None).await;
                start(&client, &id, "").await?;
                let status = wait(&client, &id, "").await;
                let (out, _) = output.await.expect("output");
                delete_all(&client, &id).await;
                Ok::<_, tonic::Status>((id, status, out))
            }));
        }
        for task in all {
            let (id, status, out) = task.await.expect("join").expect("container run");
            assert_eq!(status, 0, "{id}");
            assert_eq!(String::from_utf8_lossy(&out), format!("{id}\n"));
        }
    });
    eprintln!("100 containers run in {:?}", started.elapsed());
    assert_nothing_left(&sup, ns);
    let list = rt.block_on(async {
        clients[0]
            .containers()
            .list(cpb::ListContainersRequest::default())
            .await
            .expect("list")
            .into_inner()
            .containers
    });
    assert!(list.is_empty(), "{list:?}");
}

#[test]
fn clients_killed_mid_run_leave_nothing_stuck() {
    let (_registry, sup, image) = setup("test/tasks-cut");
    let ns = "tasks-cut";
    pull(&sup, ns, &image);
    // Clients killed at different moments of create, attach and start.
    let mut children = Vec::new();
    for i in 0..12 {
        let child = std::process::Command::new(ctr_binary())
            .arg("--address")
            .arg(sup.socket())
            .args(["-n", ns, "run", "--name", &format!("k{i:02}"), &image])
            .args(["busybox", "sleep", "1000"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("berth-ctr run");
        children.push(child);
    }
    for (i, mut child) in children.into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(5 * i as u64));
        let _ = child.kill();
        let _ = child.wait();
    }
    let rt = runtime();
    let client = connect(&rt, &sup, ns);
    rt.block_on(async {
        // Every container the clients made can be stopped and removed.
        let containers = client
            .containers()
            .list(cpb::ListContainersRequest::default())
            .await
            .expect("list")
            .into_inner()
            .containers;
        for c in containers {
            let deadline = Instant::now() + DEADLINE;
            loop {
                let deleted = client
                    .containers()
                    .delete(cpb::DeleteContainerRequest { id: c.id.clone() })
                    .await;
                match deleted {
                    Ok(_) => break,
                    Err(e) if e.code() == Code::FailedPrecondition => {
                        assert!(Instant::now() < deadline, "{} stuck: {e}", c.id);
                        let _ = client
                            .tasks()
                            .kill(tpb::KillRequest {
                                container_id: c.id.clone(),
                                signal: libc::SIGKILL as u32,
                                all: true,
                                ..Default::default()
                            })
                            .await;
                        let _ = client
                            .tasks()
                            .delete(tpb::DeleteTaskRequest {
                                container_id: c.id.clone(),
                            })
                            .await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("delete {}: {e}", c.id),
                }
            }
        }
    });
    assert_nothing_left(&sup, ns);
}

#[test]
fn a_stuck_shim_is_left_alone_at_restart() {
    let (_registry, mut sup, image) = setup("test/tasks-stuck");
    let ns = "tasks-stuck";
    pull(&sup, ns, &image);
    let rt = runtime();
    let (pid, shim) = sleeper_then_crash(&rt, &mut sup, ns, &image, "s1");
    // A shim that lives but does not answer (stopped): the restart must
    // neither hang on it nor take it for dead and kill its container.
    // SAFETY: kill(2) of the test's own shim.
    unsafe { libc::kill(shim, libc::SIGSTOP) };
    let started = Instant::now();
    sup.start_again();
    let client = connect(&rt, &sup, ns);
    let listed = rt.block_on(async {
        client
            .tasks()
            .list(tpb::ListTasksRequest {})
            .await
            .expect("list")
            .into_inner()
            .tasks
    });
    // SAFETY: as above.
    unsafe { libc::kill(shim, libc::SIGCONT) };
    assert!(listed.is_empty(), "{listed:?}");
    assert!(
        process_alive(pid),
        "the container of a live shim was killed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(sup.log().contains("task not recovered"), "{}", sup.log());
    // Answering again, it is reattached at the next restart.
    sup.kill9();
    sup.start_again();
    let client = connect(&rt, &sup, ns);
    rt.block_on(async {
        assert_eq!(get(&client, "s1").await.pid, pid);
        kill(&client, "s1", libc::SIGKILL).await;
        assert_eq!(wait(&client, "s1", "").await, 137);
        delete_all(&client, "s1").await;
    });
    assert_nothing_left(&sup, ns);
}
