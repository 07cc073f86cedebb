//! config.json as `create` reads it: parse into the OCI types, validate,
//! then the steps that read the config without touching the system. Any
//! panic is a bug: bad input must become an error message.
//!
//! Keep in step with `exercise` in integration-tests/tests/config_fuzz_smoke.rs,
//! its stable-toolchain stand-in.

#![no_main]

use std::path::Path;

use berth_runtime::{cgroups, namespaces, rootfs, seccomp, spec};
use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::Spec;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<Spec>(data) else {
        return;
    };
    if spec::validate_spec(&spec).is_err() {
        return;
    }
    if let Some(linux) = spec.linux() {
        let _ = namespaces::Plan::from_config(linux.namespaces().as_deref().unwrap_or(&[]));
        if let Some(p) = linux.rootfs_propagation() {
            let _ = rootfs::propagation_flags(p);
        }
        let path = linux
            .cgroups_path()
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = cgroups::resolve_path(&path, false, "fuzz", Path::new("/"));
        let _ = cgroups::resolve_path(&path, true, "fuzz", Path::new("/"));
        if let Some(profile) = linux.seccomp() {
            let _ = seccomp::compile(profile);
        }
    }
    for mount in spec.mounts().iter().flatten() {
        let _ = rootfs::parse_options(mount.options().as_deref().unwrap_or(&[]));
    }
    // The state record stores the spec as JSON.
    let _ = serde_json::to_vec(&spec);
});
