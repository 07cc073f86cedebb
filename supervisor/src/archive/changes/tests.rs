//! `list_changes` on overlay-like trees built by hand: lower layers with
//! whiteouts and opaque directories, and an upper directory of changes.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use nix::sys::stat::{mknod, Mode, SFlag};

use super::super::sys::{set_xattr, XattrTarget};
use super::super::testutil::require_root;
use super::*;

fn file(root: &Path, rel: &str, data: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

fn dir(root: &Path, rel: &str) {
    fs::create_dir_all(root.join(rel)).unwrap();
}

fn whiteout(root: &Path, rel: &str) {
    mknod(&root.join(rel), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
}

fn opaque(root: &Path, rel: &str) {
    let fd = fs::File::open(root.join(rel)).unwrap();
    set_xattr(XattrTarget::Fd(fd.as_fd()), OPAQUE_XATTR, b"y").unwrap();
}

/// Gives `upper/rel` the mode and times of `lower/rel`, as a copy-up does.
fn copied_up(upper: &Path, lower: &Path, rel: &str) {
    let md = fs::metadata(lower.join(rel)).unwrap();
    fs::set_permissions(upper.join(rel), md.permissions()).unwrap();
    let f = fs::File::open(upper.join(rel)).unwrap();
    f.set_modified(md.modified().unwrap()).unwrap();
}

fn listing(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
        .collect()
}

#[test]
fn changes_follow_dockers_rules() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let (upper, near, far) = (t.path().join("u"), t.path().join("l1"), t.path().join("l2"));
    // The image: far at the bottom, near above it.
    file(&far, "etc/passwd", "root\n");
    file(&far, "etc/group", "root\n");
    file(&far, "bin/sh", "sh");
    file(&far, "old/a", "a");
    file(&far, "gone", "x");
    file(&far, "var/lib/x", "x");
    dir(&far, "tmp");
    symlink("/", far.join("escape")).unwrap();
    dir(&near, "etc");
    file(&near, "etc/hosts", "h");
    whiteout(&near, "gone");
    // The container's changes.
    file(&upper, "etc/passwd", "root\nuser\n");
    copied_up(&upper, &far, "etc");
    file(&upper, "etc/new", "n");
    file(&upper, "etc/hosts", "changed");
    whiteout(&upper, "etc/group");
    file(&upper, "old/b", "b");
    opaque(&upper, "old");
    file(&upper, "gone", "back");
    file(&upper, "tmp/x/y", "y");
    copied_up(&upper, &far, "tmp");
    file(&upper, "var/lib/x", "changed");
    copied_up(&upper, &far, "var/lib");
    copied_up(&upper, &far, "var");
    file(&upper, "escape/etc/shadow", "s");
    dir(&upper, "bin");
    whiteout(&upper, "bin/sh");
    copied_up(&upper, &far, "bin");
    // The upper directory of etc has the new entries: its mtime differs.
    fs::File::open(upper.join("etc"))
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();

    let got = listing(&list_changes(&upper, &[near.clone(), far.clone()]).unwrap());
    assert_eq!(
        got,
        vec![
            // bin was only copied up: listed as the parent of a deletion.
            "C /bin",
            "D /bin/sh",
            // A symlink below is not followed: escape became a directory.
            "C /escape",
            "A /escape/etc",
            "A /escape/etc/shadow",
            // etc's times changed: listed for that.
            "C /etc",
            "D /etc/group",
            "C /etc/hosts",
            "A /etc/new",
            "C /etc/passwd",
            // Deleted in the near layer: back as an addition.
            "A /gone",
            // An opaque directory is deleted, what it holds now added.
            "D /old",
            "A /old/b",
            "C /tmp",
            "A /tmp/x",
            "A /tmp/x/y",
            "C /var/lib/x",
        ]
    );
}

#[test]
fn no_lowers_means_everything_is_added() {
    let t = tempfile::tempdir().unwrap();
    file(t.path(), "a/b", "b");
    assert_eq!(
        listing(&list_changes(t.path(), &[]).unwrap()),
        vec!["A /a", "A /a/b"]
    );
    assert!(list_changes(&t.path().join("missing"), &[]).is_err());
}
