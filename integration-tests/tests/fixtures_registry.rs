//! The registry and image fixtures themselves: the images hold what
//! `expected_files` says, the registry serves them back byte for byte with
//! each kind of authentication, the token server refuses strangers, and the
//! faulty proxy cuts blob downloads until it is healed.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use integration_tests::images::{
    self, image_set, ImageSet, ARM64_PLATFORM, GZIP_LAYER, INDEX_MEDIA_TYPE, OPAQUE_ENTRY,
    WHITEOUT_ENTRY, ZSTD_LAYER,
};
use integration_tests::registry::{Auth, FaultyProxy, Registry};
use integration_tests::require_root;
use serde_json::Value;

const USER: &str = "berth";
const PASSWORD: &str = "s3cret-pass";

/// `skopeo inspect --raw` of `repo_tag` with `creds` (`None`: anonymous).
fn inspect_raw(registry: &Registry, repo_tag: &str, creds: Option<&str>) -> std::process::Output {
    let image = format!("docker://{}/{repo_tag}", registry.host());
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    match creds {
        Some(creds) => args.extend(["--creds", creds]),
        None => args.push("--no-creds"),
    }
    args.push(&image);
    images::skopeo(&args)
}

#[track_caller]
fn inspect_ok(registry: &Registry, repo_tag: &str) -> Vec<u8> {
    let creds = registry.auth().creds_arg();
    let out = inspect_raw(registry, repo_tag, creds.as_deref());
    assert!(
        out.status.success(),
        "inspect {repo_tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Every blob of a layout directory, by digest.
fn layout_blobs(layout: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(layout.join("blobs/sha256"))
        .expect("read blobs")
        .map(|e| {
            let e = e.expect("blob entry");
            let digest = format!("sha256:{}", e.file_name().to_string_lossy());
            (digest, fs::read(e.path()).expect("read blob"))
        })
        .collect()
}

/// Pushes the layered image and the index, reads them back raw, and pulls
/// the index back into a new layout whose blobs must match the set's.
fn push_inspect_pull(registry: &Registry, set: &ImageSet) {
    images::push(&set.layered_ref(), registry, "berth/layered:v1");
    images::push(&set.index_ref(), registry, "berth/multi:v1");

    let raw = inspect_ok(registry, "berth/layered:v1");
    assert_eq!(images::sha256_digest(&raw), set.layered.manifest.digest);
    let manifest: Value = serde_json::from_slice(&raw).expect("manifest JSON");
    let media_types: Vec<&str> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(media_types, [GZIP_LAYER, GZIP_LAYER, ZSTD_LAYER]);

    let raw = inspect_ok(registry, "berth/multi:v1");
    assert_eq!(images::sha256_digest(&raw), set.index.descriptor.digest);
    let index: Value = serde_json::from_slice(&raw).expect("index JSON");
    assert_eq!(index["mediaType"], INDEX_MEDIA_TYPE);
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let variant = p["variant"].as_str().map(|v| format!("/{v}"));
            format!(
                "{}/{}{}",
                p["os"].as_str().unwrap_or_default(),
                p["architecture"].as_str().unwrap_or_default(),
                variant.unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8"]);

    // The registry stores the very bytes.
    for layer in &set.layered.layers {
        let stored = fs::read(registry.blob_path(&layer.descriptor.digest)).expect("stored blob");
        assert!(
            stored == set.blob(&layer.descriptor.digest),
            "blob {layer:?}"
        );
    }

    let tmp = tempfile::tempdir().expect("temp dir");
    let pulled = tmp.path().join("pulled");
    images::pull_to_layout(registry, "berth/multi:v1", &pulled, "multi");
    let got = layout_blobs(&pulled);
    let want = layout_blobs(set.layout());
    for (digest, bytes) in &got {
        assert!(
            want.get(digest) == Some(bytes),
            "pulled blob {digest} is not the set's"
        );
    }
    for image in [&set.layered, &set.arm64] {
        for digest in std::iter::once(&image.manifest.digest)
            .chain([&image.config.digest])
            .chain(image.layers.iter().map(|l| &l.descriptor.digest))
        {
            assert!(
                got.contains_key(digest),
                "{digest} of {} not pulled",
                image.tag
            );
        }
    }
    assert!(
        got.contains_key(&set.index.descriptor.digest),
        "index not pulled"
    );
}

#[test]
fn the_layered_image_unpacks_to_the_expected_files() {
    require_root();
    let set = image_set();
    let layers = &set.layered.layers;
    assert_eq!(layers.len(), 3);
    assert_eq!(layers[2].descriptor.media_type, ZSTD_LAYER);
    let entries = images::layer_entries(set.layout(), &layers[1].descriptor);
    assert!(entries.iter().any(|e| e == WHITEOUT_ENTRY), "{entries:?}");
    assert!(entries.iter().any(|e| e == OPAQUE_ENTRY), "{entries:?}");
    let entries = images::layer_entries(set.layout(), &layers[2].descriptor);
    assert!(entries.iter().any(|e| e == "data/blob.bin"), "{entries:?}");

    let tmp = tempfile::tempdir().expect("temp dir");
    let rootfs = tmp.path().join("layered");
    images::unpack_reference(set.layout(), &set.layered, &rootfs);
    let problems = images::check_rootfs(&rootfs);
    assert!(problems.is_empty(), "{problems:#?}");
    // The check notices a difference.
    fs::write(rootfs.join("etc/berth-test/a.txt"), "beta\n").expect("change a.txt");
    fs::write(rootfs.join("etc/berth-test/gone.txt"), "back\n").expect("restore gone.txt");
    let problems = images::check_rootfs(&rootfs);
    assert!(problems.len() == 2, "{problems:#?}");
    assert!(
        problems[0].starts_with("/etc/berth-test/a.txt: contents"),
        "{problems:#?}"
    );

    let arm = tmp.path().join("arm64");
    images::unpack_reference(set.layout(), &set.arm64, &arm);
    assert_eq!(
        fs::read(arm.join("etc/berth-test/platform")).expect("platform"),
        ARM64_PLATFORM
    );
    assert_eq!(set.arm64.platform.architecture, "arm64");
    assert_eq!(set.arm64.platform.variant.as_deref(), Some("v8"));

    let docker = tmp.path().join("docker.tar");
    images::docker_archive(&set.index_ref(), &docker, "berth/multi:v1");
    let list = integration_tests::host("tar", &["-tf", docker.to_str().expect("utf-8")]);
    assert!(list.lines().any(|l| l == "manifest.json"), "{list}");
    let oci = tmp.path().join("oci.tar");
    images::oci_archive(&set.index_ref(), &oci, "multi");
    let list = integration_tests::host("tar", &["-tf", oci.to_str().expect("utf-8")]);
    let layer3 = format!("blobs/sha256/{}", &layers[2].descriptor.digest[7..]);
    assert!(
        list.lines().any(|l| l.trim_start_matches("./") == layer3),
        "{list}"
    );
}

#[test]
fn an_open_registry_serves_what_was_pushed() {
    require_root();
    let set = image_set();
    let registry = Registry::start(Auth::None);
    push_inspect_pull(&registry, set);
    assert_eq!(registry.token_requests(), 0);
}

#[test]
fn a_basic_auth_registry_wants_the_password() {
    require_root();
    let set = image_set();
    let registry = Registry::start(Auth::basic(USER, PASSWORD));
    push_inspect_pull(&registry, set);
    let out = inspect_raw(&registry, "berth/layered:v1", None);
    assert!(!out.status.success(), "anonymous inspect succeeded");
    let out = inspect_raw(&registry, "berth/layered:v1", Some("berth:wrong"));
    assert!(
        !out.status.success(),
        "inspect with a wrong password succeeded"
    );
}

#[test]
fn a_token_registry_hands_tokens_only_to_its_user() {
    require_root();
    let set = image_set();
    let registry = Registry::start(Auth::token(USER, PASSWORD));
    assert!(registry.token_realm().is_some());
    push_inspect_pull(&registry, set);
    let issued = registry.token_requests();
    assert!(issued > 0, "no token was issued");

    let refused = registry.token_refusals();
    let out = inspect_raw(&registry, "berth/layered:v1", None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "anonymous inspect succeeded");
    assert!(
        stderr.contains("401") || stderr.to_lowercase().contains("unauthorized"),
        "{stderr}"
    );
    let out = inspect_raw(&registry, "berth/layered:v1", Some("berth:wrong"));
    assert!(
        !out.status.success(),
        "inspect with a wrong password succeeded"
    );
    assert!(registry.token_refusals() >= refused + 2);
    assert_eq!(registry.token_requests(), issued, "a token for a stranger");
}

/// `GET path` on `host` over one connection: the status, the
/// Content-Length, and the body as far as it came.
fn http_get(host: &str, path: &str, accept: &str) -> (u16, u64, Vec<u8>) {
    let mut stream = TcpStream::connect(host).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\n\r\n"
    )
    .expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("Content-Length");
    (status, length, response[end..].to_vec())
}

#[test]
fn the_faulty_proxy_cuts_blob_downloads_until_healed() {
    require_root();
    let set = image_set();
    let registry = Registry::start(Auth::None);
    images::push(&set.layered_ref(), &registry, "berth/layered:v1");
    let proxy = FaultyProxy::start(&registry.host(), 1000);
    let blob = &set.layered.layers[2].descriptor;
    let blob_url = format!("/v2/berth/layered/blobs/{}", blob.digest);

    let (status, length, body) = http_get(&proxy.host(), &blob_url, "*/*");
    assert_eq!((status, length), (200, blob.size));
    assert_eq!(
        body.len(),
        1000,
        "the proxy let {} bytes through",
        body.len()
    );
    assert_eq!(body, set.blob(&blob.digest)[..1000]);
    assert_eq!(proxy.cuts(), 1);

    // Manifests pass whole.
    let accept = images::MANIFEST_MEDIA_TYPE;
    let (status, length, body) = http_get(&proxy.host(), "/v2/berth/layered/manifests/v1", accept);
    assert_eq!(status, 200);
    assert_eq!(body.len() as u64, length);
    assert_eq!(images::sha256_digest(&body), set.layered.manifest.digest);
    assert_eq!(proxy.cuts(), 1);

    proxy.set_cut_after(None);
    let (status, _, body) = http_get(&proxy.host(), &blob_url, "*/*");
    assert_eq!(status, 200);
    assert!(body == set.blob(&blob.digest), "healed download differs");
    assert_eq!((proxy.cuts(), proxy.blob_gets()), (1, 2));

    // A real client through the healed proxy.
    let out = images::skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--no-creds",
        &format!("docker://{}/berth/layered:v1", proxy.host()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
