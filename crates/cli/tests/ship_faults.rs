//! `teelog ship` under faults, through the real binary: configurations that would disable it, a
//! chain state that cannot be saved, a stop with stuck clients and files, a producer that keeps
//! its pipe open, and a gateway that refuses a line or stops reading.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;
mod pki;
mod ship_harness;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::s;
use ship_harness::{copy_dir, fixture, http_get, post, stored_records, Daemon, Fixture};

impl Fixture {
    /// A configuration with the identity, a kept spool `spool`, `batch` (keys of `[batch]`)
    /// and `rest` (sections).
    fn config(&self, batch: &str, rest: &str) -> PathBuf {
        let text = format!(
            "identity = {:?}\n[batch]\nmax_delay = \"50ms\"\nheartbeat = \"off\"\n{batch}\n[spool]\ndir = {:?}\nkeep = true\n{rest}\n",
            s(&self.identity),
            s(&self.spool()),
        );
        let path = self.path("ship.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn spool(&self) -> PathBuf {
        self.path("spool")
    }
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool, log: impl Fn() -> String) {
    let until = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < until, "{what}: not within {within:?}: {}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn otlp_json_record(message: &str) -> String {
    format!(
        r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{{"stringValue":"{message}"}}}}]}}]}}]}}"#
    )
}

fn messages(store: &Path) -> Vec<String> {
    stored_records(store).iter().filter_map(|r| r["message"].as_str().map(str::to_string)).collect()
}

#[test]
fn zero_values_that_would_disable_the_shipper_are_refused_naming_the_key() {
    let f = fixture();
    for (section, key, value) in [
        ("sources", "max_line_bytes", "0"),
        ("sources", "max_request_bytes", "0"),
        ("sources", "poll_interval", "\"0s\""),
        ("spool", "segment_bytes", "0"),
        ("batch", "max_bytes", "0"),
        ("batch", "max_records", "0"),
        ("queue", "max_bytes", "0"),
    ] {
        // The key goes into its own section, after the fixture's.
        let text = format!(
            "identity = {:?}\n[spool]\ndir = {:?}\nkeep = true\n{}\n[sources]\nstdin = true\n{}\n{}",
            s(&f.identity),
            s(&f.spool()),
            if section == "spool" { format!("{key} = {value}") } else { String::new() },
            if section == "sources" { format!("{key} = {value}") } else { String::new() },
            if section != "spool" && section != "sources" {
                format!("[{section}]\n{key} = {value}")
            } else {
                String::new()
            },
        );
        let config = f.path("zero.toml");
        std::fs::write(&config, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_teelog"))
            .args(["ship", "--config", s(&config)])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{section}.{key} = {value} was taken: {stderr}");
        let named = stderr.contains(&format!("{section}.{key}: must be more than 0"))
            // A duration is refused as such by its parser, which names the key its own way.
            || (stderr.contains("out of range") && stderr.contains(&format!("\\u{{000a}}in `{section}.{key}`")));
        assert!(named, "{section}.{key}: {stderr}");
    }
}

#[test]
fn a_chain_state_that_cannot_be_saved_is_retried_and_reported_until_it_can() {
    let f = fixture();
    let archive = f.path("archive");
    let config = f.config(
        "",
        &format!(
            "[sources]\notlp_http = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[[sinks]]\nkind = \"store\"\ndir = {:?}",
            s(&archive)
        ),
    );
    let daemon = Daemon::start(&["--config", s(&config)]);
    let (http, metrics) = (daemon.http.unwrap(), daemon.addr("metrics"));
    assert_eq!(http_get(metrics, "/health"), (200, "ok\n".to_string()));
    let json = [("Content-Type", "application/json")];
    assert_eq!(post(http, "/v1/logs", &json, otlp_json_record("before").as_bytes()).unwrap().0, 200);
    wait_until(
        "before at the sink",
        Duration::from_secs(10),
        || messages(&archive) == ["before"],
        || daemon.log(),
    );

    // The state file becomes a directory: every save of it fails until it is a file again.
    let state = f.identity.join("state").join("default.json");
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir_all(state.join("in-the-way")).unwrap();
    // Its records are durable in the spool, so the request is answered.
    assert_eq!(post(http, "/v1/logs", &json, otlp_json_record("during").as_bytes()).unwrap().0, 200);
    wait_until(
        "the health endpoint reports the chain state",
        Duration::from_secs(10),
        || {
            let (status, body) = http_get(metrics, "/health");
            status == 503 && body.starts_with("chain state: ")
        },
        || daemon.log(),
    );
    let (_, text) = http_get(metrics, "/metrics");
    let errors: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("teelog_state_save_errors_total "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(errors >= 1, "{text}");
    daemon.wait_for_log("chain state: ", Duration::from_secs(10));
    // But the batch is not published: no sink gets it before the state that counts it is saved.
    assert_eq!(messages(&f.spool()), ["before", "during"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(messages(&archive), ["before"], "published before its chain state was saved");

    std::fs::remove_dir_all(&state).unwrap();
    wait_until(
        "during at the sink",
        Duration::from_secs(20),
        || messages(&archive).len() == 2,
        || daemon.log(),
    );
    assert_eq!(http_get(metrics, "/health"), (200, "ok\n".to_string()));
    let (_, status, log) = daemon.stop_within(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    assert!(state.is_file());
}

#[test]
fn stdin_lines_are_sealed_after_max_delay_while_the_pipe_stays_open() {
    let f = fixture();
    let config = f.config("", "[sources]\nstdin = true");
    let (daemon, mut stdin) = Daemon::start_with_stdin(&["--config", s(&config)]);
    stdin.write_all(b"{\"message\":\"one\"}\n{\"message\":\"two\"}\n{\"message\":\"three\"}\n").unwrap();
    stdin.flush().unwrap();
    // The producer keeps its pipe open: the lines are sealed all the same.
    wait_until(
        "three lines in the spool",
        Duration::from_secs(10),
        || messages(&f.spool()).len() == 3,
        || daemon.log(),
    );
    assert_eq!(messages(&f.spool()), ["one", "two", "three"]);
    let (_, status, log) = daemon.stop_within(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    drop(stdin);
}

/// A client that connects and sends `bytes`, then neither sends more nor closes.
fn stuck_client(addr: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

#[test]
fn sigterm_stops_the_shipper_within_a_bound_whatever_its_clients_and_files_do() {
    // The bound is the daemon's: 5 s for its sources, then the signer's close and the sinks'
    // drain, which have nothing left to do here.
    let bound = Duration::from_secs(20);
    let mut took = Vec::new();
    for case in [
        "half-sent HTTP body",
        "half-sent gRPC message",
        "FIFO without a writer",
        "endless line",
        "open stdin pipe",
    ] {
        let f = fixture();
        let fifo = f.path("fifo.log");
        let endless = f.path("endless.log");
        let sources = match case {
            "half-sent HTTP body" => "otlp_http = \"127.0.0.1:0\"".to_string(),
            "half-sent gRPC message" => "otlp_grpc = \"127.0.0.1:0\"".to_string(),
            "FIFO without a writer" => {
                assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
                format!("files = [{:?}]\npoll_interval = \"20ms\"", s(&fifo))
            }
            "endless line" => {
                format!("files = [{:?}]\npoll_interval = \"20ms\"\nmax_line_bytes = 1024", s(&endless))
            }
            _ => "stdin = true".to_string(),
        };
        let config = f.config("", &format!("[sources]\n{sources}"));
        let (daemon, stdin) = Daemon::start_with_stdin(&["--config", s(&config)]);
        let mut keep = Vec::new();
        let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let mut writer = None;
        match case {
            "half-sent HTTP body" => {
                let head = "POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"resourceLogs\":";
                keep.push(stuck_client(daemon.http.unwrap(), head.as_bytes()));
            }
            "half-sent gRPC message" => {
                // The HTTP/2 preface and an empty SETTINGS frame, then nothing.
                let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
                hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
                keep.push(stuck_client(daemon.grpc.unwrap(), &hello));
            }
            "endless line" => {
                let (path, writing) = (endless.clone(), writing.clone());
                writer = Some(std::thread::spawn(move || {
                    let mut file = std::fs::File::create(path).unwrap();
                    let chunk = vec![b'x'; 1 << 16];
                    while writing.load(std::sync::atomic::Ordering::Relaxed) {
                        file.write_all(&chunk).unwrap();
                    }
                }));
            }
            _ => {}
        }
        // Let the daemon get stuck in it.
        std::thread::sleep(Duration::from_millis(500));
        let (time, status, log) = daemon.stop_within(bound);
        writing.store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(writer) = writer {
            writer.join().unwrap();
        }
        drop((keep, stdin));
        assert!(status.success(), "{case}: {status}: {log}");
        took.push(format!("{case}: {time:?}"));
    }
    eprintln!("time to stop after SIGTERM: {}", took.join(", "));
}

/// A fake gateway that welcomes each relay client (an old one: no heads) and then reads nothing
/// more.
fn deaf_gateway() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(socket) = socket else { return };
            std::thread::spawn(move || deaf(socket));
        }
    });
    (addr, thread)
}

fn deaf(mut socket: std::net::TcpStream) {
    // The magic and the hello frame.
    let mut magic = [0u8; 8];
    socket.read_exact(&mut magic).unwrap();
    let mut len = [0u8; 4];
    socket.read_exact(&mut len).unwrap();
    let mut hello = vec![0u8; u32::from_be_bytes(len) as usize];
    socket.read_exact(&mut hello).unwrap();
    let welcome = br#"{"welcome":"deaf"}"#;
    socket.write_all(&(welcome.len() as u32).to_be_bytes()).unwrap();
    socket.write_all(welcome).unwrap();
    // Holds the connection without reading until the shipper gives up on it.
    let mut rest = Vec::new();
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let _ = socket.read_to_end(&mut rest);
}

#[test]
fn a_gateway_that_stops_reading_is_given_up_on_within_the_sink_timeout() {
    let f = fixture();
    let (gateway, _thread) = deaf_gateway();
    let config = f.config(
        "",
        &format!(
            "[sources]\nstdin = true\n[[sinks]]\nkind = \"relay\"\naddress = \"{gateway}\"\ntimeout = \"1s\"\n[start]\ngateway_head = \"prefer\"\nwait = \"1s\""
        ),
    );
    let (daemon, mut stdin) = Daemon::start_with_stdin(&["--config", s(&config)]);
    // More than the sockets' buffers hold, so that the write itself has to wait.
    let line = format!("{{\"message\":\"{}\"}}\n", "y".repeat(60_000));
    for _ in 0..300 {
        stdin.write_all(line.as_bytes()).unwrap();
    }
    stdin.flush().unwrap();
    daemon.wait_for_log("took no data for 1s", Duration::from_secs(30));
    let (_, status, log) = daemon.stop_within(Duration::from_secs(30));
    assert!(status.success(), "{log}");
}

#[test]
fn a_line_the_gateway_refuses_as_too_large_is_reported_as_such_and_the_rest_relayed() {
    let f = fixture();
    let gateway_config = f.path("gateway.toml");
    std::fs::write(
        &gateway_config,
        format!(
            "[spool]\ndir = {:?}\n[listen]\nrelay = \"127.0.0.1:0\"\nmax_request_bytes = 65536\n[[sinks]]\nkind = \"store\"\ndir = {:?}\n",
            s(&f.path("gw-spool")),
            s(&f.path("gw-store"))
        ),
    )
    .unwrap();
    let gateway = Daemon::gateway(&gateway_config);
    let relay = gateway.addr("relay");
    // One batch per record: the large one alone is too large for the gateway.
    let config = f.config("max_records = 1", &format!(
        "[sources]\nstdin = true\n[metrics]\nlisten = \"127.0.0.1:0\"\n[[sinks]]\nkind = \"relay\"\naddress = \"{relay}\"\ntimeout = \"2s\""
    ));
    let (daemon, mut stdin) = Daemon::start_with_stdin(&["--config", s(&config)]);
    let large = "z".repeat(100_000);
    for message in ["small 1", large.as_str(), "small 2", large.as_str(), "small 3"] {
        stdin.write_all(format!("{{\"message\":\"{message}\"}}\n").as_bytes()).unwrap();
    }
    stdin.flush().unwrap();
    wait_until(
        "the small records at the gateway",
        Duration::from_secs(30),
        || messages(&f.path("gw-store")) == ["small 1", "small 2", "small 3"],
        || daemon.log() + &gateway.log(),
    );
    // Counted by the sink's task, which may not have counted the last refusal yet.
    wait_until(
        "the refusal counted",
        Duration::from_secs(10),
        || http_get(daemon.addr("metrics"), "/metrics").1.contains("kind=\"too_large\"}"),
        || http_get(daemon.addr("metrics"), "/metrics").1,
    );
    // Each large line is refused once, not sent again and again.
    daemon.wait_for_log("larger than the 65536 bytes the gateway", Duration::from_secs(5));
    let refusals = daemon.log().matches("larger than the 65536 the gateway").count();
    assert_eq!(refusals, 2, "{}", daemon.log());
    drop(stdin);
    let (_, status, log) = daemon.stop_within(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    gateway.stop();
}

/// `teelog verify --json` over a store with the fixture's key: the kinds of its findings.
fn findings(f: &Fixture, store: &Path) -> Vec<String> {
    let pubkey = f.identity.join("public-key.pem");
    let out = common::teelog(&["verify", "--json", "--store", s(store), "--pubkey", s(&pubkey)], b"");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    report["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_spool_lost_while_the_chain_state_survives_never_makes_the_shipper_sign_a_seq_again() {
    let f = fixture();
    let archive = f.path("archive");
    let config = f.config(
        "",
        &format!("[sources]\nstdin = true\n[[sinks]]\nkind = \"store\"\ndir = {:?}", s(&archive)),
    );
    // Run 1 signs and delivers, then dies without a clean stop.
    let (daemon, mut stdin) = Daemon::start_with_stdin(&["--config", s(&config)]);
    for n in 0..5 {
        stdin.write_all(format!("{{\"message\":\"first run {n}\"}}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(80));
    }
    wait_until("run 1 delivered", Duration::from_secs(10), || messages(&archive).len() == 5, || daemon.log());
    daemon.kill_9();
    drop(stdin);
    // The host loses the spool; the identity's state survives.
    std::fs::remove_dir_all(f.spool()).unwrap();

    let (daemon, mut stdin) = Daemon::start_with_stdin(&["--config", s(&config)]);
    for n in 0..5 {
        stdin.write_all(format!("{{\"message\":\"second run {n}\"}}\n").as_bytes()).unwrap();
    }
    stdin.flush().unwrap();
    wait_until(
        "run 2 delivered",
        Duration::from_secs(10),
        || messages(&archive).len() == 10,
        || daemon.log(),
    );
    drop(stdin);
    let (_, status, log) = daemon.stop_within(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    assert!(log.contains("a new epoch starts after the state's head"), "{log}");
    // The sink holds both runs as one chain: no seq signed twice, nothing missing.
    assert_eq!(findings(&f, &archive), Vec::<String>::new());
}

/// The limit without the gateway's head (issue 15) or a TPM counter: a host that restores the
/// state and the spool together from a snapshot makes the shipper sign seqs it signed after the
/// snapshot again. The shipper cannot see it; a verifier of the sink reports the equivocation.
#[test]
fn a_restore_of_state_and_spool_from_one_snapshot_is_reported_by_the_verifier_of_the_sink() {
    let f = fixture();
    let archive = f.path("archive");
    let config = f.config(
        "",
        &format!("[sources]\nstdin = true\n[[sinks]]\nkind = \"store\"\ndir = {:?}", s(&archive)),
    );
    let run = |label: &str, total: usize| {
        let (daemon, mut stdin) = Daemon::start_with_stdin(&["--config", s(&config)]);
        stdin.write_all(format!("{{\"message\":\"{label}\"}}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        wait_until(label, Duration::from_secs(10), || messages(&archive).len() == total, || daemon.log());
        drop(stdin);
        let (_, status, log) = daemon.stop_within(Duration::from_secs(30));
        assert!(status.success(), "{log}");
    };
    run("before the snapshot", 1);
    let (state, snapshot) = (f.identity.join("state"), f.path("snapshot"));
    copy_dir(&state, &snapshot.join("state"));
    copy_dir(&f.spool(), &snapshot.join("spool"));
    run("after the snapshot", 2);
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::remove_dir_all(f.spool()).unwrap();
    copy_dir(&snapshot.join("state"), &state);
    copy_dir(&snapshot.join("spool"), &f.spool());
    run("after the restore", 3);
    assert!(findings(&f, &archive).contains(&"equivocation".to_string()), "{:?}", findings(&f, &archive));
}

#[test]
fn receivers_beyond_loopback_without_a_client_credential_need_an_explicit_flag() {
    let f = fixture();
    for (rest, key) in [
        ("[sources]\notlp_http = \"0.0.0.0:0\"", "sources.otlp_http"),
        ("[sources]\notlp_grpc = \"0.0.0.0:0\"", "sources.otlp_grpc"),
        ("[sources]\nstdin = true\n[metrics]\nlisten = \"0.0.0.0:0\"", "metrics.listen"),
        // TLS alone authenticates the server, not the client.
        (
            "[sources]\notlp_http = \"0.0.0.0:0\"\n[sources.tls]\ncert = \"c\"\nkey = \"k\"",
            "sources.otlp_http",
        ),
    ] {
        let config = f.config("", rest);
        let out = common::teelog(&["ship", "--config", s(&config)], b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(&format!("{key}: 0.0.0.0:0 is beyond loopback")),
            "{stderr}"
        );
    }
    let pki = pki::pki(&f.root);
    let mtls = format!(
        "[sources.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}",
        s(&pki.server_cert),
        s(&pki.server_key),
        s(&pki.ca)
    );
    std::fs::write(f.path("token"), "s3cret\n").unwrap();
    let token = format!("bearer_token_file = {:?}", s(&f.path("token")));
    for (sources, warned) in [
        ("allow_remote_plaintext = true".to_string(), false),
        (token.clone(), true),
        (
            format!(
                "{token}\n[sources.tls]\ncert = {:?}\nkey = {:?}",
                s(&pki.server_cert),
                s(&pki.server_key)
            ),
            false,
        ),
        (mtls, false),
    ] {
        let config = f.config("", &format!("[sources]\notlp_http = \"0.0.0.0:0\"\n{sources}"));
        let daemon = Daemon::start(&["--config", s(&config)]);
        let (_, status, log) = daemon.stop_within(Duration::from_secs(30));
        assert!(status.success(), "{log}");
        assert_eq!(log.contains("crosses the network in the clear"), warned, "{sources}: {log}");
    }
}

#[test]
fn with_a_token_the_receivers_take_only_requests_that_carry_it() {
    let f = fixture();
    std::fs::write(f.path("token"), "s3cret\n").unwrap();
    let config = f.config(
        "",
        &format!(
            "[sources]\notlp_http = \"127.0.0.1:0\"\notlp_grpc = \"127.0.0.1:0\"\nbearer_token_file = {:?}",
            s(&f.path("token"))
        ),
    );
    let daemon = Daemon::start(&["--config", s(&config)]);
    let http = daemon.http.unwrap();
    let body = otlp_json_record("with token");
    let json = ("Content-Type", "application/json");
    assert_eq!(post(http, "/v1/logs", &[json], body.as_bytes()).unwrap().0, 401);
    assert_eq!(
        post(http, "/v1/logs", &[json, ("Authorization", "Bearer wrong")], body.as_bytes()).unwrap().0,
        401
    );
    assert_eq!(
        post(http, "/v1/logs", &[json, ("Authorization", "Bearer s3cret")], body.as_bytes()).unwrap().0,
        200
    );
    let grpc = daemon.grpc.unwrap();
    let request = otlp_request(0, 0, 1, 5);
    let (code, _) = grpc_raw(grpc, &request, &f.root).unwrap_err();
    assert_eq!(code, "UNAUTHENTICATED");
    grpc_raw_with(grpc, &request, &f.root, Some("s3cret")).unwrap();
    let (_, status, log) = daemon.stop_within(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    let stored = stored_records(&f.spool());
    assert_eq!(stored.len(), 2, "{stored:?}");
}

/// An OTLP/protobuf request: one resource with `attributes` attributes of `value_bytes` each,
/// and `records` log records with a body of `body_bytes`, each of which the resource is copied
/// into.
fn otlp_request(attributes: usize, value_bytes: usize, records: usize, body_bytes: usize) -> Vec<u8> {
    use teelog_otlp::common::{any_value::Value, AnyValue, KeyValue};
    use teelog_otlp::logs::{LogRecord, ResourceLogs, ScopeLogs};
    use teelog_otlp::resource::Resource;
    let attribute = |i: usize| KeyValue {
        key: format!("k{i}"),
        value: Some(AnyValue { value: Some(Value::StringValue("v".repeat(value_bytes))) }),
        ..Default::default()
    };
    let request = teelog_otlp::ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: (0..attributes).map(attribute).collect(),
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    LogRecord {
                        body: (body_bytes > 0)
                            .then(|| AnyValue { value: Some(Value::StringValue("b".repeat(body_bytes))) }),
                        ..Default::default()
                    };
                    records
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    teelog_otlp::encode_protobuf(&request)
}

/// One more `resource_logs` whose `resource` is given twice: prost merges the two, so a body with
/// it is not read in place but decoded by prost (teelog_otlp::WireRequest).
const NOT_PLAIN_RESOURCE_LOGS: &[u8] = b"\x0a\x04\x0a\x00\x0a\x00";

#[test]
fn hostile_and_concurrent_otlp_requests_stay_within_the_memory_budget() {
    let f = fixture();
    let config = f.config(
        "",
        "[sources]\notlp_http = \"127.0.0.1:0\"\nmax_request_bytes = 4194304\nmax_inflight_bytes = 16777216",
    );
    let daemon = Daemon::start(&["--config", s(&config)]);
    let http = daemon.http.unwrap();
    let protobuf = [("Content-Type", "application/x-protobuf")];
    // ~145 KB: a 104 KB resource copied into 18 000 records would map to 1.9 GB.
    let bomb = otlp_request(16, 6500, 18_000, 0);
    assert!(bomb.len() < 150_000, "{}", bomb.len());
    let (status, body) = post(http, "/v1/logs", &protobuf, &bomb).unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("max_inflight_bytes"));
    // 4 MiB of empty log records: 2 million of them. Read in place, they map to records that
    // come to more than the budget; decoded by prost (which a body that is not plain is: here a
    // resource given twice, which prost merges), they would decode to hundreds of MB.
    let empty = otlp_request(0, 0, 2_000_000, 0);
    let mut not_plain = empty.clone();
    not_plain.extend_from_slice(NOT_PLAIN_RESOURCE_LOGS);
    for (body, refusal) in [(&empty, "records come to more than"), (&not_plain, "decodes to more than")] {
        let (status, answer) = post(http, "/v1/logs", &protobuf, body).unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains(refusal) && answer.contains("max_inflight_bytes"), "{answer}");
    }
    // The same in OTLP/JSON.
    let records = vec!["{}"; 1_000_000].join(",");
    let empty_json = format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{records}]}}]}}]}}"#);
    let (status, body) =
        post(http, "/v1/logs", &[("Content-Type", "application/json")], empty_json.as_bytes()).unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let after_bomb = ship_harness::peak_rss_kib(daemon.pid());
    // Eight clients at once, each with a 3 MiB request of honest records.
    let large = otlp_request(1, 16, 3000, 1000);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let large = large.clone();
            std::thread::spawn(move || {
                post(http, "/v1/logs", &[("Content-Type", "application/x-protobuf")], &large).map(|r| r.0)
            })
        })
        .collect();
    let statuses: Vec<_> = clients.into_iter().map(|c| c.join().unwrap().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    let peak = ship_harness::peak_rss_kib(daemon.pid());
    eprintln!("peak RSS: {after_bomb} KiB after the resource-copy and empty-record requests, {peak} KiB after 8 concurrent requests ({statuses:?})");
    assert!(peak < 400 * 1024, "peak RSS {peak} KiB");
    let (_, status, log) = daemon.stop_within(Duration::from_secs(30));
    assert!(status.success(), "{log}");
}

#[test]
fn a_request_held_by_a_full_spool_is_answered_in_time_and_its_retry_is_not_signed_twice() {
    let f = fixture();
    // The gateway is not there yet: the spool fills past its bound and the signer waits.
    let gateway_addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = f.config(
        "",
        &format!(
            "[queue]\nmax_wait = \"1s\"\n[sources]\notlp_http = \"127.0.0.1:0\"\n[[sinks]]\nkind = \"relay\"\naddress = \"{gateway_addr}\"\ntimeout = \"1s\"\n[start]\ngateway_head = \"prefer\"\nwait = \"1s\""
        ),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace("keep = true", "keep = true\nmax_bytes = 1");
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&["--config", s(&config)]);
    let http = daemon.http.unwrap();
    let json = [("Content-Type", "application/json")];
    // The spool is measured as each batch is handed to its writer, so the bound holds from the
    // first or second batch on: records are posted until one is held.
    let mut posted = 0;
    let held = loop {
        let body = otlp_json_record(&format!("record {posted}"));
        posted += 1;
        let start = Instant::now();
        let (status, answer) = post(http, "/v1/logs", &json, body.as_bytes()).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5), "held for {:?}", start.elapsed());
        if status == 503 {
            break body;
        }
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        assert!(posted < 5, "no request was held: {}", daemon.log());
    };
    // Retried while still held: told to retry again, in time.
    let start = Instant::now();
    assert_eq!(post(http, "/v1/logs", &json, held.as_bytes()).unwrap().0, 503);
    assert!(start.elapsed() < Duration::from_secs(5), "held for {:?}", start.elapsed());
    // The gateway comes: the spool drains, the held request is sealed, and its retry is
    // answered with that outcome.
    let gateway_config = f.path("gateway.toml");
    std::fs::write(
        &gateway_config,
        format!(
            "[spool]\ndir = {:?}\nkeep = true\n[listen]\nrelay = \"{gateway_addr}\"\n",
            s(&f.path("gw-spool"))
        ),
    )
    .unwrap();
    let gateway = Daemon::gateway(&gateway_config);
    wait_until(
        "the retry answered 200",
        Duration::from_secs(30),
        || post(http, "/v1/logs", &json, held.as_bytes()).unwrap().0 == 200,
        || daemon.log(),
    );
    let expected: Vec<String> = (0..posted).map(|n| format!("record {n}")).collect();
    assert_eq!(messages(&f.spool()), expected, "each record once");
    daemon.wait_for_log("not signed again", Duration::from_secs(5));
    let (_, status, log) = daemon.stop_within(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    gateway.stop();
}

#[test]
fn a_clock_behind_the_previous_batch_is_reported_at_sealing() {
    let f = fixture();
    let config = f.config("", "[sources]\nstdin = true\n[metrics]\nlisten = \"127.0.0.1:0\"");
    let run = |message: &str| {
        let (daemon, mut stdin) = Daemon::start_with_stdin(&["--config", s(&config)]);
        stdin.write_all(format!("{{\"message\":\"{message}\"}}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        wait_until(
            message,
            Duration::from_secs(10),
            || messages(&f.spool()).contains(&message.to_string()),
            || daemon.log(),
        );
        let (_, metrics) = http_get(daemon.addr("metrics"), "/metrics");
        drop(stdin);
        let (_, status, log) = daemon.stop_within(Duration::from_secs(30));
        assert!(status.success(), "{log}");
        (log, metrics)
    };
    let (log, metrics) = run("on time");
    assert!(!log.contains("clock:"), "{log}");
    assert!(metrics.contains("teelog_clock_anomalies_total 0"), "{metrics}");
    // The previous batch, as the chain state remembers it, was sealed in 2100.
    let state = f.identity.join("state").join("default.json");
    let mut saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert!(saved["prev_sealed_at"].is_number(), "{saved}");
    saved["prev_sealed_at"] = 4_102_444_800_000_000_000u64.into();
    std::fs::write(&state, saved.to_string()).unwrap();
    let (log, metrics) = run("late");
    assert!(
        log.contains("clock: sealed_at") && log.contains("is before the previous batch's 2100-01-01"),
        "{log}"
    );
    assert!(metrics.contains("teelog_clock_anomalies_total 1"), "{metrics}");
}

#[test]
fn one_record_that_does_not_decode_is_refused_alone_with_partial_success() {
    use prost::Message;
    let f = fixture();
    let config = f.config("", "[sources]\notlp_http = \"127.0.0.1:0\"");
    let daemon = Daemon::start(&["--config", s(&config)]);
    let mut body = otlp_request(0, 0, 1000, 0);
    // Record 500's body is "BAD", then its bytes are made not UTF-8.
    let mut request = teelog_otlp::decode_protobuf(&body).unwrap();
    for (n, record) in request.resource_logs[0].scope_logs[0].log_records.iter_mut().enumerate() {
        let text = if n == 500 { "BAD".to_string() } else { format!("record {n}") };
        record.body = Some(teelog_otlp::common::AnyValue {
            value: Some(teelog_otlp::common::any_value::Value::StringValue(text)),
        });
    }
    body = teelog_otlp::encode_protobuf(&request);
    let at = body.windows(3).position(|w| w == b"BAD").unwrap();
    body[at] = 0xff;
    let (status, answer) =
        post(daemon.http.unwrap(), "/v1/logs", &[("Content-Type", "application/x-protobuf")], &body).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer = teelog_otlp::ExportLogsServiceResponse::decode(&answer[..]).unwrap();
    let partial = answer.partial_success.unwrap();
    assert_eq!(partial.rejected_log_records, 1);
    assert!(partial.error_message.contains("log_records[500]"), "{}", partial.error_message);
    let (_, status, log) = daemon.stop_within(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    let stored = stored_records(&f.spool());
    let bodies: Vec<&str> =
        stored.iter().filter_map(|r| r["message"].as_str()).filter(|m| m.starts_with("record ")).collect();
    assert_eq!(bodies.len(), 999, "the other 999 are signed");
    let notices: Vec<_> = stored.iter().filter(|r| r["teelog_notice"] == "record_refused").collect();
    assert_eq!(notices.len(), 1, "a signed notice stands for the bad one");
}

/// `grpc_raw.py`: the body sent as is over gRPC; Ok(response) or Err((code, details)).
fn grpc_raw(addr: std::net::SocketAddr, body: &[u8], dir: &Path) -> Result<Vec<u8>, (String, String)> {
    grpc_raw_with(addr, body, dir, None)
}

fn grpc_raw_with(
    addr: std::net::SocketAddr,
    body: &[u8],
    dir: &Path,
    token: Option<&str>,
) -> Result<Vec<u8>, (String, String)> {
    let python =
        std::env::var("TEELOG_OTEL_PYTHON").unwrap_or_else(|_| "/var/tmp/teelog-otel-venv/bin/python".into());
    let file = dir.join("body.bin");
    std::fs::write(&file, body).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otel/grpc_raw.py");
    let out = Command::new(&python).args([script, &addr.to_string(), s(&file)]).args(token).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match text.split_once(' ').or_else(|| (text == "OK").then_some(("OK", ""))) {
        Some(("OK", hex)) => Ok(hex::decode(hex).unwrap()),
        Some(("ERR", rest)) => {
            let (code, details) = rest.split_once(' ').unwrap_or((rest, ""));
            Err((code.to_string(), details.to_string()))
        }
        _ => panic!("{text}: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[test]
fn grpc_answers_as_otlp_says_and_refuses_a_bad_record_alone() {
    use prost::Message;
    let f = fixture();
    let config = f.config("", "[sources]\notlp_grpc = \"127.0.0.1:0\"");
    let daemon = Daemon::start(&["--config", s(&config)]);
    let grpc = daemon.grpc.unwrap();
    // Not protobuf: INVALID_ARGUMENT, which clients do not retry (not INTERNAL).
    let (code, details) = grpc_raw(grpc, b"\xff\xff\xff", &f.root).unwrap_err();
    assert_eq!(code, "INVALID_ARGUMENT", "{details}");
    // 4 MiB of empty records that prost would decode to more than the budget: refused before
    // they are built, for good. (Read in place, the same records fit the default budget.)
    let mut not_plain = otlp_request(0, 0, 2_000_000, 0);
    not_plain.extend_from_slice(NOT_PLAIN_RESOURCE_LOGS);
    let (code, details) = grpc_raw(grpc, &not_plain, &f.root).unwrap_err();
    assert_eq!(code, "INVALID_ARGUMENT", "{details}");
    assert!(details.contains("decodes to more than"), "{details}");
    // One record of three is not UTF-8: the two others are signed.
    let mut request = teelog_otlp::decode_protobuf(&otlp_request(0, 0, 3, 0)).unwrap();
    for (n, record) in request.resource_logs[0].scope_logs[0].log_records.iter_mut().enumerate() {
        let text = if n == 1 { "BAD".to_string() } else { format!("record {n}") };
        record.body = Some(teelog_otlp::common::AnyValue {
            value: Some(teelog_otlp::common::any_value::Value::StringValue(text)),
        });
    }
    let mut body = teelog_otlp::encode_protobuf(&request);
    let at = body.windows(3).position(|w| w == b"BAD").unwrap();
    body[at] = 0xff;
    let answer = grpc_raw(grpc, &body, &f.root).unwrap();
    let answer = teelog_otlp::ExportLogsServiceResponse::decode(&answer[..]).unwrap();
    assert_eq!(answer.partial_success.map(|p| p.rejected_log_records), Some(1));
    let (_, status, log) = daemon.stop_within(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    let messages = messages(&f.spool());
    assert_eq!(messages.iter().filter(|m| m.starts_with("record ")).count(), 2, "{messages:?}");
}

/// The TPM goes away under a running shipper: its signer fails, and the daemon stops with an
/// error rather than stay up taking records it cannot sign.
#[test]
fn a_signer_that_fails_stops_the_daemon_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = teelog_tpm::swtpm::Swtpm::manufacture_and_start(&dir.path().join("tpm")).unwrap();
    let tcti = tpm.tcti.to_tools_string();
    let (id, ca, spool) = (dir.path().join("id"), dir.path().join("ca"), dir.path().join("spool"));
    let args =
        ["keygen", "--tpm", &tcti, "--ek-ca", s(&tpm.ek_ca), "--enrollment-ca", s(&ca), "--out", s(&id)];
    let out = common::teelog(&args, b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ship = [
        "--identity",
        s(&id),
        "--spool",
        s(&spool),
        "--keep-spool",
        "--stdin",
        "--heartbeat",
        "off",
        "--max-delay",
        "20ms",
    ];
    let (mut daemon, mut stdin) = Daemon::start_with_stdin(&ship);
    stdin.write_all(b"{\"message\":\"signed by the TPM\"}\n").unwrap();
    stdin.flush().unwrap();
    wait_until("the first record", Duration::from_secs(20), || messages(&spool).len() == 1, || daemon.log());
    drop(tpm);
    stdin.write_all(b"{\"message\":\"no TPM to sign it\"}\n").unwrap();
    stdin.flush().unwrap();
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "{}", daemon.log());
    assert!(daemon.log().contains("the signer stopped"), "{}", daemon.log());
    assert_eq!(messages(&spool), ["signed by the TPM"]);
}
