//! The archive code on plain directories: a temporary directory stands for
//! a container's root, with another one beside it standing for the host.

use std::fs as stdfs;
use std::io::Cursor;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;

struct Scene {
    _tmp: tempfile::TempDir,
    root_dir: std::path::PathBuf,
    outside: std::path::PathBuf,
    root: root::ContainerRoot,
}

fn scene() -> Scene {
    let tmp = tempfile::tempdir().unwrap();
    let root_dir = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    stdfs::create_dir_all(root_dir.join("dir/sub")).unwrap();
    stdfs::create_dir_all(&outside).unwrap();
    stdfs::write(root_dir.join("dir/a.txt"), "a").unwrap();
    stdfs::write(root_dir.join("dir/sub/b"), "bb").unwrap();
    stdfs::write(outside.join("secret"), "host").unwrap();
    // Links that would leave the root if followed on the host.
    symlink("/", root_dir.join("slash")).unwrap();
    symlink("../../../../../../..", root_dir.join("up")).unwrap();
    symlink(&outside, root_dir.join("host")).unwrap();
    symlink("dir", root_dir.join("link")).unwrap();
    let fd = nix::fcntl::open(
        &root_dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    Scene {
        _tmp: tmp,
        root_dir,
        outside,
        root: root::ContainerRoot::from_fd(fd, Vec::new(), false),
    }
}

fn tar_of(s: &Scene, path: &str) -> (PathStat, Vec<(String, Vec<u8>)>) {
    let l = locate(&s.root, path, "c").unwrap();
    let out = match paths::parent_and_name(&l.resolved) {
        None => read::write_tar(s.root.fd(), None, &l.stat.name, Vec::new()).unwrap(),
        Some((p, n)) => {
            let p = fs::open_dir(s.root.fd(), p).unwrap();
            read::write_tar(p.as_fd(), Some(n), &l.stat.name, Vec::new()).unwrap()
        }
    };
    let mut entries = Vec::new();
    let mut a = tar::Archive::new(Cursor::new(out));
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        entries.push((name, data));
    }
    (l.stat, entries)
}

fn names(entries: &[(String, Vec<u8>)]) -> Vec<&str> {
    entries.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn a_directory_is_archived_under_its_name() {
    let s = scene();
    let (stat, entries) = tar_of(&s, "/dir");
    assert_eq!(stat.name, "dir");
    assert!(stat.is_dir());
    assert_eq!(
        names(&entries),
        ["dir/", "dir/a.txt", "dir/sub/", "dir/sub/b"]
    );
    let (stat, entries) = tar_of(&s, "/dir/.");
    assert_eq!(stat.name, ".");
    assert_eq!(names(&entries), ["./", "./a.txt", "./sub/", "./sub/b"]);
}

#[test]
fn a_link_is_archived_as_a_link_unless_followed_by_a_slash() {
    let s = scene();
    let (stat, entries) = tar_of(&s, "/link");
    assert_eq!(stat.mode & (1 << 27), 1 << 27);
    assert_eq!(stat.link_target, "/dir");
    assert_eq!(names(&entries), ["link"]);
    let (_, entries) = tar_of(&s, "/link/");
    assert_eq!(
        names(&entries),
        ["link/", "link/a.txt", "link/sub/", "link/sub/b"]
    );
}

#[test]
fn links_out_of_the_root_stay_in_it() {
    let s = scene();
    for p in ["/slash/dir/a.txt", "/up/dir/a.txt", "/up/../../dir/a.txt"] {
        let (stat, entries) = tar_of(&s, p);
        assert_eq!(stat.name, "a.txt", "{p}");
        assert_eq!(entries[0].1, b"a", "{p}");
    }
    let (stat, _) = tar_of(&s, "/host");
    // The link's target, taken inside the root, does not exist there.
    assert_eq!(stat.link_target, s.outside.display().to_string());
    assert!(matches!(
        locate(&s.root, "/host/secret", "c"),
        Err(ArchiveError::NotFound { .. })
    ));
    let (stat, _) = tar_of(&s, "/up");
    assert_eq!(stat.link_target, "/");
}

fn tar_with(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_mtime(1_000_000_000);
        // Names written raw: the tar crate refuses `..` and `/`.
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                h.set_link_name(data).unwrap();
                h.set_size(0);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            _ => {
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn extract_into(s: &Scene, dest: &str, tar: Vec<u8>) -> Result<()> {
    extract::extract(
        s.root.fd(),
        dest,
        Cursor::new(tar),
        &ExtractOptions::default(),
    )
}

fn outside_untouched(s: &Scene) {
    let mut names: Vec<String> = stdfs::read_dir(&s.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["secret"]);
    assert_eq!(stdfs::read(s.outside.join("secret")).unwrap(), b"host");
    let parent: Vec<String> = stdfs::read_dir(s.root_dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(parent.len(), 2, "{parent:?}");
}

#[test]
fn files_are_extracted_with_modes_and_times() {
    let s = scene();
    let t = tar_with(&[
        ("new/", tar::EntryType::Directory, ""),
        ("new/f", tar::EntryType::Regular, "data"),
        ("new/l", tar::EntryType::Symlink, "f"),
        ("new/h", tar::EntryType::Link, "new/f"),
        ("deep/er/g", tar::EntryType::Regular, "g"),
    ]);
    extract_into(&s, "/dir", t).unwrap();
    let f = s.root_dir.join("dir/new/f");
    assert_eq!(stdfs::read(&f).unwrap(), b"data");
    assert_eq!(stdfs::read(s.root_dir.join("dir/new/h")).unwrap(), b"data");
    assert_eq!(
        stdfs::read_link(s.root_dir.join("dir/new/l")).unwrap(),
        Path::new("f")
    );
    assert_eq!(stdfs::read(s.root_dir.join("dir/deep/er/g")).unwrap(), b"g");
    use std::os::unix::fs::MetadataExt;
    let m = stdfs::metadata(&f).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o644);
    assert_eq!(m.mtime(), 1_000_000_000);
    assert_eq!(
        stdfs::metadata(s.root_dir.join("dir/new")).unwrap().mtime(),
        1_000_000_000
    );
}

#[test]
fn climbing_entries_are_refused() {
    let s = scene();
    let t = tar_with(&[("../../outside/x", tar::EntryType::Regular, "x")]);
    assert!(matches!(
        extract_into(&s, "/dir", t),
        Err(ArchiveError::Breakout { .. })
    ));
    // `..` stops at the root: into the root, this lands at its top.
    let t = tar_with(&[("a/../../../x", tar::EntryType::Regular, "x")]);
    extract_into(&s, "/", t).unwrap();
    assert_eq!(stdfs::read(s.root_dir.join("x")).unwrap(), b"x");
    let t = tar_with(&[("x", tar::EntryType::Link, "../../outside/secret")]);
    assert!(matches!(
        extract_into(&s, "/dir", t),
        Err(ArchiveError::Breakout { .. })
    ));
    outside_untouched(&s);
}

#[test]
fn absolute_entries_land_in_the_destination() {
    let s = scene();
    let t = tar_with(&[("/etc/passwd", tar::EntryType::Regular, "x")]);
    extract_into(&s, "/dir", t).unwrap();
    assert_eq!(
        stdfs::read(s.root_dir.join("dir/etc/passwd")).unwrap(),
        b"x"
    );
}

#[test]
fn writes_through_links_stay_in_the_root() {
    let s = scene();
    // Through links in the root.
    for dest in ["/host", "/slash", "/up"] {
        let t = tar_with(&[("owned", tar::EntryType::Regular, "x")]);
        let _ = extract_into(&s, dest, t);
    }
    // Through links made by the archive itself.
    let t = tar_with(&[
        ("esc", tar::EntryType::Symlink, "/../../../../.."),
        ("esc/owned2", tar::EntryType::Regular, "x"),
        ("out", tar::EntryType::Symlink, s.outside.to_str().unwrap()),
        ("out/secret", tar::EntryType::Regular, "pwned"),
        ("hl", tar::EntryType::Link, "up/secret"),
    ]);
    let _ = extract_into(&s, "/", t);
    outside_untouched(&s);
    // What went through `/` links landed at the root's top.
    assert_eq!(stdfs::read(s.root_dir.join("owned2")).unwrap(), b"x");
}

#[test]
fn directories_and_files_do_not_replace_each_other_when_asked() {
    let s = scene();
    let opts = ExtractOptions {
        no_overwrite_dir_non_dir: true,
        owner: None,
    };
    let t = tar_with(&[("sub", tar::EntryType::Regular, "x")]);
    let r = extract::extract(s.root.fd(), "/dir", Cursor::new(t), &opts);
    assert!(matches!(r, Err(ArchiveError::DirNonDir(_))), "{r:?}");
    let t = tar_with(&[("a.txt/", tar::EntryType::Directory, "")]);
    let r = extract::extract(s.root.fd(), "/dir", Cursor::new(t), &opts);
    assert!(matches!(r, Err(ArchiveError::DirNonDir(_))), "{r:?}");
    // Without the option a file replaces a directory.
    let t = tar_with(&[("sub", tar::EntryType::Regular, "x")]);
    extract_into(&s, "/dir", t).unwrap();
    assert_eq!(stdfs::read(s.root_dir.join("dir/sub")).unwrap(), b"x");
}

#[test]
fn go_modes() {
    assert_eq!(go_mode(0o040755), (1 << 31) | 0o755);
    assert_eq!(go_mode(0o100644), 0o644);
    assert_eq!(go_mode(0o120777), (1 << 27) | 0o777);
    assert_eq!(go_mode(0o104755), (1 << 23) | 0o755);
    assert_eq!(go_mode(0o020666), (1 << 26) | (1 << 21) | 0o666);
}

#[test]
fn read_only_mounts_refuse_writes() {
    let s = scene();
    let fd = nix::unistd::dup(s.root.fd()).unwrap();
    let r = root::ContainerRoot::from_fd(
        fd,
        vec![
            root::MountPoint {
                destination: "/data".into(),
                writable: false,
            },
            root::MountPoint {
                destination: "/rw".into(),
                writable: true,
            },
        ],
        true,
    );
    assert_eq!(r.read_only_at("/data/x"), Err("/data".to_string()));
    assert_eq!(r.read_only_at("/rw/x"), Ok(false));
    assert_eq!(r.read_only_at("/database"), Ok(true));
}

#[test]
fn file_capabilities_travel_with_the_file() {
    let s = scene();
    let file = s.root_dir.join("dir/a.txt");
    let f = stdfs::File::open(&file).unwrap();
    // VFS_CAP_REVISION_2, effective; permitted: cap_net_bind_service.
    let caps = [1u8, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    sys::fsetxattr(f.as_fd(), b"security.capability", &caps).unwrap();
    let p = fs::open_dir(s.root.fd(), "/dir").unwrap();
    let tar = read::write_tar(p.as_fd(), Some("a.txt"), "a.txt", Vec::new()).unwrap();
    extract::extract(
        s.root.fd(),
        "/dir/sub",
        Cursor::new(tar),
        &ExtractOptions::default(),
    )
    .unwrap();
    let copy = stdfs::File::open(s.root_dir.join("dir/sub/a.txt")).unwrap();
    assert_eq!(
        sys::fgetxattr(copy.as_fd(), "security.capability").unwrap(),
        Some(caps.to_vec())
    );
    assert_eq!(stdfs::read(s.root_dir.join("dir/sub/a.txt")).unwrap(), b"a");
}
