//! A restart takes its head from outside the storage it writes to (issue 15 §2): a shipper
//! without chain state asks its relay gateway where the stream stands and links its new epoch
//! there, so a tail cut from its local storage before the restart is not sealed over with a
//! clean-looking link. Against the real `teelog ship` and `teelog gateway`, and `teelog verify`
//! on what the gateway stored.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;
mod ship_harness;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{report, s, teelog};
use serde_json::Value;
use ship_harness::{copy_dir, fixture, free_port, http_get, Daemon, Fixture};

fn records(range: std::ops::Range<u32>) -> Vec<u8> {
    range.map(|i| format!("{{\"message\":\"record {i}\",\"n\":{i}}}\n")).collect::<String>().into_bytes()
}

/// `teelog ship --stdin` of `input` into the kept spool `ROOT/spool` with the identity `ROOT/id`, relayed to `relay`, with the
/// `[start]` section given: its output.
fn ship(root: &Path, relay: &str, start: &str, input: &[u8]) -> std::process::Output {
    let config = root.join("ship.toml");
    std::fs::write(&config, format!("[start]\n{start}\n")).unwrap();
    let (spool, identity) = (root.join("spool"), root.join("id"));
    let args = [
        "ship",
        "--config",
        s(&config),
        "--identity",
        s(&identity),
        "--stream",
        "app",
        "--spool",
        s(&spool),
        "--keep-spool",
        "--stdin",
        "--sink-relay",
        relay,
        "--max-records",
        "5",
        "--heartbeat",
        "off",
    ];
    teelog(&args, input)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The batch lines of the store in `dir` (one segment in these tests), as (header, line).
fn batches(dir: &Path) -> Vec<(Value, String)> {
    let mut out = Vec::new();
    for segment in teelog_store::segments(dir).unwrap() {
        for line in std::fs::read_to_string(segment).unwrap().lines() {
            let value: Value = serde_json::from_str(line).unwrap();
            if value.get("header").is_some() {
                out.push((value["header"].clone(), line.to_string()));
            }
        }
    }
    out
}

/// The first run: 20 records in 4 batches, delivered. Then local storage loses its tail (the
/// last two batches) and the chain state, as a host would arrange before a restart.
fn first_run_then_cut(f: &Fixture, relay: &str) -> Vec<(Value, String)> {
    let out = ship(&f.root, relay, "", &records(0..20));
    assert!(out.status.success(), "{}", stderr(&out));
    let spool = f.path("spool");
    let before = batches(&spool);
    assert_eq!(before.len(), 4, "{before:?}");
    let segments = teelog_store::segments(&spool).unwrap();
    let segment = segments.last().unwrap();
    let text = std::fs::read_to_string(segment).unwrap();
    let cut_at = text.find(&before[2].1).unwrap();
    std::fs::write(segment, &text[..cut_at]).unwrap();
    std::fs::remove_dir_all(f.identity.join("state")).unwrap();
    assert_eq!(batches(&spool).len(), 2);
    before
}

/// `teelog verify` of the gateway's store: exit code and finding kinds.
fn verify_gateway_store(f: &Fixture) -> (i32, Value, Vec<String>) {
    let pubkey = f.identity.join("public-key.pem");
    report(&teelog(&["verify", "--store", s(&f.path("gw-store")), "--pubkey", s(&pubkey), "--json"], b""))
}

/// The header hash a batch line's header has (the `prev` of a batch that follows it).
fn header_hash(line: &str) -> String {
    let batch = teelog_core::batch::ParsedBatch::parse(line.as_bytes()).unwrap();
    hex::encode(batch.header_hash)
}

/// Waits until the gateway's store holds `n` batches.
fn wait_for_store(f: &Fixture, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while batches(&f.path("gw-store")).len() < n {
        assert!(
            Instant::now() < deadline,
            "the gateway's store holds {} of {n}",
            batches(&f.path("gw-store")).len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_restart_links_to_the_gateways_head_not_to_a_cut_local_tail() {
    let f = fixture();
    let gateway = Daemon::gateway(&f.relay_gateway("127.0.0.1:0", &[], ""));
    let relay = gateway.addr("relay").to_string();
    let before = first_run_then_cut(&f, &relay);

    let out = ship(&f.root, &relay, "", &records(20..25));
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("is not the gateway's and is older"),
        "the shipper says local storage was behind: {log}"
    );
    // The new epoch links to the gateway's head: the fourth batch, which local storage lost.
    let after = batches(&f.path("spool"));
    let first_new = &after[2].0;
    assert_ne!(first_new["epoch"], before[0].0["epoch"]);
    assert_eq!(first_new["seq"], 1);
    assert_eq!(first_new["prev"].as_str(), Some(header_hash(&before[3].1).as_str()));

    wait_for_store(&f, 5);
    let (code, json, kinds) = verify_gateway_store(&f);
    assert_eq!((code, kinds.len()), (0, 0), "a clean hand-over: {json}");
    assert_eq!(json["records"].as_u64(), Some(25), "{json}");
    let (_, metrics) = http_get(gateway.addr("metrics"), "/metrics");
    assert!(!metrics.contains("findings_total{kind="), "{metrics}");
    gateway.stop();
}

/// Issue 21 §4: the host restores the chain state and the spool together from an older snapshot.
/// Both agree with each other, so only the gateway can tell: it holds the epoch past where the
/// state stands, and the shipper starts a new epoch after the gateway's head instead of signing
/// those seqs again with other records. The gateway's store verifies without a finding.
#[test]
fn a_state_and_spool_rolled_back_together_start_a_new_epoch_after_the_gateways_head() {
    let f = fixture();
    let gateway = Daemon::gateway(&f.relay_gateway("127.0.0.1:0", &[], ""));
    let relay = gateway.addr("relay").to_string();
    let out = ship(&f.root, &relay, "", &records(0..10));
    assert!(out.status.success(), "{}", stderr(&out));
    let (state, spool, snapshot) = (f.identity.join("state"), f.path("spool"), f.path("snapshot"));
    copy_dir(&state, &snapshot.join("state"));
    copy_dir(&spool, &snapshot.join("spool"));
    let out = ship(&f.root, &relay, "", &records(10..20));
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for_store(&f, 4);
    let before = batches(&spool);

    std::fs::remove_dir_all(&state).unwrap();
    std::fs::remove_dir_all(&spool).unwrap();
    copy_dir(&snapshot.join("state"), &state);
    copy_dir(&snapshot.join("spool"), &spool);
    let out = ship(&f.root, &relay, "", &records(20..25));
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("the state was rolled back"), "{log}");
    let after = batches(&spool);
    let first_new = &after.last().unwrap().0;
    assert_ne!(first_new["epoch"], before[0].0["epoch"], "a new epoch");
    assert_eq!(
        first_new["prev"].as_str(),
        Some(header_hash(&before[3].1).as_str()),
        "after the gateway's head"
    );

    wait_for_store(&f, 5);
    let (code, json, kinds) = verify_gateway_store(&f);
    assert_eq!((code, kinds.len()), (0, 0), "no seq signed twice: {json}");
    assert_eq!(json["records"].as_u64(), Some(25), "{json}");
    gateway.stop();
}

/// Issue 15 §4: two replicas on one stream, each its own instance. A replica's first start
/// (`start.instance = "new"`) begins an instance and logs its genesis epoch; a later start without
/// chain state names that instance and links to its head, not to the other replica's; without
/// the name it refuses, the gateway holding two heads. The gateway's store verifies with two
/// instances allowed.
#[test]
fn a_replica_starting_without_state_links_to_its_own_instances_head() {
    let f = fixture();
    let b = f.path("b");
    common::keygen(&b.join("id"), &[]);
    let gateway = Daemon::gateway(&f.relay_gateway("127.0.0.1:0", &[b.join("id/public-key.pem")], ""));
    let relay = gateway.addr("relay").to_string();
    let genesis = |root: &Path, input: &[u8]| {
        let out = ship(root, &relay, "instance = 'new'", input);
        let log = stderr(&out);
        assert!(out.status.success(), "{log}");
        let epoch = batches(&root.join("spool"))[0].0["epoch"].as_str().unwrap().to_string();
        assert!(log.contains(&format!("set start.instance = \"{epoch}\"")), "{log}");
        epoch
    };
    let a_instance = genesis(&f.root, &records(0..10));
    let b_instance = genesis(&b, &records(100..110));
    assert_ne!(a_instance, b_instance);
    wait_for_store(&f, 4);
    let a_head = header_hash(&batches(&f.path("spool")).last().unwrap().1);

    // A's chain state is lost: unnamed, two heads; named, A's own.
    std::fs::remove_dir_all(f.identity.join("state")).unwrap();
    let out = ship(&f.root, &relay, "", &records(10..15));
    assert!(!out.status.success() && stderr(&out).contains("holds 2 heads"), "{}", stderr(&out));
    let out = ship(&f.root, &relay, &format!("instance = '{a_instance}'"), &records(10..15));
    assert!(out.status.success(), "{}", stderr(&out));
    let after = batches(&f.path("spool"));
    let first_new = &after.last().unwrap().0;
    assert_eq!(first_new["prev"].as_str(), Some(a_head.as_str()), "linked to A's head: {first_new}");

    wait_for_store(&f, 5);
    let (pubkeys, store) =
        ([f.identity.join("public-key.pem"), b.join("id/public-key.pem")], f.path("gw-store"));
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--store", s(&store), "--json"];
        for key in &pubkeys {
            args.extend(["--pubkey", s(key)]);
        }
        args.extend_from_slice(extra);
        report(&teelog(&args, b""))
    };
    let (code, json, kinds) = verify(&["--instances", "2"]);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    assert_eq!(json["records"].as_u64(), Some(25), "{json}");
    gateway.stop();
}

#[test]
fn a_restart_linked_to_a_cut_tail_is_found_by_the_gateway_verify_and_audit() {
    let f = fixture();
    let relay = free_port();
    let loki = teelog_fake_loki::FakeLoki::start().unwrap();
    let config = f.relay_gateway(&relay, &[], &format!("[[sinks]]\nkind = 'loki'\nurl = '{}'\n", loki.url()));
    let gateway = Daemon::gateway(&config);
    first_run_then_cut(&f, &relay);
    // The gateway is down at the restart and the shipper is told to fall back to local storage:
    // it links to the cut tail, says so, and the gateway sees the fork once it is back.
    gateway.kill_9();
    let shipper = std::thread::spawn({
        let (root, relay) = (f.root.clone(), relay.clone());
        move || ship(&root, &relay, "gateway_head = 'prefer'\nwait = '1s'", &records(20..25))
    });
    std::thread::sleep(Duration::from_millis(2500));
    let gateway = Daemon::gateway(&config);
    let out = shipper.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("start.gateway_head = \"prefer\""), "{}", stderr(&out));

    wait_for_store(&f, 5);
    let (code, json, kinds) = verify_gateway_store(&f);
    assert_eq!(code, 1, "{json}");
    assert!(!kinds.is_empty(), "the cut tail and the fork are findings: {json}");
    let (_, metrics) = http_get(gateway.addr("metrics"), "/metrics");
    assert!(metrics.contains("findings_total{kind="), "the gateway reports it too: {metrics}");
    eprintln!("verify found {kinds:?}");
    // And `audit` of what the gateway put in Loki.
    let from = teelog_core::timestamp::format_rfc3339(teelog_deliver::clock::now() - 86_400_000_000_000);
    let pubkey = f.identity.join("public-key.pem");
    let deadline = Instant::now() + Duration::from_secs(60);
    let audited = loop {
        let out =
            teelog(&["audit", "--loki", loki.url(), "--from", &from, "--pubkey", s(&pubkey), "--json"], b"");
        let audited = report(&out);
        if audited.1["batches"].as_u64() >= Some(5) || Instant::now() > deadline {
            break audited;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(audited.0, 1, "{}", audited.1);
    assert!(audited.2.contains(&"chain_break".to_string()), "{}", audited.1);

    // The stream is forked at the gateway now: a further restart without state is not given
    // one of its two heads to pick from, and refuses to start.
    std::fs::remove_dir_all(f.identity.join("state")).unwrap();
    let out = ship(&f.root, &relay, "", &records(25..26));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("holds 2 heads of stream \"app\""), "{}", stderr(&out));
    gateway.stop();
}

#[test]
fn without_the_gateway_a_restart_without_state_refuses_to_start_by_default() {
    let f = fixture();
    let relay = free_port();
    let config = f.relay_gateway(&relay, &[], "");
    let gateway = Daemon::gateway(&config);
    first_run_then_cut(&f, &relay);
    gateway.kill_9();
    let started = Instant::now();
    let out = ship(&f.root, &relay, "wait = '2s'", &records(20..25));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(30));
    let log = stderr(&out);
    assert!(log.contains(&format!("the gateway at {relay}")) && log.contains("gateway_head"), "{log}");
    // Nothing was signed: the spool still ends with the cut tail.
    assert_eq!(batches(&f.path("spool")).len(), 2);
}

#[test]
fn a_followed_head_the_gateway_has_moved_past_stops_the_start() {
    let f = fixture();
    let gateway = Daemon::gateway(&f.relay_gateway("127.0.0.1:0", &[], ""));
    let relay = gateway.addr("relay").to_string();
    first_run_then_cut(&f, &relay);
    // A new identity made to follow the cut spool: its document attests the second batch, while
    // the gateway holds four.
    let (follower, spool, follower_spool) = (f.path("follower"), f.path("spool"), f.path("follower-spool"));
    let pubkey = f.identity.join("public-key.pem");
    let args = [
        "keygen",
        "--dev",
        "--out",
        s(&follower),
        "--follow",
        s(&spool),
        "--stream",
        "app",
        "--pubkey",
        s(&pubkey),
    ];
    let out = teelog(&args, b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let args = [
        "ship",
        "--identity",
        s(&follower),
        "--stream",
        "app",
        "--spool",
        s(&follower_spool),
        "--stdin",
        "--sink-relay",
        &relay,
    ];
    let out = teelog(&args, b"{\"n\":1}\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("attests that its first epoch follows header") && log.contains("up to seq 4"),
        "{log}"
    );
    assert!(
        !f.path("follower-spool").join("segment-1.ndjson").exists()
            || batches(&f.path("follower-spool")).is_empty()
    );
    gateway.stop();
}

/// Frames of the relay protocol, written by hand: the magic and a hello for `stream`.
fn opening(stream: &str, heads: bool) -> Vec<u8> {
    let hello = serde_json::json!({"relay": 1, "stream": stream, "heads": heads}).to_string();
    let mut out = b"TEELOGR1".to_vec();
    out.extend((hello.len() as u32).to_be_bytes());
    out.extend(hello.as_bytes());
    out
}

/// The next frame's payload on `socket`, as JSON; None once the gateway closed it.
fn next_message(socket: &mut std::net::TcpStream) -> Option<Value> {
    use std::io::Read;
    let mut len = [0u8; 4];
    socket.read_exact(&mut len).ok()?;
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    socket.read_exact(&mut payload).ok()?;
    serde_json::from_slice(&payload).ok()
}

/// A relay connection to `relay` that said its hello and was welcomed: the welcome.
fn relay_connection(relay: std::net::SocketAddr, stream: &str, heads: bool) -> (std::net::TcpStream, Value) {
    use std::io::Write;
    let mut socket = std::net::TcpStream::connect(relay).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    socket.write_all(&opening(stream, heads)).unwrap();
    let welcome = next_message(&mut socket).unwrap();
    (socket, welcome)
}

#[test]
fn a_hello_asking_for_the_heads_ends_the_streams_earlier_connections_first() {
    let f = fixture();
    let gateway = Daemon::gateway(&f.relay_gateway("127.0.0.1:0", &[], ""));
    let relay = gateway.addr("relay");
    // An earlier run's connection, still open, and one of another stream.
    let (mut earlier, welcome) = relay_connection(relay, "app", false);
    assert!(welcome["welcome"].is_string(), "the welcome a version-1 client reads: {welcome}");
    let (mut other, _) = relay_connection(relay, "other", false);
    let (_asking, welcome) = relay_connection(relay, "app", true);
    assert_eq!(
        (welcome["welcome"]["tips"].as_u64(), welcome["welcome"]["heads"].as_array().map(Vec::len)),
        (Some(0), Some(0)),
        "{welcome}"
    );
    assert_eq!(next_message(&mut earlier), None, "the stream's earlier connection was ended");
    other.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut byte = [0u8; 1];
    let still_open = std::io::Read::read(&mut other, &mut byte)
        .is_err_and(|e| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
    assert!(still_open, "another stream's connection is left alone");
    gateway.stop();
}
