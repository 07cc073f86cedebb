//! HostConfig taking effect in the container, seen from inside it through
//! the docker CLI: users, binds, tmpfs, read-only root, capabilities,
//! resources (and `docker update`), --init, ulimits, sysctls, host
//! namespaces, container:ID namespaces; and `docker diff` and `export`.

use integration_tests::engine::Berthd;

fn run(d: &Berthd, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    d.docker(&all).ok().stdout
}

#[test]
fn users_binds_tmpfs_and_security() {
    let d = Berthd::start();
    assert_eq!(
        run(&d, &["-u", "1000:1000", "busybox", "id"]),
        "uid=1000 gid=1000 groups=1000\n"
    );
    assert_eq!(run(&d, &["-u", "root", "busybox", "id", "-u"]), "0\n");
    d.docker(&["run", "--rm", "-u", "ghost", "busybox", "id"])
        .fails_with(125, "unable to find user ghost");
    let share = d.dir().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("f"), "from the host\n").unwrap();
    let bind = format!("{}:/s:ro", share.display());
    assert_eq!(
        run(&d, &["-v", &bind, "busybox", "cat", "/s/f"]),
        "from the host\n"
    );
    let out = d.docker(&["run", "--rm", "-v", &bind, "busybox", "touch", "/s/g"]);
    assert_ne!(out.code, 0);
    // -v makes a missing source; --mount refuses it.
    let missing = d.dir().join("made-by-v");
    let made = format!("{}:/m", missing.display());
    run(&d, &["-v", &made, "busybox", "true"]);
    assert!(missing.is_dir());
    let mount = format!(
        "type=bind,source={},target=/m",
        d.dir().join("nope").display()
    );
    d.docker(&["run", "--rm", "--mount", &mount, "busybox", "true"])
        .fails_with(125, "nope");
    let out = run(
        &d,
        &[
            "--tmpfs",
            "/t:size=1m",
            "--read-only",
            "busybox",
            "sh",
            "-c",
            "df -k /t | tail -1; touch /x 2>&1; true",
        ],
    );
    assert!(out.contains("1024"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    let caps = run(
        &d,
        &[
            "--cap-drop",
            "ALL",
            "busybox",
            "grep",
            "CapEff",
            "/proc/self/status",
        ],
    );
    assert_eq!(caps, "CapEff:\t0000000000000000\n");
    let caps = run(
        &d,
        &[
            "--cap-drop",
            "ALL",
            "--cap-add",
            "net_admin",
            "busybox",
            "grep",
            "CapEff",
            "/proc/self/status",
        ],
    );
    assert_eq!(caps, "CapEff:\t0000000000001000\n");
    let nnp = run(
        &d,
        &[
            "--security-opt",
            "no-new-privileges",
            "busybox",
            "grep",
            "NoNewPrivs",
            "/proc/self/status",
        ],
    );
    assert_eq!(nnp, "NoNewPrivs:\t1\n");
    let seccomp = run(&d, &["busybox", "grep", "Seccomp:", "/proc/self/status"]);
    assert_eq!(seccomp, "Seccomp:\t2\n");
    let seccomp = run(
        &d,
        &[
            "--security-opt",
            "seccomp=unconfined",
            "busybox",
            "grep",
            "Seccomp:",
            "/proc/self/status",
        ],
    );
    assert_eq!(seccomp, "Seccomp:\t0\n");
    let ps = run(&d, &["--init", "busybox", "ps", "-o", "pid,args"]);
    assert!(ps.contains("1 /sbin/docker-init -- ps"), "{ps}");
    let ul = run(
        &d,
        &[
            "--ulimit",
            "nofile=123:456",
            "busybox",
            "sh",
            "-c",
            "ulimit -n; ulimit -Hn",
        ],
    );
    assert_eq!(ul, "123\n456\n");
    let sysctl = run(
        &d,
        &[
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "busybox",
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
        ],
    );
    assert_eq!(sysctl, "1\n");
    let host = run(
        &d,
        &[
            "--hostname",
            "box",
            "--add-host",
            "db:10.0.0.5",
            "busybox",
            "sh",
            "-c",
            "hostname; grep db /etc/hosts",
        ],
    );
    assert_eq!(host, "box\n10.0.0.5\tdb\n");
    // Host and none networks: the host's interfaces, or loopback only.
    let links = run(
        &d,
        &[
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "ls /sys/class/net",
        ],
    );
    assert_eq!(links, "lo\n");
    let host_links = run(
        &d,
        &["--network", "host", "busybox", "ls", "/sys/class/net"],
    );
    assert!(host_links.lines().count() > 1, "{host_links}");
    d.docker(&["run", "--rm", "--memory", "1m", "busybox", "true"])
        .fails_with(125, "Minimum memory limit allowed is 6MB");
    d.docker(&["run", "--rm", "--cap-add", "CAP_NOPE", "busybox", "true"])
        .fails_with(125, "unknown capability");
}

#[test]
fn resources_update_and_shared_namespaces() {
    let d = Berthd::start();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "limited",
        "--memory",
        "64m",
        "--pids-limit",
        "50",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    let read_limit = |d: &Berthd| {
        d.docker(&["exec", "limited", "sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"])
            .ok()
            .stdout
    };
    assert_eq!(read_limit(&d), "67108864\n");
    d.docker(&[
        "update",
        "--memory",
        "128m",
        "--memory-swap",
        "256m",
        "limited",
    ])
    .ok();
    assert_eq!(read_limit(&d), "134217728\n");
    let hc = d
        .docker(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}",
            "limited",
        ])
        .ok();
    assert_eq!(hc.stdout, "134217728 50\n");
    // Joining the namespaces of a running container.
    let pid_ns = d
        .docker(&["exec", "limited", "readlink", "/proc/1/ns/pid"])
        .ok()
        .stdout;
    let joined = run(
        &d,
        &[
            "--pid",
            "container:limited",
            "busybox",
            "readlink",
            "/proc/1/ns/pid",
        ],
    );
    assert_eq!(joined, pid_ns);
    let sees = run(
        &d,
        &["--pid", "container:limited", "busybox", "ps", "-o", "args"],
    );
    assert!(sees.contains("sleep 1000"), "{sees}");
    let uts = run(&d, &["--uts", "host", "busybox", "hostname"]);
    assert_eq!(uts.trim(), nix_hostname());
    d.docker(&["rm", "-f", "limited"]).ok();
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn diff_and_export() {
    let d = Berthd::start();
    d.docker(&[
        "run",
        "--name",
        "changer",
        "busybox",
        "sh",
        "-c",
        "mkdir /new; echo x > /new/f; rm /bin/vi; echo y >> /etc/passwd",
    ])
    .ok();
    let diff = d.docker(&["diff", "changer"]).ok().stdout;
    let lines: Vec<&str> = diff.lines().collect();
    for want in [
        "A /new",
        "A /new/f",
        "D /bin/vi",
        "C /etc/passwd",
        "C /bin",
        "C /etc",
    ] {
        assert!(lines.contains(&want), "{want} missing from:\n{diff}");
    }
    assert!(
        !diff.contains("/etc/hosts") && !diff.contains("/proc"),
        "{diff}"
    );
    let tar = d.dir().join("export.tar");
    d.docker(&["export", "-o", tar.to_str().unwrap(), "changer"])
        .ok();
    let list = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.lines().any(|l| l.trim_start_matches("./") == "new/f"),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.trim_start_matches("./") == "bin/busybox"),
        "{list}"
    );
    assert!(
        !list.lines().any(|l| l.trim_start_matches("./") == "bin/vi"),
        "{list}"
    );
    d.docker(&["rm", "changer"]).ok();
}
