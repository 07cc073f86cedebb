//! cgroup v2, end to end, on a pure cgroup v2 kernel in a virtual machine.
//!
//! The host of these tests may be a v1 or hybrid one, where the runtime's
//! v2 code never runs. This test builds a guest at test time: an initramfs
//! holding the static busybox, the runtime binary under test with the
//! shared libraries it links, a few busybox OCI bundles and the checks
//! script `integration-tests/guest/cgroup-v2-checks.sh`. It boots Debian's
//! kernel (`/boot/vmlinuz-*`, package `linux-image-amd64`) in QEMU with
//! `cgroup_no_v1=all`, no network device, KVM when there is one, and reads
//! the serial console: every `BERTH-CHECK` line must say `ok`, every check
//! listed below must be there, and `BERTH-DONE` must come. The serial log
//! is printed when anything fails.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::{require_root, runtime_binary, Spec};
use serde_json::{json, Value};

const MIB: u64 = 1024 * 1024;

/// Every check the guest reports; one missing fails the test.
const CHECKS: &[&str] = &[
    "detect.cgroup2fs",
    "detect.no-v1",
    "limits.memory.max",
    "limits.pids.max",
    "limits.cpu.max",
    "limits.cpu.weight",
    "limits.inside.memory.max",
    "limits.inside.proc-self-cgroup",
    "limits.init-host-cgroup",
    "controllers.cpu",
    "controllers.memory",
    "controllers.pids",
    "controllers.io",
    "exec.proc-self-cgroup",
    "exec.host-cgroup",
    "update.memory.max",
    "update.pids.max",
    "update.cpu-period-alone",
    "update.cpu-quota-alone",
    "ps.pids",
    "events.stats",
    "kill-all.stopped",
    "kill-all.cgroup-empty",
    "delete.cgroup-removed",
    "swap.memory.swap.max",
    "update.swap-alone",
    "update.memory-and-swap",
    "update.swap-below-memory-refused",
    "swap.cgroup-removed",
    "pause.status",
    "pause.cgroup.freeze",
    "pause.cgroup.events",
    "pause.counter-stopped",
    "pause.exec-refused",
    "resume.status",
    "resume.cgroup.freeze",
    "resume.counter-advances",
    "pause.delete-force-paused",
    "oom.hog-killed",
    "oom.memory.events",
    "oom.stats",
    "oom.cgroup-removed",
    "devices.dev",
    "devices.dev.null",
    "devices.devok",
    "devices.devok.null",
    "cleanup.no-containers",
];

const CHECKS_SCRIPT: &str = include_str!("../guest/cgroup-v2-checks.sh");

/// Stage one of the guest: the initramfs is `rootfs`, which `pivot_root`
/// cannot leave (the runtime pivots every container), so its files are
/// copied to a tmpfs that becomes the root.
const STAGE_ONE: &str = r#"#!/bin/sh
export PATH=/bin
mkdir /newroot
mount -t tmpfs -o mode=0755 tmpfs /newroot
for f in /*; do
    case "$f" in
        /newroot | /init) ;;
        *) cp -a "$f" /newroot/ ;;
    esac
done
exec switch_root /newroot /checks.sh
"#;

#[test]
fn cgroup_v2_in_a_virtual_machine() {
    require_root();
    let started = Instant::now();
    let qemu = program("qemu-system-x86_64", "qemu-system-x86");
    program("cpio", "cpio");
    let kernel = guest_kernel();
    let kvm = hardware_kvm();
    let tmp = tempfile::Builder::new()
        .prefix("berth-vm-")
        .tempdir()
        .expect("make temp dir");
    let initramfs = build_initramfs(tmp.path());
    let built = started.elapsed();

    // TCG emulates every instruction: allow it more time than KVM.
    let timeout = Duration::from_secs(if kvm { 120 } else { 300 });
    let boot = boot(&qemu, kvm, &kernel, &initramfs, timeout);
    let log = boot.log.join("\n");
    let report = format!(
        "kernel {}, {}, initramfs built in {built:?}, guest ran {:?}{}\n\
         ----- serial console -----\n{log}\n----- end of serial console -----",
        kernel.display(),
        if kvm {
            "KVM"
        } else {
            "TCG (no hardware-assisted KVM)"
        },
        boot.ran,
        if boot.timed_out {
            format!(", KILLED after the {timeout:?} timeout")
        } else {
            String::new()
        },
    );

    let mut results = parse_checks(&boot.lines);
    check_stats(&boot.lines, &mut results);
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, ok, _)| !ok)
        .map(|(name, _, detail)| format!("  {name}: {detail}"))
        .collect();
    let missing: Vec<&str> = CHECKS
        .iter()
        .copied()
        .filter(|c| !results.iter().any(|(name, _, _)| name == c))
        .collect();
    let done = boot.lines.iter().any(|l| l.trim() == "BERTH-DONE");
    assert!(
        failed.is_empty() && missing.is_empty() && done,
        "cgroup v2 checks in the guest:\nfailed:\n{}\nmissing: {missing:?}\nBERTH-DONE seen: {done}\n{report}",
        failed.join("\n"),
    );
    eprintln!(
        "{} checks ok; {report}",
        results.len(),
        report = report.lines().next().unwrap_or_default()
    );
}

/// The path of `name` in PATH; fails naming the Debian package otherwise.
fn program(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found: install it (`apt-get install --no-install-recommends {package}`, or `make deps`)")
        })
}

/// Whether KVM can run an ordinary kernel: /dev/kvm backed by the CPU's
/// virtualization extensions. A /dev/kvm without them (PVM, the nested
/// "pagetable-based" KVM of some cloud sandboxes) runs only kernels built
/// as PVM guests, and Debian's hangs there right after decompression; QEMU
/// cannot tell, so such hosts get TCG.
fn hardware_kvm() -> bool {
    let flags = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let extensions = flags
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    Path::new("/dev/kvm").exists() && extensions && !Path::new("/sys/module/kvm_pvm").exists()
}

/// The newest `/boot/vmlinuz-*` (Debian's `linux-image-amd64`), used only
/// as the guest's kernel.
fn guest_kernel() -> PathBuf {
    let mut kernels: Vec<PathBuf> = fs::read_dir("/boot")
        .map(|dir| {
            dir.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("vmlinuz-"))
                })
                .collect()
        })
        .unwrap_or_default();
    kernels.sort_by_key(|p| version_key(&p.to_string_lossy()));
    kernels.pop().unwrap_or_else(|| {
        panic!(
            "no kernel image /boot/vmlinuz-* for the guest: install one \
             (`apt-get install --no-install-recommends linux-image-amd64`, or `make deps`)"
        )
    })
}

/// Orders "6.1.0-9" before "6.1.0-56": runs of digits compare as numbers.
fn version_key(s: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits > 0 {
            key.push((rest[..digits].parse().unwrap_or(u64::MAX), String::new()));
            rest = &rest[digits..];
        } else {
            let text = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            key.push((0, rest[..text].to_owned()));
            rest = &rest[text..];
        }
    }
    key
}

// ---------------------------------------------------------------------------
// The guest

/// Builds `initramfs.gz` in `tmp` and returns its path.
fn build_initramfs(tmp: &Path) -> PathBuf {
    let root = tmp.join("root");
    for dir in [
        "bin", "dev", "proc", "sys", "tmp", "run", "etc", "bundles", "rootfs",
    ] {
        fs::create_dir_all(root.join(dir)).expect("mkdir in guest root");
    }
    integration_tests::install_busybox(&root);
    install_runtime(&root);
    write_file(&root.join("init"), STAGE_ONE, 0o755);
    write_file(&root.join("checks.sh"), CHECKS_SCRIPT, 0o755);
    // The kernel opens /dev/console for the init's stdio before anything
    // is mounted: the node must be in the archive.
    run(Command::new("mknod")
        .arg(root.join("dev/console"))
        .args(["c", "5", "1"]));

    // One rootfs (a copy of the guest's busybox tree) shared by the bundles.
    let rootfs = root.join("rootfs");
    for dir in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        fs::create_dir_all(rootfs.join(dir)).expect("mkdir in rootfs");
    }
    integration_tests::install_busybox(&rootfs);
    write_file(
        &rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    );
    write_file(&rootfs.join("etc/group"), "root:x:0:\n", 0o644);
    fs::set_permissions(rootfs.join("tmp"), permissions(0o1777)).expect("chmod rootfs/tmp");
    write_bundles(tmp, &root.join("bundles"));

    let archive = tmp.join("initramfs.gz");
    pack(&root, &archive);
    archive
}

fn permissions(mode: u32) -> fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    fs::Permissions::from_mode(mode)
}

fn write_file(path: &Path, contents: &str, mode: u32) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, permissions(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Runs a command to success, or fails the test with its output.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The runtime under test as /bin/berth-runtime, with what `ldd` lists for
/// it (the shared libraries and the dynamic loader) at the same paths.
fn install_runtime(root: &Path) {
    let bin = runtime_binary();
    assert!(
        bin.is_file(),
        "runtime binary {} not found: build it (`cargo build -p berth-runtime`) \
         or set BERTH_RUNTIME",
        bin.display()
    );
    fs::copy(&bin, root.join("bin/berth-runtime")).expect("copy the runtime");
    let ldd = Command::new("ldd")
        .arg(&bin)
        .output()
        .expect("run ldd (package libc-bin)");
    // A static binary makes ldd fail with "not a dynamic executable".
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let target = line.split_once("=>").map_or(line, |(_, t)| t).trim();
        let Some(path) = target.split(" (").next().filter(|p| p.starts_with('/')) else {
            continue;
        };
        let dest = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().expect("library path has a parent"))
            .expect("mkdir for a library");
        fs::copy(path, &dest).unwrap_or_else(|e| panic!("copy {path}: {e}"));
    }
}

/// The bundles the checks script runs, each `config.json` from
/// `berth-runtime spec` with terminal off, cgroupsPath `/berth-vm/<name>`
/// and the shared `/rootfs`.
fn write_bundles(tmp: &Path, bundles: &Path) {
    let spec_dir = tmp.join("spec");
    fs::create_dir_all(&spec_dir).expect("mkdir spec");
    run(Command::new(runtime_binary())
        .args(["spec", "--bundle"])
        .arg(&spec_dir));
    let base: Value = serde_json::from_str(
        &fs::read_to_string(spec_dir.join("config.json")).expect("read the generated config"),
    )
    .expect("config.json is JSON");

    let ready = "echo ready; exec sleep 1000";
    let bundle = |name: &str, edit: &dyn Fn(&mut Spec)| {
        let mut spec = Spec(base.clone());
        spec.terminal(false)
            .set("/root", json!({"path": "/rootfs", "readonly": false}))
            .set_cgroups_path(&format!("/berth-vm/{name}"));
        edit(&mut spec);
        let dir = bundles.join(name);
        fs::create_dir_all(&dir).expect("mkdir bundle");
        let text = serde_json::to_string_pretty(&spec.0).expect("serialize spec");
        write_file(&dir.join("config.json"), &text, 0o644);
    };
    bundle("lim", &|s| {
        s.resources(json!({
            "memory": {"limit": 64 * MIB},
            "pids": {"limit": 50},
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000},
        }))
        .sh(&format!(
            "cat /sys/fs/cgroup/memory.max 2>&1; cat /proc/self/cgroup; {ready}"
        ));
    });
    bundle("swap", &|s| {
        s.resources(json!({"memory": {"limit": 64 * MIB, "swap": 128 * MIB}}))
            .sh(ready);
    });
    bundle("cnt", &|s| {
        s.sh("echo ready; i=0; while :; do i=$((i+1)); echo $i >/tmp/counter; sleep 0.05; done");
    });
    // The device filter: mknod of /dev/kmsg (c 1:11) is allowed ("c *:* m"),
    // reading it only where a rule allows it.
    let kmsg = "rm -f /tmp/kmsg; mknod /tmp/kmsg c 1 11 && echo mknod-ok; \
                if head -c 1 /tmp/kmsg >/dev/null 2>&1; then echo kmsg-read; else echo kmsg-denied; fi; \
                echo x >/dev/null && echo null-ok; echo ready; exec sleep 1000";
    let caps = json!(["CAP_MKNOD", "CAP_SYSLOG", "CAP_KILL"]);
    bundle("dev", &|s| {
        for set in ["bounding", "effective", "permitted"] {
            s.set(&format!("/process/capabilities/{set}"), caps.clone());
        }
        s.sh(kmsg);
    });
    bundle("devok", &|s| {
        for set in ["bounding", "effective", "permitted"] {
            s.set(&format!("/process/capabilities/{set}"), caps.clone());
        }
        s.set(
            "/linux/resources/devices",
            json!([{"allow": false, "access": "rwm"},
                   {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "rwm"}]),
        );
        s.sh(kmsg);
    });
    bundle("oom", &|s| {
        // The hog keeps 100 MB in a shell variable, under a 16 MiB limit
        // with no swap: the OOM killer takes it (status 137).
        s.resources(json!({"memory": {"limit": 16 * MIB, "swap": 16 * MIB}}))
            .env(
                "HOG",
                "x=$(head -c 100000000 /dev/zero | tr '\\000' a); echo survived",
            )
            .sh(&format!("sh -c \"$HOG\"; echo hog=$?; {ready}"));
    });
}

/// `find . | cpio -o -H newc | gzip -1` in `root`, into `archive`.
fn pack(root: &Path, archive: &Path) {
    let mut find = Command::new("find")
        .args([".", "-mindepth", "1"])
        .current_dir(root)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start find");
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet", "-R", "0:0"])
        .current_dir(root)
        .stdin(find.stdout.take().expect("find's stdout is piped"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start cpio");
    let mut gzip = Command::new("gzip")
        .args(["-1", "-n"])
        .stdin(cpio.stdout.take().expect("cpio's stdout is piped"))
        .stdout(fs::File::create(archive).expect("create the initramfs"))
        .spawn()
        .expect("start gzip");
    for (name, child) in [
        ("find", &mut find),
        ("cpio", &mut cpio),
        ("gzip", &mut gzip),
    ] {
        let status = child.wait().expect("wait for the packing pipeline");
        assert!(
            status.success(),
            "{name} failed packing the initramfs: {status}"
        );
    }
}

// ---------------------------------------------------------------------------
// Booting

struct Boot {
    /// The serial console's lines.
    lines: Vec<String>,
    /// The same, each with the time it arrived, for the failure report.
    log: Vec<String>,
    timed_out: bool,
    ran: Duration,
}

/// Kills QEMU if the test panics before it is waited for.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Boots the guest and collects its serial console until it powers off,
/// or until `timeout`, when QEMU is killed.
fn boot(qemu: &Path, kvm: bool, kernel: &Path, initramfs: &Path, timeout: Duration) -> Boot {
    let started = Instant::now();
    // With KVM, TCG stays as QEMU's fallback should KVM fail to start.
    let accel: &[&str] = if kvm {
        &["-accel", "kvm", "-accel", "tcg"]
    } else {
        &["-accel", "tcg"]
    };
    let mut vm = Vm(Command::new(qemu)
        .args(accel)
        .args(["-m", "1024", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 cgroup_no_v1=all panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", qemu.display())));
    let (tx, rx) = mpsc::channel();
    let stdout = vm.0.stdout.take().expect("qemu's stdout is piped");
    let stderr = vm.0.stderr.take().expect("qemu's stderr is piped");
    for (stream, prefix) in [
        (Box::new(stdout) as Box<dyn std::io::Read + Send>, ""),
        (Box::new(stderr), "qemu stderr: "),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&buf);
                let _ = tx.send(format!("{prefix}{}", text.trim_end_matches(['\r', '\n'])));
                buf.clear();
            }
        });
    }
    drop(tx);
    let deadline = started + timeout;
    let mut lines = Vec::new();
    let mut log = Vec::new();
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                log.push(format!("[{:6.2}s] {line}", started.elapsed().as_secs_f64()));
                lines.push(line);
            }
            // Both streams closed: QEMU exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    drop(vm);
    for line in rx.try_iter() {
        log.push(format!("[{:6.2}s] {line}", started.elapsed().as_secs_f64()));
        lines.push(line);
    }
    Boot {
        lines,
        log,
        timed_out,
        ran: started.elapsed(),
    }
}

// ---------------------------------------------------------------------------
// Results

/// (name, ok, detail) of each `BERTH-CHECK name ok|fail detail` line.
fn parse_checks(lines: &[String]) -> Vec<(String, bool, String)> {
    lines
        .iter()
        .filter_map(|l| l.split_once("BERTH-CHECK ").map(|(_, rest)| rest))
        .map(|rest| {
            let mut parts = rest.splitn(3, ' ');
            let name = parts.next().unwrap_or_default().to_owned();
            let ok = parts.next() == Some("ok");
            (name, ok, parts.next().unwrap_or_default().to_owned())
        })
        .collect()
}

/// The `events --stats` documents the guest printed as `BERTH-JSON`.
fn stats_doc(lines: &[String], name: &str) -> Result<Value, String> {
    let prefix = format!("BERTH-JSON {name} ");
    let text = lines
        .iter()
        .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest))
        .ok_or_else(|| format!("no {prefix}line"))?;
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text}"))?;
    if doc["type"] != "stats" {
        return Err(format!("not a stats event: {doc}"));
    }
    Ok(doc)
}

/// Checks the stats documents: memory in use and processes counted for
/// the running container, an OOM kill's memory usage near its limit.
fn check_stats(lines: &[String], results: &mut Vec<(String, bool, String)>) {
    let checked = stats_doc(lines, "events-stats").and_then(|doc| {
        let data = &doc["data"];
        let usage = data["memory"]["usage"]["usage"].as_u64().unwrap_or(0);
        let pids = data["pids"]["current"].as_u64().unwrap_or(0);
        let cpu = data["cpu"]["usage"]["total"].as_u64().unwrap_or(0);
        if usage > 0 && pids > 0 && cpu > 0 {
            Ok(format!("memory {usage}, pids {pids}, cpu {cpu} ns"))
        } else {
            Err(format!(
                "want memory usage, pids current and cpu usage > 0: {doc}"
            ))
        }
    });
    results.push(match checked {
        Ok(detail) => ("events.stats".into(), true, detail),
        Err(detail) => ("events.stats".into(), false, detail),
    });
    let checked = stats_doc(lines, "oom-stats").and_then(|doc| {
        let memory = &doc["data"]["memory"]["usage"];
        match (memory["limit"].as_u64(), memory["max"].as_u64()) {
            (Some(limit), Some(peak)) if limit == 16 * MIB && peak > 8 * MIB => {
                Ok(format!("limit {limit}, peak {peak}"))
            }
            _ => Err(format!("want limit 16 MiB and a peak near it: {doc}")),
        }
    });
    results.push(match checked {
        Ok(detail) => ("oom.stats".into(), true, detail),
        Err(detail) => ("oom.stats".into(), false, detail),
    });
}
