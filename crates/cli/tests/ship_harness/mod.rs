//! Shared by the `teelog ship` end-to-end tests: the daemon as a child process, and what it
//! stored.
// Each test file uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// Every record of every batch line in a store directory, in file order.
pub fn stored_records(store: &Path) -> Vec<Value> {
    // A store not made yet holds nothing.
    let Ok(dir) = std::fs::read_dir(store) else { return Vec::new() };
    let mut segments: Vec<PathBuf> =
        dir.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "ndjson")).collect();
    segments.sort();
    let mut records = Vec::new();
    for segment in segments {
        for line in std::fs::read_to_string(segment).unwrap().lines() {
            // A batch line being written is skipped until it is whole.
            let Ok(batch) = serde_json::from_str::<Value>(line) else { continue };
            if let Some(batch_records) = batch["records"].as_array() {
                records.extend(batch_records.iter().cloned());
            }
        }
    }
    records
}

/// A running `teelog ship`, its listening addresses read from its own log.
pub struct Daemon {
    child: Child,
    pub http: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    pub fn start(args: &[&str]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_teelog"))
            .arg("ship")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (ready, on_ready) = mpsc::channel();
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for (what, key) in [("OTLP/HTTP", "http"), ("OTLP/gRPC", "grpc")] {
                    if let Some(addr) = line.split(&format!("{what} listening on ")).nth(1) {
                        let _ = ready.send((key, addr.trim().parse::<SocketAddr>().ok()));
                    }
                }
                if line.contains("shipping stream=") {
                    let _ = ready.send(("ready", None));
                }
                keep.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let mut daemon = Daemon { child, http: None, grpc: None, log };
        loop {
            match on_ready.recv_timeout(Duration::from_secs(30)) {
                Ok(("http", addr)) => daemon.http = addr,
                Ok(("grpc", addr)) => daemon.grpc = addr,
                Ok(_) => return daemon,
                Err(_) => panic!("the daemon did not start: {}", daemon.log()),
            }
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        // Let the reader thread take the last lines.
        std::thread::sleep(Duration::from_millis(50));
        assert!(status.success(), "{status}: {}", self.log());
        self.log()
    }

    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}
