//! The supervisor's events: image changes are published in order with
//! increasing sequence numbers, only to subscribers of their namespace;
//! filters select topics; a subscriber that reconnects replays what it
//! missed, across a restart of the supervisor too; berth-ctr prints them.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_proto::events::v1 as events_pb;
use integration_tests::registry::{Auth, Registry};
use integration_tests::supervisor::{connect, ctr_binary, push_layered, runtime, Supervisor};
use tonic::Code;

/// (topic, name attribute) of each event.
type Seen = Vec<(u64, String, String)>;

fn seen(e: &events_pb::Envelope) -> (u64, String, String) {
    (
        e.sequence,
        e.topic.clone(),
        e.attributes.get("name").cloned().unwrap_or_default(),
    )
}

/// A subscription in `ns`: once this returns, the supervisor sends it
/// every later event.
fn subscribe(
    rt: &tokio::runtime::Runtime,
    sup: &Supervisor,
    ns: &str,
    topics: &[&str],
    after: Option<u64>,
) -> tonic::Streaming<events_pb::Envelope> {
    let client = connect(rt, sup, ns);
    rt.block_on(client.events().subscribe(events_pb::SubscribeRequest {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        after_sequence: after,
    }))
    .expect("subscribe")
    .into_inner()
}

/// Subscribes in `ns` and collects `count` events (or fails after 20 s).
fn collect(sup: &Supervisor, ns: &str, topics: &[&str], after: Option<u64>, count: usize) -> Seen {
    let rt = runtime();
    let stream = subscribe(&rt, sup, ns, topics, after);
    read(&rt, stream, count)
}

fn read(
    rt: &tokio::runtime::Runtime,
    mut stream: tonic::Streaming<events_pb::Envelope>,
    count: usize,
) -> Seen {
    rt.block_on(async {
        let mut out = Vec::new();
        while out.len() < count {
            let next = tokio::time::timeout(Duration::from_secs(20), stream.message())
                .await
                .unwrap_or_else(|_| panic!("only {} of {count} events came: {out:?}", out.len()))
                .expect("event stream")
                .expect("stream ended");
            out.push(seen(&next));
        }
        out
    })
}

#[test]
fn image_changes_are_published_in_order_and_replayed() {
    let registry = Registry::start(Auth::None);
    push_layered(&registry, "test/events:v1");
    let mut sup = Supervisor::start();
    let name = format!("{}/test/events:v1", registry.host());
    let copy = format!("{}/test/events:copy", registry.host());

    // A live subscriber, in place before the changes.
    let rt = runtime();
    let stream = subscribe(&rt, &sup, "default", &[], None);
    sup.ctr(&["images", "pull", &name]).ok();
    sup.ctr(&["images", "pull", &name]).ok();
    sup.ctr(&["images", "tag", &name, &copy]).ok();
    sup.ctr(&["images", "rm", &copy]).ok();
    let live = read(&rt, stream, 4);
    let topics: Vec<(&str, &str)> = live
        .iter()
        .map(|(_, t, n)| (t.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        topics,
        vec![
            ("/images/create", name.as_str()),
            ("/images/update", name.as_str()),
            ("/images/create", copy.as_str()),
            ("/images/delete", copy.as_str()),
        ]
    );
    assert!(live.windows(2).all(|w| w[0].0 < w[1].0), "{live:?}");

    // Replay after the first: the other three, in order; with a filter,
    // only the deletion.
    let first = live[0].0;
    assert_eq!(
        collect(&sup, "default", &[], Some(first), 3),
        live[1..].to_vec()
    );
    assert_eq!(
        collect(&sup, "default", &["/images/delete"], Some(first), 1),
        live[3..].to_vec()
    );
    assert_eq!(
        collect(&sup, "default", &["/images/"], Some(first), 3),
        live[1..].to_vec()
    );

    // Kept across a restart, and numbering goes on.
    sup.restart();
    assert_eq!(
        collect(&sup, "default", &[], Some(first), 3),
        live[1..].to_vec()
    );
    sup.ctr(&["images", "rm", &name]).ok();
    let after = collect(&sup, "default", &[], Some(live[3].0), 1);
    assert_eq!(after[0].1, "/images/delete");
    assert!(after[0].0 > live[3].0);

    // Another namespace sees none of it; it sees its own.
    let other = connect(&rt, &sup, "other");
    rt.block_on(other.events().publish(events_pb::PublishRequest {
        topic: "/custom/thing".to_string(),
        attributes: [("name".to_string(), "x".to_string())].into(),
    }))
    .expect("publish");
    let theirs = collect(&sup, "other", &[], Some(0), 1);
    assert_eq!(theirs[0].1, "/custom/thing");
    let err = rt
        .block_on(other.events().publish(events_pb::PublishRequest {
            topic: "no-slash".to_string(),
            attributes: Default::default(),
        }))
        .expect_err("a bad topic is refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // berth-ctr prints them, one line each.
    let mut child = Command::new(ctr_binary())
        .arg("--address")
        .arg(sup.socket())
        .args(["events", "--after", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth-ctr events");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while text.lines().count() < 5 {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        text
    });
    // berth-ctr streams until killed: stop it once the lines are in, or
    // at the deadline (the reader then sees the end of its output).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = reader.join().expect("reader");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with(&format!("{first} ")), "{text}");
    assert!(
        lines[0].contains(" /images/create ") && lines[0].contains(&format!("name={name}")),
        "{text}"
    );
}
