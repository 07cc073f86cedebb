//! Round trips through export and import, and the archives import refuses.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use super::export::OCI_LAYOUT;
use super::*;
use crate::testing::temp_images;

const NAME: &str = "example.com/test/small:v1";

/// A layer tar holding `files`.
fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn sha(data: &[u8]) -> String {
    Digest::of(data).to_string()
}

fn config_json(platform: &Platform, diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// Stores a blob and lets `ns` hold it.
fn put(images: &Images, ns: &str, data: &[u8]) -> String {
    let digest = sha(data);
    images.store_bytes(&digest, data).unwrap();
    images.hold_content(ns, None, &digest).unwrap();
    digest
}

/// A one-layer image (gzip layer, OCI manifest) for `platform`, stored
/// in `ns`; returns the manifest's descriptor.
fn make_manifest(images: &Images, ns: &str, platform: &Platform, text: &[u8]) -> Descriptor {
    let tar = layer_tar(&[("hello.txt", text)]);
    let gz = gzip(&tar);
    let layer = put(images, ns, &gz);
    let config = config_json(platform, &[sha(&tar)]);
    let config_digest = put(images, ns, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MEDIA_OCI_MANIFEST,
        "config": {"mediaType": oci::MEDIA_OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": oci::MEDIA_OCI_LAYER_GZIP, "digest": layer, "size": gz.len()}],
    }))
    .unwrap();
    let digest = put(images, ns, &manifest);
    descriptor(oci::MEDIA_OCI_MANIFEST, digest, manifest.len() as u64)
}

fn make_image(images: &Images, ns: &str, name: &str) -> Descriptor {
    let desc = make_manifest(images, ns, &Platform::host(), b"hello from berth\n");
    images.save_image(ns, name, desc.clone(), None).unwrap();
    desc
}

fn export(images: &Images, ns: &str, names: &[&str], format: ArchiveFormat) -> Vec<u8> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut out = Vec::new();
    images.export(ns, &names, format, None, &mut out).unwrap();
    out
}

/// path → bytes of every file in a tar, and the order of all entries.
fn read_tar(bytes: &[u8]) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let mut files = BTreeMap::new();
    let mut order = Vec::new();
    let mut a = tar::Archive::new(bytes);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        assert_eq!(e.header().mtime().unwrap(), 0, "{path}");
        assert_eq!(e.header().uid().unwrap(), 0, "{path}");
        order.push(path.clone());
        if e.header().entry_type().is_file() {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            files.insert(path, data);
        }
    }
    (files, order)
}

/// A tar of `files` in order, written as given (no path checks).
fn raw_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        let name = &mut h.as_gnu_mut().unwrap().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn no_unpack() -> ImportOptions {
    ImportOptions {
        unpack: false,
        ..Default::default()
    }
}

fn held(images: &Images, ns: &str, digest: &str) -> bool {
    let rx = images.meta.read().unwrap();
    rx.exists(Table::Content, ns, digest).unwrap()
}

fn leases(images: &Images, ns: &str) -> usize {
    let rx = images.meta.read().unwrap();
    rx.list::<serde_json::Value>(Table::Leases, ns)
        .unwrap()
        .len()
}

fn blobs_of(images: &Images, manifest: &str) -> Vec<String> {
    let m = parse_manifest(
        manifest,
        &images.read_document("manifest", manifest).unwrap(),
    )
    .unwrap();
    let mut out = vec![m.config.digest];
    out.extend(m.layers.into_iter().map(|l| l.digest));
    out
}

#[test]
fn oci_export_then_import_keeps_digests() {
    let (_d, images) = temp_images();
    let target = make_image(&images, "default", NAME);
    let archive = export(&images, "default", &[NAME], ArchiveFormat::Oci);
    assert_eq!(
        archive,
        export(&images, "default", &[NAME], ArchiveFormat::Oci),
        "the same image makes the same bytes"
    );

    let (files, order) = read_tar(&archive);
    let mut blobs: Vec<String> = blobs_of(&images, &target.digest);
    blobs.push(target.digest.clone());
    blobs.sort();
    let mut want = vec![
        "oci-layout".to_string(),
        "index.json".to_string(),
        "blobs".to_string(),
        "blobs/sha256".to_string(),
    ];
    want.extend(blobs.iter().map(|d| format!("blobs/sha256/{}", hex_of(d))));
    assert_eq!(order, want);
    assert_eq!(files["oci-layout"], OCI_LAYOUT);
    let index: Index = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(index.manifests.len(), 1);
    let entry = &index.manifests[0];
    assert_eq!(entry.digest, target.digest);
    assert_eq!(entry.annotations[ANNOTATION_IMAGE_NAME], NAME);
    assert_eq!(entry.annotations[oci::ANNOTATION_REF_NAME], "v1");
    for d in &blobs {
        let data = &files[&format!("blobs/sha256/{}", hex_of(d))];
        assert_eq!(&sha(data), d);
    }

    let records = images
        .import("other", archive.as_slice(), no_unpack())
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].name, NAME);
    assert_eq!(records[0].target.digest, target.digest);
    assert_eq!(records[0].target.media_type, oci::MEDIA_OCI_MANIFEST);
    assert!(records[0].target.annotations.is_empty());
    assert_eq!(
        images.get("other", NAME).unwrap().target.digest,
        target.digest
    );
    for d in &blobs {
        assert!(held(&images, "other", d), "{d} not held by the namespace");
    }
    assert_eq!(
        leases(&images, "other"),
        0,
        "the import's lease outlived it"
    );

    // A gzip-compressed archive, into a store that lacks the blobs.
    let (_d2, fresh) = temp_images();
    let records = fresh
        .import("default", gzip(&archive).as_slice(), no_unpack())
        .unwrap();
    assert_eq!(records[0].target.digest, target.digest);
    for d in &blobs {
        assert_eq!(
            fresh.read_document("blob", d).unwrap(),
            images.read_document("blob", d).unwrap()
        );
    }
}

#[test]
fn docker_export_then_import_names_by_repo_tags() {
    let (_d, images) = temp_images();
    let target = make_image(&images, "default", NAME);
    images
        .save_image(
            "default",
            "docker.io/library/busybox:latest",
            target.clone(),
            None,
        )
        .unwrap();
    let archive = export(
        &images,
        "default",
        &[NAME, "docker.io/library/busybox:latest"],
        ArchiveFormat::Docker,
    );
    let (files, _) = read_tar(&archive);
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let layers = blobs_of(&images, &target.digest);
    assert_eq!(
        manifest,
        serde_json::json!([{
            "Config": format!("blobs/sha256/{}", hex_of(&layers[0])),
            "RepoTags": [NAME, "busybox:latest"],
            "Layers": [format!("blobs/sha256/{}", hex_of(&layers[1]))],
        }])
    );
    let repositories: serde_json::Value = serde_json::from_slice(&files["repositories"]).unwrap();
    assert_eq!(
        repositories,
        serde_json::json!({
            "busybox": {"latest": hex_of(&layers[0])},
            "example.com/test/small": {"v1": hex_of(&layers[0])},
        })
    );
    assert!(files.contains_key("index.json") && files.contains_key("oci-layout"));

    // As Docker 25+ writes it: the OCI half names the images.
    let records = images
        .import("other", archive.as_slice(), no_unpack())
        .unwrap();
    let names: BTreeSet<_> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([NAME, "docker.io/library/busybox:latest"])
    );
    assert!(records.iter().all(|r| r.target.digest == target.digest));

    // As older docker and skopeo write it: manifest.json alone.
    let stripped: Vec<(&str, &[u8])> = files
        .iter()
        .filter(|(p, _)| *p != "index.json" && *p != "oci-layout")
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    let records = images
        .import("third", raw_tar(&stripped).as_slice(), no_unpack())
        .unwrap();
    let names: BTreeSet<_> = records.iter().map(|r| r.name.clone()).collect();
    assert_eq!(
        names,
        BTreeSet::from([image_name(NAME), image_name("busybox:latest")])
    );
    let built = &records[0].target;
    assert_eq!(built.media_type, oci::MEDIA_DOCKER_MANIFEST);
    let m = parse_manifest(
        &built.digest,
        &images.read_document("m", &built.digest).unwrap(),
    )
    .unwrap();
    assert_eq!(m.config.digest, layers[0]);
    assert_eq!(m.config.media_type, oci::MEDIA_DOCKER_CONFIG);
    assert_eq!(m.layers.len(), 1);
    assert_eq!(m.layers[0].digest, layers[1]);
    assert_eq!(m.layers[0].media_type, oci::MEDIA_DOCKER_LAYER_GZIP);
    for d in layers.iter().chain([&built.digest]) {
        assert!(held(&images, "third", d), "{d}");
    }
}

/// A `docker save` as Docker before 25 writes it: `<id>/layer.tar`
/// (the second image's a symlink to the first's), `<hex>.json` configs.
fn legacy_save(diff_id: Option<String>) -> (Vec<u8>, Vec<u8>) {
    let tar = layer_tar(&[("etc/motd", b"legacy\n")]);
    let diff = diff_id.unwrap_or_else(|| sha(&tar));
    let config = config_json(&Platform::host(), std::slice::from_ref(&diff));
    let config_name = format!("{}.json", hex_of(&sha(&config)));
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": config_name, "RepoTags": ["legacy:1", "legacy:latest"], "Layers": ["aaa/layer.tar"]},
        {"Config": config_name, "RepoTags": ["other:1"], "Layers": ["bbb/layer.tar"]},
        {"Config": config_name, "RepoTags": null, "Layers": ["aaa/layer.tar"]},
    ]))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    b.append_data(&mut dir.clone(), "aaa/", io::empty())
        .unwrap();
    for (path, data) in [
        ("aaa/VERSION", b"1.0".as_slice()),
        ("aaa/json", b"{}".as_slice()),
        ("aaa/layer.tar", tar.as_slice()),
        (config_name.as_str(), config.as_slice()),
        ("repositories", br#"{"legacy":{"1":"aaa"}}"#.as_slice()),
        ("manifest.json", manifest.as_slice()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, data).unwrap();
    }
    b.append_data(&mut dir, "bbb/", io::empty()).unwrap();
    let mut link = tar::Header::new_ustar();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    b.append_link(&mut link, "bbb/layer.tar", "../aaa/layer.tar")
        .unwrap();
    (b.into_inner().unwrap(), tar)
}

#[test]
fn legacy_docker_save_imports() {
    let (_d, images) = temp_images();
    let (archive, tar) = legacy_save(None);
    let records = images
        .import("default", gzip(&archive).as_slice(), no_unpack())
        .unwrap();
    let names: Vec<_> = records.iter().map(|r| r.name.clone()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names[0], image_name("legacy:1"));
    assert_eq!(names[1], image_name("legacy:latest"));
    // Through the symlink, the same layer: the same manifest. The
    // untagged entry of the same image adds no name.
    assert_eq!(names[2], image_name("other:1"));
    assert_eq!(records[0].target, records[2].target);
    let target = &records[0].target;
    let m = parse_manifest(
        &target.digest,
        &images.read_document("m", &target.digest).unwrap(),
    )
    .unwrap();
    assert_eq!(m.media_type, oci::MEDIA_DOCKER_MANIFEST);
    assert_eq!(m.layers[0].media_type, MEDIA_DOCKER_LAYER);
    assert_eq!(m.layers[0].digest, sha(&tar));
    assert_eq!(m.layers[0].size, tar.len() as i64);
    assert!(held(&images, "default", &m.layers[0].digest));
    assert!(held(&images, "default", &m.config.digest));
    // The v1 metadata files are not kept.
    assert!(images.content.info(&Digest::of(b"1.0")).is_err());
}

#[test]
fn a_layer_that_is_not_its_diff_id_is_refused() {
    let (_d, images) = temp_images();
    let (archive, _) = legacy_save(Some(sha(b"something else")));
    let err = images
        .import("default", archive.as_slice(), no_unpack())
        .unwrap_err();
    assert!(matches!(err, ImageError::DiffIdMismatch { .. }), "{err}");
    assert!(images.list("default").unwrap().is_empty());
    assert_eq!(leases(&images, "default"), 0);
}

#[test]
fn bad_archives_are_refused_and_name_nothing() {
    let (_d, images) = temp_images();
    make_image(&images, "source", NAME);
    let good = export(&images, "source", &[NAME], ArchiveFormat::Oci);
    let (files, _) = read_tar(&good);
    let index = files["index.json"].clone();

    let wrong = format!("blobs/sha256/{}", "0".repeat(64));
    let config = config_json(&Platform::host(), &[sha(b"layer")]);
    let missing_layer = serde_json::to_vec(&serde_json::json!([{
        "Config": "cfg.json", "RepoTags": ["x:1"], "Layers": ["nope/layer.tar"],
    }]))
    .unwrap();
    let absent = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": oci::MEDIA_OCI_MANIFEST,
                       "digest": format!("sha256:{}", "1".repeat(64)), "size": 3}],
    }))
    .unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "parent dir",
            raw_tar(&[("../x", b"x"), ("index.json", &index)]),
            "\"..\" are not allowed",
        ),
        (
            "absolute",
            raw_tar(&[("/etc/x", b"x")]),
            "\"..\" are not allowed",
        ),
        ("blob mismatch", raw_tar(&[(&wrong, b"not that")]), &wrong),
        ("cut in half", good[..good.len() / 2].to_vec(), "truncated"),
        ("cut in a header", good[..1024 + 100].to_vec(), "truncated"),
        (
            "no end blocks",
            good[..good.len() - 1024].to_vec(),
            "truncated",
        ),
        (
            "missing layer",
            raw_tar(&[("cfg.json", &config), ("manifest.json", &missing_layer)]),
            "archive is missing layer nope/layer.tar named by manifest.json",
        ),
        (
            "missing config",
            raw_tar(&[("manifest.json", &missing_layer)]),
            "archive is missing config cfg.json named by manifest.json",
        ),
        (
            "missing blob",
            raw_tar(&[("index.json", &absent)]),
            "archive is missing blob sha256:111",
        ),
        (
            "not a tar",
            b"this is not an archive at all".repeat(40),
            "not a tar archive (plain, gzip or zstd): its first block is not a tar header",
        ),
        (
            "not a gzip",
            vec![0x1f, 0x8b, 0, 1, 2, 3],
            "not a tar archive",
        ),
        ("empty", Vec::new(), "empty"),
        (
            "no documents",
            raw_tar(&[("hello", b"hi")]),
            "neither index.json",
        ),
        (
            "bad json",
            raw_tar(&[("index.json", b"{not json")]),
            "index.json",
        ),
        (
            "no images",
            raw_tar(&[("index.json", br#"{"schemaVersion":2,"manifests":[]}"#)]),
            "no images",
        ),
    ];
    for (what, archive, phrase) in cases {
        let err = images
            .import("default", archive.as_slice(), no_unpack())
            .expect_err(what)
            .to_string();
        assert!(
            err.contains(phrase),
            "{what}: {err:?} does not say {phrase:?}"
        );
        assert!(images.list("default").unwrap().is_empty(), "{what}");
        assert_eq!(leases(&images, "default"), 0, "{what}");
    }
    // Nothing of the mismatched blob became content.
    assert!(images.content.info(&Digest::of(b"not that")).is_err());
    assert!(
        images.content.statuses().unwrap().is_empty(),
        "ingests left"
    );
}

#[test]
fn an_unnamed_image_takes_the_given_name() {
    let (_d, images) = temp_images();
    make_image(&images, "source", NAME);
    let archive = export(&images, "source", &[NAME], ArchiveFormat::Oci);
    let (files, order) = read_tar(&archive);
    let mut index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    index["manifests"][0]["annotations"] = serde_json::json!({});
    let index = serde_json::to_vec(&index).unwrap();
    let entries: Vec<(&str, &[u8])> = order
        .iter()
        .filter(|p| files.contains_key(*p))
        .map(|p| {
            let data = if p == "index.json" { &index } else { &files[p] };
            (p.as_str(), data.as_slice())
        })
        .collect();
    let opts = ImportOptions {
        name: Some("mine:2".into()),
        ..no_unpack()
    };
    let records = images
        .import("default", raw_tar(&entries).as_slice(), opts)
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].name, image_name("mine:2"));
}

#[test]
fn an_index_exports_the_platforms_the_store_has() {
    let (_d, images) = temp_images();
    let host = make_manifest(&images, "default", &Platform::host(), b"host\n");
    let other_platform = Platform::parse("linux/s390x").unwrap();
    let mut host_entry = host.clone();
    host_entry.platform = Some(Platform::host());
    // A manifest the store lacks, as after a pull of one platform.
    let mut other = descriptor(
        oci::MEDIA_OCI_MANIFEST,
        format!("sha256:{}", "2".repeat(64)),
        10,
    );
    other.platform = Some(other_platform.clone());
    let index = serde_json::to_vec(&Index {
        schema_version: 2,
        media_type: oci::MEDIA_OCI_INDEX.to_string(),
        manifests: vec![other, host_entry],
        annotations: BTreeMap::new(),
    })
    .unwrap();
    let index_digest = put(&images, "default", &index);
    let target = descriptor(
        oci::MEDIA_OCI_INDEX,
        index_digest.clone(),
        index.len() as u64,
    );
    images.save_image("default", NAME, target, None).unwrap();

    let archive = export(&images, "default", &[NAME], ArchiveFormat::Oci);
    let (files, _) = read_tar(&archive);
    let listed: Index = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(listed.manifests[0].digest, index_digest);
    assert_eq!(
        files
            .keys()
            .filter(|p| p.starts_with("blobs/sha256/"))
            .count(),
        4
    );
    let records = images
        .import(
            "other",
            archive.as_slice(),
            ImportOptions {
                platform: Some(other_platform.clone()),
                ..no_unpack()
            },
        )
        .unwrap();
    assert_eq!(records[0].target.digest, index_digest);
    assert_eq!(records[0].target.media_type, oci::MEDIA_OCI_INDEX);

    // With a platform, the archive names that platform's manifest.
    let mut out = Vec::new();
    images
        .export(
            "default",
            &[NAME.to_string()],
            ArchiveFormat::Oci,
            Some(Platform::host()),
            &mut out,
        )
        .unwrap();
    let (files, _) = read_tar(&out);
    let listed: Index = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(listed.manifests[0].digest, host.digest);
    assert!(!files.contains_key(&format!("blobs/sha256/{}", hex_of(&index_digest))));
    let err = images
        .export(
            "default",
            &[NAME.to_string()],
            ArchiveFormat::Oci,
            Some(other_platform),
            &mut Vec::new(),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("is not in the content store"),
        "{err}"
    );

    // Docker archives hold the host's manifest.
    let archive = export(&images, "default", &[NAME], ArchiveFormat::Docker);
    let (files, _) = read_tar(&archive);
    let entries: Vec<DockerEntry> = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(
        entries[0].config,
        format!(
            "blobs/sha256/{}",
            hex_of(&blobs_of(&images, &host.digest)[0])
        )
    );
}

#[test]
fn exporting_an_unknown_name_is_not_found() {
    let (_d, images) = temp_images();
    make_image(&images, "default", NAME);
    let mut out = Vec::new();
    let err = images
        .export(
            "default",
            &[NAME.to_string(), "nope:1".to_string()],
            ArchiveFormat::Oci,
            None,
            &mut out,
        )
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound(_)), "{err}");
    assert!(out.is_empty(), "wrote before knowing every image");
}
