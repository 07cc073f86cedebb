//! berthd's volumes through the real docker CLI and the raw API: a named
//! volume written by one container and read by another, copy-up of the
//! image's content into a new volume (and `nocopy`), anonymous volumes
//! (`-v /path`, an image's `VOLUME`) removed by `--rm` and `rm -v`,
//! `volume rm` of a volume in use refused, `--volumes-from`, a `tmpfs`
//! volume and a bind volume mounted only while used, `system df -v` sizes,
//! prune, volume events, `berth volume` answering as docker does, and bad
//! input refused with nothing made.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use integration_tests::engine::Berthd;
use serde_json::Value;

fn json(d: &Berthd, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (code, bytes) = d
        .request(method, path, body.map(str::as_bytes))
        .expect("the daemon answers");
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (code, v)
}

fn volume_names(d: &Berthd) -> Vec<String> {
    let out = d.docker(&["volume", "ls", "-q"]).ok();
    out.stdout.lines().map(String::from).collect()
}

/// Whether something is mounted at `path` (per /proc/self/mountinfo).
fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let p = path.display().to_string();
    info.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(p.as_str()))
}

#[test]
fn a_named_volume_outlives_its_writer() {
    let d = Berthd::start();
    let out = d
        .docker(&["volume", "create", "--label", "app=web", "data"])
        .ok();
    assert_eq!(out.stdout, "data\n");
    // Creating it again returns it.
    d.docker(&["volume", "create", "data"]).ok();
    d.docker(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo hello > /data/greeting",
    ])
    .ok();
    let out = d
        .docker(&[
            "run",
            "--rm",
            "--mount",
            "type=volume,src=data,dst=/in,readonly",
            "busybox",
            "cat",
            "/in/greeting",
        ])
        .ok();
    assert_eq!(out.stdout, "hello\n");
    // Read-only really is.
    let out = d.docker(&[
        "run",
        "--rm",
        "-v",
        "data:/in:ro",
        "busybox",
        "touch",
        "/in/x",
    ]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");

    let (code, v) = json(&d, "GET", "/volumes/data", None);
    assert_eq!(code, 200);
    let mountpoint = d.data_root().join("engine/volumes/data/_data");
    assert_eq!(v["Mountpoint"], mountpoint.display().to_string());
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Labels"]["app"], "web");
    assert!(v["CreatedAt"].as_str().unwrap().ends_with('Z'), "{v}");
    assert_eq!(
        std::fs::read_to_string(mountpoint.join("greeting")).unwrap(),
        "hello\n"
    );
    let out = d
        .docker(&[
            "volume",
            "inspect",
            "-f",
            "{{.Name}} {{.Driver}} {{.Labels}}",
            "data",
        ])
        .ok();
    assert_eq!(out.stdout, "data local map[app:web]\n");
    let out = d.docker(&["volume", "ls"]).ok();
    assert_eq!(out.stdout, "DRIVER    VOLUME NAME\nlocal     data\n");
    let out = d
        .docker(&["volume", "ls", "--filter", "label=app=web", "-q"])
        .ok();
    assert_eq!(out.stdout, "data\n");

    // Inspect's Mounts, as dockerd shows them.
    d.docker(&["create", "--name", "ctr", "-v", "data:/data", "busybox"])
        .ok();
    let out = d.docker(&["inspect", "-f", "{{json .Mounts}}", "ctr"]).ok();
    let mounts: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        mounts,
        serde_json::json!([{
            "Type": "volume", "Name": "data", "Source": mountpoint.display().to_string(),
            "Destination": "/data", "Driver": "local", "Mode": "z", "RW": true, "Propagation": ""
        }])
    );

    // In use: refused, with force too; removed once the container is gone.
    let out = d.docker(&["volume", "rm", "data"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("volume is in use"), "{out:?}");
    let (code, v) = json(&d, "DELETE", "/volumes/data?force=1", None);
    assert_eq!(code, 409, "{v}");
    let id = d.docker(&["inspect", "-f", "{{.Id}}", "ctr"]).ok().stdout;
    assert_eq!(
        v["message"].as_str().unwrap(),
        format!("remove data: volume is in use - [{}]", id.trim())
    );
    // rm -v keeps named volumes.
    d.docker(&["rm", "-v", "ctr"]).ok();
    assert_eq!(volume_names(&d), vec!["data"]);
    d.docker(&["volume", "rm", "data"]).ok();
    assert!(!mountpoint.exists());
    assert!(volume_names(&d).is_empty());
    // Unknown volumes.
    d.docker(&["volume", "rm", "data"])
        .fails_with(1, "no such volume");
    d.docker(&["volume", "inspect", "data"])
        .fails_with(1, "no such volume");
    let (code, _) = json(&d, "GET", "/volumes/nosuch", None);
    assert_eq!(code, 404);
    let (code, _) = json(&d, "DELETE", "/volumes/nosuch?force=1", None);
    assert_eq!(code, 204);
}

#[test]
fn new_volumes_get_the_image_content() {
    let d = Berthd::start();
    let out = d
        .docker(&[
            "run",
            "--rm",
            "-v",
            "etc:/etc",
            "busybox",
            "cat",
            "/etc/passwd",
        ])
        .ok();
    assert!(out.stdout.starts_with("root:x:0:0:"), "{out:?}");
    let data = d.data_root().join("engine/volumes/etc/_data");
    let meta = std::fs::symlink_metadata(data.join("passwd")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o644));
    // A volume with content keeps it.
    std::fs::write(data.join("passwd"), "mine\n").unwrap();
    let out = d
        .docker(&[
            "run",
            "--rm",
            "-v",
            "etc:/etc",
            "busybox",
            "cat",
            "/etc/passwd",
        ])
        .ok();
    assert_eq!(out.stdout, "mine\n");
    // nocopy: nothing copied (the engine's own files are mounted there).
    let engine_files = "hostname\nhosts\nresolv.conf\n";
    let out = d
        .docker(&[
            "run",
            "--rm",
            "-v",
            "bare:/etc:nocopy",
            "busybox",
            "ls",
            "-A",
            "/etc",
        ])
        .ok();
    assert_eq!(out.stdout, engine_files);
    let out = d
        .docker(&[
            "run",
            "--rm",
            "--mount",
            "type=volume,src=bare2,dst=/etc,volume-nocopy",
            "busybox",
            "ls",
            "-A",
            "/etc",
        ])
        .ok();
    assert_eq!(out.stdout, engine_files);
    // A subpath of a volume.
    let out = d.docker(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=etc,dst=/g,volume-subpath=group",
        "busybox",
        "ls",
        "/g",
    ]);
    // `group` is a file: dockerd mounts a file the same way.
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn anonymous_volumes_go_with_rm() {
    let d = Berthd::start();
    // An image with a VOLUME (docker import --change).
    d.docker(&["create", "--name", "src", "busybox"]).ok();
    let tar = d.dir().join("rootfs.tar");
    d.docker(&["export", "-o", tar.to_str().unwrap(), "src"])
        .ok();
    d.docker(&["rm", "src"]).ok();
    d.docker(&[
        "import",
        "--change",
        "VOLUME /etc",
        "--change",
        "CMD [\"sh\"]",
        tar.to_str().unwrap(),
        "volimg",
    ])
    .ok();

    let out = d
        .docker(&[
            "run",
            "--rm",
            "volimg",
            "sh",
            "-c",
            "cat /etc/group | head -1; grep -c /etc /proc/mounts",
        ])
        .ok();
    assert!(out.stdout.starts_with("root:x:0:"), "{out:?}");
    assert!(volume_names(&d).is_empty(), "--rm left a volume");
    let out = d
        .docker(&[
            "run",
            "--rm",
            "-v",
            "/scratch",
            "busybox",
            "sh",
            "-c",
            "echo x > /scratch/f; cat /scratch/f",
        ])
        .ok();
    assert_eq!(out.stdout, "x\n");
    assert!(volume_names(&d).is_empty(), "--rm left a volume");

    // Without --rm: anonymous volumes stay until rm -v; named ones stay.
    d.docker(&[
        "create",
        "--name",
        "keep",
        "-v",
        "/anon",
        "-v",
        "named:/named",
        "volimg",
    ])
    .ok();
    let names = volume_names(&d);
    assert_eq!(names.len(), 3, "{names:?}");
    let anon: Vec<&String> = names.iter().filter(|n| n.len() == 64).collect();
    assert_eq!(anon.len(), 2, "{names:?}");
    let (_, v) = json(&d, "GET", &format!("/volumes/{}", anon[0]), None);
    assert!(v["Labels"]
        .as_object()
        .unwrap()
        .contains_key("com.docker.volume.anonymous"));
    let out = d
        .docker(&["volume", "ls", "-q", "--filter", "dangling=true"])
        .ok();
    assert_eq!(out.stdout, "");
    d.docker(&["rm", "-v", "keep"]).ok();
    assert_eq!(volume_names(&d), vec!["named"]);

    // Prune: anonymous only, unless --all.
    d.docker(&["create", "--name", "pruned", "-v", "/anon", "busybox"])
        .ok();
    d.docker(&["rm", "pruned"]).ok();
    assert_eq!(volume_names(&d).len(), 2);
    let out = d.docker(&["volume", "prune", "-f"]).ok();
    assert!(out.stdout.starts_with("Deleted Volumes:\n"), "{out:?}");
    assert_eq!(volume_names(&d), vec!["named"]);
    let out = d.docker(&["volume", "prune", "-f"]).ok();
    assert_eq!(out.stdout, "Total reclaimed space: 0B\n");
    let (code, v) = json(
        &d,
        "POST",
        "/volumes/prune?filters=%7B%22all%22%3A%5B%22true%22%5D%7D",
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(v["VolumesDeleted"], serde_json::json!(["named"]));
}

#[test]
fn volumes_from_another_container() {
    let d = Berthd::start();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("h"), "from host\n").unwrap();
    let bind = format!("{}:/hostdir", host.path().display());
    d.docker(&[
        "run",
        "--name",
        "owner",
        "-v",
        "shared:/shared",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "echo shared > /shared/s",
    ])
    .ok();
    let out = d
        .docker(&[
            "run",
            "--rm",
            "--volumes-from",
            "owner",
            "busybox",
            "sh",
            "-c",
            "cat /shared/s /hostdir/h; echo more >> /shared/s",
        ])
        .ok();
    assert_eq!(out.stdout, "shared\nfrom host\n");
    let out = d.docker(&[
        "run",
        "--rm",
        "--volumes-from",
        "owner:ro",
        "busybox",
        "sh",
        "-c",
        "cat /shared/s; touch /shared/t",
    ]);
    assert_eq!(out.stdout, "shared\nmore\n");
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");
    d.docker(&["run", "--rm", "--volumes-from", "nosuch", "busybox", "true"])
        .fails_with(125, "No such container: nosuch");
    d.docker(&["rm", "owner"]).ok();
}

#[test]
fn tmpfs_and_bind_volumes_are_mounted_while_used() {
    let d = Berthd::start();
    d.docker(&[
        "volume",
        "create",
        "--opt",
        "type=tmpfs",
        "--opt",
        "device=tmpfs",
        "--opt",
        "o=size=1m",
        "tv",
    ])
    .ok();
    let data = d.data_root().join("engine/volumes/tv/_data");
    let out = d
        .docker(&[
            "run",
            "--rm",
            "-v",
            "tv:/t",
            "busybox",
            "sh",
            "-c",
            "grep ' /t ' /proc/mounts; df -k /t | tail -1",
        ])
        .ok();
    assert!(out.stdout.starts_with("tmpfs /t tmpfs"), "{out:?}");
    assert!(out.stdout.contains(" 1024 "), "{out:?}");
    assert!(!mounted(&data), "the tmpfs outlived its container");
    // Shared by two running containers: mounted until the last stops.
    d.docker(&[
        "run", "-d", "--name", "user-a", "-v", "tv:/t", "busybox", "sleep", "300",
    ])
    .ok();
    d.docker(&[
        "run", "-d", "--name", "user-b", "-v", "tv:/t", "busybox", "sleep", "300",
    ])
    .ok();
    d.docker(&["exec", "user-a", "sh", "-c", "echo in-a > /t/f"])
        .ok();
    let out = d.docker(&["exec", "user-b", "cat", "/t/f"]).ok();
    assert_eq!(out.stdout, "in-a\n");
    d.docker(&["rm", "-f", "user-a"]).ok();
    let out = d.docker(&["exec", "user-b", "cat", "/t/f"]).ok();
    assert_eq!(out.stdout, "in-a\n");
    d.docker(&["rm", "-f", "user-b"]).ok();
    assert!(!mounted(&data));

    // A bind volume: the device is what the container sees.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("seen"), "yes\n").unwrap();
    let device = format!("device={}", dir.path().display());
    d.docker(&[
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        &device,
        "bv",
    ])
    .ok();
    let out = d
        .docker(&[
            "run",
            "--rm",
            "-v",
            "bv:/b",
            "busybox",
            "sh",
            "-c",
            "cat /b/seen; echo back > /b/w",
        ])
        .ok();
    assert_eq!(out.stdout, "yes\n");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("w")).unwrap(),
        "back\n"
    );
    assert!(!mounted(&d.data_root().join("engine/volumes/bv/_data")));
    let (_, v) = json(&d, "GET", "/volumes/bv", None);
    assert_eq!(v["Options"]["o"], "bind");
}

#[test]
fn system_df_counts_volume_sizes() {
    let d = Berthd::start();
    d.docker(&[
        "run",
        "--name",
        "writer",
        "-v",
        "sized:/s",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/s/blob",
        "bs=1024",
        "count=1024",
    ])
    .ok();
    let (code, v) = json(&d, "GET", "/system/df", None);
    assert_eq!(code, 200);
    let vol = &v["Volumes"][0];
    assert_eq!(vol["Name"], "sized");
    assert_eq!(vol["UsageData"]["Size"], 1 << 20);
    assert_eq!(vol["UsageData"]["RefCount"], 1);
    let out = d.docker(&["system", "df", "-v"]).ok();
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("sized "))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words, vec!["sized", "1", "1.049MB"], "{line}");
    let out = d.docker(&["system", "df"]).ok();
    assert!(
        out.stdout
            .contains("Local Volumes   1         1         1.049MB"),
        "{}",
        out.stdout
    );
    d.docker(&["rm", "writer"]).ok();
}

#[test]
fn bad_input_makes_nothing() {
    let d = Berthd::start();
    d.docker(&["volume", "create", "--opt", "foo=bar", "v1"])
        .fails_with(1, "invalid option: \"foo\"");
    d.docker(&["volume", "create", "--opt", "type=tmpfs", "v2"])
        .fails_with(1, "missing required option: \"device\"");
    d.docker(&[
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        "device=/no/such/dir",
        "v3",
    ])
    .fails_with(1, "does not exist");
    d.docker(&["volume", "create", "-d", "nfs-plugin", "v4"])
        .fails_with(1, "plugin \"nfs-plugin\" not found");
    d.docker(&["volume", "create", "a"])
        .fails_with(1, "volume name is too short");
    d.docker(&["volume", "create", "bad/name"])
        .fails_with(1, "includes invalid characters");
    d.docker(&["run", "--rm", "-v", "data:relative", "busybox", "true"])
        .fails_with(125, "must be absolute");
    d.docker(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=data,dst=relative",
        "busybox",
        "true",
    ])
    .fails_with(125, "must be absolute");
    d.docker(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=data,dst=/d,volume-opt=type=tmpfs",
        "busybox",
        "true",
    ])
    .fails_with(125, "missing required option");
    // A volume made for a container that could not be made goes with it.
    d.docker(&[
        "run", "--rm", "-v", "made:/d", "-v", "/x:/d", "busybox", "true",
    ])
    .fails_with(125, "Duplicate mount point");
    d.docker(&[
        "run", "--rm", "-v", "made:/d", "--memory", "1k", "busybox", "true",
    ])
    .fails_with(125, "Minimum memory limit");
    assert!(volume_names(&d).is_empty(), "{:?}", volume_names(&d));
    let out = d.docker(&["ps", "-aq"]).ok();
    assert_eq!(out.stdout, "");
    let entries = std::fs::read_dir(d.data_root().join("engine/volumes"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(entries, 0);
    let (code, v) = json(
        &d,
        "POST",
        "/volumes/create",
        Some(r#"{"Name": "x", "DriverOpts": {"o": "size=1m"}}"#),
    );
    assert_eq!(code, 400, "{v}");
    let (code, _) = json(
        &d,
        "GET",
        "/volumes?filters=%7B%22colour%22%3A%5B%22red%22%5D%7D",
        None,
    );
    assert_eq!(code, 400);
}

#[test]
fn volume_events_and_the_berth_cli() {
    let d = Berthd::start();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    d.docker(&["volume", "create", "ev"]).ok();
    d.docker(&["run", "--rm", "-v", "ev:/e", "busybox", "true"])
        .ok();
    d.docker(&["volume", "rm", "ev"]).ok();
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let (code, body) = d
        .request(
            "GET",
            &format!(
                "/events?since={since}&until={}&filters=%7B%22type%22%3A%5B%22volume%22%5D%7D",
                until
            ),
            None,
        )
        .unwrap();
    assert_eq!(code, 200);
    let actions: Vec<String> = String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| {
            format!(
                "{} {}",
                e["Action"].as_str().unwrap(),
                e["Actor"]["ID"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec!["create ev", "mount ev", "unmount ev", "destroy ev"]
    );

    // berth volume: the same answers as docker's.
    d.docker(&["volume", "create", "--label", "k=v", "one"])
        .ok();
    let (code, stdout, _) = d.berth(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "two",
    ]);
    assert_eq!((code, stdout.as_str()), (0, "two\n"));
    for args in [
        &["volume", "ls"][..],
        &["volume", "ls", "-q", "--filter", "label=k"],
        &[
            "volume",
            "ls",
            "--format",
            "{{.Name}}:{{.Driver}}:{{.Labels}}",
        ],
        &["volume", "inspect", "one", "two"],
        &["volume", "inspect", "-f", "{{.Name}} {{.Options}}", "two"],
    ] {
        let docker = d.docker(args).ok();
        let (code, stdout, stderr) = d.berth(args);
        assert_eq!(code, 0, "berth {args:?}: {stderr}");
        assert_eq!(stdout, docker.stdout, "berth {args:?}");
    }
    let (code, _, stderr) = d.berth(&["volume", "rm", "nosuch"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("get nosuch: no such volume"), "{stderr}");
    let (code, _, stderr) = d.berth(&["volume", "create", "-o", "bogus=1", "three"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("create three: invalid option: \"bogus\""),
        "{stderr}"
    );
    let (code, stdout, _) = d.berth(&["volume", "rm", "one", "two"]);
    assert_eq!((code, stdout.as_str()), (0, "one\ntwo\n"));
    let (code, stdout, _) = d.berth(&["volume", "prune", "-f", "--all"]);
    assert_eq!((code, stdout.as_str()), (0, "Total reclaimed space: 0B\n"));

    // Before API 1.42 prune takes named volumes too.
    d.docker(&["volume", "create", "old"]).ok();
    let (code, v) = json(&d, "POST", "/v1.41/volumes/prune", None);
    assert_eq!(code, 200);
    assert_eq!(v["VolumesDeleted"], serde_json::json!(["old"]));
}

#[test]
fn volumes_and_their_users_survive_a_daemon_restart() {
    let mut d = Berthd::start();
    d.docker(&[
        "volume",
        "create",
        "--opt",
        "type=tmpfs",
        "--opt",
        "device=tmpfs",
        "--opt",
        "o=size=2m",
        "scratch",
    ])
    .ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "runner",
        "-v",
        "scratch:/t",
        "-v",
        "kept:/k",
        "busybox",
        "sleep",
        "300",
    ])
    .ok();
    d.docker(&[
        "exec",
        "runner",
        "sh",
        "-c",
        "echo tmp > /t/f; echo disk > /k/f",
    ])
    .ok();
    let data = d.data_root().join("engine/volumes/scratch/_data");
    assert!(mounted(&data));
    d.stop();
    d.spawn();
    // The container kept running with its volumes; they are still in use.
    let out = d.docker(&["exec", "runner", "cat", "/t/f", "/k/f"]).ok();
    assert_eq!(out.stdout, "tmp\ndisk\n");
    d.docker(&["volume", "rm", "kept"])
        .fails_with(1, "volume is in use");
    let (_, v) = json(&d, "GET", "/system/df", None);
    let refs: Vec<i64> = v["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["UsageData"]["RefCount"].as_i64().unwrap())
        .collect();
    assert_eq!(refs, vec![1, 1]);
    // The last user stopping after the restart still unmounts the tmpfs.
    d.docker(&["rm", "-f", "runner"]).ok();
    assert!(!mounted(&data), "the tmpfs outlived its last user");
    let out = d.docker(&["volume", "ls", "-q"]).ok();
    assert_eq!(out.stdout, "kept\nscratch\n");
    let kept = d.data_root().join("engine/volumes/kept/_data/f");
    assert_eq!(std::fs::read_to_string(kept).unwrap(), "disk\n");
}

#[test]
fn binds_take_propagation_and_selinux_labels() {
    let d = Berthd::start();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "bound\n").unwrap();
    let h = host.path().display().to_string();
    let out = d
        .docker(&[
            "run",
            "--name",
            "binder",
            "-v",
            &format!("{h}:/h1:ro,Z"),
            "-v",
            &format!("{h}:/h2:z,rslave"),
            "--mount",
            &format!("type=bind,src={h},dst=/h3,bind-propagation=rprivate"),
            "busybox",
            "cat",
            "/h1/f",
            "/h2/f",
            "/h3/f",
        ])
        .ok();
    assert_eq!(out.stdout, "bound\nbound\nbound\n");
    let out = d
        .docker(&["inspect", "-f", "{{json .Mounts}}", "binder"])
        .ok();
    let mounts: Value = serde_json::from_str(&out.stdout).unwrap();
    let bind = |dest: &str, mode: &str, rw: bool, propagation: &str| {
        serde_json::json!({"Type": "bind", "Source": h, "Destination": dest, "Mode": mode,
                           "RW": rw, "Propagation": propagation})
    };
    assert_eq!(
        mounts,
        serde_json::json!([
            bind("/h1", "ro,Z", false, "rprivate"),
            bind("/h2", "z,rslave", true, "rslave"),
            bind("/h3", "", true, "rprivate"),
        ])
    );
    d.docker(&["rm", "binder"]).ok();
}
