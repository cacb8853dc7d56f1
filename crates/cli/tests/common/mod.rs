//! Shared by the end-to-end tests: running the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Runs `teelog ARGS` with `stdin` and waits for it.
pub fn teelog(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_teelog"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("teelog runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// `teelog keygen --out DIR ARGS`, which must succeed.
// Not every test file makes an identity this way.
#[allow(dead_code)]
pub fn keygen(dir: &Path, args: &[&str]) {
    let mut all = vec!["keygen", "--out", s(dir)];
    all.extend_from_slice(args);
    let out = teelog(&all, b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A `--json` report: the exit code, the report, the kinds of its findings.
// Only the tests of JSON reports use it.
#[allow(dead_code)]
pub fn report(out: &Output) -> (i32, Value, Vec<String>) {
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let kinds = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect();
    (out.status.code().unwrap(), json, kinds)
}
