//! The relay over AF_VSOCK, for real. These machines' kernels have no vsock loopback, so
//! scripts/vsock-vm/run boots a small QEMU VM (Debian's cloud kernel, downloaded and cached on
//! first use, under software emulation) whose kernel has one, and runs a script there with this
//! build's `teelog`. Its verdict comes back over the serial console. A machine that cannot run
//! the VM fails these tests: nothing is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/vsock-vm")
}

/// `scripts/vsock-vm/run teelog SCRIPT`: its exit status and everything it printed.
fn in_vm(script: &Path) -> (Output, String) {
    let out = Command::new(scripts().join("run"))
        .arg(env!("CARGO_BIN_EXE_teelog"))
        .arg(script)
        .output()
        .expect("scripts/vsock-vm/run starts");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

#[test]
fn ship_relays_over_vsock_to_the_gateway_store_through_kill_9_of_shipper_and_gateway() {
    // ship -> relay sink on vsock://1:7400 -> gateway listening on vsock://ANY:7400 -> store; the
    // shipper is killed with SIGKILL mid-stream three times and the gateway once; then every
    // spooled batch must be in the store, no seq signed twice, and `teelog verify` of the store
    // clean (relay-e2e.sh).
    let (out, text) = in_vm(&scripts().join("relay-e2e.sh"));
    println!("{text}");
    assert!(out.status.success(), "the VM test failed:\n{text}");
    let verdict = text.lines().find(|line| line.contains("E2E PASS")).unwrap_or_else(|| panic!("{text}"));
    assert!(
        verdict.contains("3 kill -9 of the shipper and 1 of the gateway")
            && verdict.contains("over vsock://1:7400"),
        "{verdict}"
    );
    assert!(text.lines().any(|line| line.trim() == "PASS"), "{text}");
}

#[test]
fn a_script_that_fails_in_the_vm_fails_the_harness() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fails.sh");
    std::fs::write(&script, "teelog --version\necho about to fail\nexit 3\n").unwrap();
    let (out, text) = in_vm(&script);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("[guest] about to fail") && text.contains("TEELOG_VM_RESULT rc=3"), "{text}");
    assert!(text.lines().any(|line| line.trim() == "FAIL"), "{text}");
}
