//! Shared by the `teelog ship` end-to-end tests: the daemon as a child process, and what it
//! stored.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic
// Each test file uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A temporary directory with a software identity in `id`; each test file adds what it needs.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub identity: PathBuf,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let identity = root.join("id");
    crate::common::keygen(&identity, &[]);
    Fixture { _dir: dir, root, identity }
}

impl Fixture {
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `gateway.toml` for a gateway relaying on `relay` (with metrics on a free port), trusting
    /// the fixture's key and `keys`, storing into `gw-store`, with `more` (TOML) appended.
    pub fn relay_gateway(&self, relay: &str, keys: &[PathBuf], more: &str) -> PathBuf {
        let pubkeys: Vec<String> = std::iter::once(self.identity.join("public-key.pem"))
            .chain(keys.iter().cloned())
            .map(|key| format!("'{}'", key.to_str().unwrap()))
            .collect();
        let text = format!(
            "[spool]\ndir = '{}'\n[listen]\nrelay = '{relay}'\n[verify]\npubkeys = [{}]\n[metrics]\nlisten = '127.0.0.1:0'\n[[sinks]]\nkind = 'store'\ndir = '{}'\n{more}",
            self.path("gw-spool").to_str().unwrap(),
            pubkeys.join(", "),
            self.path("gw-store").to_str().unwrap(),
        );
        let path = self.path("gateway.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A loopback address no one listens on now, for a daemon to be started on later.
pub fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Copies the files of directory `from` into `to` (one level, as the state and a spool are).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

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

/// A running `teelog ship` or `teelog gateway`, its listening addresses read from its own log.
pub struct Daemon {
    child: Child,
    /// The shipper's OTLP listeners.
    pub http: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
    /// Every listener, by the name the daemon logs it with (`relay`, `HTTP`, `metrics`, …).
    pub listening: BTreeMap<String, SocketAddr>,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// `teelog ship ARGS`, once it says it is shipping.
    pub fn start(args: &[&str]) -> Daemon {
        Self::start_ship(args, Stdio::null())
    }

    /// `teelog ship ARGS` reading the pipe returned.
    pub fn start_with_stdin(args: &[&str]) -> (Daemon, ChildStdin) {
        let mut daemon = Self::start_ship(args, Stdio::piped());
        let stdin = daemon.child.stdin.take().unwrap();
        (daemon, stdin)
    }

    fn start_ship(args: &[&str], stdin: Stdio) -> Daemon {
        let mut daemon = Self::spawn("ship", args, "shipping stream=", stdin);
        daemon.http = daemon.listening.get("OTLP/HTTP").copied();
        daemon.grpc = daemon.listening.get("OTLP/gRPC").copied();
        daemon
    }

    /// `teelog gateway --config CONFIG`, once it is running.
    pub fn gateway(config: &Path) -> Daemon {
        Self::spawn("gateway", &["--config", config.to_str().unwrap()], "gateway running", Stdio::null())
    }

    /// `teelog gateway --config CONFIG` under `ulimit -n open_files`, once it is running.
    pub fn gateway_with_open_files(config: &Path, open_files: u32) -> Daemon {
        let mut command = Command::new("sh");
        let script = format!("ulimit -n {open_files} && exec \"$0\" gateway --config \"$1\"");
        command
            .args(["-c", &script, env!("CARGO_BIN_EXE_teelog"), config.to_str().unwrap()])
            .stdin(Stdio::null());
        Self::spawn_command(command, "gateway", "gateway running")
    }

    /// The daemon's resident set size, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        *self.listening.get(listener).unwrap_or_else(|| panic!("no {listener} listener: {}", self.log()))
    }

    fn spawn(command: &str, args: &[&str], ready_mark: &'static str, stdin: Stdio) -> Daemon {
        let mut teelog = Command::new(env!("CARGO_BIN_EXE_teelog"));
        teelog.arg(command).args(args).stdin(stdin);
        Self::spawn_command(teelog, command, ready_mark)
    }

    fn spawn_command(mut command: Command, name: &str, ready_mark: &'static str) -> Daemon {
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (ready, on_ready) = mpsc::channel();
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((before, addr)) = line.split_once(" listening on ") {
                    // `… INFO teelog::serve: OTLP/HTTP listening on 127.0.0.1:4318`
                    let name = before.rsplit(": ").next().unwrap_or(before).to_string();
                    if let Ok(addr) = addr.trim().parse::<SocketAddr>() {
                        let _ = ready.send(Some((name, addr)));
                    }
                }
                if line.contains(ready_mark) {
                    let _ = ready.send(None);
                }
                keep.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let mut daemon = Daemon { child, http: None, grpc: None, listening: BTreeMap::new(), log };
        loop {
            match on_ready.recv_timeout(Duration::from_secs(30)) {
                Ok(Some((name, addr))) => {
                    daemon.listening.insert(name, addr);
                }
                Ok(None) => return daemon,
                Err(_) => panic!("teelog {name} did not start: {}", daemon.log()),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// SIGTERM, then how long the daemon took to exit (at most `bound`, else it is killed and
    /// the test fails), its status and its log.
    pub fn stop_within(mut self, bound: Duration) -> (Duration, ExitStatus, String) {
        let pid = self.child.id().to_string();
        let start = Instant::now();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let took = start.elapsed();
                std::thread::sleep(Duration::from_millis(50));
                return (took, status, self.log());
            }
            assert!(start.elapsed() < bound, "still running {bound:?} after SIGTERM: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the daemon to exit by itself, at most `bound`.
    pub fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(start.elapsed() < bound, "still running after {bound:?}: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log holds `text`.
    pub fn wait_for_log(&self, text: &str, within: Duration) {
        let until = Instant::now() + within;
        while !self.log().contains(text) {
            assert!(Instant::now() < until, "no {text:?} in the log within {within:?}: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    /// A test that fails midway leaves no daemon behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over a fresh HTTP/1.1 connection: the status and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    (status, body)
}

/// Peak resident memory of a running process, in KiB (Linux `VmHWM`).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One HTTP/1.1 POST over a fresh connection: the status and the body.
pub fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response)?;
    let text_end =
        response.windows(4).position(|w| w == b"\r\n\r\n").ok_or(std::io::ErrorKind::UnexpectedEof)?;
    let status = std::str::from_utf8(&response[9..12]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, response[text_end + 4..].to_vec()))
}
