use super::*;

fn spec(v: serde_json::Value) -> Spec {
    let mut base = serde_json::json!({
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs"},
        "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}},
        "linux": {}
    });
    for (k, val) in v.as_object().unwrap() {
        let (section, key) = k.split_once('.').unwrap();
        base[section][key] = val.clone();
    }
    parse_with_sched_flags(
        &serde_json::to_vec(&base).unwrap(),
        "/process/scheduler/flags",
    )
    .unwrap()
}

fn attrs(v: serde_json::Value) -> Result<Attributes, String> {
    Attributes::for_init(&spec(v)).map_err(|e| e.to_string())
}

#[test]
fn lists() {
    assert_eq!(parse_list("x", "0-3,7").unwrap(), [0, 1, 2, 3, 7]);
    assert_eq!(parse_list("x", " 1 , ,0").unwrap(), [0, 1]);
    assert_eq!(parse_list("x", "").unwrap(), Vec::<usize>::new());
    assert!(parse_list("x", "3-1")
        .unwrap_err()
        .to_string()
        .contains("backwards"));
    assert!(parse_list("x", "a").is_err());
    assert!(parse_list("x", "1024").is_err());
    assert!(parse_list("x", "-1").is_err());
}

#[test]
fn scheduler_is_checked_like_runc() {
    let a = attrs(serde_json::json!({"process.scheduler": {
        "policy": "SCHED_BATCH", "nice": 5,
        "flags": ["SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_DL_OVERRUN", "SCHED_FLAG_KEEP_PARAMS"]
    }}))
    .unwrap();
    let (attr, name) = a.scheduler.unwrap();
    assert_eq!(name, "SCHED_BATCH");
    assert_eq!(attr.policy, 3);
    assert_eq!(attr.nice, 5);
    assert_eq!(attr.flags, 0x01 | 0x04 | 0x10);
    let fifo =
        attrs(serde_json::json!({"process.scheduler": {"policy": "SCHED_FIFO", "priority": 10}}))
            .unwrap();
    assert_eq!(fifo.scheduler.unwrap().0.priority, 10);
    for (bad, needle) in [
        (
            serde_json::json!({"policy": "SCHED_OTHER", "nice": 20}),
            "nice",
        ),
        (
            serde_json::json!({"policy": "SCHED_OTHER", "priority": 1}),
            "priority",
        ),
        (
            serde_json::json!({"policy": "SCHED_RR", "runtime": 1}),
            "SchedDeadline",
        ),
    ] {
        let err = attrs(serde_json::json!({"process.scheduler": bad})).unwrap_err();
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn io_priority_and_personality() {
    let a = attrs(serde_json::json!({
        "process.ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 7},
        "linux.personality": {"domain": "LINUX32"}
    }))
    .unwrap();
    assert_eq!(a.io_priority.unwrap(), (3, 7, "IOPRIO_CLASS_IDLE".into()));
    assert_eq!(a.personality.unwrap(), (8, "LINUX32".into()));
    let err = attrs(
        serde_json::json!({"process.ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 8}}),
    )
    .unwrap_err();
    assert!(err.contains("invalid ioPriority.Priority: 8"), "{err}");
}

#[test]
fn memory_policy_modes_and_nodes() {
    let a = attrs(serde_json::json!({"linux.memoryPolicy": {
        "mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]
    }}))
    .unwrap();
    assert_eq!(
        a.memory_policy.unwrap(),
        (2 | 1 << 15, vec![0], "MPOL_BIND".into())
    );
    let err =
        attrs(serde_json::json!({"linux.memoryPolicy": {"mode": "MPOL_INTERLEAVE"}})).unwrap_err();
    assert!(err.contains("at least one node"), "{err}");
    let err =
        attrs(serde_json::json!({"linux.memoryPolicy": {"mode": "MPOL_LOCAL", "nodes": "0"}}))
            .unwrap_err();
    assert!(err.contains("requires 0 nodes"), "{err}");
    attrs(serde_json::json!({"linux.memoryPolicy": {"mode": "MPOL_PREFERRED"}})).unwrap();
}

#[test]
fn exec_affinity_prefers_the_process_own() {
    let container =
        spec(serde_json::json!({"process.execCPUAffinity": {"initial": "0", "final": "1"}}));
    let own: Process = serde_json::from_value(serde_json::json!({
        "cwd": "/", "args": ["true"], "user": {"uid": 0, "gid": 0},
        "execCPUAffinity": {"final": "0-1"}
    }))
    .unwrap();
    let a = ExecAffinity::for_exec(&own, &container).unwrap();
    assert_eq!(a.initial, None);
    assert_eq!(a.last, Some((vec![0, 1], "0-1".into())));
    let plain: Process = serde_json::from_value(serde_json::json!({
        "cwd": "/", "args": ["true"], "user": {"uid": 0, "gid": 0}
    }))
    .unwrap();
    let a = ExecAffinity::for_exec(&plain, &container).unwrap();
    assert_eq!(a.initial, Some((vec![0], "0".into())));
    assert_eq!(a.last, Some((vec![1], "1".into())));
}

#[test]
fn sched_flags_in_either_spelling_parse() {
    for flag in ["SCHED_FLAG_RESET_ON_FORK", "SCHED_RESET_ON_FORK"] {
        let s = spec(
            serde_json::json!({"process.scheduler": {"policy": "SCHED_OTHER", "flags": [flag]}}),
        );
        let flags = s
            .process()
            .as_ref()
            .unwrap()
            .scheduler()
            .as_ref()
            .unwrap()
            .flags()
            .clone();
        assert_eq!(flags, Some(vec![LinuxSchedulerFlag::SchedResetOnFork]));
    }
}

#[test]
fn syscalls_round_trip_in_a_thread() {
    // Scheduler, I/O priority and memory policy are per thread: a scratch
    // thread keeps the test harness's own untouched.
    std::thread::spawn(|| {
        let a = attrs(serde_json::json!({
            "process.scheduler": {"policy": "SCHED_BATCH", "nice": 3},
            "process.ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 6},
            "linux.memoryPolicy": {"mode": "MPOL_PREFERRED", "nodes": "0"}
        }))
        .unwrap();
        a.apply().unwrap();
        let got = sys::sched_attr(0).unwrap();
        assert_eq!((got.policy, got.nice), (3, 3));
        assert_eq!(sys::io_priority(0).unwrap(), (2, 6));
        assert_eq!(sys::mempolicy().unwrap(), (1, vec![0]));
    })
    .join()
    .unwrap();
}
