use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use super::*;

/// A tar entry with any name, even ones `tar::Builder` refuses.
fn entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8], mode: u32) {
    let mut header = tar::Header::new_old();
    {
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(1_000_000);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
}

fn finish(mut out: Vec<u8>) -> Vec<u8> {
    out.extend([0u8; 1024]);
    out
}

fn sample() -> Vec<u8> {
    let mut out = Vec::new();
    entry(
        &mut out,
        "Dockerfile",
        tar::EntryType::Regular,
        "",
        b"FROM busybox\n",
        0o644,
    );
    entry(&mut out, "dir/", tar::EntryType::Directory, "", b"", 0o750);
    entry(
        &mut out,
        "dir/run.sh",
        tar::EntryType::Regular,
        "",
        b"echo hi\n",
        0o755,
    );
    entry(
        &mut out,
        "./dir/link",
        tar::EntryType::Symlink,
        "run.sh",
        b"",
        0o777,
    );
    entry(
        &mut out,
        "hard",
        tar::EntryType::Link,
        "dir/run.sh",
        b"",
        0o755,
    );
    entry(
        &mut out,
        "deep/er/file",
        tar::EntryType::Regular,
        "",
        b"x",
        0o600,
    );
    finish(out)
}

fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<(), ContextError>) {
    let parent = tempfile::tempdir().unwrap();
    let context = ContextDir::create(parent.path(), "ctx").unwrap();
    let result = context.unpack(bytes);
    // Keep the directory for the test to look at.
    std::mem::forget(context);
    (parent, result)
}

fn check_sample(root: &Path) {
    assert_eq!(
        fs::read_to_string(root.join("Dockerfile")).unwrap(),
        "FROM busybox\n"
    );
    let script = fs::metadata(root.join("dir/run.sh")).unwrap();
    assert_eq!(script.mode() & 0o7777, 0o755);
    assert_eq!(script.mtime(), 1_000_000);
    assert_eq!(
        fs::metadata(root.join("dir")).unwrap().mode() & 0o7777,
        0o750
    );
    assert_eq!(fs::metadata(root.join("dir")).unwrap().mtime(), 1_000_000);
    assert_eq!(
        fs::read_link(root.join("dir/link")).unwrap(),
        Path::new("run.sh")
    );
    assert_eq!(fs::read_to_string(root.join("hard")).unwrap(), "echo hi\n");
    assert_eq!(fs::read_to_string(root.join("deep/er/file")).unwrap(), "x");
}

#[test]
fn a_plain_tar_is_unpacked_with_modes_times_and_links() {
    let (parent, result) = unpack(&sample());
    result.unwrap();
    check_sample(&parent.path().join("ctx"));
}

fn through(program: &str, input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success(), "{program}");
    output.stdout
}

#[test]
fn every_compression_is_detected_and_unpacked() {
    let tar = sample();
    for program in ["gzip", "bzip2", "xz", "zstd"] {
        let compressed = through(program, &tar);
        assert_ne!(
            Compression::detect(&compressed),
            Compression::None,
            "{program}"
        );
        let (parent, result) = unpack(&compressed);
        result.unwrap_or_else(|e| panic!("{program}: {e}"));
        check_sample(&parent.path().join("ctx"));
    }
    assert_eq!(Compression::detect(&tar), Compression::None);
}

#[test]
fn absolute_and_parent_paths_are_refused() {
    for name in ["/etc/evil", "../evil", "a/../../evil"] {
        let mut out = Vec::new();
        entry(&mut out, name, tar::EntryType::Regular, "", b"x", 0o644);
        let (parent, result) = unpack(&finish(out));
        assert!(
            matches!(result, Err(ContextError::Outside(_))),
            "{name}: {result:?}"
        );
        assert!(!parent.path().join("evil").exists());
    }
}

#[test]
fn nothing_is_written_through_a_symbolic_link() {
    let outside = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let target = outside.path().to_str().unwrap();
    entry(
        &mut out,
        "escape",
        tar::EntryType::Symlink,
        target,
        b"",
        0o777,
    );
    entry(
        &mut out,
        "escape/file",
        tar::EntryType::Regular,
        "",
        b"x",
        0o644,
    );
    let (_parent, result) = unpack(&finish(out));
    assert!(
        matches!(result, Err(ContextError::Outside(_))),
        "{result:?}"
    );
    assert!(!outside.path().join("file").exists());
}

#[test]
fn a_hard_link_must_stay_inside() {
    for target in ["/etc/passwd", "../x", "missing"] {
        let mut out = Vec::new();
        entry(&mut out, "h", tar::EntryType::Link, target, b"", 0o644);
        let (_parent, result) = unpack(&finish(out));
        assert!(result.is_err(), "{target}");
    }
    // Nor pass through a symbolic link.
    let mut out = Vec::new();
    entry(&mut out, "l", tar::EntryType::Symlink, "/etc", b"", 0o777);
    entry(&mut out, "h", tar::EntryType::Link, "l/passwd", b"", 0o644);
    let (_parent, result) = unpack(&finish(out));
    assert!(
        matches!(result, Err(ContextError::BadHardLink { .. })),
        "{result:?}"
    );
}

#[test]
fn a_body_that_is_not_a_tar_is_refused() {
    let (_parent, result) = unpack(&[b'x'; 2000]);
    let err = result.unwrap_err();
    assert!(matches!(err, ContextError::NotTar(_)), "{err:?}");
    assert!(err
        .to_string()
        .starts_with("the build context is not a tar archive"));
}

#[test]
fn a_later_entry_replaces_an_earlier_one() {
    let mut out = Vec::new();
    entry(&mut out, "f", tar::EntryType::Regular, "", b"one", 0o644);
    entry(&mut out, "f", tar::EntryType::Regular, "", b"two", 0o644);
    let (parent, result) = unpack(&finish(out));
    result.unwrap();
    assert_eq!(
        fs::read_to_string(parent.path().join("ctx/f")).unwrap(),
        "two"
    );
}

#[test]
fn the_directory_is_removed_on_drop() {
    let parent = tempfile::tempdir().unwrap();
    let context = ContextDir::create(parent.path(), "ctx").unwrap();
    context.unpack(sample().as_slice()).unwrap();
    let root = context.root().to_path_buf();
    assert!(root.join("dir/run.sh").exists());
    drop(context);
    assert!(!root.exists());
}

#[test]
fn links_resolve_inside_the_scope() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/passwd"), "inside").unwrap();
    symlink("/etc", root.join("abs")).unwrap();
    symlink("../../../etc", root.join("up")).unwrap();
    symlink("loop", root.join("loop")).unwrap();
    assert_eq!(
        resolve_in_scope(root, "abs/passwd", true).unwrap(),
        root.join("etc/passwd")
    );
    assert_eq!(
        resolve_in_scope(root, "up/passwd", true).unwrap(),
        root.join("etc/passwd")
    );
    assert_eq!(
        resolve_in_scope(root, "../../x", true).unwrap(),
        root.join("x")
    );
    assert_eq!(
        resolve_in_scope(root, "abs", false).unwrap(),
        root.join("abs")
    );
    assert!(matches!(
        resolve_in_scope(root, "loop", true),
        Err(ContextError::SymlinkLoop(_))
    ));
}

#[test]
fn files_are_hashed_as_they_are_unpacked() {
    let dir = tempfile::tempdir().unwrap();
    let context = ContextDir::create(dir.path(), "b").unwrap();
    // Larger than one copy buffer, so the file is written in several parts.
    let big: Vec<u8> = (0..(5 << 20) + 17).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::new();
    entry(
        &mut out,
        "big.bin",
        tar::EntryType::Regular,
        "",
        &big,
        0o600,
    );
    context.unpack(io::Cursor::new(finish(out))).unwrap();
    let path = context.root().join("big.bin");
    assert_eq!(fs::read(&path).unwrap(), big);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    let want: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&big).into();
    assert_eq!(digests::known(&meta), Some(want));
}
