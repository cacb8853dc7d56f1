//! `teelog audit`: read teelog streams back from Grafana Loki, rebuild every batch line from its
//! entries (docs/LOKI.md) and verify them with the same verifier as `teelog verify`. Labels and
//! structured metadata only find and group the entries: a lie in them makes a batch fail to
//! rebuild into a line that verifies, which is a finding like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use teelog_core::timestamp::{format_rfc3339, parse_rfc3339, UnixNanos};
use teelog_core::{FindingKind, Origin, Report, Verifier};
use teelog_loki::layout::{DEFAULT_JOB, LABEL_STREAM, META_EPOCH, META_INDEX, META_SEQ};
use teelog_loki::query::MAX_QUERY_LIMIT;
use teelog_loki::{
    rebuild_batch_line, ClientOptions, Kind, Layout, LayoutOptions, LokiClient, LokiError, Pager, QueryEntry,
};

use crate::verify::{print_human, verifier, TrustArgs};

/// Loki refuses a query longer than `max_query_length` (721h by default), so longer audits are
/// read in windows of this length.
const QUERY_WINDOW: UnixNanos = 720 * 3600 * 1_000_000_000;
/// A batch's records are stored at `sealed_at + index` ns, so the records of a batch sealed
/// just before `--to` lie after it; one second covers any batch.
const RECORD_SPAN: UnixNanos = 1_000_000_000;
/// A query answered 429 or 5xx, or not at all, is tried this many times more.
const RETRIES: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between tries, whatever Loki's `Retry-After` asks.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct AuditArgs {
    /// Loki's (or its gateway's) base URL, e.g. http://loki:3100.
    #[arg(long)]
    pub loki: String,
    /// A teelog stream to audit; repeat for several. Default: every teelog stream with entries
    /// in the range (found through the teelog_stream label's values).
    #[arg(long = "stream")]
    pub streams: Vec<String>,
    /// The `job` label the batches were pushed with.
    #[arg(long, default_value = DEFAULT_JOB)]
    pub job: String,
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
    /// are reported as a sequence_gap.
    #[arg(long)]
    pub from: String,
    /// End of the range (RFC 3339, exclusive; default: now).
    #[arg(long)]
    pub to: Option<String>,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Entries per query_range call; at most 5000, Loki's default max_entries_limit_per_query.
    #[arg(long, default_value_t = MAX_QUERY_LIMIT,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_QUERY_LIMIT)))]
    pub page_size: u32,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').ok_or("expected NAME=VALUE, e.g. env=prod")?;
    Ok((name.to_string(), value.to_string()))
}

/// What the audit read and how long it took, besides the verifier's report.
#[derive(Debug, Serialize)]
struct Summary {
    loki: String,
    from: String,
    to: String,
    streams: Vec<String>,
    /// Batch lines rebuilt from batch entries and verified (copies of one batch count once).
    batch_entries: u64,
    /// Of those, the ones validly signed, intact, attested as required and allowed.
    batches_valid: u64,
    /// Record entries read and put into a batch.
    record_entries: u64,
    /// Record entries in the range whose batch entry is not where they say.
    orphan_records: u64,
    gaps: Vec<Gap>,
    queries: u64,
    /// Wall time waiting for Loki's answers (retry waits included), and the rest.
    loki_seconds: f64,
    teelog_seconds: f64,
}

/// Missing batches of one epoch, with the Loki timestamps of the batches around them (a hint
/// for where to look, not evidence).
#[derive(Debug, Serialize)]
struct Gap {
    stream: String,
    epoch: String,
    first_seq: u64,
    last_seq: Option<u64>,
    after: Option<String>,
    before: Option<String>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    report: &'a Report,
    audit: &'a Summary,
}

pub fn run(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let (report, summary) = audit(args)?;
    if args.json {
        println!("{}", serde_json::to_string(&JsonReport { report: &report, audit: &summary })?);
    } else {
        print_human(&report);
        print_summary(&summary);
    }
    eprintln!(
        "teelog audit: {} queries; {:.2} s waiting on Loki, {:.2} s in teelog",
        summary.queries, summary.loki_seconds, summary.teelog_seconds
    );
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_summary(summary: &Summary) {
    println!(
        "AUDIT {} {} .. {}, streams {}: {} of {} batches valid, {} record entries",
        summary.loki,
        summary.from,
        summary.to,
        summary.streams.join(", "),
        summary.batches_valid,
        summary.batch_entries,
        summary.record_entries
    );
    if summary.orphan_records > 0 {
        println!("AUDIT {} record entries belong to no batch entry (see malformed)", summary.orphan_records);
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
        println!("GAP   stream={} epoch={} {batches} missing, sealed {when}", gap.stream, gap.epoch);
    }
}

fn audit(args: &AuditArgs) -> anyhow::Result<(Report, Summary)> {
    let started = Instant::now();
    let from = parse_rfc3339(&args.from).context("--from")?;
    let to = match &args.to {
        Some(text) => parse_rfc3339(text).context("--to")?,
        None => crate::sign::now(),
    };
    if from >= to {
        bail!("--from {} must be before --to {}", format_rfc3339(from), format_rfc3339(to));
    }
    let layout = Layout::new(LayoutOptions {
        job: args.job.clone(),
        extra_labels: args.labels.clone(),
        ..LayoutOptions::default()
    })
    .context("labels")?;
    let bearer_token = match &args.bearer_token_file {
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
    let options = ClientOptions { tenant: args.tenant.clone(), bearer_token, ..ClientOptions::default() };
    let client = LokiClient::new(&args.loki, options)?;
    let mut verifier = verifier(&args.trust)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut loki = Loki {
        client: &client,
        url: &args.loki,
        page_size: args.page_size,
        progress: std::io::stderr().is_terminal(),
        queries: 0,
        waited: Duration::ZERO,
    };
    let streams = if args.streams.is_empty() {
        let found = runtime.block_on(loki.streams(&layout.base_selector(), from, to))?;
        if found.is_empty() {
            bail!(
                "Loki at {} has no teelog streams under {} from {} to {}",
                args.loki,
                layout.base_selector(),
                format_rfc3339(from),
                format_rfc3339(to)
            );
        }
        found
    } else {
        args.streams.clone()
    };
    let mut audited = Audited::default();
    for stream in &streams {
        runtime.block_on(audit_stream(&mut loki, &layout, stream, from, to, &mut verifier, &mut audited))?;
    }
    let report = verifier.finish();
    let loki_seconds = loki.waited.as_secs_f64();
    let summary = Summary {
        loki: args.loki.clone(),
        from: format_rfc3339(from),
        to: format_rfc3339(to),
        batch_entries: audited.batch_lines.saturating_sub(report.duplicates),
        batches_valid: valid_batches(&report),
        record_entries: audited.record_entries,
        orphan_records: audited.orphan_records,
        gaps: audited.gaps(&report),
        streams,
        queries: loki.queries,
        loki_seconds,
        teelog_seconds: (started.elapsed().as_secs_f64() - loki_seconds).max(0.0),
    };
    Ok((report, summary))
}

/// The Loki side of an audit: paged, retried queries, timed.
struct Loki<'a> {
    client: &'a LokiClient,
    url: &'a str,
    page_size: u32,
    progress: bool,
    queries: u64,
    waited: Duration,
}

/// `[from, to)` in windows no longer than Loki allows one query to be.
fn windows(from: UnixNanos, to: UnixNanos) -> Vec<(UnixNanos, UnixNanos)> {
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let end = start.saturating_add(QUERY_WINDOW).min(to);
        out.push((start, end));
        start = end;
    }
    out
}

impl Loki<'_> {
    /// Runs `request`, again after a wait while Loki is overloaded or unreachable.
    async fn call<T, F, Fut>(&mut self, what: &dyn Fn() -> String, request: F) -> anyhow::Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, LokiError>>,
    {
        let started = Instant::now();
        let mut attempt = 0;
        let result = loop {
            self.queries += 1;
            match request().await {
                Err(e) if e.is_retryable() && attempt < RETRIES => {
                    let asked = match &e {
                        LokiError::QueryStatus { retry_after: Some(r), .. } => {
                            Some(r.delay(crate::sign::now()))
                        }
                        _ => None,
                    };
                    let delay = asked.unwrap_or(FIRST_BACKOFF * 2u32.pow(attempt)).min(MAX_RETRY_DELAY);
                    eprintln!("teelog audit: {e}; trying again in {:.1} s", delay.as_secs_f64());
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        self.waited += started.elapsed();
        result.with_context(what)
    }

    /// The teelog streams with entries under `selector` in `[from, to)`.
    async fn streams(
        &mut self,
        selector: &str,
        from: UnixNanos,
        to: UnixNanos,
    ) -> anyhow::Result<Vec<String>> {
        let (client, url) = (self.client, self.url);
        let mut found = BTreeSet::new();
        for (start, end) in windows(from, to) {
            let what = || {
                format!(
                    "Loki at {url}: the values of label {LABEL_STREAM} under {selector} from {} to {}",
                    format_rfc3339(start),
                    format_rfc3339(end)
                )
            };
            let values = self.call(&what, || client.label_values(LABEL_STREAM, selector, start, end)).await?;
            found.extend(values);
        }
        Ok(found.into_iter().collect())
    }

    /// Every entry under `selector` in `[from, to)`, in timestamp order, each once even when
    /// several label sets hold it (e.g. a gateway's per-call labels).
    async fn entries(
        &mut self,
        selector: &str,
        from: UnixNanos,
        to: UnixNanos,
    ) -> anyhow::Result<Vec<QueryEntry>> {
        let (client, url) = (self.client, self.url);
        let mut out = Vec::new();
        for (start, end) in windows(from, to) {
            let mut pager = Pager::new(selector, start, end, self.page_size)?;
            while let Some(query) = pager.next_request() {
                let what = || {
                    format!(
                        "Loki at {url}: query {selector} from {} to {}",
                        format_rfc3339(query.start),
                        format_rfc3339(query.end)
                    )
                };
                let response = self.call(&what, || client.query_range(&query)).await?;
                let page = pager.accept(response).with_context(what)?;
                out.extend(page.into_iter().map(|e| e.entry));
                if self.progress {
                    eprint!("\r\x1b[Kteelog audit: {selector}: {} entries", out.len());
                    let _ = std::io::stderr().flush();
                }
            }
        }
        if self.progress {
            eprint!("\r\x1b[K");
        }
        out.sort_by(|a, b| {
            (a.timestamp, &a.line, &a.structured_metadata).cmp(&(
                b.timestamp,
                &b.line,
                &b.structured_metadata,
            ))
        });
        out.dedup();
        Ok(out)
    }
}

/// The (epoch, seq) a batch or record entry's metadata names.
type BatchKey = (String, u64);

fn batch_key(entry: &QueryEntry) -> Option<BatchKey> {
    let epoch = entry.structured_metadata.get(META_EPOCH)?;
    let seq = entry.structured_metadata.get(META_SEQ)?.parse().ok()?;
    Some((epoch.clone(), seq))
}

/// Where an entry came from, for findings: `loki:STREAM:KIND` and the entry's timestamp.
fn origin<'a>(source: &'a str, entry: &QueryEntry) -> Origin<'a> {
    Origin { source, line: u64::try_from(entry.timestamp).unwrap_or(0) }
}

/// What the streams held, for the summary.
#[derive(Default)]
struct Audited {
    batch_lines: u64,
    record_entries: u64,
    orphan_records: u64,
    /// The Loki timestamp of each batch entry by stream, epoch and seq (from metadata: only for
    /// placing gaps in time).
    batch_times: BTreeMap<(String, String), BTreeMap<u64, UnixNanos>>,
}

async fn audit_stream(
    loki: &mut Loki<'_>,
    layout: &Layout,
    stream: &str,
    from: UnixNanos,
    to: UnixNanos,
    verifier: &mut Verifier,
    audited: &mut Audited,
) -> anyhow::Result<()> {
    let selector = |kind| layout.selector(stream, kind).with_context(|| format!("stream {stream:?}"));
    let source = |kind: Kind| format!("loki:{stream}:{}", kind.as_str());

    let attestation_source = source(Kind::Attestation);
    for entry in loki.entries(&selector(Kind::Attestation)?, from, to).await? {
        verifier.push_line(origin(&attestation_source, &entry), entry.line.as_bytes());
    }

    let batches = loki.entries(&selector(Kind::Batch)?, from, to).await?;
    // The batches sealed just before the range, whose records may lie inside it; they are not
    // verified, only told apart from batches that are not there at all.
    let lead_in: BTreeSet<(BatchKey, UnixNanos)> = loki
        .entries(&selector(Kind::Batch)?, from.saturating_sub(RECORD_SPAN), from)
        .await?
        .iter()
        .filter_map(|e| Some((batch_key(e)?, e.timestamp)))
        .collect();
    let records = loki.entries(&selector(Kind::Record)?, from, to.saturating_add(RECORD_SPAN)).await?;
    let record_source = source(Kind::Record);
    // Records by the batch and index their metadata names; the rebuilt line is the judge.
    let mut by_batch: BTreeMap<BatchKey, Vec<(u64, &QueryEntry)>> = BTreeMap::new();
    for entry in &records {
        let index = entry.structured_metadata.get(META_INDEX).and_then(|i| i.parse::<u64>().ok());
        match (batch_key(entry), index) {
            (Some(key), Some(index)) => by_batch.entry(key).or_default().push((index, entry)),
            // Past --to it may belong to a batch after the range.
            _ if entry.timestamp >= to => {}
            _ => verifier.push_malformed(
                origin(&record_source, entry),
                &format!(
                    "a record entry without valid {META_EPOCH}, {META_SEQ} and {META_INDEX} metadata \
                     belongs to no batch"
                ),
            ),
        }
    }

    let batch_source = source(Kind::Batch);
    let mut used: BTreeSet<BatchKey> = BTreeSet::new();
    for entry in &batches {
        let key = batch_key(entry);
        let mut members: Vec<(u64, &str)> = key
            .as_ref()
            .and_then(|k| by_batch.get(k))
            .map(|m| m.iter().map(|(i, e)| (*i, e.line.as_str())).collect())
            .unwrap_or_default();
        // Copies of a record in several label sets or at other timestamps rebuild the same line.
        members.sort_unstable();
        members.dedup();
        let lines: Vec<&[u8]> = members.iter().map(|(_, line)| line.as_bytes()).collect();
        let at = origin(&batch_source, entry);
        match rebuild_batch_line(entry.line.as_bytes(), &lines) {
            Ok(line) => verifier.push_line(at, &line),
            Err(e) => verifier.push_malformed(at, &e.to_string()),
        }
        audited.batch_lines += 1;
        if let Some((epoch, seq)) = key {
            audited
                .batch_times
                .entry((stream.to_string(), epoch.clone()))
                .or_default()
                .insert(seq, entry.timestamp);
            used.insert((epoch, seq));
        }
    }

    audited.record_entries +=
        used.iter().filter_map(|k| by_batch.get(k)).map(|m| m.len() as u64).sum::<u64>();
    for (key, members) in &by_batch {
        if used.contains(key) {
            continue;
        }
        // Records are stored at sealed_at + index. Those of a batch sealed after the range, or
        // of one of the batches sealed just before it, are not the range's business; any other
        // record without its batch is.
        let inside: Vec<&QueryEntry> = members
            .iter()
            .filter(|(index, e)| {
                let sealed = i64::try_from(*index).ok().and_then(|i| e.timestamp.checked_sub(i));
                match sealed {
                    Some(s) if s >= to => false,
                    Some(s) if s < from => !lead_in.contains(&(key.clone(), s)),
                    _ => true,
                }
            })
            .map(|(_, e)| *e)
            .collect();
        let Some(first) = inside.first() else { continue };
        audited.orphan_records += inside.len() as u64;
        verifier.push_malformed(
            origin(&record_source, first),
            &format!(
                "{} record entries name batch {} of epoch {}, which has no batch entry where they \
                 say it was sealed",
                inside.len(),
                key.1,
                key.0
            ),
        );
    }
    Ok(())
}

/// Batches that verified: a batch is valid unless a finding is about the batch itself; chain
/// findings (gaps, links, equivocation, staleness) are about the stream.
fn valid_batches(report: &Report) -> u64 {
    let invalid: BTreeSet<(&str, &str, u64)> = report
        .findings
        .iter()
        .filter(|f| {
            matches!(
                f.kind,
                FindingKind::InvalidSignature
                    | FindingKind::RecordTampered
                    | FindingKind::UnexpectedMeasurement
                    | FindingKind::UntrustedAttestation
            )
        })
        .filter_map(|f| Some((f.stream.as_deref()?, f.epoch.as_deref()?, f.seq?)))
        .collect();
    report.batches.saturating_sub(invalid.len() as u64)
}

impl Audited {
    /// The report's sequence gaps, placed between the batch entries around them.
    fn gaps(&self, report: &Report) -> Vec<Gap> {
        report
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::SequenceGap)
            .filter_map(|f| {
                let (stream, epoch, first_seq) = (f.stream.clone()?, f.epoch.clone()?, f.seq?);
                let times = self.batch_times.get(&(stream.clone(), epoch.clone()));
                let after = times.and_then(|t| t.range(..first_seq).next_back());
                let next = times.and_then(|t| t.range(first_seq..).next());
                Some(Gap {
                    stream,
                    epoch,
                    first_seq,
                    last_seq: next.map(|(seq, _)| seq - 1),
                    after: after.map(|(_, ts)| format_rfc3339(*ts)),
                    before: next.map(|(_, ts)| format_rfc3339(*ts)),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_ranges_are_read_in_windows_loki_accepts() {
        assert_eq!(windows(5, 10), [(5, 10)]);
        assert_eq!(windows(10, 10), []);
        let w = windows(0, 2 * QUERY_WINDOW + 1);
        assert_eq!(
            w,
            [(0, QUERY_WINDOW), (QUERY_WINDOW, 2 * QUERY_WINDOW), (2 * QUERY_WINDOW, 2 * QUERY_WINDOW + 1)]
        );
        assert_eq!(windows(UnixNanos::MAX - 1, UnixNanos::MAX), [(UnixNanos::MAX - 1, UnixNanos::MAX)]);
    }

    #[test]
    fn labels_are_name_equals_value() {
        assert_eq!(parse_label("env=prod=1"), Ok(("env".to_string(), "prod=1".to_string())));
        assert!(parse_label("env").is_err());
    }
}
