//! The Python kit's own tests (`python/tests`, pytest), run with rpcop's
//! Python environment, so that `cargo test --workspace` runs them too.

mod common;

use std::process::Command;

#[test]
fn the_kits_pytest_suite_passes() {
    let python = common::python();
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/tests");
    let output = Command::new("timeout")
        .arg("600")
        .arg(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&tests)
        .output()
        .expect("pytest runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        output.status.success(),
        "pytest failed: {summary}\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(summary.contains("passed"), "{summary}");
    println!("python/tests: {summary}");
}
