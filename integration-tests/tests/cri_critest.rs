//! critest's fast groups against berth-supervisord's CRI, through
//! scripts/critest.sh (berth only): the images critest wants built and
//! served by a local registry its hosts.toml files name, the CNI conflist
//! and the daemon in a network namespace of the script's, nothing asked of
//! the real registries. The Image Manager group runs in cri_images.rs;
//! the whole suite in `make compat`.
//!
//! The groups here are those that pass on berth and run fast: runtime
//! info, pod sandboxes, idempotence, containers, security contexts and
//! image volumes (containerd 1.6 skips those).
//! Left out: streaming (long), the log reopening test (9 s of waiting;
//! cri_containers covers it), and MaskedPaths, which fails on containerd
//! too: it needs a busybox whose `sh` runs `ls` from PATH, where Debian's
//! static one runs its own applet. See docs/cri.md.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::build_dir;
use integration_tests::cri::tool;
use integration_tests::registry::run_with_timeout;

const FOCUS: &str =
    r"Runtime info|PodSandbox|Idempotence|\[k8s.io\] Container|Security Context|Image Volume";
const SKIP: &str = r"Streaming|Image Manager|MaskedPaths|reopening container log";

/// The specs expected to pass: "<containers> <leaf>" as ginkgo names them.
const EXPECTED: &[&str] = &[
    "[k8s.io] Container Mount Propagation runtime should support mount propagation mount with 'rprivate' should not support propagation",
    "[k8s.io] Container Mount Propagation runtime should support mount propagation mount with 'rshared' should support propagation from host to container and vice versa",
    "[k8s.io] Container Mount Propagation runtime should support mount propagation mount with 'rslave' should support propagation from host to container",
    "[k8s.io] Container Mount Readonly runtime should support readonly mounts should reject a recursive readonly mount with PROPAGATION_BIDIRECTIONAL",
    "[k8s.io] Container Mount Readonly runtime should support readonly mounts should reject a recursive readonly mount with PROPAGATION_HOST_TO_CONTAINER",
    "[k8s.io] Container Mount Readonly runtime should support readonly mounts should reject a recursive readonly mount with ReadOnly: false",
    "[k8s.io] Container Mount Readonly runtime should support readonly mounts should support non-recursive readonly mounts",
    "[k8s.io] Container Mount Readonly runtime should support readonly mounts should support recursive readonly mounts",
    "[k8s.io] Container OOM runtime should output OOMKilled reason should terminate with exitCode 137 and reason OOMKilled",
    "[k8s.io] Container runtime should support adding volume and device runtime should support starting container with volume [Conformance]",
    "[k8s.io] Container runtime should support adding volume and device runtime should support starting container with volume when host path is a symlink [Conformance]",
    "[k8s.io] Container runtime should support basic operations on container runtime should support creating container [Conformance]",
    "[k8s.io] Container runtime should support basic operations on container runtime should support execSync [Conformance]",
    "[k8s.io] Container runtime should support basic operations on container runtime should support execSync with timeout [Conformance]",
    "[k8s.io] Container runtime should support basic operations on container runtime should support listing container stats [Conformance]",
    "[k8s.io] Container runtime should support basic operations on container runtime should support listing stats for containers filtered by labels [Conformance]",
    "[k8s.io] Container runtime should support basic operations on container runtime should support listing stats for started containers [Conformance]",
    "[k8s.io] Container runtime should support basic operations on container runtime should support listing stats for started containers when filter is nil [Conformance]",
    "[k8s.io] Container runtime should support basic operations on container runtime should support listing stats for three created containers when filter is nil. [Conformance]",
    "[k8s.io] Container runtime should support basic operations on container runtime should support preserving container attributes [Conformance]",
    "[k8s.io] Container runtime should support basic operations on container runtime should support removing created container [Conformance]",
    "[k8s.io] Container runtime should support basic operations on container runtime should support removing running container [Conformance]",
    "[k8s.io] Container runtime should support basic operations on container runtime should support removing stopped container [Conformance]",
    "[k8s.io] Container runtime should support basic operations on container runtime should support starting container [Conformance]",
    "[k8s.io] Container runtime should support basic operations on container runtime should support stopping container [Conformance]",
    "[k8s.io] Container runtime should support log runtime should support starting container with log [Conformance]",
    "[k8s.io] Idempotence RemoveContainer should not return an error if not found",
    "[k8s.io] Idempotence RemoveImage should not return an error if not found",
    "[k8s.io] Idempotence RemovePodSandbox should not return an error if not found",
    "[k8s.io] Idempotence StopContainer should not return an error if already stopped",
    "[k8s.io] Idempotence StopContainer should not return an error if not found",
    "[k8s.io] Idempotence StopPodSandbox should not return an error if already stopped",
    "[k8s.io] Idempotence StopPodSandbox should not return an error if not found",
    "[k8s.io] Image Volume [Feature:ImageVolume] should correctly mount image and enforce read-only",
    "[k8s.io] Image Volume [Feature:ImageVolume] should reject Image Volume with Readonly set to false",
    "[k8s.io] Image Volume [Feature:ImageVolume] should return image digest in ContainerStatus mounts",
    "[k8s.io] Image Volume [Feature:ImageVolume] subPath should fail when subPath does not exist in the image",
    "[k8s.io] Image Volume [Feature:ImageVolume] subPath should succeed when using a valid subPath",
    "[k8s.io] PodSandbox runtime should support basic operations on PodSandbox runtime should support preserving PodSandbox attributes [Conformance]",
    "[k8s.io] PodSandbox runtime should support basic operations on PodSandbox runtime should support removing PodSandbox [Conformance]",
    "[k8s.io] PodSandbox runtime should support basic operations on PodSandbox runtime should support running PodSandbox [Conformance]",
    "[k8s.io] PodSandbox runtime should support basic operations on PodSandbox runtime should support stopping PodSandbox [Conformance]",
    "[k8s.io] PodSandbox runtime should support metrics operations runtime should support listing pod sandbox metrics [Conformance]",
    "[k8s.io] PodSandbox runtime should support metrics operations runtime should support returning metrics descriptors [Conformance]",
    "[k8s.io] PodSandbox runtime should support sysctls should support safe sysctls",
    "[k8s.io] PodSandbox runtime should support sysctls should support unsafe sysctls",
    "[k8s.io] Runtime info runtime should support returning runtime info runtime should return runtime conditions [Conformance]",
    "[k8s.io] Runtime info runtime should support returning runtime info runtime should return version info [Conformance]",
    "[k8s.io] Security Context NamespaceOption runtime should support ContainerPID",
    "[k8s.io] Security Context NamespaceOption runtime should support HostIpc is false",
    "[k8s.io] Security Context NamespaceOption runtime should support HostIpc is true",
    "[k8s.io] Security Context NamespaceOption runtime should support HostNetwork is false",
    "[k8s.io] Security Context NamespaceOption runtime should support HostNetwork is true",
    "[k8s.io] Security Context NamespaceOption runtime should support HostPID",
    "[k8s.io] Security Context NamespaceOption runtime should support PodPID",
    "[k8s.io] Security Context NoNewPrivs should allow privilege escalation when false",
    "[k8s.io] Security Context NoNewPrivs should not allow privilege escalation when true",
    "[k8s.io] Security Context SeccompProfilePath runtime should ignore a seccomp profile that blocks setting hostname when privileged",
    "[k8s.io] Security Context SeccompProfilePath runtime should not block setting host name with unconfined seccomp and SYS_ADMIN",
    "[k8s.io] Security Context SeccompProfilePath runtime should support an seccomp profile that blocks setting hostname with SYS_ADMIN",
    "[k8s.io] Security Context SeccompProfilePath should support nil profile, which is unconfined",
    "[k8s.io] Security Context SeccompProfilePath should support seccomp default on the container",
    "[k8s.io] Security Context SeccompProfilePath should support seccomp localhost profile on the container",
    "[k8s.io] Security Context SeccompProfilePath should support seccomp unconfined on the container",
    "[k8s.io] Security Context UserNamespaces when Host idmap mount support is needed runtime should support NamespaceMode_POD",
    "[k8s.io] Security Context UserNamespaces when Host idmap mount support is not needed runtime should fail if container ID 0 is not mapped",
    "[k8s.io] Security Context UserNamespaces when Host idmap mount support is not needed runtime should fail if more than one mapping provided",
    "[k8s.io] Security Context UserNamespaces when Host idmap mount support is not needed runtime should fail with NamespaceMode_CONTAINER",
    "[k8s.io] Security Context UserNamespaces when Host idmap mount support is not needed runtime should fail with NamespaceMode_TARGET",
    "[k8s.io] Security Context UserNamespaces when Host idmap mount support is not needed runtime should support NamespaceMode_NODE",
    "[k8s.io] Security Context bucket runtime should return error if RunAsGroup is set without RunAsUser",
    "[k8s.io] Security Context bucket runtime should support Privileged is false",
    "[k8s.io] Security Context bucket runtime should support Privileged is true",
    "[k8s.io] Security Context bucket runtime should support ReadonlyPaths",
    "[k8s.io] Security Context bucket runtime should support RunAsGroup",
    "[k8s.io] Security Context bucket runtime should support RunAsUser",
    "[k8s.io] Security Context bucket runtime should support RunAsUserName",
    "[k8s.io] Security Context bucket runtime should support SupplementalGroups",
    "[k8s.io] Security Context bucket runtime should support adding ALL capabilities",
    "[k8s.io] Security Context bucket runtime should support adding capability",
    "[k8s.io] Security Context bucket runtime should support dropping ALL capabilities",
    "[k8s.io] Security Context bucket runtime should support dropping capability",
    "[k8s.io] Security Context bucket runtime should support that ReadOnlyRootfs is false",
    "[k8s.io] Security Context bucket runtime should support that ReadOnlyRootfs is true",
];

/// The passed and failed specs of a ginkgo JSON report.
fn outcomes(report: &serde_json::Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut passed = BTreeSet::new();
    let mut failed = BTreeSet::new();
    for suite in report.as_array().into_iter().flatten() {
        for spec in suite["SpecReports"].as_array().into_iter().flatten() {
            if spec["LeafNodeType"] != "It" {
                continue;
            }
            let mut name: Vec<String> = spec["ContainerHierarchyTexts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(String::from))
                .collect();
            name.push(
                spec["LeafNodeText"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            let name = name.join(" ");
            match spec["State"].as_str() {
                Some("passed") => {
                    passed.insert(name);
                }
                Some("skipped") | Some("pending") => {}
                _ => {
                    failed.insert(name);
                }
            }
        }
    }
    (passed, failed)
}

#[test]
fn critest_fast_groups() {
    integration_tests::require_root();
    tool("critest");
    tool("crictl");
    let tmp = tempfile::tempdir().expect("temp dir");
    let report_path = tmp.path().join("report.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/critest.sh");
    let mut cmd = Command::new(script);
    cmd.env("BERTH_SUPERVISORD", build_dir().join("berth-supervisord"))
        .arg("-b")
        .arg(format!("--ginkgo.focus={FOCUS}"))
        .arg(format!("--ginkgo.skip={SKIP}"))
        .arg(format!("--ginkgo.json-report={}", report_path.display()));
    let out = run_with_timeout(cmd, Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(build_dir().join("../critest-berth.log")).unwrap_or_default();
    let context = format!(
        "{stdout}\n{}\n--- critest log (tail) ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        log.lines()
            .rev()
            .take(150)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let text = std::fs::read_to_string(&report_path)
        .unwrap_or_else(|e| panic!("no ginkgo report ({e}):\n{context}"));
    let report: serde_json::Value = serde_json::from_str(&text).expect("parse the ginkgo report");
    let (passed, failed) = outcomes(&report);
    let expected: BTreeSet<String> = EXPECTED.iter().map(|s| s.to_string()).collect();
    let missing: Vec<&String> = expected.difference(&passed).collect();
    let unexpected: Vec<&String> = passed.difference(&expected).collect();
    assert!(
        failed.is_empty() && missing.is_empty() && unexpected.is_empty(),
        "failed: {failed:#?}\nexpected to pass, did not: {missing:#?}\n\
         passed, not in the list (add it): {unexpected:#?}\n{context}"
    );
}
