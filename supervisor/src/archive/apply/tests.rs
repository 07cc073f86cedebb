//! Layers applied to real directories (as root), and the path and time parsers.

use std::fs;
use std::io::{Cursor, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::EntryType;

use super::meta::parse_pax_time;
use super::{apply_layer, normalize, ArchiveError};
use crate::archive::testutil::{names, require_root, tree, xattrs_of, Layer, MTIME};

/// A file capability granting cap_net_bind_service (vfs_cap_data v2).
const CAP_NET_BIND: [u8; 20] = [
    0x01, 0, 0, 0x02, 0, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn apply(tar: &[u8], root: &Path) -> Result<super::ApplyStats, ArchiveError> {
    apply_layer(tar, root, &[])
}

#[test]
fn files_are_read_through_the_layers() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (base, mid, top) = (
        tmp.path().join("1"),
        tmp.path().join("2"),
        tmp.path().join("3"),
    );
    for d in [&base, &mid, &top] {
        fs::create_dir(d).unwrap();
    }
    let tar = Layer::new()
        .dir("etc/", 0o755)
        .file("etc/passwd", b"root:x:0:0\n", 0o644)
        .file("etc/group", b"root:x:0:\n", 0o644)
        .finish();
    apply(&tar, &base).unwrap();
    let tar = Layer::new()
        .dir("etc/", 0o755)
        .file("etc/passwd", b"app:x:7:7\n", 0o644)
        .file("etc/.wh.group", b"", 0o644)
        .symlink("etc/hosts", "/etc/passwd")
        .finish();
    apply_layer(&tar[..], &mid, std::slice::from_ref(&base)).unwrap();
    let read = |lowers: &[std::path::PathBuf], rel: &str| {
        super::read_file_in_lowers(lowers, Path::new(rel), 4).unwrap()
    };
    let all = [top.clone(), mid.clone(), base.clone()];
    // The nearest layer wins, up to the limit; a whiteout hides; a
    // symlink is not followed.
    assert_eq!(read(&all, "etc/passwd").as_deref(), Some(&b"app:"[..]));
    assert_eq!(read(&all, "etc/group"), None);
    assert_eq!(read(&all, "etc/hosts"), None);
    assert_eq!(read(&all, "etc/missing"), None);
    assert_eq!(
        read(std::slice::from_ref(&base), "etc/group").as_deref(),
        Some(&b"root"[..])
    );
}

#[test]
fn every_entry_type_lands_with_its_metadata() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tar = Layer::new()
        .dir_owned("etc/", 0o750, 0, 42, 1_400_000_000)
        .file_owned("etc/passwd", b"root:x:0:0\n", 0o644, 0, 0, 1_500_000_000)
        .dir("tmp/", 0o1777)
        .file("usr/bin/sudo", b"#!sudo", 0o4755)
        .file_owned("usr/bin/tool", b"tool", 0o6711, 1000, 1001, MTIME)
        .pax(&[
            ("SCHILY.xattr.user.origin", b"layer"),
            ("SCHILY.xattr.security.capability", &CAP_NET_BIND),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ])
        .file_owned("usr/bin/ping", b"ping", 0o755, 1000, 1000, MTIME)
        .symlink("bin", "usr/bin")
        .hardlink("usr/bin/sudoedit", "usr/bin/sudo")
        .node("dev/null", EntryType::Char, 1, 3, 0o666)
        .node("dev/loop0", EntryType::Block, 7, 0, 0o660)
        .node("run/fifo", EntryType::Fifo, 0, 0, 0o600)
        .finish();
    let stats = apply(&tar, root).unwrap();
    assert_eq!(stats.entries, 11);
    assert_eq!(stats.bytes, 11 + 6 + 4 + 4);
    // Before anything reads the file.
    let atime = fs::metadata(root.join("etc/passwd")).unwrap().atime();
    assert_eq!(atime, 1_500_000_000);

    let t = tree(root);
    assert_eq!(
        names(&t),
        [
            "bin",
            "dev",
            "dev/loop0",
            "dev/null",
            "etc",
            "etc/passwd",
            "run",
            "run/fifo",
            "tmp",
            "usr",
            "usr/bin",
            "usr/bin/ping",
            "usr/bin/sudo",
            "usr/bin/sudoedit",
            "usr/bin/tool",
        ]
    );
    let etc = &t[Path::new("etc")];
    assert_eq!((etc.mode, etc.uid, etc.gid), (0o750, 0, 42));
    // Set after its child was written.
    assert_eq!(etc.mtime, 1_400_000_000);
    let passwd = &t[Path::new("etc/passwd")];
    assert_eq!(passwd.data.as_deref(), Some(&b"root:x:0:0\n"[..]));
    assert_eq!((passwd.mode, passwd.mtime), (0o644, 1_500_000_000));
    assert_eq!(t[Path::new("tmp")].mode, 0o1777);
    assert_eq!(t[Path::new("usr/bin/sudo")].mode, 0o4755);
    let tool = &t[Path::new("usr/bin/tool")];
    assert_eq!((tool.mode, tool.uid, tool.gid), (0o6711, 1000, 1001));

    let ping = &t[Path::new("usr/bin/ping")];
    assert_eq!((ping.uid, ping.gid), (1000, 1000));
    assert_eq!(
        ping.xattrs.get("user.origin").map(Vec::as_slice),
        Some(&b"layer"[..])
    );
    assert_eq!(
        ping.xattrs.get("security.capability").map(Vec::as_slice),
        Some(&CAP_NET_BIND[..])
    );
    assert!(!ping.xattrs.contains_key("trusted.overlay.opaque"));

    let bin = &t[Path::new("bin")];
    assert_eq!(bin.link.as_deref(), Some(std::ffi::OsStr::new("usr/bin")));
    assert_eq!(bin.mtime, MTIME as i64);

    let sudo = fs::metadata(root.join("usr/bin/sudo")).unwrap();
    let sudoedit = fs::metadata(root.join("usr/bin/sudoedit")).unwrap();
    assert_eq!(sudo.ino(), sudoedit.ino());
    assert_eq!(sudo.nlink(), 2);

    let null = fs::symlink_metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let lp = fs::symlink_metadata(root.join("dev/loop0")).unwrap();
    assert!(lp.file_type().is_block_device());
    assert_eq!(lp.rdev(), nix::sys::stat::makedev(7, 0));
    let fifo = fs::symlink_metadata(root.join("run/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o600);

    // Parents the tar does not list: 0755, root.
    let usr = &t[Path::new("usr")];
    assert_eq!((usr.mode, usr.uid, usr.gid), (0o755, 0, 0));
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tar = Layer::new()
        .file_owned(".wh.gone", b"", 0o644, 7, 8, 1_234_567_890)
        .dir("dir/", 0o755)
        .file("dir/.wh.x", b"", 0o644)
        .dir("opq/", 0o755)
        .file("opq/.wh..wh..opq", b"", 0o644)
        .file("opq/keep", b"kept", 0o644)
        .file("implicit/.wh..wh..opq", b"", 0o644)
        .dir(".wh..wh.plnk/", 0o700)
        .file(".wh..wh.plnk/123", b"aufs", 0o644)
        // Whiteout first, then a directory of the same layer: the new
        // directory must not merge with the lower one.
        .file(".wh.replaced", b"", 0o644)
        .dir("replaced/", 0o755)
        .file("replaced/new", b"new", 0o644)
        // Directory first, then its whiteout: the layer's own entries
        // stay (image-spec), the lower ones are hidden.
        .dir("later/", 0o755)
        .file("later/mine", b"mine", 0o644)
        .file(".wh.later", b"", 0o644)
        // A file of the layer is not hidden by the layer's whiteout.
        .file("f", b"f", 0o644)
        .file(".wh.f", b"", 0o644)
        .finish();
    apply(&tar, root).unwrap();

    let gone = fs::symlink_metadata(root.join("gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert_eq!(
        (gone.uid(), gone.gid(), gone.mtime()),
        (7, 8, 1_234_567_890)
    );
    let x = fs::symlink_metadata(root.join("dir/x")).unwrap();
    assert!(x.file_type().is_char_device() && x.rdev() == 0);
    assert!(!root.join("dir/.wh.x").exists());

    let opaque = |p: &str| {
        xattrs_of(&root.join(p))
            .get("trusted.overlay.opaque")
            .cloned()
    };
    assert_eq!(opaque("opq").as_deref(), Some(&b"y"[..]));
    assert_eq!(fs::read(root.join("opq/keep")).unwrap(), b"kept");
    assert!(!root.join("opq/.wh..wh..opq").exists());
    assert_eq!(opaque("implicit").as_deref(), Some(&b"y"[..]));
    assert_eq!(opaque("dir"), None);
    assert_eq!(opaque("replaced").as_deref(), Some(&b"y"[..]));
    assert_eq!(fs::read(root.join("replaced/new")).unwrap(), b"new");
    assert_eq!(opaque("later").as_deref(), Some(&b"y"[..]));
    assert_eq!(fs::read(root.join("later/mine")).unwrap(), b"mine");
    assert_eq!(fs::read(root.join("f")).unwrap(), b"f");
    assert!(!root.join(".wh..wh.plnk").exists());
}

#[test]
fn long_names_and_link_targets() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = format!("long/{}", "d".repeat(150));
    let file = format!("{dir}/{}", "f".repeat(200));
    let target = format!("/{}/{}", "t".repeat(120), "u".repeat(60));
    let pax_file = format!("pax/{}", "p".repeat(180));
    let mut layer = Layer::new();
    layer
        .file(&file, b"gnu long name", 0o644)
        .symlink(&format!("{dir}/link"), &target)
        .hardlink(&format!("{dir}/hard"), &file)
        .pax(&[("path", pax_file.as_bytes())])
        .raw(b"pax/truncated", EntryType::Regular, b"", b"pax long name")
        .pax(&[("linkpath", pax_file.as_bytes())])
        .raw(b"pax/hard", EntryType::Link, b"truncated", b"");
    apply(&layer.finish(), root).unwrap();

    assert_eq!(fs::read(root.join(&file)).unwrap(), b"gnu long name");
    assert_eq!(
        fs::read_link(root.join(&dir).join("link")).unwrap(),
        Path::new(&target)
    );
    assert_eq!(fs::metadata(root.join(&file)).unwrap().nlink(), 2);
    assert_eq!(fs::read(root.join(&pax_file)).unwrap(), b"pax long name");
    assert_eq!(
        fs::metadata(root.join("pax/hard")).unwrap().ino(),
        fs::metadata(root.join(&pax_file)).unwrap().ino()
    );
    assert!(!root.join("pax/truncated").exists());
}

#[test]
fn hard_link_to_a_lower_file_copies_it_up() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    let far = tmp.path().join("far");
    let root = tmp.path().join("root");
    for d in [&lower, &far, &root] {
        fs::create_dir(d).unwrap();
    }
    // The lower as a layer of its own.
    let lower_tar = Layer::new()
        .dir_owned("usr/", 0o750, 5, 6, 1_300_000_000)
        .dir("usr/lib/", 0o755)
        .pax(&[("SCHILY.xattr.user.x", b"1")])
        .file_owned(
            "usr/lib/libfoo.so",
            b"ELF",
            0o755,
            1000,
            1000,
            1_200_000_000,
        )
        .symlink("usr/lib/libfoo.so.1", "libfoo.so")
        .file(".wh.deleted", b"", 0o644)
        .finish();
    apply(&lower_tar, &lower).unwrap();
    let far_tar = Layer::new()
        .file("deleted", b"old", 0o644)
        .file("farfile", b"far", 0o600)
        .finish();
    apply(&far_tar, &far).unwrap();

    let tar = Layer::new()
        .hardlink("usr/lib/libbar.so", "usr/lib/libfoo.so")
        .hardlink("usr/lib/libbar.so.1", "usr/lib/libfoo.so.1")
        .hardlink("farlink", "farfile")
        .finish();
    apply_layer(&tar[..], &root, &[lower.clone(), far.clone()]).unwrap();

    let t = tree(&root);
    let foo = &t[Path::new("usr/lib/libfoo.so")];
    assert_eq!(foo.data.as_deref(), Some(&b"ELF"[..]));
    assert_eq!(
        (foo.mode, foo.uid, foo.gid, foo.mtime),
        (0o755, 1000, 1000, 1_200_000_000)
    );
    assert_eq!(foo.xattrs.get("user.x").map(Vec::as_slice), Some(&b"1"[..]));
    let bar = fs::metadata(root.join("usr/lib/libbar.so")).unwrap();
    assert_eq!(
        bar.ino(),
        fs::metadata(root.join("usr/lib/libfoo.so")).unwrap().ino()
    );
    assert_eq!(bar.nlink(), 2);
    // A hard link to a symlink links the symlink.
    let l = fs::symlink_metadata(root.join("usr/lib/libbar.so.1")).unwrap();
    assert!(l.file_type().is_symlink());
    assert_eq!(l.nlink(), 2);
    // The parents got the lower's attributes.
    let usr = &t[Path::new("usr")];
    assert_eq!((usr.mode, usr.uid, usr.gid), (0o750, 5, 6));
    assert_eq!(fs::read(root.join("farlink")).unwrap(), b"far");
    // The lowers are untouched.
    assert_eq!(
        fs::metadata(lower.join("usr/lib/libfoo.so"))
            .unwrap()
            .nlink(),
        1
    );
    assert!(!far.join("farlink").exists());

    // Deleted by the nearer lower: not there to link to.
    let tar = Layer::new().hardlink("d", "deleted").finish();
    let root2 = tmp.path().join("root2");
    fs::create_dir(&root2).unwrap();
    let err = apply_layer(&tar[..], &root2, &[lower, far]).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"layer entry "d": link target "deleted" does not exist in the layer or below it"#
    );
}

#[test]
fn paths_leaving_the_root_are_refused() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    for (name, msg) in [
        (
            &b"../etc/passwd"[..],
            r#"layer entry "../etc/passwd" escapes the root"#,
        ),
        (b"/../../x", r#"layer entry "/../../x" escapes the root"#),
        (b"a/../../x", r#"layer entry "a/../../x" escapes the root"#),
        (b"./../x", r#"layer entry "./../x" escapes the root"#),
    ] {
        let tar = Layer::new()
            .raw(name, EntryType::Regular, b"", b"x")
            .finish();
        let err = apply(&tar, &root).unwrap_err();
        assert_eq!(err.to_string(), msg);
    }
    assert!(!tmp.path().join("x").exists());
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0);

    // Absolute and dotted paths that stay inside are fine.
    let tar = Layer::new()
        .raw(b"/etc/hosts", EntryType::Regular, b"", b"h")
        .raw(b"./a/../b", EntryType::Regular, b"", b"b")
        .finish();
    apply(&tar, &root).unwrap();
    assert_eq!(fs::read(root.join("etc/hosts")).unwrap(), b"h");
    assert_eq!(fs::read(root.join("b")).unwrap(), b"b");
}

#[test]
fn writes_through_symlinks_are_refused() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), b"safe").unwrap();
    let root = tmp.path().join("a/b/root");
    fs::create_dir_all(&root).unwrap();
    let evil = outside.to_str().unwrap();

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            Layer::new()
                .symlink("evil", evil)
                .file("evil/file", b"x", 0o644)
                .finish(),
            r#"layer entry "evil/file": parent "evil" is a symlink, refusing to write through it"#,
        ),
        (
            Layer::new()
                .symlink("up", "../../..")
                .file("up/pwned", b"x", 0o644)
                .finish(),
            r#"layer entry "up/pwned": parent "up" is a symlink, refusing to write through it"#,
        ),
        (
            Layer::new()
                .symlink("evil", evil)
                .file("evil/.wh.victim", b"", 0o644)
                .finish(),
            r#"layer entry "evil/.wh.victim": parent "evil" is a symlink, refusing to write through it"#,
        ),
        (
            Layer::new()
                .symlink("evil", evil)
                .file("evil/.wh..wh..opq", b"", 0o644)
                .finish(),
            r#"layer entry "evil/.wh..wh..opq": parent "evil" is a symlink, refusing to write through it"#,
        ),
        (
            Layer::new()
                .symlink("evil", evil)
                .dir("evil/sub/", 0o755)
                .finish(),
            r#"layer entry "evil/sub/": parent "evil" is a symlink, refusing to write through it"#,
        ),
        (
            Layer::new()
                .symlink("evil", evil)
                .hardlink("x", "evil/victim")
                .finish(),
            r#"layer entry "x": link target "evil/victim" goes through symlink "evil""#,
        ),
        (
            Layer::new()
                .raw(b"x", EntryType::Link, b"../outside/victim", b"")
                .finish(),
            r#"layer entry "x": link target "../outside/victim" escapes the root"#,
        ),
        (
            Layer::new()
                .raw(b"x", EntryType::Link, b"../outside", b"")
                .finish(),
            r#"layer entry "x": link target "../outside" escapes the root"#,
        ),
    ];
    for (tar, msg) in cases {
        let root = tempfile::tempdir_in(tmp.path().join("a/b")).unwrap();
        let err = apply(&tar, root.path()).unwrap_err();
        assert_eq!(err.to_string(), msg);
    }
    let left: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["victim"]);
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"safe");
    assert_eq!(fs::metadata(outside.join("victim")).unwrap().nlink(), 1);
    assert!(crate::archive::testutil::xattrs_of(&outside).is_empty());
    assert!(!tmp.path().join("pwned").exists());
    assert!(!tmp.path().join("a/pwned").exists());

    // Replacing a symlink by a file or directory does not follow it.
    let tar = Layer::new()
        .symlink("s", evil)
        .file("s", b"file", 0o644)
        .symlink("t", evil)
        .dir("t/", 0o755)
        .finish();
    apply(&tar, &root).unwrap();
    assert_eq!(fs::read(root.join("s")).unwrap(), b"file");
    assert!(fs::symlink_metadata(root.join("t")).unwrap().is_dir());
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"safe");
}

#[test]
fn existing_entries_are_replaced_or_merged() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tar = Layer::new()
        .file("a", b"file", 0o644)
        .dir("a/", 0o700)
        .dir("b/", 0o755)
        .file("b/c", b"c", 0o644)
        .file("b", b"now a file", 0o600)
        .file("d", b"d", 0o644)
        .symlink("d", "elsewhere")
        .dir("m/", 0o755)
        .file("m/child", b"child", 0o644)
        .dir_owned("m/", 0o711, 3, 4, 1_111_111_111)
        .file("h", b"h", 0o644)
        .hardlink("h2", "h")
        .file("h2", b"h2", 0o644)
        .finish();
    apply(&tar, root).unwrap();
    let t = tree(root);
    assert_eq!(t[Path::new("a")].kind, libc::S_IFDIR);
    assert_eq!(t[Path::new("a")].mode, 0o700);
    assert_eq!(t[Path::new("b")].data.as_deref(), Some(&b"now a file"[..]));
    assert_eq!(
        t[Path::new("d")].link.as_deref(),
        Some(std::ffi::OsStr::new("elsewhere"))
    );
    let m = &t[Path::new("m")];
    assert_eq!(
        (m.mode, m.uid, m.gid, m.mtime),
        (0o711, 3, 4, 1_111_111_111)
    );
    assert_eq!(t[Path::new("m/child")].data.as_deref(), Some(&b"child"[..]));
    assert_eq!(t[Path::new("h")].data.as_deref(), Some(&b"h"[..]));
    assert_eq!(t[Path::new("h2")].data.as_deref(), Some(&b"h2"[..]));
    assert_eq!(fs::metadata(root.join("h")).unwrap().nlink(), 1);
}

#[test]
fn broken_streams_are_errors() {
    require_root();
    let tar = Layer::new()
        .dir("d/", 0o755)
        .file("d/f", &[7u8; 3000], 0o644)
        .file("d/g", b"g", 0o644)
        .finish();
    let data_end = tar.len() - 1024;
    // A cut between entries is a shorter layer (no end-of-archive
    // marker, as umoci writes them); any other cut fails, none panics.
    let boundaries = [0, 512, 512 + 512 + 3072, data_end];
    for cut in (0..data_end)
        .step_by(97)
        .chain([0, 512, 1024, data_end - 1, data_end])
    {
        let tmp = tempfile::tempdir().unwrap();
        let result = apply(&tar[..cut], tmp.path());
        if boundaries.contains(&cut) {
            assert!(result.is_ok(), "cut at {cut}: {result:?}");
        } else {
            let err = result.unwrap_err();
            assert!(
                err.to_string().starts_with("read layer: "),
                "cut at {cut}: {err}"
            );
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let err = apply(&tar[..512 + 1000], tmp.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"read layer: entry "d/f" ends before its 3000 bytes of data"#
    );
    // Half a header is a cut, not an end.
    let err = apply(&tar[..100], tempfile::tempdir().unwrap().path()).unwrap_err();
    assert!(err.to_string().starts_with("read layer: "), "{err}");
    // A corrupt header.
    let mut bad = tar.clone();
    bad[3] ^= 0x55;
    let err = apply(&bad, tempfile::tempdir().unwrap().path()).unwrap_err();
    assert!(matches!(err, ArchiveError::ReadLayer { .. }), "{err}");
    // An unknown entry type.
    let odd = Layer::new()
        .raw(b"vol", EntryType::new(b'V'), b"", b"")
        .finish();
    let err = apply(&odd, tempfile::tempdir().unwrap().path()).unwrap_err();
    assert_eq!(err.to_string(), r#"unsupported entry type 'V' for "vol""#);
}

#[test]
fn reading_stops_at_the_end_of_archive_marker() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let tar = Layer::new().file("f", b"f", 0o644).finish();
    let mut stream = tar.clone();
    stream.extend_from_slice(b"TRAILER");
    let mut cursor = Cursor::new(stream);
    apply_layer(&mut cursor, tmp.path(), &[]).unwrap();
    let mut rest = Vec::new();
    cursor.read_to_end(&mut rest).unwrap();
    assert!(rest.ends_with(b"TRAILER"));
    assert!(rest[..rest.len() - 7].iter().all(|b| *b == 0));
    assert!(rest.len() > 7);
}

#[test]
fn path_and_time_parsing() {
    assert_eq!(
        normalize(Path::new("/a/./b/../c/")).unwrap(),
        Path::new("a/c")
    );
    assert_eq!(normalize(Path::new("./")).unwrap(), Path::new(""));
    assert!(normalize(Path::new("a/../..")).is_none());
    let t = parse_pax_time(b"1700000000.25").unwrap();
    assert_eq!((t.tv_sec(), t.tv_nsec()), (1_700_000_000, 250_000_000));
    let t = parse_pax_time(b"-1.5").unwrap();
    assert_eq!((t.tv_sec(), t.tv_nsec()), (-2, 500_000_000));
    assert!(parse_pax_time(b"x").is_none());
}
