//! `teelog-bench` on a few records against the `teelog` binary built beside it (as
//! `cargo nextest run --workspace` builds both): every phase runs, and each child's CPU time and
//! peak RSS are measured from outside it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::process::Command;

const PHASES: [&str; 7] = [
    "sign (stdin → store)",
    "verify (store)",
    "ship (stdin → spool)",
    "ship (OTLP/HTTP → spool)",
    "ship (OTLP → relay, ack local)",
    "ship (OTLP → relay, ack remote)",
    "gateway (relay → spool)",
];

/// Phases whose peak RSS is not reported: the in-memory Loki they read lives in the bench.
const AUDIT_PHASES: [&str; 2] = ["audit (Loki, 1 query)", "audit (Loki, at once)"];

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_teelog-bench")).args(args).output().expect("teelog-bench runs")
}

#[test]
fn every_phase_is_measured_from_outside_the_child() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("bench");
    let output = bench(&[
        "--records",
        "2000",
        "--runs",
        "1",
        "--otlp-request-records",
        "250",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("teelog-bench: 2000 records"), "{stdout}");
    for phase in PHASES.iter().chain(&AUDIT_PHASES) {
        let row =
            stdout.lines().find_map(|l| l.strip_prefix(phase)).unwrap_or_else(|| panic!("{phase}: {stdout}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        // records/s, records/cpu-s, MB/s, vs SHA-256, peak RSS in MiB.
        let (per_second, per_cpu_second, rss) = match cells.as_slice() {
            [per_second, per_cpu_second, _, _, rss, "MiB"] => (per_second, per_cpu_second, Some(rss)),
            [per_second, per_cpu_second, _, _, "?"] if AUDIT_PHASES.contains(phase) => {
                (per_second, per_cpu_second, None)
            }
            _ => panic!("{phase}: {row}"),
        };
        let number =
            |cell: &str| cell.parse::<f64>().unwrap_or_else(|_| panic!("{phase}: {cell:?} in {row}"));
        assert!(number(per_second) > 0.0, "{row}");
        // Finite: the child's CPU time was measured, and was not zero.
        assert!(number(per_cpu_second) > 0.0 && number(per_cpu_second).is_finite(), "{row}");
        // The child's own peak, not the bench's nor a sum: a few MiB, never hundreds.
        if let Some(rss) = rss {
            let rss = number(rss);
            assert!((1.0..500.0).contains(&rss), "{phase}: peak RSS {rss} MiB");
        }
    }
    // journald FSS over the same records, measured like the teelog phases, or skipped with why.
    if !stdout.lines().any(|l| l.starts_with("journald FSS: skipped: ")) {
        for phase in ["journald: journal-remote --seal", "journald: journalctl --verify"] {
            let row = stdout
                .lines()
                .find_map(|l| l.strip_prefix(phase))
                .unwrap_or_else(|| panic!("{phase}: {stdout}"));
            let cells: Vec<&str> = row.split_whitespace().collect();
            let [per_second, per_cpu_second, "-", "-", rss, "MiB"] = cells.as_slice() else {
                panic!("{phase}: {row}")
            };
            for cell in [per_second, per_cpu_second, rss] {
                let number: f64 = cell.parse().unwrap_or_else(|_| panic!("{phase}: {cell:?} in {row}"));
                assert!(number > 0.0 && number.is_finite(), "{row}");
            }
        }
        let ratios = stdout.lines().find(|l| l.starts_with("teelog per CPU-second against journald FSS"));
        assert!(
            ratios
                .is_some_and(|l| l.contains("sign ") && l.contains("x (journal-remote") && !l.contains('?')),
            "{stdout}"
        );
    }
    // The audit phases' comparison, with teelog's share of the wall time (its CPU over the wall).
    let comparison =
        stdout.lines().find(|l| l.starts_with("audit against a Loki answering in 50 ms, pages of"));
    assert!(
        comparison.is_some_and(|l| l.contains("8 queries at once take")
            && l.contains("less wall time")
            && l.contains("teelog's own share")),
        "{stdout}"
    );
}

#[test]
fn a_binary_that_is_not_teelog_fails_with_what_it_ran() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("bench");
    let output =
        bench(&["--teelog", "/bin/false", "--records", "10", "--runs", "1", "--dir", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("teelog-bench: error: teelog keygen failed"), "{stderr}");
}

#[test]
fn the_scaling_table_has_sign_and_verify_for_each_case() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("bench");
    let output = bench(&[
        "--scaling",
        "--scaling-records",
        "500,3000",
        "--scaling-streams",
        "4,60",
        "--scaling-stream-records",
        "600",
        "--scaling-sign-streams",
        "4",
        "--runs",
        "1",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let row = |records: &str, streams: &str, phase: &str| -> Vec<String> {
        let prefix = format!("{records} {streams} {phase} ");
        let line = stdout
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no row {prefix:?}: {stdout}"));
        line[prefix.len()..].split(' ').map(String::from).collect()
    };
    let measured = [("500", "1", "sign"), ("3000", "1", "sign"), ("600", "4", "sign (4 runs)")];
    let verified = [("500", "1"), ("3000", "1"), ("600", "4"), ("600", "60")];
    for (records, streams, phase) in measured.into_iter().chain(verified.map(|(r, s)| (r, s, "verify"))) {
        let cells = row(records, streams, phase);
        // time s, records/s, records/cpu-s, vs SHA-256, peak RSS in MiB, SHA-256 records/s.
        let [time, per_second, per_cpu, _, rss, mib, sha] = cells.as_slice() else {
            panic!("{phase}: {cells:?}")
        };
        assert_eq!(mib, "MiB", "{cells:?}");
        for cell in [time, per_second, per_cpu, rss, sha] {
            let number: f64 = cell.parse().unwrap_or_else(|_| panic!("{cell:?} in {cells:?}"));
            assert!(number > 0.0 && number.is_finite(), "{cells:?}");
        }
    }
    // More streams than --scaling-sign-streams: the bench sealed the store, and says so.
    assert!(row("600", "60", "sign").starts_with(&["-".to_string(), "-".to_string()]), "{stdout}");
    assert!(stdout.contains("sign not measured with more than 4 streams"), "{stdout}");
}

#[test]
fn callgrind_counts_instructions_per_record_or_says_why_not() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("bench");
    let output = bench(&["--callgrind", "--records", "60", "--dir", dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    if stdout.starts_with("callgrind: skipped: no valgrind here") {
        return;
    }
    for program in ["SHA-256 of each record", "teelog sign", "teelog verify"] {
        let row = stdout
            .lines()
            .find_map(|l| l.strip_prefix(program))
            .unwrap_or_else(|| panic!("{program}: {stdout}"));
        let cells: Vec<f64> = row.split_whitespace().map(|c| c.parse().unwrap()).collect();
        let [full, tenth, per_record, ratio] = cells.as_slice() else { panic!("{program}: {row}") };
        // Counted over both inputs, the larger costing more.
        assert!(*tenth > 0.0 && full > tenth && *per_record > 0.0 && *ratio > 0.0, "{program}: {row}");
    }
}
