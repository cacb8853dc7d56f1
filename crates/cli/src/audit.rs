//! `teelog audit`: its arguments and what it prints. The audit itself (reading teelog streams
//! back from Grafana Loki and verifying them as `teelog verify` does) is `teelog_audit::loki`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use teelog_audit::files::LineSink;
use teelog_audit::loki::{LokiAudit, LokiRead, Progress, Summary};
use teelog_core::display::escape_controls;
use teelog_core::timestamp::parse_rfc3339;
use teelog_core::Report;
use teelog_loki::layout::DEFAULT_JOB;
use teelog_loki::query::MAX_QUERY_LIMIT;

use crate::verify::{finish, print_human, verifier, StreamArgs, ThreadsArg, TrustArgs};

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub loki: LokiArgs,
    /// A teelog stream to audit; repeat for several. Default: every teelog stream with entries
    /// in the range (found through the teelog_stream label's values).
    #[arg(long = "stream")]
    pub streams: Vec<String>,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub expect: StreamArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as one self-contained HTML file for people (verdict, timeline of
    /// code versions per stream, findings, trust anchors).
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub threads: ThreadsArg,
}

/// Which Loki, and which part of it, teelog streams are read from. `--loki` and `--from` are
/// checked when the group is read, not by clap's `required`, which would hold them required
/// where the group is optional (`evidence export`).
#[derive(clap::Args)]
pub struct LokiArgs {
    /// Loki's (or its gateway's) base URL, e.g. http://loki:3100 (required).
    #[arg(long, required = false)]
    pub loki: String,
    /// The `job` label the batches were pushed with [default: teelog]. (No clap default here
    /// or below: a default would make an optional group of these always present.)
    #[arg(long)]
    pub job: Option<String>,
    /// A static label the batches were pushed with, NAME=VALUE (e.g. env=prod); repeat for
    /// several.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Sent as X-Scope-OrgID, for a multi-tenant Loki.
    #[arg(long)]
    pub tenant: Option<String>,
    /// A file holding the bearer token to send to Loki.
    #[arg(long)]
    pub bearer_token_file: Option<PathBuf>,
    /// Start of the range (RFC 3339, inclusive). The verifier wants every batch from seq 1, so
    /// give a time at or before the first batch of the streams: batches sealed before --from
    /// are reported as a sequence_gap (required).
    #[arg(long, required = false)]
    pub from: String,
    /// End of the range (RFC 3339, exclusive; default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Entries per query_range call; at most 5000, Loki's default max_entries_limit_per_query
    /// [default: 5000].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_QUERY_LIMIT)))]
    pub page_size: Option<u32>,
    /// Queries sent to Loki at once: a range that one page does not hold is read on in parts
    /// at once [default: 8; 1 reads page after page].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrent_queries: Option<u32>,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').ok_or("expected NAME=VALUE, e.g. env=prod")?;
    Ok((name.to_string(), value.to_string()))
}

#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    report: &'a Report,
    audit: &'a Summary,
}

pub fn run(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let (report, summary) = audit(args)?;
    eprintln!(
        "teelog audit: {} queries; {:.2} s waiting on Loki, {:.2} s of teelog's CPU",
        summary.queries, summary.loki_seconds, summary.teelog_seconds
    );
    if let Some(path) = &args.report {
        crate::verify::write_html(path, &report, &args.trust)?;
    }
    finish(&report, &args.trust, || {
        if args.json {
            println!("{}", serde_json::to_string(&JsonReport { report: &report, audit: &summary })?);
        } else {
            print_human(&report);
            print_summary(&summary);
        }
        Ok(())
    })
}

/// The audit's own lines; stream names come from Loki, so they are escaped like any input.
fn print_summary(summary: &Summary) {
    println!(
        "AUDIT {} {} .. {}, streams {}: {} of {} batches valid, {} record entries",
        escape_controls(&summary.loki),
        summary.from,
        summary.to,
        escape_controls(&summary.streams.join(", ")),
        summary.batches_valid,
        summary.batch_entries,
        summary.record_entries
    );
    if summary.foreign_entries > 0 {
        println!(
            "AUDIT {} entries belong to no signed batch (foreign entries, see malformed)",
            summary.foreign_entries
        );
    }
    for gap in &summary.gaps {
        let batches = match gap.last_seq {
            Some(last) if last != gap.first_seq => format!("batches {} to {last}", gap.first_seq),
            _ => format!("batch {}", gap.first_seq),
        };
        let when = match (&gap.after, &gap.before) {
            (Some(after), Some(before)) => format!("between {after} and {before}"),
            (None, Some(before)) => format!("before {before} (earlier than --from, or never stored)"),
            (Some(after), None) => format!("after {after}"),
            (None, None) => "at an unknown time".into(),
        };
        println!(
            "GAP   stream={} epoch={} {batches} missing, sealed {when}",
            escape_controls(&gap.stream),
            escape_controls(&gap.epoch)
        );
    }
}

fn audit(args: &AuditArgs) -> anyhow::Result<(Report, Summary)> {
    let options = args.loki.options(args.streams.clone(), args.expect.allow_empty)?;
    let verifier = verifier(&args.trust, &args.expect, args.report.is_some())?;
    let mut verifier = teelog_audit::pool::PooledVerifier::new(verifier, args.threads.get())
        .context("cannot start the verifier's threads")?;
    let read = read_loki(&mut verifier, &options, args.threads.get())?;
    let report = verifier.finish();
    let summary = read.summary(&report);
    Ok((report, summary))
}

impl LokiArgs {
    /// What to read: `streams` (none: every teelog stream of the range); with `allow_empty`,
    /// finding no stream at all is not a finding.
    pub fn options(&self, streams: Vec<String>, allow_empty: bool) -> anyhow::Result<LokiAudit> {
        let from = parse_rfc3339(&self.from).context("--from")?;
        let to = match &self.to {
            Some(text) => parse_rfc3339(text).context("--to")?,
            None => crate::sign::now(),
        };
        let bearer_token = match &self.bearer_token_file {
            None => None,
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
        };
        if bearer_token.as_deref() == Some("") {
            bail!("--bearer-token-file: the file is empty");
        }
        Ok(LokiAudit {
            url: self.loki.clone(),
            streams,
            job: self.job.clone().unwrap_or_else(|| DEFAULT_JOB.to_string()),
            labels: self.labels.clone(),
            tenant: self.tenant.clone(),
            bearer_token,
            from,
            to,
            page_size: self.page_size.unwrap_or(MAX_QUERY_LIMIT),
            concurrent_queries: self.concurrent_queries.map_or(8, |n| n as usize),
            allow_empty,
            clock: crate::sign::now,
        })
    }
}

/// Reads `options`' streams from Loki into `sink`, saying on stderr what it waits for. With more
/// than one of `threads`, the tasks that query Loki decode its answers on worker threads of
/// their own while this thread rebuilds batch lines and hands them to `sink`.
pub fn read_loki(
    sink: &mut impl LineSink,
    options: &LokiAudit,
    threads: std::num::NonZeroUsize,
) -> anyhow::Result<LokiRead> {
    let runtime = match threads.get() {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build()?,
    };
    let mut progress = Stderr { live: std::io::stderr().is_terminal() };
    Ok(runtime.block_on(teelog_audit::loki::read(sink, options, &mut progress))?)
}

/// Retries on stderr, and on a terminal the entries read so far.
struct Stderr {
    live: bool,
}

impl Progress for Stderr {
    fn retrying(&mut self, error: &str, delay: Duration) {
        eprintln!("teelog audit: {}; trying again in {:.1} s", escape_controls(error), delay.as_secs_f64());
    }

    fn reading(&mut self, selector: &str, read: u64) {
        if self.live {
            eprint!("\r\x1b[Kteelog audit: {selector}: {read} entries");
            let _ = std::io::stderr().flush();
        }
    }

    fn read_all(&mut self, _selector: &str) {
        if self.live {
            eprint!("\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_name_equals_value() {
        assert_eq!(parse_label("env=prod=1"), Ok(("env".to_string(), "prod=1".to_string())));
        assert!(parse_label("env").is_err());
    }
}
