//! `teelog ship` following files end to end: rotation by rename and by copytruncate, a restart,
//! and the store checked line by line afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;
mod ship_harness;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{keygen, s, teelog};
use serde_json::Value;
use ship_harness::{stored_records, Daemon};

/// How many times each record number is in the store's batch lines.
fn stored_numbers(store: &Path) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    for record in stored_records(store) {
        if let Some(n) = record["attributes"]["n"].as_u64() {
            *counts.entry(n).or_insert(0) += 1;
        }
    }
    counts
}

fn wait_for(store: &Path, records: usize, daemon: &Daemon) {
    let until = Instant::now() + Duration::from_secs(30);
    while stored_numbers(store).len() < records {
        assert!(Instant::now() < until, "{records} records expected: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn lines(range: std::ops::Range<u64>) -> String {
    range.map(|n| format!("{{\"message\":\"line {n}\",\"attributes\":{{\"n\":{n}}}}}\n")).collect()
}

#[test]
fn files_are_followed_across_rotation_and_restarts_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let path = |name: &str| -> PathBuf { root.join(name) };
    let (identity, spool, log) = (path("id"), path("spool"), path("app.log"));
    keygen(&identity, &[]);
    let config = path("ship.toml");
    std::fs::write(
        &config,
        format!(
            "identity = {:?}\n[batch]\nmax_delay = \"20ms\"\nheartbeat = \"off\"\n[spool]\ndir = {:?}\nkeep = true\n\
             [sources]\nfiles = [{:?}]\npoll_interval = \"50ms\"\nmax_line_bytes = 4096\n",
            s(&identity),
            s(&spool),
            s(&log)
        ),
    )
    .unwrap();

    // The file does not exist yet: it is waited for.
    let daemon = Daemon::start(&["--config", s(&config)]);
    std::thread::sleep(Duration::from_millis(200));
    append(&log, &lines(0..100));
    // A partial line is held back until its newline comes.
    let partial = lines(100..101);
    append(&log, &partial[..10]);
    wait_for(&spool, 100, &daemon);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(stored_numbers(&spool).len(), 100, "the partial line waits");
    append(&log, &partial[10..]);
    wait_for(&spool, 101, &daemon);

    // Rename + create: the writer still writes to the renamed file before it reopens.
    std::fs::rename(&log, path("app.log.1")).unwrap();
    append(&path("app.log.1"), &lines(101..150));
    append(&log, &lines(150..200));
    wait_for(&spool, 200, &daemon);

    // copytruncate: the file is copied, then cut to nothing, and written from its start again.
    std::fs::copy(&log, path("app.log.2")).unwrap();
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    append(&log, &lines(200..230));
    wait_for(&spool, 230, &daemon);
    let first_log = daemon.stop();
    assert!(first_log.contains("truncated"), "{first_log}");

    // Written while the daemon is down: the restart resumes where the spool ended, with the
    // line numbers going on (lines 31..=45, then a bad line 46 and an over-long line 47).
    append(&log, &lines(230..245));
    append(&log, "not json\n");
    let long = format!("{{\"message\":\"{}\"}}", "x".repeat(5000));
    append(&log, &format!("{long}\n"));
    append(&log, &lines(245..260));
    let daemon = Daemon::start(&["--config", s(&config)]);
    wait_for(&spool, 260, &daemon);
    let log_text = daemon.stop();
    assert!(log_text.contains("app.log:46"), "the bad line is named: {log_text}");
    assert!(log_text.contains("app.log:47: line longer than 4096 bytes"), "{log_text}");

    let counts = stored_numbers(&spool);
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), (0..260).collect::<Vec<_>>(), "no gaps");
    assert!(counts.values().all(|&c| c == 1), "clean stops ship no line twice: {counts:?}");
    let pubkey = identity.join("public-key.pem");
    let out = teelog(&["verify", "--json", "--store", s(&spool), "--pubkey", s(&pubkey)], b"");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    // The bad and the over-long line each left a signed notice in their place.
    assert_eq!(report["records"], 262, "{report}");
    let notices: Vec<Value> =
        stored_records(&spool).into_iter().filter(|r| r["teelog_notice"] == "record_refused").collect();
    let described: Vec<(String, u64, String)> = notices
        .iter()
        .map(|n| {
            let source = n["refused_source"].as_str().unwrap();
            let source = source.rsplit('/').next().unwrap().to_string();
            (source, n["refused_bytes"].as_u64().unwrap(), n["refused_sha256"].as_str().unwrap().to_string())
        })
        .collect();
    let sha = |b: &[u8]| hex::encode(teelog_core::merkle::sha256(b));
    assert_eq!(
        described,
        [
            ("app.log:46".to_string(), 8, sha(b"not json")),
            ("app.log:47".to_string(), long.len() as u64, sha(long.as_bytes()))
        ]
    );

    // The resume point is the end of the file, in the file it names.
    let cursors: Vec<PathBuf> =
        std::fs::read_dir(spool.join("sources")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(cursors.len(), 1, "{cursors:?}");
    let cursor: Value = serde_json::from_slice(&std::fs::read(&cursors[0]).unwrap()).unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(cursor["offset"], meta.len(), "{cursor}");
    assert_eq!(cursor["ino"], meta.ino(), "{cursor}");
    assert_eq!(cursor["line"], 62, "{cursor}");
}

/// kill -9 while a file is being written and followed: after the restarts every line is in the
/// spool; some may be there twice, none may be missing.
#[test]
fn kill_9_while_following_loses_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (identity, spool, log) = (root.join("id"), root.join("spool"), root.join("app.log"));
    keygen(&identity, &[]);
    let config = root.join("ship.toml");
    std::fs::write(
        &config,
        format!(
            "identity = {:?}\n[batch]\nmax_delay = \"5ms\"\nheartbeat = \"off\"\n[spool]\ndir = {:?}\nkeep = true\n\
             [sources]\npoll_interval = \"10ms\"\n",
            s(&identity),
            s(&spool),
        ),
    )
    .unwrap();
    let mut next = 0;
    for round in 0..8u64 {
        // The file comes from the flag, the rest from the config.
        let daemon = Daemon::start(&["--config", s(&config), "--file", s(&log)]);
        for _ in 0..20 {
            append(&log, &lines(next..next + 50));
            next += 50;
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(10 + round * 15));
        daemon.kill_9();
    }
    let daemon = Daemon::start(&["--config", s(&config), "--file", s(&log)]);
    wait_for(&spool, next as usize, &daemon);
    daemon.stop();
    let counts = stored_numbers(&spool);
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), (0..next).collect::<Vec<_>>(), "no gaps");
}

/// A daemon following `files` (relative to `root`), its spool in `root/spool`.
fn follow(root: &Path, files: &[&str]) -> (PathBuf, PathBuf) {
    let (identity, spool) = (root.join("id"), root.join("spool"));
    if !identity.exists() {
        keygen(&identity, &[]);
    }
    let files: Vec<String> = files.iter().map(|f| format!("{:?}", s(&root.join(f)))).collect();
    let config = root.join("ship.toml");
    std::fs::write(
        &config,
        format!(
            "identity = {:?}\n[batch]\nmax_delay = \"10ms\"\nheartbeat = \"off\"\n[spool]\ndir = {:?}\nkeep = true\n\
             [sources]\nfiles = [{}]\npoll_interval = \"20ms\"\n",
            s(&identity),
            s(&spool),
            files.join(", ")
        ),
    )
    .unwrap();
    (config, spool)
}

fn assert_each_once(spool: &Path, range: std::ops::Range<u64>, log: &str) {
    let counts = stored_numbers(spool);
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), range.collect::<Vec<_>>(), "no gaps: {log}");
    assert!(counts.values().all(|&c| c == 1), "no line twice: {counts:?}\n{log}");
}

#[test]
fn one_file_reached_through_several_paths_is_signed_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("logs")).unwrap();
    append(&root.join("logs/app.log"), &lines(0..50));
    std::fs::hard_link(root.join("logs/app.log"), root.join("logs/hard.log")).unwrap();
    // Another spelling of the same path, and a hard link.
    let (config, spool) = follow(root, &["logs/app.log", "logs/../logs/app.log", "logs/hard.log"]);
    let daemon = Daemon::start(&["--config", s(&config)]);
    wait_for(&spool, 50, &daemon);
    append(&root.join("logs/app.log"), &lines(50..80));
    wait_for(&spool, 80, &daemon);
    std::thread::sleep(Duration::from_millis(300));
    let log = daemon.stop();
    assert!(log.contains("which is followed already"), "{log}");
    assert_each_once(&spool, 0..80, &log);
}

#[test]
fn a_symbolic_link_at_the_path_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    append(&root.join("secret.log"), &lines(0..5));
    std::os::unix::fs::symlink(root.join("secret.log"), root.join("app.log")).unwrap();
    let (config, spool) = follow(root, &["app.log"]);
    let daemon = Daemon::start(&["--config", s(&config)]);
    daemon.wait_for_log("is a symbolic link, not a regular file", Duration::from_secs(10));
    // Replaced by a regular file: that one is followed.
    std::fs::remove_file(root.join("app.log")).unwrap();
    append(&root.join("app.log"), &lines(5..10));
    wait_for(&spool, 5, &daemon);
    let log = daemon.stop();
    assert_each_once(&spool, 5..10, &log);
}

#[test]
fn a_path_flipping_between_two_files_signs_no_line_twice() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (a, b, at) = (root.join("a.log"), root.join("b.log"), root.join("app.log"));
    append(&a, &lines(0..10));
    append(&b, &lines(100..110));
    std::fs::hard_link(&a, &at).unwrap();
    let (config, spool) = follow(root, &["app.log"]);
    let daemon = Daemon::start(&["--config", s(&config)]);
    wait_for(&spool, 10, &daemon);
    // The path goes to b, back to a, and to b again, with lines added in between.
    for (to, more) in [(&b, 110..120), (&a, 10..20), (&b, 120..130)] {
        let swap = root.join("swap.log");
        std::fs::hard_link(to, &swap).unwrap();
        std::fs::rename(&swap, &at).unwrap();
        append(to, &lines(more));
        std::thread::sleep(Duration::from_millis(400));
    }
    // 0..20 of a and 100..130 of b.
    wait_for(&spool, 50, &daemon);
    let log = daemon.stop();
    // a restart with the path at a again resumes there too
    std::fs::hard_link(&a, root.join("swap.log")).unwrap();
    std::fs::rename(root.join("swap.log"), &at).unwrap();
    append(&a, &lines(20..25));
    let daemon = Daemon::start(&["--config", s(&config)]);
    // Waited for: 45 were fewer than were stored before, so the daemon was stopped at once, and
    // whether it had read a's new lines by then was a race.
    wait_for(&spool, 55, &daemon);
    let log = log + &daemon.stop();
    let counts = stored_numbers(&spool);
    let expected: Vec<u64> = (0..25).chain(100..130).collect();
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), expected, "{log}");
    assert!(counts.values().all(|&c| c == 1), "no line twice: {counts:?}\n{log}");
}

#[test]
fn late_writes_to_a_rotated_file_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let log_path = root.join("app.log");
    append(&log_path, &lines(0..10));
    let (config, spool) = follow(root, &["app.log"]);
    let daemon = Daemon::start(&["--config", s(&config)]);
    wait_for(&spool, 10, &daemon);
    std::fs::rename(&log_path, root.join("app.log.1")).unwrap();
    append(&log_path, &lines(10..20));
    wait_for(&spool, 20, &daemon);
    // The writer has not reopened yet: it still appends to the rotated file.
    std::thread::sleep(Duration::from_millis(300));
    append(&root.join("app.log.1"), &lines(20..30));
    wait_for(&spool, 30, &daemon);
    let log = daemon.stop();
    assert_each_once(&spool, 0..30, &log);
}

#[test]
fn a_file_rewritten_or_a_position_moved_while_stopped_is_read_again_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let log_path = root.join("app.log");
    append(&log_path, &lines(0..50));
    let (config, spool) = follow(root, &["app.log"]);
    let daemon = Daemon::start(&["--config", s(&config)]);
    wait_for(&spool, 50, &daemon);
    daemon.stop();
    // Rewritten in place (same inode, as a reused inode number would be), longer than before.
    let mut file = std::fs::OpenOptions::new().write(true).open(&log_path).unwrap();
    file.write_all(lines(50..120).as_bytes()).unwrap();
    drop(file);
    let daemon = Daemon::start(&["--config", s(&config)]);
    wait_for(&spool, 120, &daemon);
    let log = daemon.stop();
    assert!(log.contains("are not the ones read"), "{log}");
    assert_each_once(&spool, 0..120, &log);

    // The host moves the saved position forward past lines never read.
    append(&log_path, &lines(120..130));
    let cursor = std::fs::read_dir(spool.join("sources")).unwrap().next().unwrap().unwrap().path();
    let mut saved: Value = serde_json::from_slice(&std::fs::read(&cursor).unwrap()).unwrap();
    let skip_to = std::fs::metadata(&log_path).unwrap().len() - lines(125..130).len() as u64;
    saved["offset"] = skip_to.into();
    std::fs::write(&cursor, saved.to_string()).unwrap();
    let daemon = Daemon::start(&["--config", s(&config)]);
    wait_for(&spool, 130, &daemon);
    let log = daemon.stop();
    let counts = stored_numbers(&spool);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (0..130).collect::<Vec<_>>(),
        "nothing skipped: {log}"
    );
}

/// A file rotated away (renamed in its directory) while the daemon is down, or while it was
/// still being read when the daemon stopped, is found again by its identity and read on from
/// its saved place: its lines are neither lost nor read twice.
#[test]
fn a_file_rotated_while_stopped_is_found_in_its_directory_and_read_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let log_path = root.join("app.log");
    append(&log_path, &lines(0..10));
    let (config, spool) = follow(root, &["app.log"]);
    let daemon = Daemon::start(&["--config", s(&config)]);
    wait_for(&spool, 10, &daemon);
    daemon.stop();
    // While it is down: the application writes on, logrotate renames, the application reopens.
    append(&log_path, &lines(10..20));
    std::fs::rename(&log_path, root.join("app.log.1")).unwrap();
    append(&log_path, &lines(20..30));
    let daemon = Daemon::start(&["--config", s(&config)]);
    wait_for(&spool, 30, &daemon);
    let log = daemon.stop();
    assert!(log.contains("app.log.1 was rotated away from it with"), "{log}");
    assert_each_once(&spool, 0..30, &log);
    // Read to its end, it is not read again at the next start, though it is still there.
    let daemon = Daemon::start(&["--config", s(&config)]);
    std::thread::sleep(Duration::from_millis(300));
    let log = daemon.stop();
    assert!(!log.contains("rotated away"), "{log}");
    assert_each_once(&spool, 0..30, &log);
}
