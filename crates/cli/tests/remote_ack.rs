//! End-to-end acknowledgement (issue 15 §3), against the real `teelog ship` and `teelog gateway`:
//! with `ack = "remote"` an OTLP export is answered only once the gateway holds its batch, kill -9
//! of either side under load loses nothing that was answered and signs nothing twice, and a
//! one-shot `ship --stdin` that could not deliver says so and exits non-zero.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;
mod ship_harness;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{report, s, teelog};
use serde_json::{json, Value};
use ship_harness::{fixture, free_port, http_get, post, Daemon, Fixture};

/// An OTLP/JSON request of records numbered `range` (attribute `n`).
fn otlp_json(range: std::ops::Range<u64>) -> Vec<u8> {
    let records: Vec<Value> = range
        .map(|n| {
            json!({
                "timeUnixNano": (1_700_000_000_000_000_000u64 + n).to_string(),
                "body": {"stringValue": format!("payment {n} approved")},
                "attributes": [{"key": "n", "value": {"intValue": n.to_string()}}],
            })
        })
        .collect();
    json!({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).to_string().into_bytes()
}

fn export(addr: SocketAddr, body: &[u8]) -> u16 {
    post(addr, "/v1/logs", &[("Content-Type", "application/json")], body).map_or(0, |(status, _)| status)
}

/// Each record number in the store in `dir`, with the distinct batches (epoch, seq) holding it.
fn stored(dir: &Path) -> BTreeMap<u64, BTreeSet<(String, u64)>> {
    let mut out: BTreeMap<u64, BTreeSet<(String, u64)>> = BTreeMap::new();
    let Ok(segments) = teelog_store::segments(dir) else { return out };
    for segment in segments {
        for line in std::fs::read_to_string(segment).unwrap().lines() {
            let Ok(batch) = serde_json::from_str::<Value>(line) else { continue };
            let Some(records) = batch["records"].as_array() else { continue };
            let place = (
                batch["header"]["epoch"].as_str().unwrap().to_string(),
                batch["header"]["seq"].as_u64().unwrap(),
            );
            for record in records {
                if let Some(n) = record["attributes"]["n"].as_u64() {
                    out.entry(n).or_default().insert(place.clone());
                }
            }
        }
    }
    out
}

/// The shipper: OTLP/HTTP on `otlp`, relayed to `relay` with `ack = "remote"`.
fn shipper(f: &Fixture, otlp: &str, relay: &str) -> Daemon {
    shipper_with(f, &f.path("spool"), "ack = 'remote'", otlp, relay)
}

/// The shipper with its spool in `spool` and `ack` (a line of its configuration).
fn shipper_with(f: &Fixture, spool: &Path, ack: &str, otlp: &str, relay: &str) -> Daemon {
    let config = f.path("ship.toml");
    std::fs::write(&config, format!("{ack}\n[queue]\nmax_wait = '2s'\n[start]\nwait = '20s'\n")).unwrap();
    Daemon::start(&[
        "--config",
        s(&config),
        "--identity",
        s(&f.identity),
        "--stream",
        "app",
        "--spool",
        s(spool),
        "--otlp-http",
        otlp,
        "--sink-relay",
        relay,
        "--metrics",
        "127.0.0.1:0",
        "--max-delay",
        "20ms",
        "--heartbeat",
        "off",
    ])
}

fn verify_gateway_store(f: &Fixture) -> (i32, Value, Vec<String>) {
    let pubkey = f.identity.join("public-key.pem");
    report(&teelog(&["verify", "--store", s(&f.path("gw-store")), "--pubkey", s(&pubkey), "--json"], b""))
}

#[test]
fn with_ack_remote_an_export_is_answered_only_once_the_gateway_holds_it() {
    let f = fixture();
    let relay = free_port();
    let config = f.relay_gateway(&relay, &[], "");
    let gateway = Daemon::gateway(&config);
    let ship = shipper(&f, "127.0.0.1:0", &relay);
    let otlp = ship.http.unwrap();
    ship.wait_for_log(&format!("sinks=relay-1 (relay {relay})"), Duration::from_secs(5));
    // The gateway's word comes over plain TCP here: said at start.
    ship.wait_for_log("relay sink relay-1 speaks to its gateway without TLS", Duration::from_secs(5));
    assert_eq!(export(otlp, &otlp_json(0..10)), 200);

    // The gateway gone, an export is held and answered "retry", not 200, and the sink's lag
    // counts the undelivered batch while it is away.
    gateway.kill_9();
    let body = otlp_json(10..20);
    assert_eq!(export(otlp, &body), 503);
    let (_, metrics) = http_get(ship.addr("metrics"), "/metrics");
    let lag = metrics
        .lines()
        .find_map(|l| l.strip_prefix("teelog_sink_lag_bytes{sink=\"relay-1\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(lag.is_some_and(|lag| lag > 0), "{metrics}");

    // Back, the retry of the same request is answered once the gateway has it, signed once.
    // (The relay sink retries with a growing backoff, so the answer may take a few tries.)
    let gateway = Daemon::gateway(&config);
    let deadline = Instant::now() + Duration::from_secs(60);
    while export(otlp, &body) != 200 {
        assert!(Instant::now() < deadline, "never answered 200: {}", ship.log());
    }
    ship.stop();
    gateway.stop();
    let held = stored(&f.path("gw-store"));
    assert_eq!(held.keys().copied().collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
    assert!(held.values().all(|places| places.len() == 1), "{held:?}");
    let (code, json, _) = verify_gateway_store(&f);
    assert_eq!(code, 0, "{json}");
}

#[test]
fn kill_9_of_the_shipper_and_the_gateway_under_load_loses_nothing_acknowledged() {
    kill_9_under_load(false);
}

/// As in an enclave: the spool is in memory (tmpfs, so `ack = "remote"` by default) and every
/// restart of the shipper finds neither its spool nor its chain state; it takes its head from
/// the gateway. Records answered 200 from the lost spool would be lost under `ack = "local"`.
#[test]
fn kill_9_with_the_spool_in_memory_and_lost_at_each_restart_loses_nothing_acknowledged() {
    kill_9_under_load(true);
}

/// Two clients export under load while the shipper and the gateway are each killed with
/// SIGKILL three times; with `in_memory`, the shipper's spool is on tmpfs and it and the chain
/// state are gone at each restart.
fn kill_9_under_load(in_memory: bool) {
    let f = fixture();
    let (relay, otlp) = (free_port(), free_port());
    let config = f.relay_gateway(&relay, &[], "");
    let mut gateway = Daemon::gateway(&config);
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let (spool, ack) =
        if in_memory { (shm.path().join("spool"), "") } else { (f.path("spool"), "ack = 'remote'") };
    let start = || shipper_with(&f, &spool, ack, &otlp, &relay);
    let mut ship = start();
    if in_memory {
        ship.wait_for_log("ack = \"remote\": the spool is on tmpfs", Duration::from_secs(5));
    }
    let addr: SocketAddr = otlp.parse().unwrap();

    // Two clients export 20 records per request as fast as they are answered; a request not
    // answered 200 is not sent again, so a record stored twice could only be signed twice.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let (running, sent) = (Arc::new(AtomicBool::new(true)), Arc::new(Mutex::new(0u64)));
    let clients: Vec<_> = (0..2u64)
        .map(|client| {
            let (acknowledged, running, sent) = (acknowledged.clone(), running.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while running.load(Ordering::Relaxed) {
                    let first = (client * 1_000_000) + i * 20;
                    if export(addr, &otlp_json(first..first + 20)) == 200 {
                        acknowledged.lock().unwrap().extend(first..first + 20);
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    *sent.lock().unwrap() += 20;
                    i += 1;
                }
            })
        })
        .collect();

    let mut kills = 0;
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        ship.kill_9();
        kills += 1;
        if in_memory {
            std::fs::remove_dir_all(&spool).unwrap();
            std::fs::remove_dir_all(f.identity.join("state")).unwrap();
        }
        ship = start();
        std::thread::sleep(Duration::from_millis(700));
        gateway.kill_9();
        kills += 1;
        std::thread::sleep(Duration::from_millis(300));
        gateway = Daemon::gateway(&config);
    }
    std::thread::sleep(Duration::from_millis(700));
    running.store(false, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    ship.stop();
    // What the gateway acknowledged is in its spool; its store sink follows.
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        let held = stored(&f.path("gw-store"));
        if acknowledged.iter().all(|n| held.contains_key(n)) {
            break held;
        }
        let lost = acknowledged.iter().filter(|n| !held.contains_key(n)).count();
        assert!(Instant::now() < deadline, "{lost} acknowledged records are not in the gateway's store");
        std::thread::sleep(Duration::from_millis(100));
    };
    gateway.stop();
    let twice: Vec<_> = held.iter().filter(|(_, places)| places.len() > 1).collect();
    assert!(twice.is_empty(), "records signed into two batches: {twice:?}");
    let (code, json, kinds) = verify_gateway_store(&f);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    eprintln!(
        "in memory: {in_memory}; kill -9 runs: {kills}; records sent {}, acknowledged {}, stored {} (stored without an answer: {})",
        sent.lock().unwrap(),
        acknowledged.len(),
        held.len(),
        held.len() - acknowledged.len()
    );
    assert!(acknowledged.len() >= 200, "the load was too light to mean anything: {}", acknowledged.len());
}

#[test]
fn a_one_shot_stdin_run_that_cannot_deliver_says_how_much_waits_where_and_fails() {
    let f = fixture();
    let relay = free_port();
    let config = f.path("ship.toml");
    std::fs::write(&config, "[start]\ngateway_head = 'prefer'\nwait = '1s'\n").unwrap();
    let spool = f.path("spool");
    let run = |input: &[u8]| {
        let args = [
            "ship",
            "--config",
            s(&config),
            "--identity",
            s(&f.identity),
            "--stream",
            "app",
            "--spool",
            s(&spool),
            "--stdin",
            "--sink-relay",
            &relay,
            "--max-records",
            "5",
            "--heartbeat",
            "off",
            "--drain-timeout",
            "1s",
        ];
        teelog(&args, input)
    };
    let input: String = (0..12).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let out = run(input.as_bytes());
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains(&format!("relay-1 (relay {relay})")), "names its sinks at the start: {log}");
    assert!(log.contains("has not taken 3 spool lines"), "{log}");
    assert!(log.contains(s(&spool)), "says where they wait: {log}");

    // With the gateway there, the next run delivers them and succeeds.
    let gateway = Daemon::gateway(&f.relay_gateway(&relay, &[], ""));
    let out = run(b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    gateway.stop();
    let (code, json, _) = verify_gateway_store(&f);
    assert_eq!((code, json["records"].as_u64()), (0, Some(12)), "{json}");
}
