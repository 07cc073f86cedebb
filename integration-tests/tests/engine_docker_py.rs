//! berthd through docker-py 7.2: runs `integration-tests/python/test_engine.py`
//! with pytest, in the virtualenv `make deps` makes (`BERTH_VENV`), against
//! a real berthd on temporary state.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use integration_tests::engine::Berthd;
use integration_tests::registry::run_with_timeout;

/// How long the whole Python test file may take.
const PYTEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The virtualenv's python, or a failure that says how to make it.
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("BERTH_VENV").filter(|v| !v.is_empty());
    let Some(venv) = venv else {
        panic!(
            "BERTH_VENV is not set: it names the virtualenv with docker-py and pytest \
             (run `make deps`, then BERTH_VENV=$PWD/target/venv, or use `make test`)"
        );
    };
    let python = PathBuf::from(venv).join("bin/python");
    assert!(
        python.is_file(),
        "{} not found: make the virtualenv with `make deps`",
        python.display()
    );
    python
}

#[test]
fn docker_py_drives_berthd() {
    let python = venv_python();
    let d = Berthd::start();
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/test_engine.py");
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pytest", "-p", "no:cacheprovider", "-ra", "-v"])
        .arg("--timeout=120")
        .arg(&tests)
        .env("DOCKER_HOST", format!("unix://{}", d.socket().display()))
        .env("DOCKER_CONFIG", d.dir().join("docker-config"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_CONTEXT");
    let out = run_with_timeout(cmd, PYTEST_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pytest {} failed ({}):\n{stdout}\n{stderr}",
        tests.display(),
        out.status
    );
    println!("{stdout}");
}
