//! Generates the gRPC code from proto/berth/**.proto and the CRI's
//! proto/k8s/runtime/v1/api.proto with the protoc that
//! protoc-bin-vendored ships, so no system protoc is needed.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "berth/types/v1/types.proto",
    "berth/version/v1/version.proto",
    "berth/namespaces/v1/namespaces.proto",
    "berth/content/v1/content.proto",
    "berth/images/v1/images.proto",
    "berth/snapshots/v1/snapshots.proto",
    "berth/leases/v1/leases.proto",
    "berth/events/v1/events.proto",
    "berth/containers/v1/containers.proto",
    "berth/tasks/v1/tasks.proto",
    // Kubernetes' CRI v1 (package runtime.v1), served by the supervisor's CRI.
    "k8s/runtime/v1/api.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    tonic_prost_build::configure().compile_with_config(config, &files, &[root, include])?;
    Ok(())
}
