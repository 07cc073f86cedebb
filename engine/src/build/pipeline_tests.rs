//! Builds on the in-memory supervisor: what is written, named and said.

use super::*;
use crate::backend::fake::Fake;
use crate::backend::Supervisor;
use crate::images::tests::{add, engine, BUSYBOX};

fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    dir
}

async fn run(
    engine: &Arc<Engine>,
    opts: &BuildOptions,
    dir: &Path,
) -> (Result<String, BuildError>, Vec<Message>) {
    let (tx, mut rx) = mpsc::channel(256);
    let result = build(engine, opts, dir, &tx).await;
    drop(tx);
    let mut messages = Vec::new();
    while let Some(m) = rx.recv().await {
        messages.push(m);
    }
    (result, messages)
}

fn text(messages: &[Message]) -> String {
    messages.iter().filter_map(|m| m.stream.clone()).collect()
}

async fn config_of(fake: &Fake, name: &str) -> Value {
    let image = fake.get_image(name).await.unwrap();
    let manifest = fake.read_blob(&image.target.unwrap().digest).await.unwrap();
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let config = fake
        .read_blob(manifest["config"]["digest"].as_str().unwrap())
        .await
        .unwrap();
    serde_json::from_slice(&config).unwrap()
}

#[tokio::test]
async fn metadata_steps_make_a_tagged_image_with_docker_output() {
    let fake = Fake::new();
    let base_id = add(&fake, BUSYBOX, "2024-01-01T00:00:00Z", &[b"layer".to_vec()]);
    let (engine, _dir) = engine(&fake).await;
    let dir = context(
        "ARG TAG=latest\nFROM busybox:${TAG}\nARG WHO=world\nENV GREETING=\"hello $WHO\"\n\
         LABEL a=b\nEXPOSE 80\nCMD [\"sh\"]\n",
    );
    let opts = BuildOptions {
        tags: vec!["hello:v1".into(), "hello:v2".into()],
        build_args: BTreeMap::from([("WHO".to_string(), Some("berth".to_string()))]),
        labels: BTreeMap::from([("built.by".to_string(), "test".to_string())]),
        ..Default::default()
    };
    let (result, messages) = run(&engine, &opts, dir.path()).await;
    let id = result.unwrap();
    let out = text(&messages);
    assert!(
        out.starts_with("Step 1/8 : ARG TAG=latest\nStep 2/8 : FROM busybox:${TAG}\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(" ---> {}\n", short_id(&base_id))),
        "{out}"
    );
    assert!(
        out.contains("Step 4/8 : ENV GREETING=\"hello $WHO\"\n"),
        "{out}"
    );
    assert!(
        out.contains("Step 8/8 : LABEL \"built.by\"='test'\n"),
        "{out}"
    );
    assert!(
        out.ends_with(&format!(
            "Successfully built {}\nSuccessfully tagged hello:v1\nSuccessfully tagged hello:v2\n",
            short_id(&id)
        )),
        "{out}"
    );
    assert!(messages.iter().any(|m| m.aux == Some(json!({"ID": id}))));

    let config = config_of(&fake, "docker.io/library/hello:v1").await;
    assert_eq!(config["config"]["Env"], json!(["GREETING=hello berth"]));
    assert_eq!(
        config["config"]["Labels"],
        json!({"a": "b", "app": "other", "built.by": "test"})
    );
    assert_eq!(config["config"]["ExposedPorts"], json!({"80/tcp": {}}));
    let history = config["history"].as_array().unwrap();
    assert_eq!(
        history[1]["created_by"],
        json!("/bin/sh -c #(nop)  ARG WHO=world")
    );
    assert_eq!(
        history[2]["created_by"],
        json!("/bin/sh -c #(nop)  ENV GREETING=hello berth")
    );
    assert_eq!(history[2]["empty_layer"], json!(true));
    // The base's layers carry over.
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    let v2 = fake.get_image("docker.io/library/hello:v2").await.unwrap();
    let v1 = fake.get_image("docker.io/library/hello:v1").await.unwrap();
    assert_eq!(v1.target, v2.target);
}

#[tokio::test]
async fn a_url_that_cannot_be_fetched_fails_clearly_and_leaves_nothing() {
    let fake = Fake::new();
    add(&fake, BUSYBOX, "2024-01-01T00:00:00Z", &[b"layer".to_vec()]);
    let (engine, dir) = engine(&fake).await;
    // Port 1 on loopback: nothing listens.
    let context_dir = context("FROM busybox\nADD http://127.0.0.1:1/x /x\n");
    let (result, _) = run(&engine, &BuildOptions::default(), context_dir.path()).await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.starts_with("Dockerfile parse error line 2: failed to GET http://127.0.0.1:1/x: ")
            || message.starts_with("failed to GET http://127.0.0.1:1/x: "),
        "{message}"
    );
    assert!(message.contains("onnection refused"), "{message}");
    assert!(!fake.calls().iter().any(|c| c.starts_with("create_image")));
    let builds = engine.paths.engine_dir().join("builds");
    let left: Vec<_> = std::fs::read_dir(&builds)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    drop(dir);
}

#[tokio::test]
async fn parse_errors_and_a_missing_dockerfile() {
    let fake = Fake::new();
    let (engine, _dir) = engine(&fake).await;
    let dir = context("FROM busybox\nFOO bar\n");
    let (result, messages) = run(&engine, &BuildOptions::default(), dir.path()).await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "Dockerfile parse error line 2: unknown instruction: FOO"
    );
    assert!(messages.is_empty());
    let opts = BuildOptions {
        dockerfile: "nope/Dockerfile".into(),
        ..Default::default()
    };
    let (result, _) = run(&engine, &opts, dir.path()).await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "Cannot locate specified Dockerfile: nope/Dockerfile"
    );
}

#[tokio::test]
async fn scratch_stages_targets_and_untagged_images() {
    let fake = Fake::new();
    let (engine, _dir) = engine(&fake).await;
    let dir = context(
        "FROM scratch AS base\nENV A=1\nFROM base AS next\nENV B=2\nFROM scratch AS other\nCMD [\"x\"]\n",
    );
    let opts = BuildOptions {
        target: Some("next".into()),
        quiet: true,
        ..Default::default()
    };
    let (result, messages) = run(&engine, &opts, dir.path()).await;
    let id = result.unwrap();
    // Quiet: the id only.
    assert_eq!(text(&messages), format!("{id}\n"));
    let created: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("create_image"))
        .collect();
    assert_eq!(created.len(), 1);
    assert!(created[0].starts_with(&format!("create_image build-{}@sha256:", short_id(&id))));
    let name = created[0].split(' ').nth(1).unwrap().to_string();
    let config = config_of(&fake, &name).await;
    assert_eq!(config["config"]["Env"], json!(["A=1", "B=2"]));
    assert_eq!(config["config"].get("Cmd"), None);
    assert_eq!(config["rootfs"]["diff_ids"], json!([]));
}

#[tokio::test]
async fn unused_build_args_are_warned_about() {
    let fake = Fake::new();
    let (engine, _dir) = engine(&fake).await;
    let dir = context("FROM scratch\nENV A=1\n");
    let opts = BuildOptions {
        build_args: BTreeMap::from([("NOPE".to_string(), Some("1".to_string()))]),
        ..Default::default()
    };
    let (result, messages) = run(&engine, &opts, dir.path()).await;
    result.unwrap();
    assert!(text(&messages).contains("[Warning] One or more build-args [NOPE] were not consumed\n"));
}

#[tokio::test]
async fn an_unchanged_rebuild_uses_the_cache_and_makes_the_same_image() {
    let fake = Fake::new();
    add(&fake, BUSYBOX, "2024-01-01T00:00:00Z", &[b"layer".to_vec()]);
    let (engine, _dir) = engine(&fake).await;
    let dir = context("FROM busybox\nARG A=1\nENV B=$A\nCMD [\"x\"]\n");
    let opts = BuildOptions::default();
    let (first, messages) = run(&engine, &opts, dir.path()).await;
    assert!(!text(&messages).contains("Using cache"));
    let (second, messages) = run(&engine, &opts, dir.path()).await;
    assert_eq!(text(&messages).matches(" ---> Using cache\n").count(), 3);
    assert_eq!(first.unwrap(), second.unwrap());
    // Another value: that step and the ones after it run again.
    let opts = BuildOptions {
        build_args: BTreeMap::from([("A".to_string(), Some("2".to_string()))]),
        ..Default::default()
    };
    let (_, messages) = run(&engine, &opts, dir.path()).await;
    assert_eq!(text(&messages).matches(" ---> Using cache\n").count(), 1);
    let opts = BuildOptions {
        no_cache: true,
        ..Default::default()
    };
    let (_, messages) = run(&engine, &opts, dir.path()).await;
    assert!(!text(&messages).contains("Using cache"));
}

#[tokio::test]
async fn a_build_writes_under_a_lease_it_deletes_at_its_end_failed_or_not() {
    let fake = Fake::new();
    add(&fake, BUSYBOX, "2024-01-01T00:00:00Z", &[b"layer".to_vec()]);
    let (engine, _dir) = engine(&fake).await;
    let dir = context("FROM busybox\nENV A=1\n");
    let (result, _) = run(&engine, &BuildOptions::default(), dir.path()).await;
    result.unwrap();
    let calls = fake.calls();
    let lease = calls
        .iter()
        .find_map(|c| c.strip_prefix("create_lease "))
        .and_then(|c| c.split(' ').next())
        .expect("a lease")
        .to_string();
    assert!(lease.starts_with("build-"), "{lease}");
    assert_eq!(calls.last().unwrap(), &format!("delete_lease {lease}"));
    let leased = fake.leased_calls();
    let writes: Vec<_> = leased
        .iter()
        .filter(|(c, _)| c.starts_with("write_blob"))
        .collect();
    assert_eq!(writes.len(), 2, "config and manifest: {leased:?}");
    assert!(writes.iter().all(|(_, l)| *l == lease));
    // Outside the build nothing is leased.
    assert!(crate::backend::current_lease().is_none());

    // A build that fails (a base that is nowhere) deletes its lease too.
    let dir = context("FROM nosuch/image\n");
    let (result, _) = run(&engine, &BuildOptions::default(), dir.path()).await;
    assert!(result.is_err());
    let calls = fake.calls();
    let second = calls
        .iter()
        .filter_map(|c| c.strip_prefix("create_lease "))
        .filter_map(|c| c.split(' ').next())
        .next_back()
        .unwrap()
        .to_string();
    assert_ne!(second, lease);
    assert_eq!(calls.last().unwrap(), &format!("delete_lease {second}"));
}

#[tokio::test]
async fn the_dockerfile_and_dockerignore_leave_the_context_when_it_lists_them() {
    let fake = Fake::new();
    add(&fake, BUSYBOX, "2024-01-01T00:00:00Z", &[b"layer".to_vec()]);
    let (engine, _dir) = engine(&fake).await;
    let dir = context("FROM busybox\nENV A=1\n");
    std::fs::write(
        dir.path().join(".dockerignore"),
        "Dockerfile\n.dockerignore\n",
    )
    .unwrap();
    let (result, _) = run(&engine, &BuildOptions::default(), dir.path()).await;
    result.unwrap();
    assert!(!dir.path().join("Dockerfile").exists());
    assert!(!dir.path().join(".dockerignore").exists());
    // Not listed: both stay.
    let dir = context("FROM busybox\nENV A=1\n");
    std::fs::write(dir.path().join(".dockerignore"), "other\n").unwrap();
    let (result, _) = run(&engine, &BuildOptions::default(), dir.path()).await;
    result.unwrap();
    assert!(dir.path().join("Dockerfile").exists());
    assert!(dir.path().join(".dockerignore").exists());
}

#[tokio::test]
async fn a_platform_is_checked_against_this_daemons_and_the_base_images() {
    let fake = Fake::new();
    add(&fake, BUSYBOX, "2024-01-01T00:00:00Z", &[b"layer".to_vec()]);
    let (engine, _dir) = engine(&fake).await;
    let host = format!("linux/{}", crate::go_arch());

    // This host's platform, by FROM or by the query: built.
    let dir = context(&format!("FROM --platform={host} busybox\nENV A=1\n"));
    let (result, _) = run(&engine, &BuildOptions::default(), dir.path()).await;
    result.unwrap();
    let dir = context("FROM busybox\nENV A=2\n");
    let opts = BuildOptions {
        platform: Some(host.clone()),
        ..Default::default()
    };
    run(&engine, &opts, dir.path()).await.0.unwrap();

    // Another platform, or a malformed one: refused, naming it.
    let foreign = if crate::go_arch() == "arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    let dir = context(&format!("FROM --platform={foreign} busybox\nENV A=3\n"));
    let (result, _) = run(&engine, &BuildOptions::default(), dir.path()).await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains(foreign) && message.contains(&host),
        "{message}"
    );
    let opts = BuildOptions {
        platform: Some("linux/amd64/v8/x".into()),
        ..Default::default()
    };
    let (result, _) = run(&engine, &opts, context("FROM busybox\n").path()).await;
    assert!(result
        .unwrap_err()
        .to_string()
        .contains("unknown operating system or architecture"),);
}

#[test]
fn platforms_are_read_as_docker_writes_them() {
    let host = format!("linux/{}", crate::go_arch());
    assert_eq!(host_platform(&host).unwrap(), host);
    assert_eq!(host_platform("linux").unwrap(), host);
    assert_eq!(
        host_platform(&format!("LINUX/{}", crate::go_arch())).unwrap(),
        host
    );
    assert!(host_platform("windows/amd64").is_err());
    assert!(host_platform("").is_err());
    assert!(host_platform("linux/").is_err());
}
