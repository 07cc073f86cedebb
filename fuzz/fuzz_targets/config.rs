//! config.json as `create` reads it (`spec::dry_run`: parse into the OCI
//! types, validate, then the steps that read the config without touching
//! the system). Any panic is a bug: bad input must become an error message.
//! integration-tests/tests/config_fuzz_smoke.rs runs the same function on
//! the stable toolchain.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = berth_runtime::spec::dry_run(data);
});
