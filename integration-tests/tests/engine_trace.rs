//! Tracing one container start through every layer: `berth run --trace`
//! prints the phases of the CLI, berthd, the supervisor, the shim and the
//! runtime on one time base, nested within each other and within the
//! total; the `X-Berth-Trace` header on a raw API call returns the spans of
//! every layer below; an untraced call carries none and the container never
//! sees the runtime's trace variable.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use berth_client::trace::{decode, Layer, Span};
use integration_tests::engine::Berthd;

/// One row of the printed trace.
#[derive(Debug)]
struct Row {
    offset_ms: f64,
    time_ms: f64,
    layer: String,
    depth: usize,
    phase: String,
}

impl Row {
    fn end_ms(&self) -> f64 {
        self.offset_ms + self.time_ms
    }
}

/// The table `--trace` prints: `OFFSET ms  TIME ms  LAYER  PHASE`, the
/// phase indented two spaces per level.
fn parse_table(stderr: &str) -> Vec<Row> {
    let mut lines = stderr.lines().skip_while(|l| !l.contains("OFFSET ms"));
    let header = lines.next().expect("a trace table on stderr");
    let phase_col = header.find("PHASE").expect("a PHASE column");
    lines
        .map(|l| {
            let (nums, phase) = l.split_at(phase_col);
            let mut cols = nums.split_whitespace();
            let offset_ms = cols.next().and_then(|c| c.parse().ok()).expect("an offset");
            let time_ms = cols
                .next()
                .and_then(|c| c.parse().ok())
                .expect("a duration");
            let layer = cols.next().expect("a layer").to_string();
            let depth = (phase.len() - phase.trim_start().len()) / 2;
            Row {
                offset_ms,
                time_ms,
                layer,
                depth,
                phase: phase.trim().to_string(),
            }
        })
        .collect()
}

/// The index of each row's parent: the nearest row above one level up.
fn parents(rows: &[Row]) -> Vec<Option<usize>> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            (r.depth > 0).then(|| {
                (0..i)
                    .rev()
                    .find(|&j| rows[j].depth == r.depth - 1)
                    .expect("a parent row")
            })
        })
        .collect()
}

fn ancestors(rows: &[Row], parents: &[Option<usize>], mut i: usize) -> Vec<String> {
    let mut names = Vec::new();
    while let Some(p) = parents[i] {
        names.push(format!("{} {}", rows[p].layer, rows[p].phase));
        i = p;
    }
    names
}

fn find<'a>(rows: &'a [Row], layer: &str, phase: &str) -> (usize, &'a Row) {
    rows.iter()
        .enumerate()
        .find(|(_, r)| r.layer == layer && r.phase.starts_with(phase))
        .unwrap_or_else(|| panic!("no {layer} phase {phase:?} in {rows:#?}"))
}

#[test]
fn berth_run_trace_prints_every_layer_nested_within_the_total() {
    let d = Berthd::start();
    let (code, stdout, stderr) = d.berth(&["run", "--rm", "--trace", "busybox", "echo", "hi"]);
    assert_eq!(code, 0, "berth run --trace: {stderr}");
    assert_eq!(stdout, "hi\n", "the container's output is untouched");
    let rows = parse_table(&stderr);
    // The total comes first and holds everything.
    let total = &rows[0];
    assert_eq!(
        (total.layer.as_str(), total.phase.as_str(), total.depth),
        ("cli", "berth run", 0)
    );
    assert_eq!(total.offset_ms, 0.0);
    assert!(total.time_ms > 0.0);
    for layer in ["cli", "engine", "supervisor", "shim", "runtime"] {
        assert!(
            rows.iter().any(|r| r.layer == layer),
            "no {layer} phase in {stderr}"
        );
    }
    // Every row lies within its parent (to the printed microsecond), and
    // a parent's children, one after another, take no more than it does.
    // Only the runtime does two things at once (it makes the cgroup while
    // its init mounts).
    let up = parents(&rows);
    const SLACK: f64 = 0.002;
    for (i, r) in rows.iter().enumerate().skip(1) {
        assert!(r.depth >= 1, "only the total is at the top: {r:?}");
        let p = &rows[up[i].unwrap()];
        assert!(
            r.offset_ms + SLACK >= p.offset_ms && r.end_ms() <= p.end_ms() + SLACK,
            "{r:?} is not within {p:?}"
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let children: Vec<&Row> = rows
            .iter()
            .enumerate()
            .filter(|(j, _)| up[*j] == Some(i))
            .map(|(_, c)| c)
            .collect();
        let overlap = children
            .windows(2)
            .any(|w| w[1].offset_ms + SLACK < w[0].end_ms());
        if overlap {
            assert!(
                children.iter().all(|c| c.layer == "runtime"),
                "overlapping phases under {r:?}: {children:#?}"
            );
            continue;
        }
        let sum: f64 = children.iter().map(|c| c.time_ms).sum();
        assert!(
            sum <= r.time_ms + SLACK * children.len() as f64,
            "the children of {r:?} take {sum} ms"
        );
    }
    // The CLI's phases, one after another, make up nearly all of the run.
    let cli_sum: f64 = rows
        .iter()
        .filter(|r| r.depth == 1)
        .map(|r| r.time_ms)
        .sum();
    assert!(
        cli_sum >= total.time_ms * 0.9,
        "the CLI's phases take {cli_sum} of {} ms",
        total.time_ms
    );
    // The CLI's phases, in order, one after another.
    let cli: Vec<&str> = rows
        .iter()
        .filter(|r| r.depth == 1)
        .map(|r| r.phase.as_str())
        .collect();
    assert_eq!(
        cli,
        [
            "connect (API version)",
            "create",
            "attach",
            "wait (registered)",
            "start",
            "the container runs: output relayed, exit waited for"
        ],
        "{stderr}"
    );
    // Each layer's phases sit under the layer above that called it.
    let start_request = rows
        .iter()
        .find(|r| {
            r.layer == "engine"
                && r.phase.starts_with("berthd POST /containers/")
                && r.phase.ends_with("/start")
        })
        .expect("berthd's start request");
    let (i, _) = find(&rows, "runtime", "init: hooks, pivot_root");
    assert_eq!(
        ancestors(&rows, &up, i),
        [
            "runtime init set up (until it is ready)".to_string(),
            "shim berth-runtime create (spawn to exit)".into(),
            "shim shim start-up (set-up, container created)".into(),
            "supervisor berth-shim run (until it serves)".into(),
            "supervisor Tasks/Create".into(),
            "engine gRPC Tasks/Create".into(),
            "engine task created, ports published".into(),
            format!("engine {}", start_request.phase),
            "cli start".into(),
            "cli berth run".into(),
        ],
        "{stderr}"
    );
    let (i, _) = find(&rows, "runtime", "init released: seccomp, user, execve");
    let chain = ancestors(&rows, &up, i);
    assert_eq!(
        chain[0], "shim berth-runtime start (spawn to exit)",
        "{stderr}"
    );
    assert_eq!(chain[1], "supervisor shim start", "{stderr}");
    assert_eq!(chain[2], "supervisor Tasks/Start", "{stderr}");
    assert_eq!(chain[3], "engine gRPC Tasks/Start", "{stderr}");
    let (i, _) = find(
        &rows,
        "supervisor",
        "Containers/Create (snapshot prepared, record written)",
    );
    assert!(
        ancestors(&rows, &up, i).contains(&"cli create".to_string()),
        "{stderr}"
    );
    // Without --trace: nothing on stderr.
    let (code, stdout, stderr) = d.berth(&["run", "--rm", "busybox", "echo", "hi"]);
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "hi\n", ""));
}

/// One request on the API socket with extra header lines: status, the
/// response's head (lowercased) and body.
fn request(
    d: &Berthd,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = UnixStream::connect(d.socket()).expect("connect to berthd");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("set a read timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("send the request");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read the response");
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head.to_string(), body.to_string())
}

/// The spans in a response's `x-berth-trace` header, if any.
fn spans_of(head: &str) -> Option<Vec<Span>> {
    head.lines()
        .find_map(|l| {
            l.strip_prefix("x-berth-trace: ")
                .or_else(|| l.strip_prefix("X-Berth-Trace: "))
        })
        .map(|v| decode(v.trim().as_bytes()).expect("spans as JSON"))
}

fn layers(spans: &[Span]) -> Vec<Layer> {
    let mut l: Vec<Layer> = spans.iter().map(|s| s.layer).collect();
    l.sort();
    l.dedup();
    l
}

#[test]
fn the_trace_header_on_raw_api_calls_returns_every_layers_spans() {
    let d = Berthd::start();
    let body = r#"{"Image":"busybox","Cmd":["env"]}"#;
    let traced = "X-Berth-Trace: 1\r\n";
    let (status, head, created) = request(&d, "POST", "/v1.47/containers/create", traced, body);
    assert_eq!(status, 201, "{created}");
    let id = serde_json::from_str::<serde_json::Value>(&created).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let spans = spans_of(&head).expect("spans on a traced create");
    assert_eq!(
        layers(&spans),
        [Layer::Engine, Layer::Supervisor],
        "{spans:#?}"
    );
    let (status, head, _) = request(
        &d,
        "POST",
        &format!("/v1.47/containers/{id}/start"),
        traced,
        "",
    );
    assert_eq!(status, 204);
    let spans = spans_of(&head).expect("spans on a traced start");
    assert_eq!(
        layers(&spans),
        [
            Layer::Engine,
            Layer::Supervisor,
            Layer::Shim,
            Layer::Runtime
        ],
        "{spans:#?}"
    );
    // One time base: the whole request holds every lower layer's span.
    let outer = spans
        .iter()
        .find(|s| s.layer == Layer::Engine && s.name.starts_with("berthd POST"))
        .expect("the request's span");
    for s in &spans {
        assert!(s.start_ns > 0 && s.start_ns <= s.end_ns, "{s:?}");
        assert!(outer.contains(s), "{s:?} outside {outer:?}");
    }
    for name in [
        "init: namespaces entered",
        "init: rootfs mounts and devices",
        "init: hooks, pivot_root",
        "init released: seccomp, user, execve",
    ] {
        assert!(
            spans
                .iter()
                .any(|s| s.layer == Layer::Runtime && s.name == name),
            "no runtime step {name:?} in {spans:#?}"
        );
    }
    // The container did not get the runtime's trace variable.
    let (status, _, _) = request(&d, "POST", &format!("/v1.47/containers/{id}/wait"), "", "");
    assert_eq!(status, 200);
    let (status, _, logs) = request(
        &d,
        "GET",
        &format!("/v1.47/containers/{id}/logs?stdout=1"),
        "",
        "",
    );
    assert_eq!(status, 200);
    assert!(logs.contains("PATH="), "the env output: {logs}");
    assert!(!logs.contains("BERTH_RUNTIME_TRACE"), "{logs}");

    // Untraced: no header anywhere.
    let (status, head, created) = request(&d, "POST", "/v1.47/containers/create", "", body);
    assert_eq!(status, 201);
    assert!(spans_of(&head).is_none(), "{head}");
    let id = serde_json::from_str::<serde_json::Value>(&created).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, head, _) = request(&d, "POST", &format!("/v1.47/containers/{id}/start"), "", "");
    assert_eq!(status, 204);
    assert!(spans_of(&head).is_none(), "{head}");
    let shim_dir = d.exec_root().join("shims").join("berth").join(&id);
    assert!(
        !shim_dir.join("runtime-trace.json").exists(),
        "an untraced start leaves no runtime trace"
    );
}
