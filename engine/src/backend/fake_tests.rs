//! The fake's build calls keep the supervisor's rules.

use super::*;

#[tokio::test]
async fn snapshots_prepare_commit_and_remove_as_the_supervisor_does() {
    let fake = Fake::new();
    fake.prepare_snapshot("step1", "").await.unwrap();
    assert!(matches!(
        fake.prepare_snapshot("step1", "").await,
        Err(BackendError::AlreadyExists(_))
    ));
    // Only a committed snapshot can be a parent.
    assert!(matches!(
        fake.prepare_snapshot("step2", "step1").await,
        Err(BackendError::NotFound(_))
    ));
    let (layer, diff_id) = fake.diff_snapshot("step1", "").await.unwrap();
    assert_eq!(
        layer.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert!(diff_id.starts_with("sha256:"));
    fake.commit_snapshot("chain1", "step1").await.unwrap();
    fake.prepare_snapshot("step2", "chain1").await.unwrap();
    assert!(fake.snapshot_mounts("step2").await.is_ok());
    assert!(matches!(
        fake.remove_snapshot("chain1").await,
        Err(BackendError::FailedPrecondition(_))
    ));
    fake.remove_snapshot("step2").await.unwrap();
    fake.remove_snapshot("chain1").await.unwrap();
    assert!(matches!(
        fake.snapshot_mounts("chain1").await,
        Err(BackendError::NotFound(_))
    ));
}

#[tokio::test]
async fn an_image_is_created_only_on_a_stored_manifest() {
    let fake = Fake::new();
    let manifest = Bytes::from_static(b"{\"schemaVersion\":2}");
    let digest = fake.write_blob(manifest.clone()).await.unwrap();
    assert_eq!(fake.read_blob(&digest).await.unwrap(), manifest);
    let target = types::Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: digest.clone(),
        size: manifest.len() as i64,
        annotations: Default::default(),
    };
    let image = fake.create_image("built:1", target.clone()).await.unwrap();
    assert_eq!(image.target.unwrap().digest, digest);
    assert_eq!(fake.get_image("built:1").await.unwrap().name, "built:1");
    let missing = types::Descriptor {
        digest: format!("sha256:{}", "0".repeat(64)),
        ..target
    };
    assert!(matches!(
        fake.create_image("other", missing).await,
        Err(BackendError::NotFound(_))
    ));
}
