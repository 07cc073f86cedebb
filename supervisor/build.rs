//! Builds berth-pause (pause/pause.rs), the static process pod sandboxes
//! run, which the supervisor embeds and packs into its pause image. It is
//! freestanding, so rustc links it without libc or start files.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=pause/pause.rs");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("berth-pause");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(&rustc)
        .args([
            "--edition=2021",
            "--crate-type=bin",
            "-Copt-level=s",
            "-Cpanic=abort",
            "-Cdebuginfo=0",
            "-Cstrip=symbols",
            "-Crelocation-model=static",
            "-Ctarget-feature=+crt-static",
            "-Clink-arg=-nostartfiles",
            "-Clink-arg=-nostdlib",
            "-Clink-arg=-static",
            "-Clink-arg=-Wl,--build-id=none",
            "-o",
        ])
        .arg(&out)
        .arg("pause/pause.rs")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!("building berth-pause with {rustc:?} failed ({other:?})"),
    }
}
