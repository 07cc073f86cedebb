//! `make install` and `make uninstall` into a DESTDIR: the binaries, the
//! systemd units (with their paths under PREFIX) accepted by
//! `systemd-analyze verify`, the sysusers.d group and the daemon.json
//! example; uninstall removes them all. (The units run under a real
//! systemd in `engine_systemd.rs`.)

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use integration_tests::engine::berthd_binary;

const BINS: &[&str] = &[
    "berthd",
    "berth",
    "berth-supervisord",
    "berth-shim",
    "berth-runtime",
    "berth-ctr",
];
const UNITS: &[&str] = &[
    "berth.socket",
    "berthd.service",
    "berth-supervisord.service",
];

fn make(target: &str, destdir: &Path, prefix: &str) -> std::process::Output {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin_src = berthd_binary()
        .parent()
        .expect("the binaries' directory")
        .to_path_buf();
    Command::new("make")
        .arg("--no-print-directory")
        .arg("-C")
        .arg(&repo)
        .arg(target)
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg(format!("PREFIX={prefix}"))
        .arg(format!("BIN_SRC={}", bin_src.display()))
        .output()
        .expect("run make")
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(
                    p.strip_prefix(dir)
                        .expect("test set-up")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

#[test]
fn install_and_uninstall_into_a_destdir() {
    let dest = tempfile::tempdir().expect("test set-up");
    let out = make("install", dest.path(), "/opt/berth");
    assert!(
        out.status.success(),
        "make install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let root = dest.path();
    for bin in BINS {
        let path = root.join("opt/berth/bin").join(bin);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{}", path.display());
    }
    let units = root.join("opt/berth/lib/systemd/system");
    for unit in UNITS {
        let text = std::fs::read_to_string(units.join(unit)).expect("test set-up");
        assert!(!text.contains("@BINDIR@"), "{unit}: {text}");
    }
    let service = std::fs::read_to_string(units.join("berthd.service")).expect("test set-up");
    assert!(
        service.contains("ExecStart=/opt/berth/bin/berthd -H fd://"),
        "{service}"
    );
    assert!(service.contains("Type=notify"), "{service}");
    let socket = std::fs::read_to_string(units.join("berth.socket")).expect("test set-up");
    assert!(socket.contains("ListenStream=/run/berth/berth.sock"));
    assert!(socket.contains("Service=berthd.service"));
    assert!(socket.contains("SocketGroup=berth"));
    let sup =
        std::fs::read_to_string(units.join("berth-supervisord.service")).expect("test set-up");
    assert!(sup.contains("ExecStart=/opt/berth/bin/berth-supervisord"));
    assert!(sup.contains("KillMode=process"));
    assert!(sup.contains("Type=notify"), "{sup}");
    assert!(socket.contains("RemoveOnStop=yes"), "{socket}");
    let sysusers = std::fs::read_to_string(root.join("opt/berth/lib/sysusers.d/berth.conf"))
        .expect("test set-up");
    assert!(
        sysusers.lines().any(|l| l.trim() == "g berth -"),
        "{sysusers}"
    );
    // The example is daemon.json that berthd accepts.
    let example = root.join("etc/berth/daemon.json.example");
    let text = std::fs::read_to_string(&example).expect("test set-up");
    berth_engine::daemon_config::parse(&example, &text).expect("the example parses");
    // The installed berthd runs.
    let v = Command::new(root.join("opt/berth/bin/berthd"))
        .arg("--version")
        .output()
        .expect("test set-up");
    assert!(v.status.success() && String::from_utf8_lossy(&v.stdout).starts_with("berthd"));

    // systemd accepts the units. `systemd-analyze verify` checks that
    // ExecStart's binaries exist, so it reads copies whose paths point into
    // the DESTDIR.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let copies = tempfile::tempdir().expect("test set-up");
        let bindir = root.join("opt/berth/bin");
        let mut cmd = Command::new("systemd-analyze");
        cmd.arg("verify").arg("--man=no");
        for unit in UNITS {
            let text = std::fs::read_to_string(units.join(unit))
                .expect("test set-up")
                .replace("/opt/berth/bin", &bindir.to_string_lossy());
            std::fs::write(copies.path().join(unit), text).expect("test set-up");
            cmd.arg(copies.path().join(unit));
        }
        let out = cmd.output().expect("test set-up");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Complaints about units of the host it loads alongside are not ours.
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("berth")).collect();
        assert!(
            out.status.success() && ours.is_empty(),
            "systemd-analyze verify: {}\n{stderr}",
            out.status
        );
    } else {
        eprintln!("systemd-analyze is not installed: the units were not verified");
    }

    let out = make("uninstall", dest.path(), "/opt/berth");
    assert!(
        out.status.success(),
        "make uninstall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(files_under(root), Vec::<String>::new());
}
