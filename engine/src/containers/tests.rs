//! The containers domain on the in-memory supervisor: create, start, the
//! exit reported by the supervisor's events, wait, remove, AutoRemove,
//! names, and what a failed create leaves (nothing).

use std::time::Duration;

use super::lifecycle::{self, WaitCondition};
use super::{create, ContainerError, Status};
use crate::backend::fake::Fake;
use crate::images::tests::{add, engine, BUSYBOX};
use crate::types::CreateRequest;

fn request(body: serde_json::Value) -> CreateRequest {
    serde_json::from_value(body).unwrap()
}

#[tokio::test]
async fn create_start_exit_wait_remove() {
    let fake = Fake::new();
    add(&fake, BUSYBOX, "2024-01-01T00:00:00Z", &[]);
    let (engine, _dir) = engine(&fake).await;
    engine.start_monitor().await.unwrap();

    let req = request(serde_json::json!({"Image": "busybox", "Cmd": ["sleep", "9"]}));
    let c = create::create(&engine, Some("web"), req.clone())
        .await
        .unwrap();
    assert_eq!(c.status(), Status::Created);
    assert_eq!(c.record().args, vec!["9".to_string()]);
    assert!(engine.paths.container_dir(&c.id).join("hosts").exists());
    // The name is taken; a bad one is refused; neither leaves a container.
    let dup = create::create(&engine, Some("web"), req.clone()).await;
    assert!(matches!(dup, Err(ContainerError::NameInUse { .. })));
    let bad = create::create(&engine, Some("a b"), req.clone()).await;
    assert!(matches!(bad, Err(ContainerError::InvalidName(_))));
    let missing = request(serde_json::json!({"Image": "nope"}));
    assert!(matches!(
        create::create(&engine, None, missing).await,
        Err(ContainerError::Image(_))
    ));
    assert_eq!(engine.containers.all().len(), 1);
    assert_eq!(
        std::fs::read_dir(engine.paths.engine_dir().join("containers"))
            .unwrap()
            .count(),
        1
    );

    lifecycle::start(&engine, &c).await.unwrap();
    assert_eq!(c.status(), Status::Running);
    assert!(matches!(
        lifecycle::start(&engine, &c).await,
        Err(ContainerError::AlreadyRunning(_))
    ));
    assert!(
        fake.calls().contains(&format!("start {} ", c.id)),
        "{:?}",
        fake.calls()
    );

    // The exit comes through the supervisor's events.
    fake.exit(&c.id, 3);
    let waited = tokio::time::timeout(
        Duration::from_secs(5),
        lifecycle::wait(&c, WaitCondition::NotRunning),
    );
    assert_eq!(waited.await.unwrap(), (3, None));
    assert_eq!(c.status(), Status::Exited);
    assert!(
        fake.calls().contains(&format!("delete_task {}", c.id)),
        "{:?}",
        fake.calls()
    );

    lifecycle::remove(&engine, &c, false, false).await.unwrap();
    assert!(matches!(
        engine.containers.get("web"),
        Err(ContainerError::NotFound(_))
    ));
    assert!(!engine.paths.container_dir(&c.id).exists());
    assert!(fake.calls().contains(&format!("delete_container {}", c.id)));
}

#[tokio::test]
async fn auto_remove_goes_at_its_exit_and_kill_ends_it() {
    let fake = Fake::new();
    add(&fake, BUSYBOX, "2024-01-01T00:00:00Z", &[]);
    let (engine, _dir) = engine(&fake).await;
    engine.start_monitor().await.unwrap();
    let req = request(serde_json::json!({
        "Image": "busybox", "Cmd": ["sleep", "9"], "HostConfig": {"AutoRemove": true}
    }));
    let c = create::create(&engine, None, req).await.unwrap();
    lifecycle::start(&engine, &c).await.unwrap();
    lifecycle::kill(&engine, &c, Some("KILL")).await.unwrap();
    let waited = tokio::time::timeout(
        Duration::from_secs(5),
        lifecycle::wait(&c, WaitCondition::Removed),
    );
    assert_eq!(waited.await.unwrap().0, 137);
    assert!(c.is_removed());
    assert!(engine.containers.all().is_empty());
    assert!(matches!(
        lifecycle::kill(&engine, &c, None).await,
        Err(ContainerError::NotRunning(_))
    ));
}
