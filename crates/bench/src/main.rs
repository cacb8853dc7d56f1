//! `teelog-bench`: the `teelog` binary end to end (sign, verify, ship, gateway) on generated
//! records, each phase a child process, next to SHA-256 over the same bytes measured in the same
//! run, with each child's peak RSS and CPU time as the kernel accounts them when it is reaped.
// The one exception, `wait4`, says why it is sound where it is allowed.
#![deny(unsafe_code)]

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use teelog_store::lines::{Line, LineReader};

mod callgrind;
mod journald;
mod memory;
mod scaling;

/// Measures the teelog binary end to end against SHA-256 over the same records (docs/PERFORMANCE.md).
#[derive(Parser, Clone)]
#[command(name = "teelog-bench", version, about)]
struct BenchArgs {
    /// The teelog binary to measure (default: the `teelog` beside this program, as cargo builds
    /// them).
    #[arg(long, value_name = "PATH")]
    teelog: Option<PathBuf>,
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    #[arg(long, default_value_t = 200)]
    record_bytes: usize,
    #[arg(long, default_value_t = 4096)]
    batch_size: u64,
    /// Runs of each phase; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Records per OTLP/HTTP request in the ship phase.
    #[arg(long, default_value_t = 1000)]
    otlp_request_records: u64,
    /// Concurrent OTLP/HTTP clients in the ship phase.
    #[arg(long, default_value_t = 4)]
    otlp_clients: u64,
    /// How long the in-memory Loki of the audit phases takes to answer each query, in ms (a
    /// real Loki's answer to a page of 5000 entries takes tens to hundreds).
    #[arg(long, default_value_t = 50)]
    loki_latency_ms: u64,
    /// Queries the audit sends at once in its second audit phase (the first sends one at a time).
    #[arg(long, default_value_t = 8)]
    audit_concurrent_queries: u32,
    /// Entries per query in the audit phases (teelog audit --page-size).
    #[arg(long, default_value_t = 5000)]
    audit_page_size: u32,
    /// Cores each teelog child may use (taskset --cpu-list 0-(N-1)); verify and audit get
    /// --threads N. Run with 1 and with 2 to compare.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    cores: u32,
    /// Scratch directory (default: a new one under the system temp dir, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Leave out the side-by-side with journald's Forward Secure Sealing.
    #[arg(long)]
    no_journald: bool,
    #[command(flatten)]
    scaling: scaling::ScalingArgs,
    #[command(flatten)]
    callgrind: callgrind::CallgrindArgs,
    /// Measure verify's peak RSS on a long and a wide input instead (docs/PERFORMANCE.md,
    /// "Verifier memory").
    #[arg(long)]
    memory: bool,
    /// Sign the records once and run only the audit phases.
    #[arg(long)]
    audit_only: bool,
    /// Another teelog binary whose audit phases run in the same run, interleaved with those of
    /// the binary measured, against the same in-memory Loki (e.g. a build of the base branch).
    #[arg(long, value_name = "PATH")]
    audit_vs: Option<PathBuf>,
}

/// One run of a phase.
#[derive(Clone, Copy)]
struct Run {
    wall: f64,
    cpu: Option<f64>,
    peak_rss_kib: Option<u64>,
}

/// `--cores`, for every child started.
static CORES: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    CORES.get_or_init(|| args.cores);
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("teelog-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The binary to measure: `--teelog`, or the `teelog` beside this program.
fn teelog_binary(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.teelog {
        return Ok(path.clone());
    }
    let bench = std::env::current_exe().context("cannot find this program's own path")?;
    let beside = bench.with_file_name(format!("teelog{}", std::env::consts::EXE_SUFFIX));
    if !beside.is_file() {
        bail!(
            "no teelog binary at {}: build it with `cargo build --release --bin teelog --bin teelog-bench`, or give --teelog PATH",
            beside.display()
        );
    }
    Ok(beside)
}

fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(file) = &args.callgrind.sha256_only {
        return callgrind::sha256_only(file);
    }
    let exe = teelog_binary(args)?;
    let (dir, remove) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("teelog-bench-{}", std::process::id())), true),
    };
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    fs::create_dir_all(&dir)?;
    let result = if args.scaling.scaling {
        scaling::run(args, &exe, &dir)
    } else if args.callgrind.callgrind {
        callgrind::run(args, &exe, &dir)
    } else if args.memory {
        memory::run(args, &exe, &dir)
    } else if args.audit_only {
        audit_only(args, &exe, &dir)
    } else {
        bench_in(args, &exe, &dir)
    };
    if remove {
        let _ = fs::remove_dir_all(&dir);
    }
    result
}

fn bench_in(args: &BenchArgs, exe: &Path, dir: &Path) -> anyhow::Result<()> {
    let input = dir.join("records.ndjson");
    let mut out = BufWriter::new(File::create(&input)?);
    teelog_sample::write_records(&mut out, args.records, args.record_bytes)?;
    // Written back now, so that the kernel is not flushing it while sign runs.
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let input_bytes = fs::metadata(&input)?.len();

    let identity = dir.join("identity");
    let store = dir.join("store");
    run_child(exe, &["keygen", "--out", &s(&identity)], None)?;
    let batch_size = args.batch_size.to_string();
    let mut baseline = Vec::new();
    let mut sign = Vec::new();
    let mut verify = Vec::new();
    let mut ship_stdin = Vec::new();
    let mut ship_otlp = Vec::new();
    let mut relay_local = Vec::new();
    let mut relay_remote = Vec::new();
    let mut gateway = Vec::new();
    let mut audit_one = Vec::new();
    let mut audit_many = Vec::new();
    for run in 0..args.runs {
        baseline.push(sha256_baseline(&input)?);
        if store.exists() {
            fs::remove_dir_all(&store)?;
        }
        // Each run signs a stream of its own into a fresh store.
        let stream = format!("bench-{run}");
        let sign_args = sign_args(&identity, &store, &stream, &batch_size);
        let sign_args: Vec<&str> = sign_args.iter().map(String::as_str).collect();
        sign.push(run_child(exe, &sign_args, Some(&input))?);
        let threads = args.cores.to_string();
        let verify_args = [
            "verify",
            "--store",
            &s(&store),
            "--pubkey",
            &s(&identity.join("public-key.pem")),
            "--json",
            "--threads",
            &threads,
        ];
        verify.push(run_child(exe, &verify_args, None)?);

        let spool = dir.join(format!("spool-{run}"));
        let ship_args = ship_args(&identity, &spool, &batch_size);
        let mut stdin_args: Vec<&str> = ship_args.iter().map(String::as_str).collect();
        stdin_args.push("--stdin");
        ship_stdin.push(run_child(exe, &stdin_args, Some(&input))?);
        fs::remove_dir_all(&spool)?;
        ship_otlp.push(ship_otlp_run(exe, &ship_args, args)?);
        fs::remove_dir_all(&spool)?;
        // The cost of `ack = "remote"`: the same OTLP load relayed to one gateway, answered once
        // in the spool, then once the gateway has it.
        let relay = GatewayDaemon::start(exe, dir, &identity, run)?;
        for (ack, runs) in [("local", &mut relay_local), ("remote", &mut relay_remote)] {
            let mut relayed = ship_args.clone();
            relayed.extend(["--sink-relay".into(), relay.0.addr.to_string(), "--ack".into(), ack.into()]);
            runs.push(ship_otlp_run(exe, &relayed, args)?);
            fs::remove_dir_all(&spool)?;
        }
        relay.0.stop(0.0)?;
        gateway.push(gateway_run(exe, dir, &identity, &store)?);
    }
    // Before the audit phases, for the same reason as they are last (below).
    let journald =
        if args.no_journald { None } else { Some(journald::phase(&input, dir, args.records, args.runs)?) };
    // Last: the in-memory Loki lives in this process, and a child's peak RSS as the kernel
    // counts it starts from what its parent held when it forked.
    let last = format!("bench-{}", args.runs.saturating_sub(1));
    let loki = AuditLoki::start(args, &identity, &store, &last)?;
    for _ in 0..args.runs {
        audit_one.push(loki.audit(exe, 1)?);
        audit_many.push(loki.audit(exe, args.audit_concurrent_queries)?);
    }
    drop(loki);
    let baseline =
        median(&baseline.iter().map(|&wall| Run { wall, cpu: None, peak_rss_kib: None }).collect::<Vec<_>>());

    let n = args.records as f64;
    let mb = input_bytes as f64 / 1e6;
    println!(
        "teelog-bench: {} records, {:.1} MB ({} bytes/record), batch size {}, median of {} runs, {} core(s)",
        args.records,
        mb,
        input_bytes / args.records.max(1),
        args.batch_size,
        args.runs,
        args.cores
    );
    println!(
        "{:<32} {:>12} {:>14} {:>9} {:>11} {:>10}",
        "phase", "records/s", "records/cpu-s", "MB/s", "vs SHA-256", "peak RSS"
    );
    println!(
        "{:<32} {:>12.0} {:>14} {:>9.1} {:>11} {:>10}",
        "SHA-256 of each record",
        n / baseline.wall,
        "-",
        mb / baseline.wall,
        "1.00",
        "-"
    );
    let phases = [
        ("sign (stdin → store)", &sign),
        ("verify (store)", &verify),
        ("ship (stdin → spool)", &ship_stdin),
        ("ship (OTLP/HTTP → spool)", &ship_otlp),
        ("ship (OTLP → relay, ack local)", &relay_local),
        ("ship (OTLP → relay, ack remote)", &relay_remote),
        ("gateway (relay → spool)", &gateway),
        ("audit (Loki, 1 query)", &audit_one.iter().map(|a| a.run).collect()),
        ("audit (Loki, at once)", &audit_many.iter().map(|a| a.run).collect()),
    ];
    for (name, runs) in phases {
        let run = median(runs);
        let rss = run.peak_rss_kib.map_or("?".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        let per_cpu = run.cpu.map_or("?".to_string(), |cpu| format!("{:.0}", n / cpu));
        println!(
            "{:<32} {:>12.0} {:>14} {:>9.1} {:>11.2} {:>10}",
            name,
            n / run.wall,
            per_cpu,
            mb / run.wall,
            baseline.wall / run.wall,
            rss
        );
    }
    print_audit(args, "", &audit_one, &audit_many);
    if let Some(journald) = journald {
        journald.print(args.records, median(&sign), median(&verify));
    }
    Ok(())
}

/// One audit run, and the share of its wall time teelog spent on its own work: the CPU time
/// of all its threads as the kernel accounts it, over the wall time. The kernel's account, not
/// the report's `teelog_seconds`, so that binaries which time themselves differently are
/// measured with one ruler.
#[derive(Clone, Copy)]
struct AuditRun {
    run: Run,
    teelog_share: f64,
}

fn median_audit(runs: &[AuditRun]) -> AuditRun {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.run.wall.total_cmp(&b.run.wall));
    sorted[sorted.len() / 2]
}

/// The audit line of the report for one binary (`which` names it, or is empty).
fn print_audit(args: &BenchArgs, which: &str, one: &[AuditRun], many: &[AuditRun]) {
    let (one, many) = (median_audit(one), median_audit(many));
    let per_cpu =
        |r: &AuditRun| r.run.cpu.map_or("?".to_string(), |cpu| format!("{:.0}", args.records as f64 / cpu));
    println!(
        "audit{which} against a Loki answering in {} ms, pages of {}: {} queries at once take {:.2}x less wall time than one \
         at a time ({:.2} s vs {:.2} s); teelog's own share of the wall time (CPU / wall) {:.1} % (one at a \
         time {:.1} %); records per CPU-second {} ({} one at a time)",
        args.loki_latency_ms,
        args.audit_page_size,
        args.audit_concurrent_queries,
        one.run.wall / many.run.wall,
        many.run.wall,
        one.run.wall,
        100.0 * many.teelog_share,
        100.0 * one.teelog_share,
        per_cpu(&many),
        per_cpu(&one),
    );
}

/// Batches per push to the in-memory Loki (its body limit is 64 MiB).
const BATCHES_PER_PUSH: usize = 16;

/// An in-memory Loki holding `stream` of `store`, answering each query after
/// `--loki-latency-ms`, and what `teelog audit` needs to read it back.
struct AuditLoki {
    loki: teelog_fake_loki::FakeLoki,
    stream: String,
    from: String,
    pubkey: String,
    threads: String,
    page_size: String,
}

impl AuditLoki {
    fn start(args: &BenchArgs, identity: &Path, store: &Path, stream: &str) -> anyhow::Result<Self> {
        let loki = teelog_fake_loki::FakeLoki::start()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = teelog_loki::LokiClient::new(loki.url(), teelog_loki::ClientOptions::default())?;
        let layout = teelog_loki::Layout::new(teelog_loki::LayoutOptions::default())?;
        let mut batches = Vec::new();
        each_line(&teelog_store::segments(store)?, |line| batches.push(line.to_vec()))?;
        for chunk in batches.chunks(BATCHES_PER_PUSH) {
            let mut push = teelog_loki::PushBuilder::new(&layout);
            for line in chunk {
                push.add_batch(line, &[])?;
            }
            let body = teelog_loki::encode_push(&push.finish())?;
            match runtime.block_on(client.push(body))? {
                teelog_loki::PushOutcome::Accepted => {}
                other => bail!("the in-memory Loki refused a push: {other:?}"),
            }
        }
        loki.set_query_latency(std::time::Duration::from_millis(args.loki_latency_ms));
        // An hour back covers every batch the run has just signed.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        let from = teelog_core::timestamp::format_rfc3339(i64::try_from(now.as_nanos())? - 3_600_000_000_000);
        Ok(Self {
            loki,
            stream: stream.to_string(),
            from,
            pubkey: s(&identity.join("public-key.pem")),
            threads: args.cores.to_string(),
            page_size: args.audit_page_size.to_string(),
        })
    }

    /// `teelog audit` (the binary `exe`) of the stream, `concurrent` queries at once.
    fn audit(&self, exe: &Path, concurrent: u32) -> anyhow::Result<AuditRun> {
        let concurrent = concurrent.to_string();
        let audit_args = [
            "audit",
            "--loki",
            self.loki.url(),
            "--from",
            &self.from,
            "--stream",
            &self.stream,
            "--pubkey",
            &self.pubkey,
            "--json",
            "--concurrent-queries",
            &concurrent,
            "--threads",
            &self.threads,
            "--page-size",
            &self.page_size,
        ];
        let (run, stdout) = run_child_output(exe, &audit_args, None)?;
        let report: serde_json::Value = serde_json::from_str(&stdout).context("teelog audit's JSON")?;
        if report["ok"] != true {
            bail!("the audit found something: {stdout}");
        }
        // Its peak RSS would include this process's in-memory Loki (see above): not reported.
        let run = Run { peak_rss_kib: None, ..run };
        let cpu = run.cpu.context("the audit's CPU time")?;
        Ok(AuditRun { run, teelog_share: cpu / run.wall })
    }
}

/// The sample records of `args` in `dir`, and the store `exe` signed them into (stream `bench`)
/// with an identity made for it.
pub(crate) struct Signed {
    pub(crate) records: PathBuf,
    pub(crate) identity: PathBuf,
    pub(crate) store: PathBuf,
}

pub(crate) fn sign_sample(args: &BenchArgs, exe: &Path, dir: &Path) -> anyhow::Result<Signed> {
    let records = dir.join("records.ndjson");
    let mut out = BufWriter::new(File::create(&records)?);
    teelog_sample::write_records(&mut out, args.records, args.record_bytes)?;
    out.flush()?;
    drop(out);
    let identity = dir.join("identity");
    let store = dir.join("store");
    run_child(exe, &["keygen", "--out", &s(&identity)], None)?;
    let sign = sign_args(&identity, &store, "bench", &args.batch_size.to_string());
    let sign: Vec<&str> = sign.iter().map(String::as_str).collect();
    run_child(exe, &sign, Some(&records))?;
    Ok(Signed { records, identity, store })
}

/// `--audit-only`: the records signed once, then only the audit phases, of the binary measured
/// and of `--audit-vs` in turn.
fn audit_only(args: &BenchArgs, exe: &Path, dir: &Path) -> anyhow::Result<()> {
    let Signed { identity, store, .. } = sign_sample(args, exe, dir)?;
    let loki = AuditLoki::start(args, &identity, &store, "bench")?;
    let binaries: Vec<&Path> = std::iter::once(exe).chain(args.audit_vs.as_deref()).collect();
    let mut one = vec![Vec::new(); binaries.len()];
    let mut many = vec![Vec::new(); binaries.len()];
    for _ in 0..args.runs {
        for (i, binary) in binaries.iter().enumerate() {
            one[i].push(loki.audit(binary, 1)?);
            many[i].push(loki.audit(binary, args.audit_concurrent_queries)?);
        }
    }
    println!(
        "teelog-bench --audit-only: {} records, batch size {}, median of {} runs, {} core(s)",
        args.records, args.batch_size, args.runs, args.cores
    );
    for (i, binary) in binaries.iter().enumerate() {
        print_audit(args, &format!(" of {}", binary.display()), &one[i], &many[i]);
    }
    if binaries.len() == 2 {
        let wall = |runs: &[AuditRun]| median_audit(runs).run.wall;
        let cpu = |runs: &[AuditRun]| median_audit(runs).run.cpu.unwrap_or(f64::NAN);
        println!(
            "{} against {}, same run: wall time one at a time {:.2}x, at once {:.2}x less; CPU time one at \
             a time {:.2}x, at once {:.2}x less",
            exe.display(),
            binaries[1].display(),
            wall(&one[1]) / wall(&one[0]),
            wall(&many[1]) / wall(&many[0]),
            cpu(&one[1]) / cpu(&one[0]),
            cpu(&many[1]) / cpu(&many[0]),
        );
    }
    Ok(())
}

/// `teelog sign` of stdin into `store` as `stream`, in batches of `batch_size`.
pub(crate) fn sign_args(identity: &Path, store: &Path, stream: &str, batch_size: &str) -> Vec<String> {
    ["sign", "--identity", &s(identity), "--store", &s(store), "--stream", stream, "--batch-size", batch_size]
        .into_iter()
        .map(String::from)
        .collect()
}

/// `teelog ship` into a fresh spool that keeps everything (an embedded store), without
/// heartbeats.
fn ship_args(identity: &Path, spool: &Path, batch_size: &str) -> Vec<String> {
    ["ship", "--identity", &s(identity), "--spool", &s(spool), "--keep-spool", "--heartbeat", "off"]
        .into_iter()
        .chain(["--max-records", batch_size])
        .map(String::from)
        .collect()
}

/// The daemon pinned to one core (where `taskset` exists), fed OTLP/HTTP protobuf requests by
/// clients on the others over keep-alive connections; timed from the first request to the last
/// response, which the daemon sends only once the records are fsynced in the spool.
fn ship_otlp_run(exe: &Path, ship_args: &[String], args: &BenchArgs) -> anyhow::Result<Run> {
    // A few distinct bodies, sent in turn: encoding is the client's cost, not the daemon's.
    let bodies: Vec<Vec<u8>> = (0..16)
        .map(|k| {
            let request = teelog_sample::otlp_request(
                k * args.otlp_request_records,
                args.otlp_request_records,
                args.record_bytes,
            );
            teelog_otlp::encode_protobuf(&request)
        })
        .collect();
    let requests = args.records.div_ceil(args.otlp_request_records.max(1));

    let mut daemon_args = ship_args.to_vec();
    daemon_args.extend(["--otlp-http".to_string(), "127.0.0.1:0".to_string()]);
    let daemon = PinnedDaemon::start(exe, &daemon_args, "OTLP/HTTP")?;
    let addr = daemon.addr;
    let start = Instant::now();
    let clients = args.otlp_clients.max(1);
    let bodies = std::sync::Arc::new(bodies);
    let handles: Vec<_> = (0..clients)
        .map(|client| {
            let bodies = bodies.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut conn = OtlpConnection::open(addr)?;
                for n in (client..requests).step_by(clients as usize) {
                    conn.export(&bodies[n as usize % bodies.len()])?;
                }
                Ok(())
            })
        })
        .collect();
    for handle in handles {
        handle.join().map_err(|_| anyhow::anyhow!("a bench client panicked"))??;
    }
    let wall = start.elapsed().as_secs_f64();

    daemon.stop(wall)
}

/// A daemon pinned to one core (where `taskset` exists), so that its figures are per core while
/// the bench's clients run on the others.
struct PinnedDaemon {
    child: std::process::Child,
    addr: SocketAddr,
    drain: std::thread::JoinHandle<String>,
}

impl PinnedDaemon {
    /// Starts `teelog ARGS` and waits until its `listener` is listening.
    fn start(exe: &Path, args: &[String], listener: &str) -> anyhow::Result<Self> {
        let mut cmd = on_one_core(exe);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("cannot run teelog {}", args[0]))?;
        let mut stderr = BufReader::new(child.stderr.take().context("no stderr")?);
        let mut log = String::new();
        let mark = format!("{listener} listening on ");
        let addr: SocketAddr = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line)? == 0 {
                let _ = reap(child);
                bail!("teelog {} ended before listening: {log}", args[0]);
            }
            if let Some(addr) = line.split(&mark).nth(1) {
                break addr.trim().parse().context("the daemon's listening address")?;
            }
            log.push_str(&line);
        };
        let drain = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            rest
        });
        Ok(Self { child, addr, drain })
    }

    /// Stops it with SIGTERM; the run took `wall` seconds.
    fn stop(self, wall: f64) -> anyhow::Result<Run> {
        let terminated = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        let (status, usage) = reap(self.child)?;
        let stderr = self.drain.join().unwrap_or_default();
        if !terminated.success() || !status.success() {
            bail!("the daemon failed ({status}): {stderr}");
        }
        Ok(Run { wall, cpu: Some(usage.cpu), peak_rss_kib: Some(usage.peak_rss_kib) })
    }
}

/// A `teelog gateway` that the relay phases ship to, trusting `identity`, its spool kept in `dir`
/// (one per run); pinned to the same core as the shipper.
struct GatewayDaemon(PinnedDaemon);

impl GatewayDaemon {
    fn start(exe: &Path, dir: &Path, identity: &Path, run: u32) -> anyhow::Result<Self> {
        let config = dir.join(format!("relay-gateway-{run}.toml"));
        let text = format!(
            "[spool]\ndir = {:?}\nkeep = true\n[listen]\nrelay = \"127.0.0.1:0\"\n[verify]\npubkeys = [{:?}]\n",
            s(&dir.join(format!("relay-gateway-spool-{run}"))),
            s(&identity.join("public-key.pem"))
        );
        fs::write(&config, text)?;
        Ok(Self(PinnedDaemon::start(exe, &["gateway".into(), "--config".into(), s(&config)], "relay")?))
    }
}

/// `teelog gateway` verifying every batch line of `store` (signed by `identity`) into a spool
/// that keeps them: timed from the first byte sent on a relay connection to the last
/// acknowledgement, which the gateway sends only once the lines are fsynced.
fn gateway_run(exe: &Path, dir: &Path, identity: &Path, store: &Path) -> anyhow::Result<Run> {
    let spool = dir.join("gateway-spool");
    let config = dir.join("gateway.toml");
    let text = format!(
        "[spool]\ndir = {:?}\nkeep = true\n[listen]\nrelay = \"127.0.0.1:0\"\n[verify]\npubkeys = [{:?}]\n",
        s(&spool),
        s(&identity.join("public-key.pem"))
    );
    fs::write(&config, text)?;
    // The lines are streamed from the store, not held: whatever this process holds when it
    // starts a later phase's child counts in that child's peak RSS.
    let segments = teelog_store::segments(store)?;
    let mut lines = 0u64;
    each_line(&segments, |_| lines += 1)?;
    let daemon = PinnedDaemon::start(exe, &["gateway".into(), "--config".into(), s(&config)], "relay")?;
    let start = Instant::now();
    let socket = TcpStream::connect(daemon.addr)?;
    socket.set_nodelay(true)?;
    let writer = socket.try_clone()?;
    let send = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut writer = BufWriter::with_capacity(1 << 20, writer);
        writer.write_all(&teelog_relay::Hello::new("bench", None, false).opening())?;
        let mut frame = Vec::new();
        let mut failed = None;
        each_line(&segments, |line| {
            frame.clear();
            teelog_relay::push_frame(&mut frame, line);
            if failed.is_none() {
                failed = writer.write_all(&frame).err();
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        Ok(writer.flush()?)
    });
    let mut replies = teelog_relay::FrameReader::client();
    let mut reader = socket;
    let mut buf = [0u8; 4096];
    let mut acked = 0;
    while acked < lines {
        match replies.next_frame()? {
            Some(frame) => match teelog_relay::ServerMessage::parse(frame)? {
                teelog_relay::ServerMessage::Ack(n) => acked = n,
                teelog_relay::ServerMessage::Welcome(_) => {}
                teelog_relay::ServerMessage::Error(e) => bail!("the gateway refused: {e}"),
            },
            None => {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    bail!("the gateway closed the connection after {acked} of {lines} lines");
                }
                replies.push(&buf[..n]);
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    send.join().map_err(|_| anyhow::anyhow!("the relay writer panicked"))??;
    drop(reader);
    let run = daemon.stop(wall);
    fs::remove_dir_all(&spool)?;
    run
}

/// Calls `take` with each whole line of `segments`, in order, read as a stream.
fn each_line(segments: &[PathBuf], mut take: impl FnMut(&[u8])) -> anyhow::Result<()> {
    for segment in segments {
        let mut reader = LineReader::new(BufReader::with_capacity(1 << 20, File::open(segment)?), 64 << 20);
        while let Some((_, line)) = reader.next_line()? {
            if let Line::Complete(bytes) = line {
                take(bytes);
            }
        }
    }
    Ok(())
}

/// One keep-alive HTTP/1.1 connection to `/v1/logs`.
struct OtlpConnection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl OtlpConnection {
    fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let writer = TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
        writer.set_nodelay(true)?;
        Ok(Self { reader: BufReader::new(writer.try_clone()?), writer })
    }

    /// Sends one protobuf request and reads the response; anything but 200 is an error.
    fn export(&mut self, body: &[u8]) -> anyhow::Result<()> {
        let head = format!(
            "POST /v1/logs HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.writer.write_all(head.as_bytes())?;
        self.writer.write_all(body)?;
        let mut status = String::new();
        self.reader.read_line(&mut status)?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the daemon closed the connection");
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().context("Content-Length")?;
                }
            }
        }
        let mut response = vec![0; length];
        self.reader.read_exact(&mut response)?;
        if status.split_whitespace().nth(1) != Some("200") {
            bail!("the daemon answered {}: {}", status.trim(), String::from_utf8_lossy(&response));
        }
        Ok(())
    }
}

/// The run with the median wall time, with the largest peak RSS of all runs.
fn median(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    Run { peak_rss_kib: runs.iter().filter_map(|r| r.peak_rss_kib).max(), ..sorted[sorted.len() / 2] }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Seconds to read the records line by line and SHA-256 each one.
fn sha256_baseline(input: &Path) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut reader = LineReader::new(BufReader::with_capacity(1 << 20, File::open(input)?), 1 << 20);
    let mut acc = 0u8;
    while let Some((_, line)) = reader.next_line()? {
        if let Line::Complete(bytes) = line {
            acc ^= teelog_core::merkle::sha256(bytes)[0];
        }
    }
    std::hint::black_box(acc);
    Ok(start.elapsed().as_secs_f64())
}

/// `exe` pinned to one core (or `--cores`) where `taskset` exists: the targets are per core, and
/// the pipeline's threads must not make a second core look like speed.
fn on_one_core(exe: &Path) -> Command {
    let pinned = Command::new("taskset").arg("--version").output().is_ok_and(|o| o.status.success());
    if pinned {
        let mut cmd = Command::new("taskset");
        let cores = CORES.get().copied().unwrap_or(1);
        cmd.args(["--cpu-list", &format!("0-{}", cores - 1)]).arg(exe);
        cmd
    } else {
        Command::new(exe)
    }
}

/// Runs `teelog ARGS [< stdin]` on one core and measures it.
fn run_child(exe: &Path, args: &[&str], stdin: Option<&Path>) -> anyhow::Result<Run> {
    Ok(run_measured(exe, args, &teelog_command(args), stdin, Stdio::null())?.0)
}

/// [`run_child`], keeping what the child prints on stdout.
fn run_child_output(exe: &Path, args: &[&str], stdin: Option<&Path>) -> anyhow::Result<(Run, String)> {
    let (run, stdout, _) = run_measured(exe, args, &teelog_command(args), stdin, Stdio::piped())?;
    Ok((run, stdout))
}

/// How errors name a teelog child.
fn teelog_command(args: &[&str]) -> String {
    format!("teelog {}", args.first().unwrap_or(&""))
}

/// Runs `program ARGS [< stdin] [> stdout]` on one core and measures it; `what` names it in
/// errors. Returns what it printed on stdout (if that is piped) and on stderr.
fn run_measured(
    program: &Path,
    args: &[&str],
    what: &str,
    stdin: Option<&Path>,
    stdout: Stdio,
) -> anyhow::Result<(Run, String, String)> {
    let mut cmd = on_one_core(program);
    cmd.args(args).stdout(stdout).stderr(Stdio::piped());
    match stdin {
        Some(path) => cmd.stdin(File::open(path)?),
        None => cmd.stdin(Stdio::null()),
    };
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot run {what}"))?;
    // Stdout on a thread of its own, so that neither pipe fills while the other is read.
    let stdout = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut text = String::new();
            out.read_to_string(&mut text).map(|_| text)
        })
    });
    let mut stderr = String::new();
    // Read to its end, which comes when the child exits: only then is it reaped.
    child.stderr.take().context("no stderr")?.read_to_string(&mut stderr)?;
    let (status, usage) = reap(child)?;
    let wall = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{what} failed ({status}): {stderr}");
    }
    let stdout = match stdout {
        Some(reader) => reader.join().map_err(|_| anyhow::anyhow!("reading stdout panicked"))??,
        None => String::new(),
    };
    Ok((Run { wall, cpu: Some(usage.cpu), peak_rss_kib: Some(usage.peak_rss_kib) }, stdout, stderr))
}

/// What a child used, as the kernel accounted it when the child was reaped.
struct Usage {
    /// User and system CPU seconds of all its threads.
    cpu: f64,
    /// Its peak resident set (Linux counts `ru_maxrss` in KiB). Under `taskset`, which execs
    /// teelog in the same process, it is teelog's, taskset's own being far smaller.
    peak_rss_kib: u64,
}

/// Waits for `child` to end and reaps it, with what it used. `std::process::Child::wait` gives
/// only the status, and `/proc/<pid>` is gone by the time a child can be seen to have ended, so
/// the child is reaped with `wait4`, which returns the status and the usage together. `child`
/// is consumed: std must not wait for it again.
fn reap(child: Child) -> anyhow::Result<(ExitStatus, Usage)> {
    let pid = libc::pid_t::try_from(child.id()).context("a child's pid out of range")?;
    let mut status: libc::c_int = 0;
    loop {
        #[allow(unsafe_code)]
        // SAFETY: `libc::rusage` is integers and `timeval`s of integers, for which all-zero
        // bytes are a valid value; `wait4` writes only into `status` and `usage`, both live
        // locals of the right types, and keeps neither pointer past the call. `pid` is our own
        // child, not yet reaped (std reaps only in `wait`, `try_wait` and `output`, which are
        // not called on it).
        let (reaped, usage) = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            (libc::wait4(pid, &mut status, 0, &mut usage), usage)
        };
        if reaped == pid {
            let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            let usage = Usage {
                cpu: seconds(usage.ru_utime) + seconds(usage.ru_stime),
                peak_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            };
            return Ok((ExitStatus::from_raw(status), usage));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error).with_context(|| format!("cannot wait for child {pid}"));
        }
    }
}
