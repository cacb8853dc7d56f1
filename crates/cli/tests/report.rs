//! `--report FILE.html`, rendered by a real browser: headless Chromium (Debian's `chromium`,
//! installed by scripts/test) reads the report of a clean store whose code changed version, and of
//! the same store tampered; the test checks the text Chromium renders and takes a screenshot.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{s, teelog};

/// The document as Chromium renders it (`--dump-dom`), and a screenshot of it.
fn render(html: &Path, screenshot: &Path) -> String {
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("headless Chromium is needed: apt-get install chromium (scripts/test does)");
    let run = |extra: &[&str]| {
        let url = format!("file://{}", html.display());
        let out = Command::new(browser)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    run(&[&format!("--screenshot={}", screenshot.display())]);
    let png = std::fs::read(screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a screenshot of {} bytes", png.len());
    String::from_utf8(run(&["--dump-dom"])).unwrap()
}

/// A dev identity whose PCR0 is `pcr0`, with `extra` arguments.
fn identity(dir: &Path, pcr0: &str, extra: &[&str]) {
    let pcrs = [format!("0={pcr0}"), format!("1={}", "22".repeat(48)), format!("2={}", "33".repeat(48))];
    let mut args = vec!["keygen", "--dev", "--out", s(dir)];
    args.extend_from_slice(extra);
    for pcr in &pcrs {
        args.extend(["--pcr", pcr.as_str()]);
    }
    let out = teelog(&args, b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_report_shows_the_verdict_the_version_change_and_the_findings_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = ("11".repeat(48), "44".repeat(48));
    let store = dir.path().join("store");
    // Version 1 signs, then version 2 takes over the stream (a deployment).
    for (name, pcr0) in [("v1", &v1), ("v2", &v2)] {
        let id = dir.path().join(name);
        let previous_root = dir.path().join("v1/dev-root.pem");
        // The new version's document attests the old one's head, which it verifies by the old root.
        let follow = ["--follow", s(&store), "--trust-root", s(&previous_root)];
        identity(&id, pcr0, if name == "v2" { &follow } else { &[] });
        let records: String = (0..30).map(|i| format!("{{\"message\":\"{name} step {i}\"}}\n")).collect();
        let out = teelog(
            &["sign", "--identity", s(&id), "--store", s(&store), "--batch-size", "10"],
            records.as_bytes(),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let roots = dir.path().join("roots.pem");
    let both: Vec<u8> = [
        std::fs::read(dir.path().join("v1/dev-root.pem")).unwrap(),
        std::fs::read(dir.path().join("v2/dev-root.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(&roots, both).unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[[measurement]]\nplatform = \"dev\"\nversion = \"v1.0\"\nvalue = \"{v1}\"\n\n[[measurement]]\nplatform = \"dev\"\nversion = \"v2.0\"\nvalue = \"{v2}\"\n"
        ),
    )
    .unwrap();
    let verify = |html: &Path| {
        teelog(
            &[
                "verify",
                "--store",
                s(&store),
                "--trust-root",
                s(&roots),
                "--policy",
                s(&policy),
                "--report",
                s(html),
            ],
            b"",
        )
    };

    let clean = dir.path().join("clean.html");
    let out = verify(&clean);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let text = render(&clean, &dir.path().join("clean.png"));
    assert!(
        text.contains("OK: every batch verified, no gaps, chain intact. 6 batches, 60 records"),
        "{text}"
    );
    assert!(text.contains("Measurement changed at") && text.contains("v1.0 → v2.0"), "{text}");
    assert!(!text.contains("<script"));

    // One record changed on disk: the verdict, the finding and where it is.
    let segment = teelog_store::segments(&store).unwrap().remove(0);
    let bytes = std::fs::read_to_string(&segment).unwrap().replacen("v1 step 3", "v1 step 9", 1);
    std::fs::write(&segment, bytes).unwrap();
    let tampered = dir.path().join("tampered.html");
    assert_eq!(verify(&tampered).status.code(), Some(1));
    let text = render(&tampered, &dir.path().join("tampered.png"));
    assert!(text.contains("FAIL: 1 findings"), "{text}");
    assert!(text.contains("record_tampered"), "{text}");
    let size = std::fs::metadata(&tampered).unwrap().len();
    assert!(size < 64 * 1024, "the report aggregates: {size} bytes");
}
