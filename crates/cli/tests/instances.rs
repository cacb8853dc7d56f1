//! Several signers on one stream, end to end (docs/FORMAT.md §5.5): two dev identities, each with
//! its own attested key, sign stream "app" into their own stores; `teelog verify` follows each as
//! an instance, lists them, and holds them to what the auditor declares or pins.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;
mod ship_harness;

use std::path::{Path, PathBuf};

use common::{report, s, teelog};
use serde_json::Value;

const RECORDS: &[u8] = b"{\"message\":\"a\"}\n{\"message\":\"b\"}\n{\"message\":\"c\"}\n";

struct Replicas {
    dir: tempfile::TempDir,
    /// Every identity's dev root, as --trust-root arguments.
    roots: Vec<String>,
}

impl Replicas {
    fn new() -> Self {
        Replicas { dir: tempfile::tempdir().unwrap(), roots: Vec::new() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A dev identity `name` (following stream "app" in store `follow`, if given) that signs
    /// RECORDS into store `name`.
    fn sign(&mut self, name: &str, follow: Option<(&str, &str)>) {
        let id = self.path(&format!("{name}-id"));
        let mut args = vec!["keygen".to_string(), "--dev".into(), "--out".into(), s(&id).into()];
        if let Some((store, root_of)) = follow {
            let root = self.path(&format!("{root_of}-id")).join("dev-root.pem");
            let store = self.path(store);
            args.extend(
                ["--follow", s(&store), "--stream", "app", "--trust-root", s(&root)].map(String::from),
            );
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let made = teelog(&args, b"");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let store = self.path(name);
        let signed = teelog(
            &["sign", "--identity", s(&id), "--store", s(&store), "--stream", "app", "--batch-size", "2"],
            RECORDS,
        );
        assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
        self.roots.extend(["--trust-root".to_string(), s(&id.join("dev-root.pem")).to_string()]);
    }

    /// The segment files of the stores named.
    fn files(&self, stores: &[&str]) -> Vec<String> {
        stores
            .iter()
            .flat_map(|store| teelog_store::segments(&self.path(store)).unwrap())
            .map(|p: PathBuf| s(&p).to_string())
            .collect()
    }

    /// `teelog verify` of the stores named, with every root and `extra` arguments.
    fn run(&self, stores: &[&str], extra: &[&str]) -> std::process::Output {
        let files = self.files(stores);
        let mut args: Vec<&str> = vec!["verify"];
        args.extend(files.iter().map(String::as_str));
        args.extend(self.roots.iter().map(String::as_str));
        args.extend_from_slice(extra);
        teelog(&args, b"")
    }

    /// Its JSON report.
    fn verify(&self, stores: &[&str], extra: &[&str]) -> (i32, Value, Vec<String>) {
        report(&self.run(stores, &[extra, &["--json"]].concat()))
    }

    /// Its text report.
    fn text(&self, stores: &[&str], extra: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(stores, extra).stdout).into_owned()
    }
}

/// The header member `name` of the first batch in store `store`.
fn first_header(store: &Path, name: &str) -> String {
    let segment = teelog_store::segments(store).unwrap().remove(0);
    let text = std::fs::read_to_string(segment).unwrap();
    let first =
        text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|l| l["header"].is_object());
    first.unwrap()["header"][name].as_str().unwrap().to_string()
}

fn first_epoch(store: &Path) -> String {
    first_header(store, "epoch")
}

/// The instances of a report: (instance, pinned, epochs).
fn instances(json: &Value) -> Vec<(String, bool, Vec<String>)> {
    let mut listed: Vec<(String, bool, Vec<String>)> = json["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!((i["stream"].as_str(), i["genesis"].as_bool()), (Some("app"), Some(true)), "{i}");
            let epochs = i["epochs"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string());
            (i["instance"].as_str().unwrap().to_string(), i["pinned"].as_bool().unwrap(), epochs.collect())
        })
        .collect();
    listed.sort();
    listed
}

#[test]
fn two_signers_on_one_stream_are_two_instances_declared_pinned_or_found() {
    let mut r = Replicas::new();
    r.sign("a", None);
    r.sign("b", None);
    let (a, b) = (first_epoch(&r.path("a")), first_epoch(&r.path("b")));
    let pin = |epoch: &str| format!("app={epoch}");
    let pin_a = pin(&a);

    // Declared by number, or pinned: both verify, each listed as an instance of its own.
    let (code, json, kinds) = r.verify(&["a", "b"], &["--instances", "2"]);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    let mut expected = vec![(a.clone(), false, vec![a.clone()]), (b.clone(), false, vec![b.clone()])];
    expected.sort();
    assert_eq!(instances(&json), expected);
    let (code, json, _) =
        r.verify(&["a", "b"], &["--expect-stream", &pin_a, "--expect-stream", &pin(&b.to_uppercase())]);
    assert_eq!(code, 0, "{json}");
    assert!(instances(&json).iter().all(|(_, pinned, _)| *pinned), "{json}");

    // The policy file can pin them too.
    let policy = r.path("policy.toml");
    let measurement = first_header(&r.path("a"), "measurement");
    let text = format!(
        "[[measurement]]\nplatform = \"dev\"\nversion = \"v1\"\nvalue = \"{measurement}\"\n\n[[stream]]\nname = \"app\"\ninstances = [\"{a}\", \"{b}\"]\n"
    );
    std::fs::write(&policy, text).unwrap();
    let (code, json, _) = r.verify(&["a", "b"], &["--policy", s(&policy)]);
    assert_eq!(code, 0, "{json}");

    let text = r.text(&["a", "b"], &["--instances", "2"]);
    assert!(text.contains("NOTE stream=app has 2 instances not pinned"), "{text}");

    // Undeclared, a second start is not taken for granted: both are unexpected, and listed.
    let (code, json, kinds) = r.verify(&["a", "b"], &[]);
    assert_eq!((code, kinds), (1, vec!["unexpected_instance".to_string(); 2]), "{json}");
    assert_eq!(instances(&json).len(), 2);
    let text = r.text(&["a", "b"], &[]);
    assert!(text.contains(&format!("INST stream=app instance={a}")), "{text}");
    assert!(text.contains("FAIL unexpected_instance"), "{text}");

    // An instance not pinned is a finding; so is a pinned one that another replaced.
    let (code, json, kinds) = r.verify(&["a", "b"], &["--expect-stream", &pin_a]);
    assert_eq!((code, kinds), (1, vec!["unexpected_instance".to_string()]), "{json}");
    assert_eq!(json["findings"][0]["epoch"], b.as_str());
    let (code, json, kinds) = r.verify(&["b"], &["--expect-stream", &pin_a]);
    assert_eq!(code, 1, "{json}");
    let mut kinds = kinds;
    kinds.sort();
    assert_eq!(kinds, ["missing_stream", "unexpected_instance"], "{json}");
    let missing =
        json["findings"].as_array().unwrap().iter().find(|f| f["kind"] == "missing_stream").unwrap();
    assert_eq!((missing["stream"].as_str(), missing["epoch"].as_str()), (Some("app"), Some(a.as_str())));

    // A pin that names no epoch is the auditor's error, said before anything is read.
    let out = teelog(&["verify", "--expect-stream", "app=xyz", s(&r.path("a"))], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--expect-stream app=xyz"), "{out:?}");
}

#[test]
fn a_restart_links_to_its_instance_and_a_forked_one_is_still_a_chain_break() {
    let mut r = Replicas::new();
    r.sign("a", None);
    r.sign("b", None);
    // a restarts (a new dev identity following a's head), in a store of its own.
    r.sign("a2", Some(("a", "a")));
    let (a, a2) = (first_epoch(&r.path("a")), first_epoch(&r.path("a2")));
    let (code, json, kinds) = r.verify(&["a", "b", "a2"], &["--instances", "2"]);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    let a_instance = instances(&json).into_iter().find(|(i, _, _)| *i == a).unwrap();
    assert_eq!(a_instance.2, vec![a.clone(), a2.clone()]);

    // A second restart from the same head forks a's instance: a chain_break for each branch,
    // however many instances are allowed.
    r.sign("a3", Some(("a", "a")));
    let a3 = first_epoch(&r.path("a3"));
    let (code, json, kinds) = r.verify(&["a", "b", "a2", "a3"], &["--instances", "3"]);
    assert_eq!((code, kinds), (1, vec!["chain_break".to_string(); 2]), "{json}");
    let forked: Vec<&str> =
        json["findings"].as_array().unwrap().iter().map(|f| f["epoch"].as_str().unwrap()).collect();
    let mut expected = vec![a2.as_str(), a3.as_str()];
    expected.sort();
    let mut forked = forked;
    forked.sort();
    assert_eq!(forked, expected);
}

/// A gateway with `verify` as its `[verify]` section, spooling and storing under `dir`.
fn gateway(dir: &Path, verify: &str) -> ship_harness::Daemon {
    let text = format!(
        "[spool]\ndir = '{spool}'\n[listen]\nrelay = '127.0.0.1:0'\nhttp = '127.0.0.1:0'\n[verify]\n{verify}\n\
         [metrics]\nlisten = '127.0.0.1:0'\n[[sinks]]\nkind = 'store'\ndir = '{store}'\n",
        spool = s(&dir.join("spool")),
        store = s(&dir.join("store")),
    );
    let config = dir.join("gateway.toml");
    std::fs::write(&config, text).unwrap();
    ship_harness::Daemon::gateway(&config)
}

/// The kinds of the findings the gateway answers a POST of `lines` with.
fn post_kinds(gateway: &ship_harness::Daemon, lines: &[u8]) -> Vec<String> {
    let ndjson = [("Content-Type", "application/x-ndjson")];
    let (status, body) = ship_harness::post(gateway.addr("HTTP"), "/v1/batches", &ndjson, lines).unwrap();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{answer}");
    answer["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap().to_string()).collect()
}

#[test]
fn the_gateway_follows_instances_as_its_policy_declares() {
    let dir = tempfile::tempdir().unwrap();
    // Two software signers, each its own key, on stream "pay".
    let lines: Vec<Vec<u8>> = ["a", "b"]
        .iter()
        .map(|name| {
            let id = dir.path().join(format!("{name}-id"));
            common::keygen(&id, &["--measurement", "abcd01"]);
            let out = dir.path().join(format!("{name}.ndjson"));
            let args =
                ["sign", "--identity", s(&id), "--stream", "pay", "--batch-size", "2", "--out", s(&out)];
            let signed = teelog(&args, RECORDS);
            assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
            std::fs::read(out).unwrap()
        })
        .collect();
    let pubkeys = ["a", "b"].map(|name| s(&dir.path().join(format!("{name}-id/public-key.pem"))).to_string());
    let pubkeys = format!("pubkeys = ['{}', '{}']", pubkeys[0], pubkeys[1]);

    // Undeclared: the second signer's start is reported against both instances.
    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let gw = gateway(&plain, &pubkeys);
    assert_eq!(post_kinds(&gw, &lines[0]), Vec::<String>::new());
    assert_eq!(post_kinds(&gw, &lines[1]), vec!["unexpected_instance".to_string(); 2]);
    let log = gw.stop();
    assert!(log.contains("finding=\"unexpected_instance\" stream=\"pay\""), "{log}");

    // Declared in the policy: both are followed, each on its own.
    let declared = dir.path().join("declared");
    std::fs::create_dir(&declared).unwrap();
    let policy = declared.join("policy.toml");
    std::fs::write(
        &policy,
        "[[measurement]]\nplatform = \"software\"\nversion = \"v1\"\nvalue = \"abcd01\"\n\n[[stream]]\nname = \"pay\"\nmax_instances = 2\n",
    )
    .unwrap();
    let gw = gateway(&declared, &format!("{pubkeys}\npolicy = '{}'", s(&policy)));
    assert_eq!(post_kinds(&gw, &lines[0]), Vec::<String>::new());
    assert_eq!(post_kinds(&gw, &lines[1]), Vec::<String>::new());
    gw.stop();
}
