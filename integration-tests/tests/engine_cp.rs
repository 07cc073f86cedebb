//! `docker cp` against berthd with the real docker CLI: both ways, on
//! running, stopped and created containers, through bind mounts, `-a`,
//! `-L`, tar streams on stdin and stdout; and the attacks on the archive
//! API (links out of the root, a racing link swap, tars climbing out with
//! `..`, absolute names, hard links to outside files) refused with nothing
//! read or written outside the container's root.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::engine::Berthd;

/// A tar with the entries given raw (the tar crate refuses `..` and `/`
/// names when it writes them itself).
fn raw_tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        let body: &[u8] = match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                h.as_old_mut().linkname[..data.len()].copy_from_slice(data.as_bytes());
                b""
            }
            _ => data.as_bytes(),
        };
        h.set_size(body.len() as u64);
        h.set_cksum();
        b.append(&h, body).expect("raw_tar");
    }
    b.into_inner().expect("raw_tar")
}

fn tar_names(data: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(data);
    a.entries()
        .expect("tar_names")
        .map(|e| String::from_utf8_lossy(&e.expect("tar_names").path_bytes()).into_owned())
        .collect()
}

fn exec(d: &Berthd, c: &str, script: &str) -> String {
    d.docker(&["exec", c, "sh", "-c", script]).ok().stdout
}

#[test]
fn cp_both_ways_on_a_running_container() {
    let d = Berthd::start();
    let host = tempfile::tempdir().expect("cp_both_ways_on_a_running_container");
    let src = host.path().join("src");
    fs::create_dir_all(src.join("sub")).expect("cp_both_ways_on_a_running_container");
    fs::write(src.join("a.txt"), "alpha").expect("cp_both_ways_on_a_running_container");
    fs::write(src.join("sub/b.txt"), "beta").expect("cp_both_ways_on_a_running_container");
    d.docker(&["run", "-d", "--name", "c1", "busybox", "sleep", "300"])
        .ok();

    // A directory into an existing directory keeps its name.
    let s = src.to_str().expect("cp_both_ways_on_a_running_container");
    d.docker(&["cp", s, "c1:/tmp"]).ok();
    assert_eq!(
        exec(&d, "c1", "cat /tmp/src/a.txt /tmp/src/sub/b.txt"),
        "alphabeta"
    );
    // Into a path that does not exist: the directory takes that name.
    d.docker(&["cp", s, "c1:/tmp/renamed"]).ok();
    assert_eq!(exec(&d, "c1", "cat /tmp/renamed/sub/b.txt"), "beta");
    // `dir/.` copies the content.
    d.docker(&["exec", "c1", "mkdir", "/tmp/content"]).ok();
    d.docker(&["cp", &format!("{s}/."), "c1:/tmp/content"]).ok();
    assert_eq!(
        exec(&d, "c1", "ls /tmp/content | tr '\\n' ' '"),
        "a.txt sub "
    );
    // A file onto a new name, and into a missing directory: refused.
    d.docker(&["cp", &format!("{s}/a.txt"), "c1:/tmp/new-name"])
        .ok();
    assert_eq!(exec(&d, "c1", "cat /tmp/new-name"), "alpha");
    d.docker(&["cp", &format!("{s}/a.txt"), "c1:/nowhere/at/all"])
        .fails_with(1, "Could not find the file /nowhere/at in container c1");

    // Out of the container.
    let out = host.path().join("out");
    d.docker(&[
        "cp",
        "c1:/tmp/src",
        out.to_str().expect("cp_both_ways_on_a_running_container"),
    ])
    .ok();
    assert_eq!(
        fs::read_to_string(out.join("sub/b.txt")).expect("cp_both_ways_on_a_running_container"),
        "beta"
    );
    d.docker(&[
        "cp",
        "c1:/tmp/src/.",
        out.to_str().expect("cp_both_ways_on_a_running_container"),
    ])
    .ok();
    assert_eq!(
        fs::read_to_string(out.join("a.txt")).expect("cp_both_ways_on_a_running_container"),
        "alpha"
    );
    d.docker(&[
        "cp",
        "c1:/etc/hostname",
        host.path()
            .to_str()
            .expect("cp_both_ways_on_a_running_container"),
    ])
    .ok();
    assert!(host.path().join("hostname").exists());
    d.docker(&[
        "cp",
        "c1:/no/such/file",
        host.path()
            .to_str()
            .expect("cp_both_ways_on_a_running_container"),
    ])
    .fails_with(1, "Could not find the file /no/such/file in container c1");

    // Tar streams: to stdout, named as Docker names them.
    let tar = d
        .docker_command(&["cp", "c1:/tmp/src", "-"])
        .output()
        .expect("cp_both_ways_on_a_running_container");
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let mut names = tar_names(&tar.stdout);
    names.sort();
    assert_eq!(names, ["src/", "src/a.txt", "src/sub/", "src/sub/b.txt"]);
    let tar = d
        .docker_command(&["cp", "c1:/tmp/src/.", "-"])
        .output()
        .expect("cp_both_ways_on_a_running_container");
    let mut names = tar_names(&tar.stdout);
    names.sort();
    assert_eq!(names, ["./", "./a.txt", "./sub/", "./sub/b.txt"]);
    // From stdin, into a directory only.
    let input = raw_tar(&[("piped/x", tar::EntryType::Regular, "from stdin")]);
    d.docker_input(&["cp", "-", "c1:/tmp"], &input).ok();
    assert_eq!(exec(&d, "c1", "cat /tmp/piped/x"), "from stdin");
    d.docker_input(&["cp", "-", "c1:/tmp/new-name"], &input)
        .fails_with(1, "must be a directory");
    // Compressed tars are accepted as Docker accepts them.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(
        &mut gz,
        &raw_tar(&[("gz", tar::EntryType::Regular, "zipped")]),
    )
    .expect("cp_both_ways_on_a_running_container");
    d.docker_input(
        &["cp", "-", "c1:/tmp"],
        &gz.finish().expect("cp_both_ways_on_a_running_container"),
    )
    .ok();
    assert_eq!(exec(&d, "c1", "cat /tmp/gz"), "zipped");
    d.remove_all();
}

#[test]
fn cp_into_created_and_stopped_containers_through_binds() {
    let d = Berthd::start();
    let host = tempfile::tempdir().expect("cp_into_created_and_stopped_containers_through_binds");
    let data = host.path().join("data");
    fs::create_dir_all(&data).expect("cp_into_created_and_stopped_containers_through_binds");
    let file = host.path().join("f.txt");
    fs::write(&file, "payload").expect("cp_into_created_and_stopped_containers_through_binds");
    let f = file
        .to_str()
        .expect("cp_into_created_and_stopped_containers_through_binds");
    let bind = format!("{}:/data", data.display());
    d.docker(&[
        "create",
        "--name",
        "c2",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "cat /root/f.txt /data/f.txt",
    ])
    .ok();
    // Created, never started: into the root and into the bind mount.
    d.docker(&["cp", f, "c2:/root/"]).ok();
    d.docker(&["cp", f, "c2:/data/"]).ok();
    assert_eq!(
        fs::read_to_string(data.join("f.txt"))
            .expect("cp_into_created_and_stopped_containers_through_binds"),
        "payload"
    );
    let out = d.docker(&["start", "-a", "c2"]).ok();
    assert_eq!(out.stdout, "payloadpayload");
    // Stopped: out of it, and into it again.
    let back = host.path().join("back.txt");
    d.docker(&[
        "cp",
        "c2:/root/f.txt",
        back.to_str()
            .expect("cp_into_created_and_stopped_containers_through_binds"),
    ])
    .ok();
    assert_eq!(
        fs::read_to_string(&back).expect("cp_into_created_and_stopped_containers_through_binds"),
        "payload"
    );
    fs::write(&file, "second").expect("cp_into_created_and_stopped_containers_through_binds");
    d.docker(&["cp", f, "c2:/root/f.txt"]).ok();
    d.docker(&["cp", f, "c2:/data/g.txt"]).ok();
    assert_eq!(
        fs::read_to_string(data.join("g.txt"))
            .expect("cp_into_created_and_stopped_containers_through_binds"),
        "second"
    );
    let out = d.docker(&["start", "-a", "c2"]).ok();
    assert_eq!(out.stdout, "secondpayload");
    // Nothing of the private mounts is left on the host.
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .expect("cp_into_created_and_stopped_containers_through_binds");
    assert!(
        !mounts.contains(&d.exec_root().join("archive").display().to_string()),
        "{mounts}"
    );
    // A read-only bind and a read-only root refuse writes.
    let ro = format!("{}:/ro:ro", data.display());
    d.docker(&[
        "create",
        "--name",
        "c3",
        "--read-only",
        "-v",
        &ro,
        "busybox",
        "true",
    ])
    .ok();
    d.docker(&["cp", f, "c3:/ro/"])
        .fails_with(1, "mounted volume is marked read-only");
    d.docker(&["cp", f, "c3:/tmp/"])
        .fails_with(1, "container rootfs is marked read-only");
    assert!(!data.join("f.txt.1").exists());
    d.remove_all();
}

#[test]
fn archive_mode_and_follow_link() {
    let d = Berthd::start();
    let host = tempfile::tempdir().expect("archive_mode_and_follow_link");
    let file = host.path().join("owned");
    fs::write(&file, "x").expect("archive_mode_and_follow_link");
    std::os::unix::fs::chown(&file, Some(1234), Some(4321)).expect("archive_mode_and_follow_link");
    // As dockerd: the archive's owners are kept, and -a gives the files
    // to the container's user.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "c4",
        "--user",
        "2000:3000",
        "busybox",
        "sleep",
        "300",
    ])
    .ok();
    d.docker(&[
        "cp",
        file.to_str().expect("archive_mode_and_follow_link"),
        "c4:/tmp/plain",
    ])
    .ok();
    d.docker(&[
        "cp",
        "-a",
        file.to_str().expect("archive_mode_and_follow_link"),
        "c4:/tmp/user",
    ])
    .ok();
    assert_eq!(
        exec(&d, "c4", "stat -c %u:%g /tmp/plain /tmp/user"),
        "1234:4321\n2000:3000\n"
    );
    // -L copies what a link points to, under the link's name.
    d.docker(&[
        "exec",
        "-u",
        "0",
        "c4",
        "sh",
        "-c",
        "echo target > /tmp/t; ln -s /tmp/t /tmp/l",
    ])
    .ok();
    let l = host.path().join("l");
    d.docker(&[
        "cp",
        "c4:/tmp/l",
        l.to_str().expect("archive_mode_and_follow_link"),
    ])
    .ok();
    assert!(fs::symlink_metadata(&l)
        .expect("archive_mode_and_follow_link")
        .file_type()
        .is_symlink());
    fs::remove_file(&l).expect("archive_mode_and_follow_link");
    d.docker(&[
        "cp",
        "-L",
        "c4:/tmp/l",
        l.to_str().expect("archive_mode_and_follow_link"),
    ])
    .ok();
    assert_eq!(
        fs::read_to_string(&l).expect("archive_mode_and_follow_link"),
        "target\n"
    );
    d.remove_all();
}

/// A host directory with a file the container must never reach.
fn host_secret() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("cp-secret")
        .tempdir_in("/tmp")
        .expect("host_secret");
    fs::write(dir.path().join("secret"), "HOST").expect("host_secret");
    dir
}

fn assert_untouched(dir: &Path) {
    let names: Vec<String> = fs::read_dir(dir)
        .expect("assert_untouched")
        .map(|e| {
            e.expect("assert_untouched")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        ["secret"],
        "something was written in {}",
        dir.display()
    );
    assert_eq!(
        fs::read_to_string(dir.join("secret")).expect("assert_untouched"),
        "HOST"
    );
    assert_eq!(
        fs::metadata(dir.join("secret"))
            .expect("assert_untouched")
            .nlink(),
        1
    );
}

#[test]
fn links_out_of_the_root_are_followed_inside_it() {
    let d = Berthd::start();
    let secret = host_secret();
    let sp = secret
        .path()
        .to_str()
        .expect("links_out_of_the_root_are_followed_inside_it");
    d.docker(&["run", "-d", "--name", "c5", "busybox", "sleep", "300"])
        .ok();
    exec(
        &d,
        "c5",
        &format!("ln -s / /slash; ln -s ../../../../../../.. /w; ln -s {sp} /hostdir; ln -s {sp}/secret /hostfile"),
    );
    let host = tempfile::tempdir().expect("links_out_of_the_root_are_followed_inside_it");
    let out = host
        .path()
        .to_str()
        .expect("links_out_of_the_root_are_followed_inside_it");
    // Reading through them: the container's files or nothing.
    for p in [
        format!("c5:/slash{sp}/secret"),
        format!("c5:/w{sp}/secret"),
        "c5:/hostdir/secret".to_string(),
    ] {
        d.docker(&["cp", &p, out])
            .fails_with(1, "Could not find the file");
    }
    d.docker(&["cp", "-L", "c5:/hostfile", out])
        .fails_with(1, "Could not find the file");
    d.docker(&["cp", "c5:/w/etc/hostname", out]).ok();
    // Writing through them.
    let file = host.path().join("owned");
    fs::write(&file, "pwned").expect("links_out_of_the_root_are_followed_inside_it");
    let f = file
        .to_str()
        .expect("links_out_of_the_root_are_followed_inside_it");
    let _ = d.docker(&["cp", f, "c5:/hostdir/"]);
    let _ = d.docker(&["cp", f, &format!("c5:/slash{sp}/")]);
    let _ = d.docker(&["cp", f, &format!("c5:/w{sp}/")]);
    let _ = d.docker(&["cp", f, "c5:/hostfile"]);
    assert_untouched(secret.path());
    d.remove_all();
}

#[test]
fn climbing_tars_are_refused() {
    let d = Berthd::start();
    let secret = host_secret();
    let sp = secret
        .path()
        .to_str()
        .expect("climbing_tars_are_refused")
        .trim_start_matches('/');
    d.docker(&["run", "-d", "--name", "c6", "busybox", "sleep", "300"])
        .ok();
    let up = "../".repeat(20);
    for entries in [
        vec![(
            format!("{up}{sp}/dotdot"),
            tar::EntryType::Regular,
            "x".to_string(),
        )],
        vec![(
            format!("a/{up}{sp}/dotdot2"),
            tar::EntryType::Regular,
            "x".to_string(),
        )],
        vec![(
            "hl".to_string(),
            tar::EntryType::Link,
            format!("{up}{sp}/secret"),
        )],
    ] {
        let e: Vec<(&str, tar::EntryType, &str)> = entries
            .iter()
            .map(|(n, k, v)| (n.as_str(), *k, v.as_str()))
            .collect();
        d.docker_input(&["cp", "-", "c6:/root"], &raw_tar(&e))
            .fails_with(1, "is outside of");
    }
    // `..` stops at the container's root, as in dockerd: this one lands
    // in the container's /tmp.
    let t = raw_tar(&[(&format!("{up}tmp/clamped"), tar::EntryType::Regular, "c")]);
    d.docker_input(&["cp", "-", "c6:/tmp"], &t).ok();
    assert_eq!(exec(&d, "c6", "cat /tmp/clamped"), "c");
    // Absolute names land under the destination.
    let abs = format!("/{sp}/abs");
    let hl = format!("/{sp}/secret");
    let t = raw_tar(&[
        (abs.as_str(), tar::EntryType::Regular, "x"),
        ("hl2", tar::EntryType::Link, hl.as_str()),
    ]);
    let out = d.docker_input(&["cp", "-", "c6:/tmp"], &t);
    assert_ne!(
        out.code, 0,
        "a link to a file missing in the container: {out:?}"
    );
    assert_eq!(exec(&d, "c6", &format!("cat /tmp/{sp}/abs")), "x");
    // Through a link the archive makes itself.
    let t = raw_tar(&[
        ("esc", tar::EntryType::Symlink, "/"),
        (
            &format!("esc/{sp}/through-link"),
            tar::EntryType::Regular,
            "x",
        ),
    ]);
    let _ = d.docker_input(&["cp", "-", "c6:/tmp"], &t);
    assert_untouched(secret.path());
    d.remove_all();
}

#[test]
fn a_racing_link_swap_never_leaves_the_root() {
    let d = Berthd::start();
    let secret = host_secret();
    let sp = secret
        .path()
        .to_str()
        .expect("a_racing_link_swap_never_leaves_the_root");
    d.docker(&["run", "-d", "--name", "c7", "busybox", "sh", "-c", &format!(
        "mkdir -p /w/real; echo C > /w/real/secret; \
         while true; do mv /w/real /w/d; usleep 10000; mv /w/d /w/real; ln -s {sp} /w/d; rm /w/d; ln -s / /w/d; rm /w/d; done"
    )])
    .ok();
    let id = String::from_utf8(
        d.docker_command(&["inspect", "-f", "{{.Id}}", "c7"])
            .output()
            .expect("a_racing_link_swap_never_leaves_the_root")
            .stdout,
    )
    .expect("a_racing_link_swap_never_leaves_the_root")
    .trim()
    .to_string();
    let put = raw_tar(&[("raced", tar::EntryType::Regular, "pwned")]);
    // The directory stays 10 ms per turn, the links a few: under a loaded
    // machine's scheduling the real one must still be met.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut reads, mut found) = (0, 0);
    // 300 rounds, and more until the container's own file has been read
    // once (the race must have been run through), within the deadline.
    while (reads < 300 || found == 0) && Instant::now() < deadline {
        for path in ["/w/d/secret", &format!("/w/d{sp}/secret")] {
            let q = format!("/containers/{id}/archive?path={path}");
            if let Some((200, body)) = d.request("GET", &q, None) {
                found += 1;
                let mut a = tar::Archive::new(body.as_slice());
                for e in a
                    .entries()
                    .expect("a_racing_link_swap_never_leaves_the_root")
                {
                    let mut e = e.expect("a_racing_link_swap_never_leaves_the_root");
                    let mut s = String::new();
                    e.read_to_string(&mut s)
                        .expect("a_racing_link_swap_never_leaves_the_root");
                    assert_ne!(s, "HOST", "read the host's file through {path}");
                }
            }
            let q = format!("/containers/{id}/archive?path=/w/d");
            let _ = d.request("PUT", &q, Some(&put));
        }
        reads += 1;
    }
    assert!(found > 0, "the container's own file was never read");
    assert_untouched(secret.path());
    d.remove_all();
}

#[test]
fn host_links_are_not_followed_on_the_host() {
    // A link in a bind-mounted directory is resolved in the container too.
    let d = Berthd::start();
    let secret = host_secret();
    let host = tempfile::tempdir().expect("host_links_are_not_followed_on_the_host");
    symlink(secret.path(), host.path().join("to-secret"))
        .expect("host_links_are_not_followed_on_the_host");
    let bind = format!("{}:/b", host.path().display());
    d.docker(&["create", "--name", "c8", "-v", &bind, "busybox", "true"])
        .ok();
    let out = tempfile::tempdir().expect("host_links_are_not_followed_on_the_host");
    d.docker(&[
        "cp",
        "c8:/b/to-secret/secret",
        out.path()
            .to_str()
            .expect("host_links_are_not_followed_on_the_host"),
    ])
    .fails_with(1, "Could not find the file");
    let file = out.path().join("f");
    fs::write(&file, "x").expect("host_links_are_not_followed_on_the_host");
    let _ = d.docker(&[
        "cp",
        file.to_str()
            .expect("host_links_are_not_followed_on_the_host"),
        "c8:/b/to-secret/",
    ]);
    assert_untouched(secret.path());
    d.remove_all();
}

/// `berth cp` and `docker cp` with the same arguments: the same exit code
/// and message, and the same files.
#[test]
fn berth_cp_does_what_docker_cp_does() {
    let d = Berthd::start();
    let host = tempfile::tempdir().expect("berth_cp_does_what_docker_cp_does");
    let src = host.path().join("src");
    fs::create_dir_all(src.join("sub")).expect("berth_cp_does_what_docker_cp_does");
    fs::write(src.join("a.txt"), "alpha").expect("berth_cp_does_what_docker_cp_does");
    fs::write(src.join("sub/b.txt"), "beta").expect("berth_cp_does_what_docker_cp_does");
    symlink("a.txt", src.join("ln")).expect("berth_cp_does_what_docker_cp_does");
    d.docker(&["run", "-d", "--name", "c9", "busybox", "sleep", "300"])
        .ok();
    exec(
        &d,
        "c9",
        "mkdir -p /in/docker /in/berth /in/plain-docker /in/plain-berth",
    );
    let berth = |args: &[&str]| {
        let out = std::process::Command::new(integration_tests::engine::berth_binary())
            .args(["-H", &format!("unix://{}", d.socket().display())])
            .args(args)
            .output()
            .expect("berth_cp_does_what_docker_cp_does");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let s = src.to_str().expect("berth_cp_does_what_docker_cp_does");
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (
            vec![s.into(), "c9:/in/docker".into()],
            vec![s.into(), "c9:/in/berth".into()],
        ),
        (
            vec![format!("{s}/."), "c9:/in/plain-docker".into()],
            vec![format!("{s}/."), "c9:/in/plain-berth".into()],
        ),
        (
            vec![s.into(), "c9:/in/new-docker".into()],
            vec![s.into(), "c9:/in/new-berth".into()],
        ),
        (
            vec![format!("{s}/a.txt"), "c9:/in/file-docker".into()],
            vec![format!("{s}/a.txt"), "c9:/in/file-berth".into()],
        ),
        (
            vec!["-L".into(), format!("{s}/ln"), "c9:/in/ln-docker".into()],
            vec!["-L".into(), format!("{s}/ln"), "c9:/in/ln-berth".into()],
        ),
    ];
    for (dargs, bargs) in &cases {
        let dargs: Vec<&str> = std::iter::once("cp")
            .chain(dargs.iter().map(String::as_str))
            .collect();
        let bargs: Vec<&str> = std::iter::once("cp")
            .chain(bargs.iter().map(String::as_str))
            .collect();
        d.docker(&dargs).ok();
        let (code, err) = berth(&bargs);
        assert_eq!(code, 0, "berth {bargs:?}: {err}");
    }
    let listing = |name: &str| {
        exec(
            &d,
            "c9",
            &format!(
                "cd /in/{name} && find . | sort && cat $(find . -type f | sort) 2>/dev/null; true"
            ),
        )
    };
    for (a, b) in [
        ("docker", "berth"),
        ("plain-docker", "plain-berth"),
        ("new-docker", "new-berth"),
    ] {
        assert_eq!(listing(a), listing(b), "{a} vs {b}");
    }
    assert_eq!(
        exec(
            &d,
            "c9",
            "cat /in/file-docker /in/file-berth /in/ln-docker /in/ln-berth"
        ),
        "alphaalphaalphaalpha"
    );
    // Out of the container, into new and existing places.
    let out = host.path().join("out");
    fs::create_dir_all(&out).expect("berth_cp_does_what_docker_cp_does");
    for (from, to) in [
        ("c9:/in/berth", "dir"),
        ("c9:/in/berth/.", "content"),
        ("c9:/in/file-berth", "file"),
        ("c9:/in/berth/src/ln", "ln"),
    ] {
        let dt = out.join(format!("docker-{to}"));
        let bt = out.join(format!("berth-{to}"));
        d.docker(&[
            "cp",
            from,
            dt.to_str().expect("berth_cp_does_what_docker_cp_does"),
        ])
        .ok();
        let (code, err) = berth(&[
            "cp",
            from,
            bt.to_str().expect("berth_cp_does_what_docker_cp_does"),
        ]);
        assert_eq!(code, 0, "berth cp {from}: {err}");
        let listing = |p: &Path| {
            let mut v = vec![];
            for e in walk(p) {
                let m = fs::symlink_metadata(&e).expect("berth_cp_does_what_docker_cp_does");
                let rel = e
                    .strip_prefix(p)
                    .expect("berth_cp_does_what_docker_cp_does")
                    .display()
                    .to_string();
                let content = if m.is_file() {
                    fs::read_to_string(&e).expect("berth_cp_does_what_docker_cp_does")
                } else {
                    String::new()
                };
                v.push(format!(
                    "{rel} {:o} {} {content}",
                    m.mode(),
                    m.file_type().is_symlink()
                ));
            }
            v
        };
        assert_eq!(listing(&dt), listing(&bt), "{from}");
    }
    // A tar on stdout.
    let tar = std::process::Command::new(integration_tests::engine::berth_binary())
        .args([
            "-H",
            &format!("unix://{}", d.socket().display()),
            "cp",
            "c9:/in/berth/.",
            "-",
        ])
        .output()
        .expect("berth_cp_does_what_docker_cp_does");
    let mut names = tar_names(&tar.stdout);
    names.sort();
    assert_eq!(
        names,
        [
            "./",
            "./src/",
            "./src/a.txt",
            "./src/ln",
            "./src/sub/",
            "./src/sub/b.txt"
        ]
    );
    // The same errors.
    for args in [
        vec![format!("{s}/a.txt"), "c9:/nowhere/x".to_string()],
        vec!["c9:/no/such".to_string(), out.display().to_string()],
        vec![format!("{s}/a.txt"), "c9:/in/new-dir/".to_string()],
        vec![s.to_string(), "c9:/in/file-docker".to_string()],
        vec![s.to_string(), out.display().to_string()],
        vec!["c9:/a".to_string(), "c9:/b".to_string()],
        vec!["-".to_string(), "c9:/in/file-docker".to_string()],
    ] {
        let args: Vec<&str> = std::iter::once("cp")
            .chain(args.iter().map(String::as_str))
            .collect();
        let docker = d.docker(&args);
        let (code, err) = berth(&args);
        // The docker CLI also logs its tar writer's broken pipe.
        let last = |s: &str| s.trim().lines().last().unwrap_or("").to_string();
        assert_eq!(
            (code, last(&err)),
            (docker.code, last(&docker.stderr)),
            "{args:?}"
        );
    }
    d.remove_all();
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![p.to_path_buf()];
    if fs::symlink_metadata(p).expect("walk").is_dir() {
        let mut children: Vec<_> = fs::read_dir(p)
            .expect("walk")
            .map(|e| e.expect("walk").path())
            .collect();
        children.sort();
        for c in children {
            out.extend(walk(&c));
        }
    }
    out
}

/// The archive API's statuses and messages, as Debian's dockerd 20.10
/// answers them.
#[test]
fn api_statuses_are_dockerds() {
    let d = Berthd::start();
    d.docker(&["run", "-d", "--name", "c10", "busybox", "sleep", "300"])
        .ok();
    d.docker(&["create", "--name", "c11", "--read-only", "busybox", "true"])
        .ok();
    let file = raw_tar(&[("x", tar::EntryType::Regular, "x")]);
    let climbing = raw_tar(&[("../../../../etc/zz", tar::EntryType::Regular, "x")]);
    let garbage = b"garbage".to_vec();
    // Method, path, body, status, a part of the message.
    type Case<'a> = (&'a str, &'a str, Option<&'a Vec<u8>>, u16, &'a str);
    let cases: [Case; 8] = [
        ("HEAD", "/containers/c10/archive?path=/nope", None, 404, ""),
        (
            "GET",
            "/containers/c10/archive?path=/nope",
            None,
            404,
            "Could not find the file /nope in container c10",
        ),
        (
            "GET",
            "/containers/c10/archive",
            None,
            400,
            "path cannot be empty",
        ),
        (
            "PUT",
            "/containers/c10/archive?path=/etc/hostname",
            Some(&file),
            500,
            "extraction point is not a directory",
        ),
        (
            "PUT",
            "/containers/c10/archive?path=/nope",
            Some(&file),
            404,
            "Could not find the file /nope in container c10",
        ),
        (
            "PUT",
            "/containers/c11/archive?path=/tmp",
            Some(&file),
            500,
            "container rootfs is marked read-only",
        ),
        (
            "PUT",
            "/containers/c10/archive?path=/tmp",
            Some(&climbing),
            500,
            "is outside of \\\"/tmp\\\"",
        ),
        (
            "PUT",
            "/containers/c10/archive?path=/tmp",
            Some(&garbage),
            500,
            "",
        ),
    ];
    for (method, path, body, status, message) in cases {
        let (got, text) = d
            .request(method, path, body.map(Vec::as_slice))
            .expect("the daemon answers");
        let text = String::from_utf8_lossy(&text);
        assert_eq!(got, status, "{method} {path}: {text}");
        assert!(text.contains(message), "{method} {path}: {text}");
    }
    let (status, body) = d
        .request("GET", "/containers/c10/archive?path=/etc/hostname", None)
        .expect("the daemon answers");
    assert_eq!(status, 200);
    assert_eq!(tar_names(&body), ["hostname"]);
    d.remove_all();
}
