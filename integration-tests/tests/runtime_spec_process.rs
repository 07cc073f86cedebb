//! runtime-spec 1.2/1.3 process attributes and the blkio controller, as the
//! container and the host observe them: `process.scheduler` (chrt and
//! /proc/PID/stat), `process.ioPriority` (ionice), `linux.personality`
//! (/proc/self/personality, uname), `linux.memoryPolicy`
//! (/proc/self/numa_maps), CPU affinity of the init and of `exec`'d
//! processes (`process.execCPUAffinity`, Cpus_allowed_list), and
//! `linux.resources.blockIO` in the container's v1 blkio cgroup.
//!
//! Run against runc too (`BERTH_RUNTIME=$(which runc)`): a case whose
//! feature the runtime's `features` document does not claim (runc 1.1.5
//! reports runtime-spec 1.0.2-dev) prints `SKIP <test>: …` and checks
//! nothing; berth-runtime must support every case.

use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use integration_tests::*;
use serde_json::{json, Value};

/// What the runtime under test says about itself.
struct Claims {
    berth: bool,
    oci_max: (u32, u32, u32),
    features: Value,
}

fn claims() -> &'static Claims {
    static CLAIMS: OnceLock<Claims> = OnceLock::new();
    CLAIMS.get_or_init(|| {
        let bin = runtime_binary();
        let bin = bin.to_str().expect("utf-8 path");
        let version = host(bin, &["--version"]);
        let features: Value =
            serde_json::from_str(&host(bin, &["features"])).expect("`features` prints JSON");
        let max = features["ociVersionMax"].as_str().unwrap_or("0.0.0");
        let mut parts = max
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse().unwrap_or(0));
        let oci_max = (
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        );
        Claims {
            berth: version.starts_with("berth-runtime"),
            oci_max,
            features,
        }
    })
}

/// Whether to run `test`, which needs `feature`: runtime-spec `since`
/// (scheduler, ioPriority and personality came with runc 1.2, which
/// reports 1.2.0; execCPUAffinity and the affinity reset with runc 1.3,
/// 1.2.1), or for the memory policy, the `features` entry. berth-runtime
/// must run every case; another runtime lacking it skips it, by name.
fn runs(test: &str, feature: &str, since: (u32, u32, u32)) -> bool {
    let c = claims();
    let claimed = if feature == "linux.memoryPolicy" {
        c.features["linux"]["memoryPolicy"]["modes"].is_array()
    } else {
        c.oci_max >= since
    };
    if c.berth {
        return true;
    }
    if !claimed {
        eprintln!(
            "SKIP {test}: {} does not support {feature} (its `features` reports ociVersionMax {})",
            runtime_binary().display(),
            c.features["ociVersionMax"].as_str().unwrap_or("none")
        );
    }
    claimed
}

const SPEC_1_2_0: (u32, u32, u32) = (1, 2, 0);
const SPEC_1_2_1: (u32, u32, u32) = (1, 2, 1);

/// The fields of /proc/PID/stat after the command name, numbered as
/// proc(5) numbers them (field 3, the state, first).
fn stat_field(stat: &str, field: usize) -> String {
    let rest = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    rest.split_whitespace()
        .nth(field - 3)
        .unwrap_or_else(|| panic!("no field {field} in {stat:?}"))
        .to_owned()
}

fn status_line(pid: &str, field: &str) -> String {
    let status = read(format!("/proc/{pid}/status"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// Creates and starts a container running `sleep`; returns its pid.
fn start_sleeper(rt: &Runtime, id: &str, edit: impl FnOnce(&mut Spec)) -> String {
    let bundle = rt.bundle(id, |s| {
        s.args(&["sleep", "1000"]);
        edit(s);
    });
    rt.create_and_start(&bundle, id);
    rt.pid(id).to_string()
}

// ---------------------------------------------------------------------------
// process.scheduler

#[test]
fn scheduler_policy_nice_and_flags() {
    if !runs(
        "scheduler_policy_nice_and_flags",
        "process.scheduler",
        SPEC_1_2_0,
    ) {
        return;
    }
    let rt = Runtime::new();
    let id = rt.new_id("sched");
    let pid = start_sleeper(&rt, &id, |s| {
        s.set(
            "/process/scheduler",
            json!({"policy": "SCHED_BATCH", "nice": 7, "flags": ["SCHED_FLAG_RESET_ON_FORK"]}),
        );
    });
    let chrt = host("chrt", &["-p", &pid]);
    assert!(
        chrt.contains("SCHED_BATCH|SCHED_RESET_ON_FORK"),
        "chrt -p {pid}:\n{chrt}"
    );
    let stat = read(format!("/proc/{pid}/stat"));
    assert_eq!(stat_field(&stat, 19), "7", "nice of {pid}: {stat}");
    assert_eq!(stat_field(&stat, 41), "3", "policy of {pid}: {stat}");
}

#[test]
fn scheduler_idle_reaches_the_process_and_its_exec() {
    if !runs(
        "scheduler_idle_reaches_the_process_and_its_exec",
        "process.scheduler",
        SPEC_1_2_0,
    ) {
        return;
    }
    let rt = Runtime::new();
    let id = rt.new_id("schedidle");
    let pid = start_sleeper(&rt, &id, |s| {
        s.set("/process/scheduler", json!({"policy": "SCHED_IDLE"}));
    });
    assert_eq!(stat_field(&read(format!("/proc/{pid}/stat")), 41), "5");
    // An exec'd process gets the container's scheduler too...
    let out = rt.exec(&id, &["cat", "/proc/self/stat"]).ok();
    assert_eq!(stat_field(&out.stdout, 41), "5", "{out}");
    // ...unless its process.json has its own (flags spelled as the spec
    // spells them).
    let path = rt.host_dir("process").join("process.json");
    let process = json!({
        "cwd": "/", "args": ["cat", "/proc/self/stat"], "env": [CONTAINER_PATH],
        "user": {"uid": 0, "gid": 0},
        "scheduler": {"policy": "SCHED_BATCH", "nice": 2, "flags": ["SCHED_FLAG_RESET_ON_FORK"]}
    });
    write(&path, process.to_string());
    let out = rt
        .run(&["exec", "--process", path.to_str().expect("utf-8"), &id])
        .ok();
    assert_eq!(stat_field(&out.stdout, 41), "3", "{out}");
    assert_eq!(stat_field(&out.stdout, 19), "2", "{out}");
}

#[test]
fn scheduler_bad_nice_is_refused_before_anything_exists() {
    if !runs(
        "scheduler_bad_nice_is_refused_before_anything_exists",
        "process.scheduler",
        SPEC_1_2_0,
    ) {
        return;
    }
    let rt = Runtime::new();
    let id = rt.new_id("badnice");
    let bundle = rt.bundle(&id, |s| {
        s.set(
            "/process/scheduler",
            json!({"policy": "SCHED_OTHER", "nice": 20}),
        );
    });
    rt.create(&bundle, &id, &[]).failed_with("nice");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

// ---------------------------------------------------------------------------
// process.ioPriority

#[test]
fn io_priority_class_and_level() {
    if !runs(
        "io_priority_class_and_level",
        "process.ioPriority",
        SPEC_1_2_0,
    ) {
        return;
    }
    let rt = Runtime::new();
    for (class, level, shown, word) in [
        ("IOPRIO_CLASS_BE", 6, "best-effort: prio 6", "best-effort"),
        ("IOPRIO_CLASS_IDLE", 0, "idle", "idle"),
    ] {
        let id = rt.new_id("ioprio");
        let pid = start_sleeper(&rt, &id, |s| {
            s.set(
                "/process/ioPriority",
                json!({"class": class, "priority": level}),
            );
        });
        let seen = host("ionice", &["-p", &pid]);
        assert_eq!(seen.trim(), shown, "ionice -p {pid} for {class} {level}");
        // And from inside, for an exec'd process (busybox's ionice).
        let inside = rt.exec(&id, &["ionice"]).ok();
        assert!(inside.stdout.starts_with(word), "{inside}");
        if level != 0 {
            assert!(inside.stdout.contains(&format!("prio {level}")), "{inside}");
        }
        rt.run(&["delete", "--force", &id]).ok();
    }
}

#[test]
fn io_priority_out_of_range_is_refused() {
    if !runs(
        "io_priority_out_of_range_is_refused",
        "process.ioPriority",
        SPEC_1_2_0,
    ) {
        return;
    }
    let rt = Runtime::new();
    let id = rt.new_id("badioprio");
    let bundle = rt.bundle(&id, |s| {
        s.set(
            "/process/ioPriority",
            json!({"class": "IOPRIO_CLASS_BE", "priority": 8}),
        );
    });
    rt.create(&bundle, &id, &[]).failed_with("ioPriority");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

// ---------------------------------------------------------------------------
// linux.personality

#[test]
fn personality_linux32() {
    if !runs("personality_linux32", "linux.personality", SPEC_1_2_0) {
        return;
    }
    let rt = Runtime::new();
    let id = rt.new_id("pers");
    let bundle = rt.bundle(&id, |s| {
        s.set("/linux/personality", json!({"domain": "LINUX32"}));
        s.sh("cat /proc/self/personality; uname -m");
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("00000008"), "{out}");
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(lines.next(), Some("i686"), "{out}");
    }
}

// ---------------------------------------------------------------------------
// linux.memoryPolicy

#[test]
fn memory_policy_bind_static_node0() {
    if !runs(
        "memory_policy_bind_static_node0",
        "linux.memoryPolicy",
        SPEC_1_2_0,
    ) {
        return;
    }
    let rt = Runtime::new();
    for (policy, shown) in [
        (
            json!({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]}),
            "bind=static:0",
        ),
        (
            json!({"mode": "MPOL_INTERLEAVE", "nodes": "0"}),
            "interleave:0",
        ),
        (json!({"mode": "MPOL_PREFERRED", "nodes": "0"}), "prefer:0"),
    ] {
        let id = rt.new_id("mempol");
        let bundle = rt.bundle(&id, |s| {
            s.set("/linux/memoryPolicy", policy.clone());
            s.args(&["cat", "/proc/self/numa_maps"]);
        });
        let out = rt.run_container(&bundle, &id, &[]).ok();
        // Mappings without a policy of their own show the task's.
        let first = out.stdout.lines().next().unwrap_or_default();
        let seen = first.split_whitespace().nth(1).unwrap_or_default();
        assert_eq!(seen, shown, "{policy}: {out}");
    }
}

#[test]
fn memory_policy_without_nodes_is_refused() {
    if !runs(
        "memory_policy_without_nodes_is_refused",
        "linux.memoryPolicy",
        SPEC_1_2_0,
    ) {
        return;
    }
    let rt = Runtime::new();
    let id = rt.new_id("badmempol");
    let bundle = rt.bundle(&id, |s| {
        s.set("/linux/memoryPolicy", json!({"mode": "MPOL_BIND"}));
    });
    rt.create(&bundle, &id, &[]).failed_with("node");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn features_list_the_memory_policies() {
    if !runs(
        "features_list_the_memory_policies",
        "linux.memoryPolicy",
        SPEC_1_2_0,
    ) {
        return;
    }
    let modes = &claims().features["linux"]["memoryPolicy"]["modes"];
    for mode in ["MPOL_DEFAULT", "MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_LOCAL"] {
        assert!(
            modes.as_array().is_some_and(|m| m.contains(&json!(mode))),
            "{mode} in {modes}"
        );
    }
}

// ---------------------------------------------------------------------------
// CPU affinity

/// Pins the calling test thread (and so the runtime it spawns) to `cpu`
/// until dropped.
struct Pinned(libc::cpu_set_t);

impl Pinned {
    fn to(cpu: usize) -> Pinned {
        // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
        let mut old: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: sched_getaffinity writes at most `size` bytes into `old`.
        let got = unsafe { libc::sched_getaffinity(0, size, &mut old) };
        assert_eq!(got, 0, "sched_getaffinity");
        // SAFETY: as above.
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: cpu is below CPU_SETSIZE on any machine these tests run on.
        unsafe { libc::CPU_SET(cpu, &mut one) };
        // SAFETY: sched_setaffinity reads `size` bytes from `one`.
        let set = unsafe { libc::sched_setaffinity(0, size, &one) };
        assert_eq!(set, 0, "pin the test thread to CPU {cpu}");
        Pinned(old)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: sched_setaffinity reads `size` bytes from our saved set.
        unsafe { libc::sched_setaffinity(0, size, &self.0) };
    }
}

/// Every CPU this test may use, as Cpus_allowed_list spells it.
fn all_cpus() -> String {
    status_line("self", "Cpus_allowed_list")
}

fn require_two_cpus() -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        cpus >= 2,
        "the affinity tests need two CPUs; this machine has {cpus}"
    );
    true
}

#[test]
fn init_affinity_is_reset_to_the_cgroup_s_cpus() {
    if !runs(
        "init_affinity_is_reset_to_the_cgroup_s_cpus",
        "the init's CPU affinity reset",
        SPEC_1_2_1,
    ) {
        return;
    }
    require_two_cpus();
    let all = all_cpus();
    let rt = Runtime::new();
    let id = rt.new_id("initaff");
    let pid = {
        let _pinned = Pinned::to(0);
        start_sleeper(&rt, &id, |_| {})
    };
    assert_eq!(status_line(&pid, "Cpus_allowed_list"), all);
}

#[test]
fn exec_cpu_affinity_initial_and_final() {
    if !runs(
        "exec_cpu_affinity_initial_and_final",
        "process.execCPUAffinity",
        SPEC_1_2_1,
    ) {
        return;
    }
    require_two_cpus();
    let all = all_cpus();
    let rt = Runtime::new();
    let id = rt.new_id("execaff");
    start_sleeper(&rt, &id, |s| {
        s.set(
            "/process/execCPUAffinity",
            json!({"initial": "0", "final": "1"}),
        );
    });
    let allowed = |out: &Output| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no Cpus_allowed_list in {out}"))
    };
    // The container's execCPUAffinity: final wins once in the cgroup.
    let out = rt.exec(&id, &["cat", "/proc/self/status"]).ok();
    assert_eq!(allowed(&out), "1");
    // A process.json's own execCPUAffinity replaces the container's; with
    // initial alone the process keeps it.
    let dir = rt.host_dir("process");
    let process = |aff: Value| {
        let path = dir.join(format!("p{}.json", aff.to_string().len()));
        let p = json!({
            "cwd": "/", "args": ["cat", "/proc/self/status"], "env": [CONTAINER_PATH],
            "user": {"uid": 0, "gid": 0}, "execCPUAffinity": aff
        });
        write(&path, p.to_string());
        path
    };
    let only_initial = process(json!({"initial": "1"}));
    let out = rt
        .run(&["exec", "--process", only_initial.to_str().unwrap(), &id])
        .ok();
    assert_eq!(allowed(&out), "1");
    // Neither given: reset to every CPU, even from a pinned runtime.
    let neither = process(json!({}));
    let out = {
        let _pinned = Pinned::to(0);
        rt.run(&["exec", "--process", neither.to_str().unwrap(), &id])
            .ok()
    };
    assert_eq!(allowed(&out), all);
}

// ---------------------------------------------------------------------------
// blkio (cgroup v1)

/// A whole disk of this machine (not a loop, ram or zram device): its
/// name and major:minor.
fn a_disk() -> (String, String) {
    let mut disks: Vec<(String, String)> = std::fs::read_dir("/sys/block")
        .expect("/sys/block")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["loop", "ram", "zram"].iter().any(|p| n.starts_with(p)))
        .map(|n| {
            let dev = read(format!("/sys/block/{n}/dev")).trim().to_owned();
            (n, dev)
        })
        .collect();
    disks.sort();
    disks.into_iter().next().expect("a disk in /sys/block")
}

fn blkio_applies() -> bool {
    assert!(
        !cgroup_v2(),
        "the blkio tests need a cgroup v1 host (runtime_cgroup_v2_vm covers io.* on v2)"
    );
    true
}

#[test]
fn blkio_weight_and_throttles() {
    blkio_applies();
    let rt = Runtime::new();
    let id = rt.new_id("blkio");
    let (_, dev) = a_disk();
    let (major, minor) = dev.split_once(':').expect("major:minor");
    let (major, minor): (u64, u64) = (major.parse().unwrap(), minor.parse().unwrap());
    let device = |rate: u64| json!([{"major": major, "minor": minor, "rate": rate}]);
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
        s.resources(json!({"blockIO": {
            "weight": 300,
            "throttleReadBpsDevice": device(1_048_576),
            "throttleWriteBpsDevice": device(2_097_152),
            "throttleReadIOPSDevice": device(100),
            "throttleWriteIOPSDevice": device(200)
        }}));
    });
    rt.create_and_start(&bundle, &id);
    let path = bundle.cgroups_path().expect("cgroupsPath");
    let dir = cgroup_dir("blkio", &path);
    let weight_file = if dir.join("blkio.weight").exists() {
        "blkio.weight"
    } else {
        "blkio.bfq.weight"
    };
    let weight = cgroup_read("blkio", &path, weight_file);
    assert_eq!(
        weight.split_whitespace().last(),
        Some("300"),
        "{weight_file}: {weight:?}"
    );
    for (file, rate) in [
        ("blkio.throttle.read_bps_device", 1_048_576),
        ("blkio.throttle.write_bps_device", 2_097_152),
        ("blkio.throttle.read_iops_device", 100),
        ("blkio.throttle.write_iops_device", 200),
    ] {
        assert_eq!(
            cgroup_read("blkio", &path, file).trim(),
            format!("{dev} {rate}"),
            "{file}"
        );
    }
    // The container sees its own cgroup's files.
    let inside = rt
        .exec(
            &id,
            &["cat", "/sys/fs/cgroup/blkio/blkio.throttle.read_bps_device"],
        )
        .ok();
    assert_eq!(inside.stdout.trim(), format!("{dev} 1048576"), "{inside}");
}

/// A loop device over a file in the test's tree, with the BFQ scheduler
/// (per-device weights need it), detached when the test ends.
fn bfq_loop_device(rt: &Runtime) -> (String, String) {
    let backing = rt.host_dir("loop").join("disk.img");
    let file = std::fs::File::create(&backing).expect("create backing file");
    file.set_len(16 << 20).expect("size backing file");
    let name = host(
        "losetup",
        &["--find", "--show", backing.to_str().expect("utf-8")],
    )
    .trim()
    .to_owned();
    let detach = name.clone();
    rt.on_cleanup(move || {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &detach])
            .status();
    });
    let short = name.trim_start_matches("/dev/").to_owned();
    write(format!("/sys/block/{short}/queue/scheduler"), "bfq");
    let dev = std::fs::metadata(&name).expect("stat loop device").rdev();
    (name, format!("{}:{}", libc::major(dev), libc::minor(dev)))
}

#[test]
fn blkio_per_device_weight() {
    blkio_applies();
    let rt = Runtime::new();
    let (_, dev) = bfq_loop_device(&rt);
    let (major, minor) = dev.split_once(':').expect("major:minor");
    let id = rt.new_id("blkiodev");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
        s.resources(json!({"blockIO": {"weightDevice": [
            {"major": major.parse::<u64>().unwrap(), "minor": minor.parse::<u64>().unwrap(), "weight": 250}
        ]}}));
    });
    rt.create_and_start(&bundle, &id);
    let path = bundle.cgroups_path().expect("cgroupsPath");
    let file = if cgroup_dir("blkio", &path)
        .join("blkio.weight_device")
        .exists()
    {
        "blkio.weight_device"
    } else {
        "blkio.bfq.weight_device"
    };
    let text = cgroup_read("blkio", &path, file);
    assert!(
        text.lines().any(|l| l.trim() == format!("{dev} 250")),
        "{file}: {text:?}"
    );
}

#[test]
fn blkio_leaf_weight_needs_cfq() {
    blkio_applies();
    let rt = Runtime::new();
    let id = rt.new_id("leafw");
    let bundle = rt.bundle(&id, |s| {
        s.resources(json!({"blockIO": {"leafWeight": 500}}));
    });
    let cfq = cgroup_dir("blkio", CGROUP_PARENT)
        .join("blkio.leaf_weight")
        .exists();
    if cfq {
        let out = rt.run_container(&bundle, &id, &[]).ok();
        assert_eq!(out.code(), 0);
        return;
    }
    // No CFQ (gone since Linux 5.0): both runtimes refuse the config, and
    // berth names the file the kernel lacks.
    let out = rt.create(&bundle, &id, &[]).failed();
    if claims().berth {
        assert!(
            out.stderr.contains("blkio.leaf_weight does not exist")
                || rt
                    .log_entries()
                    .iter()
                    .any(|e| e.to_string().contains("blkio.leaf_weight does not exist")),
            "{out}"
        );
    }
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}
