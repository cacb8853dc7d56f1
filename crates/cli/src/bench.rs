//! `teelog bench`: end-to-end sign and verify on generated records, next to SHA-256 over the
//! same bytes measured in the same run, with each phase's peak RSS.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use teelog_store::lines::{Line, LineReader};

const REPORT_ENV: &str = "TEELOG_REPORT_RESOURCES";
const PEAK_RSS_PREFIX: &str = "teelog-peak-rss-kib: ";
const CPU_PREFIX: &str = "teelog-cpu-ns: ";

#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    #[arg(long, default_value_t = 200)]
    pub record_bytes: usize,
    #[arg(long, default_value_t = 4096)]
    pub batch_size: u64,
    /// Runs of each phase; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Scratch directory (default: a new one under the system temp dir, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Called at exit: when the bench runs us as a child, tell it our peak RSS and CPU time.
pub fn report_resources() {
    if std::env::var_os(REPORT_ENV).is_none() {
        return;
    }
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(kib) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
        eprintln!("{PEAK_RSS_PREFIX}{}", kib.trim().trim_end_matches(" kB"));
    }
    // The first field of schedstat is the time this (single-threaded) process ran, in ns.
    let schedstat = fs::read_to_string("/proc/self/schedstat").unwrap_or_default();
    if let Some(ns) = schedstat.split_whitespace().next() {
        eprintln!("{CPU_PREFIX}{ns}");
    }
}

/// One run of a phase.
#[derive(Clone, Copy)]
struct Run {
    wall: f64,
    cpu: Option<f64>,
    peak_rss_kib: Option<u64>,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let (dir, remove) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("teelog-bench-{}", std::process::id())), true),
    };
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    fs::create_dir_all(&dir)?;
    let result = bench_in(args, &dir);
    if remove {
        let _ = fs::remove_dir_all(&dir);
    }
    result
}

fn bench_in(args: &BenchArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let input = dir.join("records.ndjson");
    let mut out = BufWriter::new(File::create(&input)?);
    crate::sample::write_records(&mut out, args.records, args.record_bytes)?;
    // Written back now, so that the kernel is not flushing it while sign runs.
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let input_bytes = fs::metadata(&input)?.len();

    let exe = std::env::current_exe().context("cannot find the teelog executable")?;
    let identity = dir.join("identity");
    let store = dir.join("store");
    run_child(&exe, &["keygen", "--out", &s(&identity)], None)?;
    let batch_size = args.batch_size.to_string();
    let mut baseline = Vec::new();
    let mut sign = Vec::new();
    let mut verify = Vec::new();
    for run in 0..args.runs {
        baseline.push(sha256_baseline(&input)?);
        if store.exists() {
            fs::remove_dir_all(&store)?;
        }
        // Each run signs a stream of its own into a fresh store.
        let stream = format!("bench-{run}");
        let sign_args = [
            "sign",
            "--identity",
            &s(&identity),
            "--store",
            &s(&store),
            "--stream",
            &stream,
            "--batch-size",
            &batch_size,
        ];
        sign.push(run_child(&exe, &sign_args, Some(&input))?);
        let verify_args =
            ["verify", "--store", &s(&store), "--pubkey", &s(&identity.join("public-key.pem")), "--json"];
        verify.push(run_child(&exe, &verify_args, None)?);
    }
    let baseline =
        median(&baseline.iter().map(|&wall| Run { wall, cpu: None, peak_rss_kib: None }).collect::<Vec<_>>());

    let n = args.records as f64;
    let mb = input_bytes as f64 / 1e6;
    println!(
        "teelog bench: {} records, {:.1} MB ({} bytes/record), batch size {}, median of {} runs",
        args.records,
        mb,
        input_bytes / args.records.max(1),
        args.batch_size,
        args.runs
    );
    println!(
        "{:<24} {:>12} {:>14} {:>9} {:>11} {:>10}",
        "phase", "records/s", "records/cpu-s", "MB/s", "vs SHA-256", "peak RSS"
    );
    println!(
        "{:<24} {:>12.0} {:>14} {:>9.1} {:>11} {:>10}",
        "SHA-256 of each record",
        n / baseline.wall,
        "-",
        mb / baseline.wall,
        "1.00",
        "-"
    );
    for (name, runs) in [("sign (stdin → store)", &sign), ("verify (store)", &verify)] {
        let run = median(runs);
        let rss = run.peak_rss_kib.map_or("?".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        let per_cpu = run.cpu.map_or("?".to_string(), |cpu| format!("{:.0}", n / cpu));
        println!(
            "{:<24} {:>12.0} {:>14} {:>9.1} {:>11.2} {:>10}",
            name,
            n / run.wall,
            per_cpu,
            mb / run.wall,
            baseline.wall / run.wall,
            rss
        );
    }
    Ok(ExitCode::SUCCESS)
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

/// Runs `teelog ARGS [< stdin]` and measures it.
fn run_child(exe: &Path, args: &[&str], stdin: Option<&Path>) -> anyhow::Result<Run> {
    let mut cmd = Command::new(exe);
    cmd.args(args).env(REPORT_ENV, "1").stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(path) = stdin {
        cmd.stdin(File::open(path)?);
    }
    let start = Instant::now();
    let output = cmd.output().with_context(|| format!("cannot run teelog {}", args[0]))?;
    let wall = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("teelog {} failed ({}): {stderr}", args[0], output.status);
    }
    let field = |prefix: &str| stderr.lines().find_map(|l| l.strip_prefix(prefix)?.parse::<u64>().ok());
    Ok(Run { wall, cpu: field(CPU_PREFIX).map(|ns| ns as f64 / 1e9), peak_rss_kib: field(PEAK_RSS_PREFIX) })
}
