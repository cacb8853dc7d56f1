//! The deploy kit (deploy/) is consistent with itself and with the code: the shipper's config
//! deserializes, the files compose mounts exist, the paths and ports the configs name are the
//! ones compose provides, every dashboard query uses the provisioned datasource, and the alert
//! rules and dashboard query only the labels docs/LOKI.md defines. Docker is not needed: compose
//! and the YAML files are read as text, in the plain layout the kit keeps to.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use teelog_core::batch::HEADER_FIELDS;

use serde::Deserialize;
use teelog_deliver::config::SinkConfig;
use teelog_ship::config::Config;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read(relative: &str) -> String {
    let path = deploy().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn toml_file(relative: &str) -> toml::Table {
    read(relative).parse().unwrap_or_else(|e| panic!("{relative}: {e}"))
}

// --- compose, read as text --------------------------------------------------------------------

/// What the kit's docker-compose.yml says about one service.
#[derive(Debug, Default)]
struct Service {
    /// `(source, target)`; a source starting with `./` is a bind mount, else a named volume.
    volumes: Vec<(String, String)>,
    ports: Vec<String>,
    /// The `command:` value (flow list or block scalar), as written.
    command: String,
    /// `<<: *teelog`: the service runs the image deploy/Dockerfile builds.
    teelog_image: bool,
    image: Option<String>,
}

struct Compose {
    services: BTreeMap<String, Service>,
    /// Top-level `volumes:`.
    volumes: BTreeSet<String>,
    text: String,
}

fn unquote(s: &str) -> &str {
    s.trim().trim_matches('"').trim_matches('\'')
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn compose() -> Compose {
    let text = read("docker-compose.yml");
    let mut services = BTreeMap::<String, Service>::new();
    let mut volumes = BTreeSet::new();
    let (mut section, mut service, mut key) = (String::new(), String::new(), String::new());
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match indent(line) {
            0 => section = trimmed.trim_end_matches(':').to_string(),
            2 if section == "services" => {
                service = trimmed.trim_end_matches(':').to_string();
                services.entry(service.clone()).or_default();
            }
            2 if section == "volumes" => {
                volumes.insert(trimmed.trim_end_matches(':').to_string());
            }
            4 if section == "services" => {
                let s = services.get_mut(&service).unwrap();
                let (k, v) = trimmed.split_once(':').unwrap_or((trimmed, ""));
                key = k.to_string();
                match k {
                    "<<" => s.teelog_image |= v.trim() == "*teelog",
                    "image" => s.image = Some(unquote(v).to_string()),
                    "command" => s.command = v.trim().to_string(),
                    _ => {}
                }
            }
            n if n >= 6 && section == "services" => {
                let s = services.get_mut(&service).unwrap();
                let item = trimmed.strip_prefix("- ").map(unquote);
                match (key.as_str(), item) {
                    ("volumes", Some(item)) => {
                        let mut parts = item.split(':');
                        let source = parts.next().unwrap().to_string();
                        let target = parts.next().unwrap_or_else(|| panic!("volume {item:?}")).to_string();
                        s.volumes.push((source, target));
                    }
                    ("ports", Some(item)) => s.ports.push(item.to_string()),
                    ("command", _) => {
                        s.command.push('\n');
                        s.command.push_str(trimmed);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Compose { services, volumes, text }
}

impl Compose {
    fn service(&self, name: &str) -> &Service {
        self.services.get(name).unwrap_or_else(|| panic!("compose has no service {name:?}"))
    }
}

impl Service {
    /// The mount whose target holds `path` (the longest such target).
    fn mount_of(&self, path: &str) -> Option<&(String, String)> {
        self.volumes
            .iter()
            .filter(|(_, target)| {
                path == target || path.starts_with(&format!("{}/", target.trim_end_matches('/')))
            })
            .max_by_key(|(_, target)| target.len())
    }

    /// The bind mount source (relative to deploy/) that `path` inside the container comes from.
    fn host_file(&self, path: &str) -> Option<PathBuf> {
        let (source, target) = self.mount_of(path)?;
        let source = source.strip_prefix("./")?;
        let rest = path[target.len()..].trim_start_matches('/');
        let host = deploy().join(source);
        Some(if rest.is_empty() { host } else { host.join(rest) })
    }

    /// The port published for container port `port`, as `host_ip:host_port:port`.
    fn published(&self, port: u16) -> Option<&String> {
        self.ports.iter().find(|p| p.rsplit(':').next() == Some(&port.to_string()))
    }
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {address:?}"))
}

fn host_of(address: &str) -> &str {
    let address = address.split("://").last().unwrap();
    address.rsplit_once(':').map_or(address, |(host, _)| host)
}

#[test]
fn compose_mounts_files_that_exist_and_declares_its_volumes() {
    let compose = compose();
    for name in ["loki", "grafana", "gateway", "shipper", "keygen"] {
        compose.service(name);
    }
    for (name, service) in &compose.services {
        assert!(!service.volumes.is_empty(), "{name} mounts nothing");
        for (source, target) in &service.volumes {
            if let Some(relative) = source.strip_prefix("./") {
                let path = deploy().join(relative);
                assert!(
                    path.exists(),
                    "{name} mounts {source} at {target}, but deploy/{relative} is missing"
                );
            } else {
                assert!(
                    compose.volumes.contains(source),
                    "{name} uses volume {source:?}, not declared at the top level"
                );
            }
        }
        // Absolute paths in the command (config files) must come from a bind mount that exists.
        for path in absolute_paths(&service.command) {
            if path.starts_with("/etc/") {
                let host = service
                    .host_file(&path)
                    .unwrap_or_else(|| panic!("{name}'s command names {path}, which no bind mount provides"));
                assert!(host.is_file(), "{name}'s command names {path}, but {} is missing", host.display());
            }
        }
    }
    // The image the teelog services run is built by deploy/Dockerfile from the repository root.
    assert!(compose.text.contains("context: ..") && compose.text.contains("dockerfile: deploy/Dockerfile"));
    assert!(deploy().join("Dockerfile").is_file());
    for name in ["keygen", "gateway", "shipper"] {
        assert!(compose.service(name).teelog_image, "{name} does not run the teelog image");
    }
    // Third-party images are pinned to a version.
    for name in ["loki", "grafana"] {
        let image = compose.service(name).image.as_deref().unwrap_or_else(|| panic!("{name}: no image"));
        let tag = image.split_once(':').map(|(_, tag)| tag).unwrap_or("");
        assert!(tag.starts_with(|c: char| c.is_ascii_digit()), "{name}: image {image} is not pinned");
    }
    assert!(compose.service("loki").image.as_deref().unwrap().starts_with("grafana/loki:3."));
}

/// Absolute paths in a command line, e.g. `--config /etc/x.toml` or `-config.file=/etc/x.yaml`.
fn absolute_paths(command: &str) -> Vec<String> {
    command
        .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '[' | ']' | '='))
        .filter(|word| word.starts_with('/'))
        .map(str::to_string)
        .collect()
}

#[test]
fn published_ports_are_loopback_only() {
    let compose = compose();
    let mut published = 0;
    for (name, service) in &compose.services {
        for port in &service.ports {
            assert!(port.starts_with("127.0.0.1:"), "{name} publishes {port:?} beyond the host's loopback");
            published += 1;
        }
    }
    assert!(published >= 3, "loki, grafana and the shipper's OTLP port should be published");
}

// --- the teelog configs -----------------------------------------------------------------------

#[test]
fn ship_toml_deserializes_and_fits_compose() {
    let table = toml_file("ship.toml");
    let compose = compose();
    let shipper = compose.service("shipper");

    // The relay sink names the gateway's relay listener, by compose service name.
    let gateway = toml_file("gateway.toml");
    let relay_listen = gateway["listen"]["relay"].as_str().expect("gateway listen.relay");
    let config =
        Config::deserialize(toml::Value::Table(table.clone())).unwrap_or_else(|e| panic!("ship.toml: {e}"));
    config.check().unwrap_or_else(|e| panic!("ship.toml: {e}"));
    let relays: Vec<_> = config
        .sinks
        .iter()
        .filter_map(|s| match s {
            SinkConfig::Relay(relay) => Some(relay),
            _ => None,
        })
        .collect();
    assert_eq!(relays.len(), 1, "ship.toml should relay to the gateway");
    // With the token the gateway asks for, which keygen makes.
    let token = relays[0].bearer_token_file.as_ref().expect("ship.toml: the relay sink's bearer_token_file");
    let token = token.to_str().unwrap();
    assert_keygen_writes(&compose, "shipper", token);
    assert_eq!(
        std::path::Path::new(token).file_name(),
        std::path::Path::new(gateway["listen"]["bearer_token_file"].as_str().unwrap()).file_name(),
        "the shipper's token and the gateway's"
    );
    let address = &relays[0].address;
    assert_eq!(host_of(address), "gateway");
    assert_eq!(port_of(address), port_of(relay_listen), "relay sink port vs the gateway's listen.relay");
    assert!(config.sinks.iter().all(|s| !matches!(s, SinkConfig::Store { .. })), "no store sink in the kit");

    // State lives on volumes, not in the container's layer.
    for path in [&config.identity, &config.spool.dir] {
        let path = path.to_str().unwrap();
        let (source, _) = shipper.mount_of(path).unwrap_or_else(|| panic!("shipper: {path} is on no volume"));
        assert!(!source.starts_with("./"), "shipper: {path} should be on a named volume, not a bind mount");
    }
    // The identity the shipper signs with is the one keygen creates.
    let identity = config.identity.to_str().unwrap();
    let (volume, _) = shipper.mount_of(identity).unwrap();
    let keygen = compose.service("keygen");
    assert!(
        keygen.volumes.iter().any(|(s, t)| s == volume && t == identity),
        "keygen does not create {identity}"
    );
    assert!(keygen.command.contains(&format!("--out {identity}")), "keygen: {}", keygen.command);

    // The OTLP source is published on the host's loopback.
    let otlp = config.sources.otlp_http.expect("ship.toml: sources.otlp_http");
    let published = shipper
        .published(otlp.port())
        .unwrap_or_else(|| panic!("shipper: port {} not published", otlp.port()));
    assert!(published.starts_with("127.0.0.1:"), "{published}");
    // Even so, its clients authenticate, with a token keygen makes; and the kit does not ask
    // to go without a credential anywhere.
    assert!(!config.sources.allow_remote_plaintext, "ship.toml: allow_remote_plaintext");
    let otlp_token = config.sources.bearer_token_file.as_ref().expect("ship.toml: sources.bearer_token_file");
    assert_keygen_writes(&compose, "shipper", otlp_token.to_str().unwrap());
    // A heartbeat keeps the stale-stream alert meaningful.
    assert!(config.batch.heartbeat.is_some(), "ship.toml: heartbeat is off");
}

#[test]
fn gateway_toml_paths_and_addresses_fit_compose() {
    let gateway = toml_file("gateway.toml");
    // The gateway's own loader and checks take it as it is.
    let config = teelog_gateway::config::GatewayConfig::load(&deploy().join("gateway.toml"))
        .unwrap_or_else(|e| panic!("gateway.toml: {e}"));
    assert!(config.listen.relay.is_some() && config.listen.http.is_some());
    let compose = compose();
    let service = compose.service("gateway");

    let spool = gateway["spool"]["dir"].as_str().expect("gateway spool.dir");
    assert!(
        service.mount_of(spool).is_some_and(|(s, _)| !s.starts_with("./")),
        "gateway: {spool} is on no volume"
    );

    // Each trust root, and the bearer token, is a file keygen writes into a volume the gateway
    // mounts there.
    let roots = gateway["verify"]["trust_roots"].as_array().expect("verify.trust_roots");
    assert!(!roots.is_empty());
    for root in roots {
        assert_keygen_writes(&compose, "gateway", root.as_str().unwrap());
    }
    assert_eq!(gateway["verify"]["allow_debug"].as_bool(), Some(false));
    // Clients authenticate: the gateway would not start otherwise, listening beyond loopback.
    config.check_auth(false).unwrap_or_else(|e| panic!("gateway.toml: {e}"));
    let token = gateway["listen"]["bearer_token_file"].as_str().expect("gateway listen.bearer_token_file");
    assert_keygen_writes(&compose, "gateway", token);

    // The Loki sink reaches the loki service on the port loki.yaml listens on.
    let sinks = gateway["sinks"].as_array().expect("gateway [[sinks]]");
    let loki = sinks.iter().find(|s| s["kind"].as_str() == Some("loki")).expect("a loki sink");
    let url = loki["url"].as_str().unwrap();
    assert_eq!(host_of(url), "loki");
    assert_eq!(port_of(url), loki_http_port());
    // Listeners stay on the compose network.
    for key in ["relay", "http"] {
        let port = port_of(gateway["listen"][key].as_str().unwrap());
        assert!(service.published(port).is_none(), "gateway publishes listen.{key}");
    }
}

/// Asserts that `path`, as `service` sees it, is on a volume the keygen service writes, and that
/// keygen's command writes it there.
fn assert_keygen_writes(compose: &Compose, service: &str, path: &str) {
    let (volume, target) = compose
        .service(service)
        .mount_of(path)
        .unwrap_or_else(|| panic!("{service}: {path} is on no volume"));
    let file = &path[target.len()..];
    let keygen = compose.service("keygen");
    let (_, keygen_target) = keygen
        .volumes
        .iter()
        .find(|(s, _)| s == volume)
        .unwrap_or_else(|| panic!("keygen does not write volume {volume}"));
    let written = format!("{keygen_target}{file}");
    // Written by a redirection, or as the target at the end of a `cp`.
    let writes =
        |line: &str| line.contains(&format!("> {written}")) || line.ends_with(&format!(" {written}"));
    assert!(
        keygen.command.lines().any(|line| writes(line.trim_end())),
        "keygen never writes {written}: {}",
        keygen.command
    );
}

// --- Loki -------------------------------------------------------------------------------------

/// The `key: value` lines of a YAML file by dotted path (`ruler.storage.local.directory`), list
/// items taking their parent's path; comments dropped. Enough for the kit's plain files.
fn yaml_paths(text: &str) -> Vec<(String, String)> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (depth, item) = match trimmed.strip_prefix("- ") {
            Some(item) => (indent(line) + 2, item),
            None => (indent(line), trimmed),
        };
        let Some((key, value)) = item.split_once(':') else { continue };
        while stack.last().is_some_and(|(d, _)| *d >= depth) {
            stack.pop();
        }
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).chain([key]).collect();
        let value = value.split(" #").next().unwrap();
        out.push((path.join("."), unquote(value).to_string()));
        stack.push((depth, key.to_string()));
    }
    out
}

/// Every value at `path`.
fn yaml_value(text: &str, path: &str) -> Vec<String> {
    yaml_paths(text).into_iter().filter(|(p, _)| p == path).map(|(_, v)| v).collect()
}

fn loki_http_port() -> u16 {
    let values = yaml_value(&read("loki/loki.yaml"), "server.http_listen_port");
    values[0].parse().unwrap()
}

/// Loki's sizes: binary units (docs/LOKI.md §1), e.g. `256KB` = 262,144.
fn loki_bytes(size: &str) -> u64 {
    let digits: String = size.chars().take_while(char::is_ascii_digit).collect();
    let unit = match size[digits.len()..].to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "KIB" => 1024,
        "MB" | "MIB" => 1024 * 1024,
        other => panic!("unit {other:?}"),
    };
    digits.parse::<u64>().unwrap() * unit
}

#[test]
fn loki_config_has_the_settings_docs_loki_md_requires() {
    let text = read("loki/loki.yaml");
    let one = |key: &str| {
        let values = yaml_value(&text, key);
        assert_eq!(values.len(), 1, "loki.yaml: {key} is set {} times", values.len());
        values[0].clone()
    };
    assert_eq!(one("auth_enabled"), "false");
    assert_eq!(one("schema_config.configs.store"), "tsdb");
    assert_eq!(one("schema_config.configs.schema"), "v13");
    let limit = |key: &str| one(&format!("limits_config.{key}"));
    assert_eq!(limit("allow_structured_metadata"), "true");
    assert_eq!(limit("max_line_size_truncate"), "false");
    assert_eq!(limit("unordered_writes"), "true");
    assert_eq!(limit("increment_duplicate_timestamp"), "false");
    assert_eq!(loki_bytes("256KB"), 262_144);
    assert!(loki_bytes(&limit("max_line_size")) >= teelog_loki::layout::DEFAULT_MAX_LINE_BYTES as u64);
    assert!(limit("max_entries_limit_per_query").parse::<u64>().unwrap() >= 5000);
    assert_eq!(one("ruler.storage.type"), "local");
    // Newer Loki reads the ruler's storage from ruler_storage unless the Thanos object store
    // clients are off; Loki 3.7 takes the setting too.
    assert_eq!(one("storage_config.use_thanos_objstore"), "false");

    // The ruler reads the directory compose mounts deploy/loki/rules at; with auth disabled the
    // tenant is "fake", so the rules must be in rules/fake/.
    let rules_dir = one("ruler.storage.local.directory");
    let host =
        compose().service("loki").host_file(&rules_dir).unwrap_or_else(|| panic!("{rules_dir} not mounted"));
    assert!(host.join("fake").is_dir(), "{}: no fake/ tenant directory", host.display());
    assert!(std::fs::read_dir(host.join("fake")).unwrap().count() > 0);
}

/// The label values docs/LOKI.md defines for `teelog_kind`.
const KINDS: [&str; 7] = [
    "record",
    "batch",
    "attestation",
    "record_part",
    "rejected_batch",
    "rejected_record",
    "rejected_record_part",
];

/// Checks one LogQL expression: balanced brackets, and only documented teelog labels.
fn check_logql(context: &str, expr: &str) {
    let mut stack = Vec::new();
    let mut quoted = false;
    for c in expr.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' | '[' | '{' if !quoted => stack.push(c),
            ')' | ']' | '}' if !quoted => {
                let open = stack.pop();
                assert_eq!(open, Some(matching(c)), "{context}: unbalanced {c:?} in {expr}");
            }
            _ => {}
        }
    }
    assert!(stack.is_empty() && !quoted, "{context}: unbalanced brackets or quotes in {expr}");
    for (i, _) in expr.match_indices("teelog_kind=\"") {
        let value = expr[i + 13..].split('"').next().unwrap();
        assert!(KINDS.contains(&value), "{context}: teelog_kind {value:?} is not a layout stream");
    }
    for (i, _) in expr.match_indices("signature_valid") {
        let rest = &expr[i + "signature_valid".len()..];
        let value =
            rest.trim_start_matches(['!', '=', '~']).trim_start_matches('"').split('"').next().unwrap();
        assert!(["true", "false"].contains(&value), "{context}: signature_valid {value:?}");
    }
    // A bare `| json` makes a label of every member, the batch entry's hints (16 bytes a record)
    // included: only named members are extracted.
    for (i, _) in expr.match_indices("| json") {
        let next = expr[i + 6..].split_whitespace().next().unwrap_or("");
        assert!(next.contains("=\""), "{context}: a bare | json in {expr}");
    }
    for header in expr.match_indices("\"header.").map(|(i, _)| expr[i + 8..].split('"').next().unwrap()) {
        assert!(HEADER_FIELDS.contains(&header), "{context}: header.{header} is not a header member");
    }
}

fn matching(close: char) -> char {
    match close {
        ')' => '(',
        ']' => '[',
        _ => '{',
    }
}

/// A rule of a Loki rules file: its name and the text of its entry.
fn rules(text: &str) -> Vec<(String, String)> {
    let mut rules: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(name) =
            line.trim().strip_prefix("- alert:").or_else(|| line.trim().strip_prefix("- record:"))
        {
            rules.push((name.trim().to_string(), String::new()));
        } else if let Some((_, body)) = rules.last_mut() {
            if line.trim().starts_with("- name:") {
                break;
            }
            body.push_str(line);
            body.push('\n');
        }
    }
    rules
}

/// The block scalar (`key: |` / `key: >-`) or plain value of `key` in a rule's text.
fn rule_field(body: &str, key: &str) -> Option<String> {
    let mut lines = body.lines();
    let start = lines.by_ref().find(|l| l.trim().starts_with(&format!("{key}:")))?;
    let inline = start.trim()[key.len() + 1..].trim();
    if !inline.is_empty() && !inline.starts_with(['|', '>']) {
        return Some(unquote(inline).to_string());
    }
    let base = indent(start);
    let block: Vec<&str> = lines.take_while(|l| l.trim().is_empty() || indent(l) > base).collect();
    Some(block.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ").trim().to_string())
}

/// How the kit counts batches: one series per (stream, epoch, seq), counted.
const DISTINCT_BATCHES: &str = "count by (teelog_stream, epoch) (count by (teelog_stream, epoch, seq) (";

/// `text` without white space, to compare expressions however they are wrapped.
fn squash(text: &str) -> String {
    text.split_whitespace().collect()
}

#[test]
fn alert_rules_are_complete_and_query_the_layout() {
    let dir = deploy().join("loki/rules");
    let mut files = 0;
    let mut names = BTreeSet::new();
    for tenant in std::fs::read_dir(&dir).unwrap() {
        for file in std::fs::read_dir(tenant.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.starts_with("#") || text.starts_with("groups:"), "{}", path.display());
            assert!(
                text.contains("\ngroups:\n") || text.starts_with("groups:"),
                "{}: no groups",
                path.display()
            );
            files += 1;
            for (name, body) in rules(&text) {
                let context = format!("{} {name}", path.display());
                assert!(names.insert(name.clone()), "{context}: the alert name is used twice");
                let expr = rule_field(&body, "expr").unwrap_or_else(|| panic!("{context}: no expr"));
                assert!(expr.contains("{job=\"teelog\""), "{context}: not a query of job=\"teelog\": {expr}");
                check_logql(&context, &expr);
                if name == "TeelogSequenceGap" {
                    // Distinct batches: a duplicate entry must not cancel a missing one.
                    assert!(
                        squash(&expr).contains(&squash(DISTINCT_BATCHES)),
                        "{context}: counts entries: {expr}"
                    );
                }
                for annotation in ["summary", "description"] {
                    let text = rule_field(&body, annotation).unwrap_or_default();
                    assert!(text.len() > 10, "{context}: no {annotation}");
                }
                assert!(rule_field(&body, "severity").is_some(), "{context}: no severity label");
            }
        }
    }
    assert!(files >= 1);
    for expected in ["TeelogInvalidBatch", "TeelogSequenceGap", "TeelogStaleStream"] {
        assert!(names.contains(expected), "no {expected} rule; have {names:?}");
    }
}

// --- Grafana ----------------------------------------------------------------------------------

#[test]
fn dashboard_uses_the_provisioned_datasource_and_is_mounted_where_provisioned() {
    let datasources = read("grafana/provisioning/datasources/loki.yaml");
    let uids = yaml_value(&datasources, "datasources.uid");
    assert_eq!(uids.len(), 1, "one provisioned datasource");
    let uid = &uids[0];
    assert_eq!(yaml_value(&datasources, "datasources.type"), ["loki"]);
    let url = &yaml_value(&datasources, "datasources.url")[0];
    assert_eq!((host_of(url), port_of(url)), ("loki", loki_http_port()));

    let compose = compose();
    let grafana = compose.service("grafana");
    // Grafana reads provisioning from /etc/grafana/provisioning (the image's GF_PATHS_PROVISIONING).
    let provisioning = grafana.host_file("/etc/grafana/provisioning/datasources/loki.yaml");
    assert!(provisioning.is_some_and(|p| p.is_file()), "datasources/loki.yaml is not mounted for Grafana");
    let providers = read("grafana/provisioning/dashboards/teelog.yaml");
    let path = &yaml_value(&providers, "providers.options.path")[0];
    let host =
        grafana.host_file(path).unwrap_or_else(|| panic!("dashboard provider path {path} is not mounted"));
    let dashboard_file = host.join("teelog.json");
    assert!(dashboard_file.is_file(), "{}", dashboard_file.display());

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard_file).unwrap())
            .unwrap_or_else(|e| panic!("teelog.json: {e}"));
    let check_ds = |context: &str, ds: &serde_json::Value| {
        assert_eq!(ds["uid"].as_str(), Some(uid.as_str()), "{context}: datasource {ds}");
        assert_eq!(ds["type"].as_str(), Some("loki"), "{context}: datasource {ds}");
    };
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().expect("panels").iter().collect();
    // Panels inside collapsed rows.
    let nested: Vec<&serde_json::Value> =
        panels.iter().filter_map(|p| p["panels"].as_array()).flatten().collect();
    panels.extend(nested);
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(ids.insert(panel["id"].as_u64().expect("panel id")), "{title}: duplicate panel id");
        check_ds(title, &panel["datasource"]);
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for target in targets {
            check_ds(title, &target["datasource"]);
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("{title}: no expr"));
            check_logql(title, expr);
            exprs.push(expr.to_string());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            check_ds(variable["name"].as_str().unwrap(), &variable["datasource"]);
        }
    }
    // The panels the kit promises.
    let has = |needle: &str| exprs.iter().any(|e| squash(e).contains(&squash(needle)));
    let distinct =
        DISTINCT_BATCHES.replace("count by (teelog_stream, epoch) (", "count by (teelog_stream) (");
    assert!(has(&distinct), "distinct batches per stream");
    assert!(has("count=\"header.count\""), "records per stream, from the signed count");
    assert!(has("teelog_kind=\"rejected_batch\""), "invalid batches");
    assert!(has("header.prev"), "the continuity table");
    assert!(has("header.measurement"), "measurement changes");
    assert!(has("teelog-gateway"), "the gateway's findings");
}
