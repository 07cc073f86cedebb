//! berth-supervisord's image half end to end: a real registry
//! (docker-registry) serving images built by umoci and pushed by skopeo,
//! pulled with berth-ctr, checked file by file through a mounted snapshot,
//! pushed back and read with skopeo, with basic and token auth, bad input,
//! a broken connection and a crash.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::images::{self, image_set, Image};
use integration_tests::registry::{Auth, FaultyProxy, Registry};
use integration_tests::supervisor::{
    assert_rootfs_matches, assert_store_empty, push_layered, registry_config_with, top_chain,
    with_view, Supervisor,
};

fn platform_file(sup: &Supervisor, ns: &str, image: &Image) -> Vec<u8> {
    with_view(sup, ns, &top_chain(image), |root| {
        std::fs::read(root.join("etc/berth-test/platform")).expect("platform file")
    })
}

const USER: &str = "berth";
const PASSWORD: &str = "s3cret-pass";

#[test]
fn pull_by_tag_and_digest_unpacks_every_file() {
    let registry = Registry::start(Auth::None);
    let image = push_layered(&registry, "test/layered:v1");
    let sup = Supervisor::start();
    let name = format!("{}/test/layered:v1", registry.host());
    let out = sup.ctr(&["images", "pull", &name]).ok();
    assert!(
        out.stdout.contains(&image.manifest.digest),
        "{}",
        out.stdout
    );
    assert_rootfs_matches(&sup, "default", image);

    let ls = sup.ctr(&["images", "ls"]).ok().stdout;
    assert!(ls.contains(&name), "{ls}");
    let content = sup.ctr(&["content", "ls"]).ok().stdout;
    for layer in &image.layers {
        assert!(content.contains(&layer.descriptor.digest), "{content}");
    }
    // The same image by digest: nothing to download, a second name.
    let by_digest = format!("{}/test/layered@{}", registry.host(), image.manifest.digest);
    sup.ctr(&["images", "pull", &by_digest]).ok();
    let ls = sup.ctr(&["images", "ls", "-q"]).ok().stdout;
    assert_eq!(ls.lines().count(), 2, "{ls}");

    // Other namespaces see none of it.
    assert_eq!(
        sup.ctr_ns("other", &["images", "ls", "-q"])
            .ok()
            .stdout
            .trim(),
        ""
    );
    assert_eq!(
        sup.ctr_ns("other", &["content", "ls", "-q"])
            .ok()
            .stdout
            .trim(),
        ""
    );

    // Removing both names frees every blob and snapshot.
    sup.ctr(&["images", "rm", &name, &by_digest]).ok();
    assert_store_empty(&sup);
}

#[test]
fn an_index_pulls_the_platform_asked_for() {
    let registry = Registry::start(Auth::None);
    let set = image_set();
    images::push(&set.index_ref(), &registry, "test/multi:v1");
    let sup = Supervisor::start();
    let name = format!("{}/test/multi:v1", registry.host());
    sup.ctr(&["images", "pull", &name]).ok();
    assert_eq!(platform_file(&sup, "default", &set.layered), b"amd64\n");
    sup.ctr_ns(
        "arm",
        &["images", "pull", "--platform", "linux/arm64", &name],
    )
    .ok();
    assert_eq!(platform_file(&sup, "arm", &set.arm64), b"arm64\n");
    sup.ctr(&["images", "pull", "--platform", "linux/s390x", &name])
        .failed_with("linux/s390x");
    sup.ctr(&["images", "pull", "--platform", "nonsense", &name])
        .failed_with("platform");
}

#[test]
fn push_to_another_repository_reads_back_with_skopeo() {
    let registry = Registry::start(Auth::None);
    let image = push_layered(&registry, "test/src:v1");
    let sup = Supervisor::start();
    let src = format!("{}/test/src:v1", registry.host());
    sup.ctr(&["images", "pull", &src]).ok();
    let dst = format!("{}/test/copy:pushed", registry.host());
    sup.ctr(&["images", "tag", &src, &dst]).ok();
    let out = sup.ctr(&["images", "push", &dst]).ok();
    assert!(
        out.stdout.contains(&image.manifest.digest),
        "{}",
        out.stdout
    );
    let layout = tempfile::tempdir().expect("layout");
    images::pull_to_layout(&registry, "test/copy:pushed", layout.path(), "back");
    for layer in &image.layers {
        let got = std::fs::read(layout.path().join(format!(
            "blobs/sha256/{}",
            layer.descriptor.digest.trim_start_matches("sha256:")
        )))
        .expect("pushed layer");
        assert_eq!(images::sha256_digest(&got), layer.descriptor.digest);
    }
    // A push of what the registry has uploads no blob again.
    sup.ctr(&[
        "images",
        "push",
        &src,
        &format!("{}/test/copy:again", registry.host()),
    ])
    .ok();
}

#[test]
fn basic_auth_from_flags_and_from_the_registry_config() {
    let registry = Registry::start(Auth::basic(USER, PASSWORD));
    push_layered(&registry, "test/private:v1");
    let name = format!("{}/test/private:v1", registry.host());
    let sup = Supervisor::start();
    sup.ctr(&["images", "pull", &name])
        .failed_with("requires credentials");
    sup.ctr(&["images", "pull", "--user", &format!("{USER}:wrong"), &name])
        .failed_with("refused the credentials");
    assert_eq!(sup.ctr(&["images", "ls", "-q"]).ok().stdout.trim(), "");
    sup.ctr(&[
        "images",
        "pull",
        "--user",
        &format!("{USER}:{PASSWORD}"),
        &name,
    ])
    .ok();
    drop(sup);
    let sup = Supervisor::start_with(Some(&registry_config_with(
        &registry.host(),
        USER,
        PASSWORD,
    )));
    sup.ctr(&["images", "pull", &name]).ok();
}

#[test]
fn bearer_tokens_from_the_token_server() {
    let registry = Registry::start(Auth::token(USER, PASSWORD));
    let image = push_layered(&registry, "test/tokened:v1");
    let name = format!("{}/test/tokened:v1", registry.host());
    let sup = Supervisor::start();
    sup.ctr(&["images", "pull", &name])
        .failed_with("requires credentials");
    sup.ctr(&["images", "pull", "--user", &format!("{USER}:wrong"), &name])
        .failed_with("refused the credentials");
    let before = registry.token_requests();
    sup.ctr(&[
        "images",
        "pull",
        "--user",
        &format!("{USER}:{PASSWORD}"),
        &name,
    ])
    .ok();
    assert!(registry.token_requests() > before, "no token was issued");
    assert_rootfs_matches(&sup, "default", image);
    // Push needs a push token for the new repository.
    let dst = format!("{}/test/tokened-copy:v1", registry.host());
    sup.ctr(&[
        "images",
        "push",
        "--user",
        &format!("{USER}:{PASSWORD}"),
        &name,
        &dst,
    ])
    .ok();
}

#[test]
fn a_corrupted_or_missing_blob_leaves_nothing() {
    let registry = Registry::start(Auth::None);
    let image = push_layered(&registry, "test/corrupt:v1");
    let sup = Supervisor::start();
    let name = format!("{}/test/corrupt:v1", registry.host());
    // Flip one byte of the zstd layer in the registry's storage.
    let layer = &image.layers[2].descriptor.digest;
    let path = registry.blob_path(layer);
    let mut data = std::fs::read(&path).expect("blob");
    let original = data.clone();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&path, &data).expect("corrupt");
    sup.ctr(&["images", "pull", &name]).failed_with("digest");
    assert_eq!(sup.ctr(&["images", "ls", "-q"]).ok().stdout.trim(), "");
    assert!(
        !sup.blob_files().contains(layer),
        "the corrupt blob became visible"
    );
    // A manifest naming a blob the registry lost.
    std::fs::remove_file(&path).expect("remove blob");
    sup.ctr(&["images", "pull", &name])
        .failed_with(layer.trim_start_matches("sha256:"));
    assert_eq!(sup.ctr(&["images", "ls", "-q"]).ok().stdout.trim(), "");
    // Repaired, the pull goes through, and the daemon never stopped.
    std::fs::write(&path, &original).expect("restore");
    sup.ctr(&["images", "pull", &name]).ok();
    assert_rootfs_matches(&sup, "default", image);
}

#[test]
fn a_dropped_connection_fails_cleanly_and_the_retry_resumes() {
    let registry = Registry::start(Auth::None);
    let image = push_layered(&registry, "test/cut:v1");
    let proxy = FaultyProxy::start(&registry.host(), 300_000);
    let sup = Supervisor::start();
    let name = format!("{}/test/cut:v1", proxy.host());
    sup.ctr(&["images", "pull", &name])
        .failed_with("/blobs/sha256:");
    assert!(proxy.cuts() > 0, "the proxy cut nothing");
    assert_eq!(sup.ctr(&["images", "ls", "-q"]).ok().stdout.trim(), "");
    // The layers the first pull verified are not fetched again; the cut
    // ones resume where their data ends.
    let big: Vec<&str> = image
        .layers
        .iter()
        .filter(|l| l.descriptor.size > 300_000)
        .map(|l| l.descriptor.digest.as_str())
        .collect();
    proxy.set_cut_after(None);
    let gets = proxy.blob_gets();
    sup.ctr(&["images", "pull", &name]).ok();
    assert_eq!(
        proxy.blob_gets() - gets,
        big.len(),
        "only the {} cut layers should be fetched again",
        big.len()
    );
    // And those from where their data ended, not from the start.
    let resumed = sup.log().matches("resuming download").count();
    assert_eq!(resumed, big.len(), "range requests:\n{}", sup.log());
    assert_rootfs_matches(&sup, "default", image);
}

#[test]
fn kill_dash_nine_during_pulls_loses_nothing() {
    let registry = Registry::start(Auth::None);
    let image = push_layered(&registry, "test/crash:v1");
    let mut sup = Supervisor::start();
    let name = format!("{}/test/crash:v1", registry.host());
    let mut interrupted = 0;
    for delay_ms in [5u64, 15, 30, 60, 120] {
        let mut pull = Command::new(integration_tests::supervisor::ctr_binary());
        pull.arg("--address")
            .arg(sup.socket())
            .args(["images", "pull", "-q", &name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = pull.spawn().expect("pull");
        std::thread::sleep(Duration::from_millis(delay_ms));
        sup.kill9();
        if !child.wait().is_ok_and(|st| st.success()) {
            interrupted += 1;
        }
        sup.start_again();
    }
    // The test means nothing unless the kills fell in the middle of pulls.
    assert!(interrupted > 0, "every pull finished before its kill");
    sup.ctr(&["images", "pull", &name]).ok();
    assert_rootfs_matches(&sup, "default", image);
    // Consistent: removing the image leaves nothing behind, not even what
    // the killed pulls had half-written.
    sup.ctr(&["images", "rm", &name]).ok();
    sup.restart();
    let leases = sup.ctr(&["leases", "ls", "-q"]).ok().stdout;
    for lease in leases.lines() {
        sup.ctr(&["leases", "rm", lease]).ok();
    }
    assert_store_empty(&sup);
}

#[test]
fn bad_layers_are_refused_and_leave_nothing() {
    let registry = Registry::start(Auth::None);
    let sup = Supervisor::start();
    let dir = tempfile::tempdir().expect("layouts");
    for (repo, layer, needle) in [
        ("dotdot", bad_layer::dotdot(), "escapes"),
        ("symlink", bad_layer::symlink_escape(), "symlink"),
        ("truncated", bad_layer::truncated_gzip(), "decompress"),
    ] {
        let layout = dir.path().join(repo);
        bad_layer::write_layout(&layout, &layer);
        let out = images::skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{}/bad/{repo}:v1", registry.host()),
        ]);
        assert!(
            out.status.success(),
            "push {repo}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let name = format!("{}/bad/{repo}:v1", registry.host());
        sup.ctr(&["images", "pull", &name]).failed_with(needle);
        assert_eq!(
            sup.ctr(&["images", "ls", "-q"]).ok().stdout.trim(),
            "",
            "{repo}"
        );
        assert!(
            !Path::new("/tmp/berth-escape-target").exists(),
            "{repo}: a write escaped the snapshot"
        );
    }
    assert_eq!(
        sup.snapshot_dirs(),
        Vec::<String>::new(),
        "snapshot dirs left"
    );
    sup.ctr(&["version"]).ok();
}

/// Hand-made hostile layers, packed as one-layer OCI layouts.
mod bad_layer {
    use std::io::Write;

    use super::*;

    fn entry(tar: &mut Vec<u8>, name: &[u8], kind: u8, link: &[u8], data: &[u8]) {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        tar.extend_from_slice(&h);
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }

    fn finish(mut tar: Vec<u8>) -> Vec<u8> {
        tar.extend_from_slice(&[0u8; 1024]);
        tar
    }

    /// (uncompressed tar, gzip blob)
    pub struct Layer {
        pub tar: Vec<u8>,
        pub blob: Vec<u8>,
    }

    fn gzip(tar: Vec<u8>) -> Layer {
        let mut gz = Command::new("gzip")
            .arg("-nc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip");
        gz.stdin
            .take()
            .expect("stdin")
            .write_all(&tar)
            .expect("gzip in");
        let out = gz.wait_with_output().expect("gzip out");
        Layer {
            tar,
            blob: out.stdout,
        }
    }

    pub fn dotdot() -> Layer {
        let mut t = Vec::new();
        entry(
            &mut t,
            b"../../../../tmp/berth-escape-target",
            b'0',
            b"",
            b"pwned",
        );
        gzip(finish(t))
    }

    pub fn symlink_escape() -> Layer {
        let mut t = Vec::new();
        entry(&mut t, b"evil", b'2', b"/tmp", b"");
        entry(&mut t, b"evil/berth-escape-target", b'0', b"", b"pwned");
        gzip(finish(t))
    }

    pub fn truncated_gzip() -> Layer {
        let mut t = Vec::new();
        entry(&mut t, b"file", b'0', b"", &vec![7u8; 200_000]);
        let mut l = gzip(finish(t));
        // Digest and size describe the truncated bytes, so only the
        // decompression can notice.
        l.blob.truncate(l.blob.len() / 2);
        l
    }

    pub fn write_layout(dir: &Path, layer: &Layer) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("layout");
        let put = |data: &[u8]| -> (String, usize) {
            let d = images::sha256_digest(data);
            std::fs::write(blobs.join(d.trim_start_matches("sha256:")), data).expect("blob");
            (d, data.len())
        };
        let (layer_digest, layer_size) = put(&layer.blob);
        let diff_id = images::sha256_digest(&layer.tar);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"config":{{}}}}"#
        );
        let (config_digest, config_size) = put(config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{layer_size}}}]}}"#
        );
        let (m_digest, m_size) = put(manifest.as_bytes());
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        std::fs::write(
            dir.join("index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{m_digest}","size":{m_size},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#
            ),
        )
        .expect("index.json");
    }
}
