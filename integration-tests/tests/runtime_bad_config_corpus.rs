//! A corpus of malformed and hostile `config.json` files
//! (`corpus/bad-config/*.json`, plus a few huge ones generated here): for
//! each, `create` must fail with a non-zero status and a clear message (no
//! panic), and leave nothing behind: no state entry, no cgroup directory, no
//! mount under the bundle, no process.
//!
//! Every corpus file is the output of `berth-runtime spec` (with `terminal`
//! false) with exactly one defect; `corpus/bad-config/README.md` lists them.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration_tests::*;
use serde_json::{json, Value};

/// One bad configuration: a name for messages and the bytes of config.json.
struct Case {
    name: String,
    config: Vec<u8>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/bad-config")
}

/// Every `*.json` of the corpus, sorted by name.
fn corpus_cases() -> Vec<Case> {
    let dir = corpus_dir();
    let mut cases: Vec<Case> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| Case {
            name: p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            config: fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())),
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

const TEN_MB: usize = 10 << 20;

/// The huge cases, made from `base` (the fixture's config.json) at test time
/// rather than committed.
fn generated_cases(base: &Value) -> Vec<Case> {
    let with = |name: &str, edit: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        edit(&mut v);
        Case {
            name: format!("generated:{name}"),
            config: serde_json::to_vec(&v).expect("serialize config"),
        }
    };
    let mut cases = vec![
        with("hostname-10MB", &|v| {
            v["hostname"] = json!("h".repeat(TEN_MB))
        }),
        with("arg-10MB", &|v| {
            v["process"]["args"] = json!(["sh", "-c", "x".repeat(TEN_MB)])
        }),
        with("env-10MB", &|v| {
            if let Some(env) = v["process"]["env"].as_array_mut() {
                env.push(json!(format!("BIG={}", "x".repeat(TEN_MB))));
            }
        }),
        with("mounts-100k", &|v| {
            if let Some(mounts) = v["mounts"].as_array_mut() {
                let tmpfs = json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                                   "options": ["size=4k"]});
                mounts.extend(std::iter::repeat_n(tmpfs, 100_000));
            }
        }),
    ];
    // A million levels of nesting where a string belongs: refused, without
    // the parser overflowing its stack. (In an unknown field the same
    // nesting is skipped without recursion, and the config is valid.)
    let text = serde_json::to_string(base).expect("serialize config");
    let deep = format!(
        "{{\"annotations\": {{\"deep\": {}{}}}, {}",
        "[".repeat(1_000_000),
        "]".repeat(1_000_000),
        &text[1..]
    );
    cases.push(Case {
        name: "generated:annotation-nesting-1M".into(),
        config: deep.into_bytes(),
    });
    cases
}

/// Host processes (other than this one) whose command line mentions `id`:
/// until it execs, a container's init is a copy of the runtime and carries
/// the `create … ID` command line.
fn processes_mentioning(id: &str) -> Vec<String> {
    host_processes(|_, cmdline| cmdline.contains(id))
}

fn log_line_count(rt: &Runtime) -> usize {
    fs::read_to_string(rt.log_path())
        .unwrap_or_default()
        .lines()
        .count()
}

/// Runs `create` on one bad config in `bundle` (whose config.json it
/// replaces); returns what went wrong, if anything.
fn check_case(rt: &Runtime, bundle: &Bundle, case: &Case) -> Vec<String> {
    let id = rt.new_id("badcfg");
    write(bundle.config_path(), &case.config);
    let mounts_before = host_mounts_under(bundle.path());
    let log_before = log_line_count(rt);
    let out = rt.create(bundle, &id, &[]);
    let mut problems = Vec::new();
    if out.success() {
        problems.push("create succeeded".to_owned());
        let _ = rt.run(&["delete", "--force", &id]);
    }
    let code = out.code();
    if code == 101 || code >= 128 {
        problems.push(format!("exit status {code} (panic or signal)"));
    }
    let stderr = out.stderr.trim();
    if !out.success() && stderr.is_empty() {
        problems.push("no message on stderr".to_owned());
    }
    for bad in ["panicked at", "RUST_BACKTRACE", "stack overflow"] {
        if stderr.contains(bad) {
            problems.push(format!("stderr has {bad:?}"));
        }
    }
    if !out.stdout.is_empty() {
        problems.push("the runtime wrote on stdout".to_owned());
    }
    if !out.success() {
        let log = fs::read_to_string(rt.log_path()).unwrap_or_default();
        let logged = log
            .lines()
            .skip(log_before)
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|l| l["level"] == "error" && l["msg"].as_str().is_some_and(|m| !m.is_empty()));
        if !logged {
            problems.push("no error line in the --log file".to_owned());
        }
    }
    if rt.state_entries().contains(&id) {
        problems.push("state entry left in --root".to_owned());
    }
    // The fixture's cgroupsPath is replaced with the corpus file's (none):
    // the runtime's default is /berth/<id>.
    for path in [format!("{CGROUP_PARENT}/{id}"), format!("/berth/{id}")] {
        for dir in existing_cgroup_dirs(&path) {
            problems.push(format!("cgroup {} left", dir.display()));
            rt.on_cleanup(move || {
                let _ = fs::remove_dir(&dir);
            });
        }
    }
    let mut mounts: Vec<PathBuf> = host_mounts_under(bundle.path())
        .into_iter()
        .filter(|m| !mounts_before.contains(m))
        .collect();
    mounts.extend(host_mounts_under(&rt.state_root().join(&id)));
    if !mounts.is_empty() {
        problems.push(format!("mounts left: {mounts:?}"));
    }
    // A killed init may take a moment to be reaped.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut procs = processes_mentioning(&id);
    while !procs.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        procs = processes_mentioning(&id);
    }
    if !procs.is_empty() {
        problems.push(format!("processes left: {procs:?}"));
    }
    let first_line: String = stderr
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    eprintln!("{}: {first_line}", case.name);
    if !problems.is_empty() {
        problems.push(format!("stderr: {first_line:?}"));
    }
    problems
}

#[test]
fn every_bad_config_is_rejected_cleanly() {
    let rt = Runtime::new();

    // The base the corpus was made from works: a failure below is the
    // defect's, not the fixture's. The cases share this bundle (a fresh
    // rootfs each would make the test ten times slower); a case that gets
    // as far as the container's init may leave directories in the rootfs,
    // which cannot make a later bad config pass.
    let control = rt.new_id("badcfg-control");
    let bundle = rt.bundle(&control, |_| {});
    rt.create(&bundle, &control, &[]).ok();
    rt.run(&["delete", "--force", &control]).ok();
    let mut base = bundle.spec().0;
    if let Some(linux) = base["linux"].as_object_mut() {
        linux.remove("cgroupsPath");
    }

    let corpus = corpus_cases();
    assert!(
        corpus.len() >= 40,
        "only {} files in {}",
        corpus.len(),
        corpus_dir().display()
    );
    let mut failures = Vec::new();
    let mut total = 0;
    for case in corpus.iter().chain(generated_cases(&base).iter()) {
        total += 1;
        let problems = check_case(&rt, &bundle, case);
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.name, problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} bad configs were not rejected cleanly:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}
