//! Seccomp: Docker's default profile, per-rule actions, argument
//! conditions, and profiles the runtime must refuse.

use std::path::PathBuf;

use integration_tests::*;
use serde_json::{json, Value};

/// Docker's default capability set, which its default profile is read with.
const DOCKER_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// moby's profiles/seccomp/default.json, as Debian ships it; `make deps`
/// extracts it (see the Makefile's fixtures rule).
fn docker_profile_path() -> PathBuf {
    std::env::var_os("BERTH_DOCKER_SECCOMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/fixtures/docker-default-seccomp.json")
        })
}

/// Turns Docker's profile format into an OCI `linux.seccomp` for an x86_64
/// container with `caps`, the way dockerd does: a rule is kept when its
/// `includes` hold and its `excludes` do not.
fn docker_to_oci(profile: &Value, caps: &[&str]) -> Value {
    let arch = "amd64";
    let has_cap = |c: &Value| caps.contains(&c.as_str().unwrap_or_default());
    let mut syscalls = Vec::new();
    for rule in profile["syscalls"].as_array().expect("syscalls") {
        let inc = &rule["includes"];
        let exc = &rule["excludes"];
        if let Some(arches) = inc["arches"].as_array() {
            if !arches.iter().any(|a| a == arch) {
                continue;
            }
        }
        if let Some(need) = inc["caps"].as_array() {
            if !need.iter().all(has_cap) {
                continue;
            }
        }
        if exc["arches"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == arch))
        {
            continue;
        }
        if exc["caps"]
            .as_array()
            .is_some_and(|c| c.iter().any(has_cap))
        {
            continue;
        }
        let mut out = json!({"names": rule["names"], "action": rule["action"]});
        if !rule["args"].is_null() {
            out["args"] = rule["args"].clone();
        }
        if !rule["errnoRet"].is_null() {
            out["errnoRet"] = rule["errnoRet"].clone();
        }
        syscalls.push(out);
    }
    json!({
        "defaultAction": profile["defaultAction"],
        "defaultErrnoRet": profile["defaultErrnoRet"],
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls,
    })
}

fn run_with(prefix: &str, seccomp: Value, script: &str, nnp: bool) -> Output {
    let rt = Runtime::new();
    let id = rt.new_id(prefix);
    let bundle = rt.bundle(&id, |s| {
        s.set("/linux/seccomp", seccomp);
        s.set("/process/noNewPrivileges", json!(nnp));
        s.readonly_root(false);
        s.sh(script);
    });
    rt.run_container(&bundle, &id, &[])
}

#[test]
fn docker_default_profile_runs_a_busybox_shell() {
    require_root();
    let path = docker_profile_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "read Docker's default seccomp profile {}: {e} (run `make deps`)",
            path.display()
        )
    });
    let profile: Value = serde_json::from_str(&text).expect("profile is JSON");
    let seccomp = docker_to_oci(&profile, DOCKER_CAPS);
    let rt = Runtime::new();
    let id = rt.new_id("dockerseccomp");
    let bundle = rt.bundle(&id, |s| {
        s.set("/linux/seccomp", seccomp);
        // As dockerd runs containers: without no_new_privs, Docker's caps.
        s.set("/process/noNewPrivileges", json!(false));
        for set in ["bounding", "effective", "permitted"] {
            s.set(&format!("/process/capabilities/{set}"), json!(DOCKER_CAPS));
        }
        s.readonly_root(false);
        s.sh(
            "echo hello; ls / >/dev/null && echo listed; grep Seccomp: /proc/self/status; \
              unshare -m true 2>/dev/null && echo unshared || echo unshare-refused; \
              mkdir /tmp/d && echo made",
        );
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["hello", "listed", "Seccomp:\t2", "unshare-refused", "made"]
            .iter()
            .map(|l| l.trim())
            .collect::<Vec<_>>(),
        "{out}"
    );
}

#[test]
fn errno_action_returns_the_configured_errno() {
    require_root();
    let out = run_with(
        "scerrno",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
        }),
        "mkdir /tmp/x 2>&1; echo after",
        true,
    )
    .ok();
    assert!(out.stdout.contains("Function not implemented"), "{out}");
    assert!(out.stdout.contains("after"), "{out}");
}

#[test]
fn argument_conditions_select_calls() {
    require_root();
    // Refuse only mode 0777: chmod's mode is argument 1, fchmodat's argument 2.
    let out = run_with(
        "scargs",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["chmod"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"}]},
                {"names": ["fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 2, "value": 511, "op": "SCMP_CMP_EQ"}]}
            ]
        }),
        "touch /tmp/f; chmod 755 /tmp/f && echo 755-ok; chmod 777 /tmp/f 2>/dev/null || echo 777-refused",
        true,
    )
    .ok();
    assert_eq!(out.stdout.trim(), "755-ok\n777-refused", "{out}");
}

#[test]
fn kill_action_kills_the_process() {
    require_root();
    let out = run_with(
        "sckill",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"}]
        }),
        "exec uname",
        true,
    );
    assert_eq!(out.code(), 128 + 31, "killed by SIGSYS expected: {out}");
}

#[test]
fn default_action_applies_to_unlisted_syscalls() {
    require_root();
    // Everything not allowed fails with EPERM; the shell still runs.
    let profile = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": [
            "read", "write", "exit", "exit_group", "execve", "brk", "mmap", "munmap", "arch_prctl",
            "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "getpid", "getppid", "getuid", "geteuid",
            "getgid", "getegid", "set_tid_address", "prctl", "capget", "capset", "setgroups", "setresuid",
            "setresgid", "chdir", "close_range", "fcntl", "close", "ioctl", "wait4", "clone", "fork",
            "vfork", "dup2", "dup3", "newfstatat", "fstat", "stat", "lstat", "statx", "uname", "getcwd",
            "open", "openat", "sysinfo", "poll", "ppoll", "pselect6", "select", "sigaltstack",
            "readlink", "readlinkat", "getrandom", "access", "faccessat", "faccessat2", "getdents64",
            "lseek", "pipe", "pipe2", "setpgid", "getpgrp", "getpgid", "tgkill", "kill", "gettid",
            "set_robust_list", "rseq", "prlimit64", "getrlimit", "mprotect", "madvise", "futex",
            "exit", "umask", "time", "gettimeofday", "clock_gettime"
        ], "action": "SCMP_ACT_ALLOW"}]
    });
    let out = run_with(
        "scdefault",
        profile,
        "echo in; mkdir /tmp/x 2>&1; echo out",
        true,
    )
    .ok();
    assert!(out.stdout.starts_with("in"), "{out}");
    assert!(out.stdout.contains("Operation not permitted"), "{out}");
    assert!(out.stdout.trim_end().ends_with("out"), "{out}");
}

#[test]
fn unsupported_or_unknown_profiles_fail_create_cleanly() {
    require_root();
    let cases = [
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
            "listenerPath is not set",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["no_such_syscall"], "action": "SCMP_ACT_ERRNO"}]}),
            "no_such_syscall",
        ),
        // runc's rules for the notify action (see runtime_hangs.rs for the
        // agent itself).
        (
            json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/run/agent.sock"}),
            "SCMP_ACT_NOTIFY cannot be used as default action",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock",
                "syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]}),
            "SCMP_ACT_NOTIFY cannot be used for the write syscall",
        ),
    ];
    for (i, (profile, needle)) in cases.into_iter().enumerate() {
        let rt = Runtime::new();
        let id = rt.new_id(&format!("scbad{i}"));
        let bundle = rt.bundle(&id, |s| {
            s.set("/linux/seccomp", profile);
            s.args(&["true"]);
        });
        rt.create(&bundle, &id, &[]).failed_with(needle);
        assert!(
            !rt.state_root().join(&id).exists(),
            "state left behind for a refused profile ({needle})"
        );
    }
}
