//! `teelog-bench --callgrind`: instructions per record of `teelog sign` and `teelog verify`,
//! counted by valgrind's callgrind on the real binary, beside SHA-256 of the same records counted
//! the same way (this program hashing them, `--sha256-only`). Instruction counts hardly move with
//! the machine's load, where times on a shared machine do.
//!
//! Each is run on all the records and on a tenth of them, and the difference is divided by the
//! difference in records: what is left is the cost of a record (its share of the per-batch
//! signature included), without the fixed cost of starting, reading the key and so on.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context};

use crate::{run_child, run_measured, s, BenchArgs};

/// The callgrind mode's options.
#[derive(clap::Args, Clone)]
pub(crate) struct CallgrindArgs {
    /// Count instructions per record of sign and verify under valgrind's callgrind instead of
    /// timing the phases (--records of them: 100000 is plenty).
    #[arg(long)]
    pub(crate) callgrind: bool,
    /// SHA-256 each line of FILE and exit: the baseline that `--callgrind` counts.
    #[arg(long, value_name = "FILE", hide = true)]
    pub(crate) sha256_only: Option<PathBuf>,
}

/// Instructions of one program over the full input and over a tenth of it.
struct Count {
    name: &'static str,
    full: u64,
    tenth: u64,
}

pub(crate) fn run(args: &BenchArgs, exe: &Path, dir: &Path) -> anyhow::Result<()> {
    if let Some(why) = valgrind_missing() {
        println!("callgrind: skipped: {why}");
        return Ok(());
    }
    let records = args.records;
    let tenth = records / 10;
    if tenth == 0 {
        bail!("--callgrind needs at least 10 records");
    }
    let bench = std::env::current_exe().context("cannot find this program's own path")?;
    let identity = dir.join("identity");
    run_child(exe, &["keygen", "--out", &s(&identity)], None)?;
    let public = s(&identity.join("public-key.pem"));
    let identity = s(&identity);
    let batch_size = args.batch_size.to_string();
    let mut counts = vec![
        Count { name: "SHA-256 of each record", full: 0, tenth: 0 },
        Count { name: "teelog sign", full: 0, tenth: 0 },
        Count { name: "teelog verify", full: 0, tenth: 0 },
    ];
    for (n, size) in [(records, "full"), (tenth, "tenth")] {
        let input = dir.join(format!("records-{size}.ndjson"));
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&input)?);
        teelog_sample::write_records(&mut out, n, args.record_bytes)?;
        out.flush()?;
        drop(out);
        let store = dir.join(format!("store-{size}"));
        let input_arg = s(&input);
        let store_arg = s(&store);
        let sign_args = crate::sign_args(Path::new(&identity), &store, size, &batch_size);
        let runs: [(&Path, Vec<&str>, Option<&Path>); 3] = [
            (&bench, vec!["--sha256-only", &input_arg], None),
            (exe, sign_args.iter().map(String::as_str).collect(), Some(&input)),
            (exe, vec!["verify", "--store", &store_arg, "--pubkey", &public], None),
        ];
        for (count, (program, program_args, stdin)) in counts.iter_mut().zip(runs) {
            let ir = instructions(program, &program_args, stdin, dir)?;
            match size {
                "full" => count.full = ir,
                _ => count.tenth = ir,
            }
        }
        fs::remove_dir_all(&store)?;
        fs::remove_file(&input)?;
    }
    let per_record = |c: &Count| (c.full as f64 - c.tenth as f64) / (records - tenth) as f64;
    let baseline = per_record(&counts[0]);
    println!(
        "teelog-bench --callgrind: {records} records ({} bytes/record), batch size {}; instructions per record = (count over {records} - count over {tenth}) / {}",
        args.record_bytes,
        args.batch_size,
        records - tenth
    );
    println!(
        "{:<24} {:>16} {:>16} {:>14} {:>12}",
        "program", "instructions", "over a tenth", "per record", "/ SHA-256"
    );
    for count in &counts {
        println!(
            "{:<24} {:>16} {:>16} {:>14.0} {:>12.2}",
            count.name,
            count.full,
            count.tenth,
            per_record(count),
            per_record(count) / baseline
        );
    }
    Ok(())
}

/// Why valgrind cannot be used here, if it cannot.
fn valgrind_missing() -> Option<String> {
    let ran = std::process::Command::new("valgrind").arg("--version").output();
    match ran {
        Ok(o) if o.status.success() => None,
        _ => Some("no valgrind here (Debian: apt-get install valgrind)".into()),
    }
}

/// Instructions callgrind counts for `program ARGS [< stdin]`, all its threads.
fn instructions(program: &Path, args: &[&str], stdin: Option<&Path>, dir: &Path) -> anyhow::Result<u64> {
    let out = dir.join("callgrind.out");
    let out_arg = format!("--callgrind-out-file={}", s(&out));
    let program_arg = s(program);
    let mut argv = vec!["--tool=callgrind", &out_arg, &program_arg];
    argv.extend(args);
    let what = format!("valgrind --tool=callgrind {} {}", program.display(), args.first().unwrap_or(&""));
    run_measured(Path::new("valgrind"), &argv, &what, stdin, Stdio::null())?;
    // The file's `totals:` (or `summary:`) line: every event of the run, here instructions.
    let mut total = None;
    for line in BufReader::new(File::open(&out)?).lines() {
        let line = line?;
        if let Some(n) = line.strip_prefix("totals:").or_else(|| line.strip_prefix("summary:")) {
            total = Some(n.trim().parse::<u64>().with_context(|| format!("callgrind's {line:?}"))?);
        }
    }
    fs::remove_file(&out)?;
    total.with_context(|| format!("no totals in callgrind's output for {what}"))
}

/// `--sha256-only FILE`: what the bench's SHA-256 baseline does, for callgrind to count.
pub(crate) fn sha256_only(file: &Path) -> anyhow::Result<()> {
    crate::sha256_baseline(file).map(|_| ())
}
