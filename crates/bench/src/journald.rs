//! The journald side-by-side: the bench's records fed to `systemd-journal-remote --seal`
//! (journald's Forward Secure Sealing) and checked with `journalctl --verify`, each a child
//! process on one core measured like the teelog phases, so that teelog's sign and verify can be
//! set beside them per CPU-second. Where the tools are missing or cannot run here, the phase
//! says why and reports nothing.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context};
use teelog_store::lines::{Line, LineReader};

use crate::{median, run_measured, s, Run};

/// Where Debian's `systemd-journal-remote` package puts the program.
const REMOTE_PATHS: [&str; 2] =
    ["/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"];

/// Sealing key change interval: journald's default.
const FSS_INTERVAL: &str = "15min";

/// What the phase measured, or why it was skipped.
pub(crate) enum Outcome {
    Skipped(String),
    Measured { seal: Run, verify: Run },
}

/// journald FSS over the same records as teelog's `sign` and `verify` phases, median of `runs`.
pub(crate) fn phase(input: &Path, dir: &Path, records: u64, runs: u32) -> anyhow::Result<Outcome> {
    let tools = match Tools::find() {
        Ok(tools) => tools,
        Err(why) => return Ok(Outcome::Skipped(why)),
    };
    let root = dir.join("journald");
    fs::create_dir_all(&root)?;
    let export = root.join("records.export");
    let mut seal = Vec::new();
    let mut verify = Vec::new();
    for run in 0..runs {
        // Keys of its own for each run: journald evolves the sealing key on disk as the
        // entries' time passes into later epochs (forward security), and a key moved on cannot
        // seal the next run's entries, which start earlier.
        let keys = root.join(format!("keys-{run}"));
        let key = match tools.setup_keys(&keys) {
            Ok(key) => key,
            Err(why) if run == 0 => return Ok(Outcome::Skipped(format!("{why:#}"))),
            Err(why) => return Err(why),
        };
        // Written for each run: its entries must start at the time it runs (see write_export).
        write_export(input, &export)?;
        let out = root.join(format!("out-{run}"));
        fs::create_dir_all(&out)?;
        seal.push(tools.seal(&keys, &export, &out, records)?);
        verify.push(tools.verify(&key, &out)?);
        fs::remove_dir_all(&out)?;
        fs::remove_dir_all(&keys)?;
    }
    fs::remove_dir_all(&root)?;
    Ok(Outcome::Measured { seal: median(&seal), verify: median(&verify) })
}

impl Outcome {
    /// Its rows, and teelog's records per CPU-second over journald's for sign (medians `sign`)
    /// and verify (`verify`) on the same `records`.
    pub(crate) fn print(&self, records: u64, sign: Run, verify: Run) {
        let (seal, check) = match self {
            Outcome::Skipped(why) => {
                println!("journald FSS: skipped: {why}");
                return;
            }
            Outcome::Measured { seal, verify } => (seal, verify),
        };
        let n = records as f64;
        let per_cpu = |run: &Run| run.cpu.map(|cpu| n / cpu);
        for (name, run) in
            [("journald: journal-remote --seal", seal), ("journald: journalctl --verify", check)]
        {
            // The columns of the teelog phases; MB/s and the ratio to SHA-256 are left out, the
            // export format's bytes being other bytes.
            println!(
                "{:<32} {:>12.0} {:>14} {:>9} {:>11} {:>10}",
                name,
                n / run.wall,
                per_cpu(run).map_or("?".into(), |r| format!("{r:.0}")),
                "-",
                "-",
                run.peak_rss_kib.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            );
        }
        let ratio = |teelog: &Run, journald: &Run| match (per_cpu(teelog), per_cpu(journald)) {
            (Some(t), Some(j)) => format!("{:.1}x", t / j),
            _ => "?".into(),
        };
        println!(
            "teelog per CPU-second against journald FSS on the same records: sign {} (journal-remote --seal), verify {} (journalctl --verify)",
            ratio(&sign, seal),
            ratio(&verify, check)
        );
    }
}

/// The journald programs, and what runs them in a mount namespace of their own.
struct Tools {
    remote: PathBuf,
    machine_id: String,
}

impl Tools {
    /// The tools, or why the phase cannot run.
    fn find() -> Result<Self, String> {
        let remote = REMOTE_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or("no systemd-journal-remote (Debian: apt-get install systemd-journal-remote)")?;
        for (program, arg) in [("journalctl", "--version"), ("unshare", "--version"), ("sh", "-c true")] {
            let ran = std::process::Command::new(program).args(arg.split(' ')).output();
            if !ran.is_ok_and(|o| o.status.success()) {
                return Err(format!("`{program} {arg}` does not run here"));
            }
        }
        // journald keeps the sealing key at /var/log/journal/<machine id>/fss, a path no option
        // moves: the key goes to a private directory mounted there in a namespace of its own.
        let machine_id = fs::read_to_string("/etc/machine-id")
            .map_err(|e| format!("cannot read /etc/machine-id, which names journald's key directory: {e}"))?;
        Ok(Self { remote, machine_id: machine_id.trim().to_string() })
    }

    /// `sh -c SCRIPT` in a mount namespace of its own where `keys` is /var/log/journal, pinned
    /// to one core like the teelog phases; `args` are the script's `$1`, `$2`…
    fn in_namespace(
        &self,
        what: &str,
        keys: &Path,
        script: &str,
        args: &[&str],
        stdin: Option<&Path>,
    ) -> anyhow::Result<(Run, String, String)> {
        // Without root, a user namespace maps the caller to root in it, where it may mount.
        let mut unshare = vec!["--mount"];
        if !running_as_root() {
            unshare.extend(["--user", "--map-root-user"]);
        }
        let full = format!("mount --bind \"$0\" /var/log/journal && {script}");
        let keys = s(keys);
        let mut argv: Vec<&str> = unshare;
        argv.extend(["sh", "-c", &full, &keys]);
        argv.extend(args);
        run_measured(Path::new("unshare"), &argv, what, stdin, Stdio::piped())
    }

    /// A new FSS key pair in `keys`; returns the verification key.
    fn setup_keys(&self, keys: &Path) -> anyhow::Result<String> {
        fs::create_dir_all(keys.join(&self.machine_id))?;
        let script = format!("exec journalctl --setup-keys --interval={FSS_INTERVAL}");
        let (_, stdout, _) = self
            .in_namespace("journalctl --setup-keys (in a mount namespace)", keys, &script, &[], None)
            .context("cannot make journald FSS keys in a private directory")?;
        // Not on a terminal, it prints the verification key alone.
        let key = stdout.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            bail!("journalctl --setup-keys printed no verification key: {stdout:?}");
        }
        Ok(key.to_string())
    }

    /// journal-remote reading the export file into a sealed journal in `out`.
    fn seal(&self, keys: &Path, export: &Path, out: &Path, records: u64) -> anyhow::Result<Run> {
        let script = "exec \"$1\" --seal=yes --split-mode=none --output=\"$2/remote.journal\" -";
        let (run, _, stderr) = self.in_namespace(
            "systemd-journal-remote --seal",
            keys,
            script,
            &[&s(&self.remote), &s(out)],
            Some(export),
        )?;
        // Every record must be in, or the comparison is not over the same records.
        let written = stderr.lines().find_map(|l| {
            l.strip_prefix("Finishing after writing ")?.strip_suffix(" entries")?.parse::<u64>().ok()
        });
        if written != Some(records) {
            bail!("systemd-journal-remote did not say it wrote all {records} entries: {stderr}");
        }
        Ok(run)
    }

    /// `journalctl --verify` of the journal files in `out` with the verification key `key`.
    fn verify(&self, key: &str, out: &Path) -> anyhow::Result<Run> {
        let key = format!("--verify-key={key}");
        let directory = format!("--directory={}", s(out));
        let (run, stdout, stderr) = run_measured(
            Path::new("journalctl"),
            &["--verify", &key, &directory],
            "journalctl --verify",
            None,
            Stdio::piped(),
        )?;
        // A journal that was never sealed verifies without a key's check: the comparison needs
        // one that was ("Validated from … to …").
        let said = format!("{stdout}{stderr}");
        if !said.contains("PASS") || !said.contains("Validated from") {
            bail!("journalctl --verify did not validate sealed journal files: {said}");
        }
        Ok(run)
    }
}

fn running_as_root() -> bool {
    // The effective uid, as /proc tells it (the bench keeps `unsafe` to its one wait4).
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|l| l.strip_prefix("Uid:").and_then(|ids| ids.split_whitespace().nth(1)) == Some("0"))
    })
}

/// The NDJSON records of `input` in the Journal Export Format, as journald would hold them:
/// `message` as MESSAGE, `level` as PRIORITY, each attribute a field of its own, and `ts` as the
/// entry's time, moved so that the first record is now. journald stamps entries with the time
/// they arrive, and its sealing follows the clock: a journal file begins with a tag for the
/// current key epoch, and `journalctl --verify` fails an entry older than a tag before it
/// ("Older entry after newer tag"), so entries from an earlier epoch cannot be sealed.
fn write_export(input: &Path, export: &Path) -> anyhow::Result<()> {
    let mut reader = LineReader::new(BufReader::with_capacity(1 << 20, File::open(input)?), 1 << 20);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(export)?);
    let now_us =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros())?;
    let mut first_us = None;
    let mut entry = Vec::new();
    while let Some((number, line)) = reader.next_line()? {
        let Line::Complete(bytes) = line else { bail!("line {number} of {} is too long", input.display()) };
        let record: serde_json::Value =
            serde_json::from_slice(bytes).with_context(|| format!("line {number} of {}", input.display()))?;
        let ts = record["ts"].as_str().with_context(|| format!("line {number}: no ts"))?;
        let ts_us = teelog_core::timestamp::parse_rfc3339(ts)? / 1000;
        let first = *first_us.get_or_insert(ts_us);
        entry.clear();
        export_entry(&record, now_us + (ts_us - first), ts_us - first, &mut entry)?;
        out.write_all(&entry)?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// Fixed boot id of the exported entries (journal-remote wants one).
const BOOT_ID: &str = "5eed0fbe0c5e4d6f9c1e0a7b2d3c4e5f";

/// One record as an export-format entry.
fn export_entry(
    record: &serde_json::Value,
    realtime_us: i64,
    monotonic_us: i64,
    out: &mut Vec<u8>,
) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut head = String::new();
    write!(
        head,
        "__REALTIME_TIMESTAMP={realtime_us}\n__MONOTONIC_TIMESTAMP={monotonic_us}\n_BOOT_ID={BOOT_ID}\n"
    )?;
    out.extend_from_slice(head.as_bytes());
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    field(out, "MESSAGE", &text(&record["message"]));
    let priority = match record["level"].as_str() {
        Some("Critical") => "2",
        Some("Error") => "3",
        Some("Warning") => "4",
        Some("Debug") | Some("Trace") => "7",
        _ => "6",
    };
    field(out, "PRIORITY", priority);
    if let Some(attributes) = record["attributes"].as_object() {
        for (name, value) in attributes {
            field(out, &field_name(name), &text(value));
        }
    }
    out.push(b'\n');
    Ok(())
}

/// One field: `NAME=value`, or the binary form (name, little-endian 64-bit length, bytes) for a
/// value with a newline, as the export format requires.
fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

/// A journald field name for an attribute: `executionId` → `EXECUTION_ID` (journald takes upper
/// case letters, digits and underscores, not first).
fn field_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() && !out.is_empty() {
            out.push('_');
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push('_');
        }
    }
    let out = out.trim_start_matches(|c: char| c == '_' || c.is_ascii_digit()).to_string();
    if out.is_empty() {
        "ATTRIBUTE".to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names_become_journald_field_names() {
        assert_eq!(field_name("executionId"), "EXECUTION_ID");
        assert_eq!(field_name("durationMs"), "DURATION_MS");
        assert_eq!(field_name("pad"), "PAD");
        assert_eq!(field_name("_9a-b"), "A_B");
        assert_eq!(field_name("__"), "ATTRIBUTE");
    }

    #[test]
    fn a_value_with_a_newline_is_written_in_the_binary_form() {
        let mut out = Vec::new();
        field(&mut out, "MESSAGE", "a\nb");
        assert_eq!(out, b"MESSAGE\n\x03\0\0\0\0\0\0\0a\nb\n");
        out.clear();
        field(&mut out, "MESSAGE", "ab");
        assert_eq!(out, b"MESSAGE=ab\n");
    }
}
