//! teelog streams read back from Grafana Loki: every batch line is rebuilt from its entries
//! (docs/LOKI.md) and verified like a line of a batch file. Labels only select the streams to
//! read, and structured metadata is not read at all: each record is found by the time and the
//! signed hint its batch entry gives (`teelog_loki::assemble`), and entries that no batch holds
//! are reported as foreign.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;
use teelog_core::timestamp::{format_rfc3339, UnixNanos};
use teelog_core::{FindingKind, Origin, Report};

use crate::files::LineSink;
use teelog_loki::layout::LABEL_STREAM;
use teelog_loki::query::{QueryError, QueryRange, MAX_QUERY_LIMIT};
use teelog_loki::{
    Assembled, BatchEntries, ClientOptions, ForeignEntries, Kind, LabelError, Layout, LayoutOptions,
    LokiClient, LokiError, Page, Pager, PartJoiner,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Loki refuses a query longer than `max_query_length` (721h by default), so longer audits are
/// read in windows of this length.
const QUERY_WINDOW: UnixNanos = 720 * 3600 * 1_000_000_000;
/// A batch's records are stored at `sealed_at + index` ns, so the records of a batch sealed
/// just before `to` lie after it; one second covers any batch.
const RECORD_SPAN: UnixNanos = 1_000_000_000;
/// A query answered 429 or 5xx, or not at all, is tried this many times more.
const RETRIES: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between tries, whatever Loki's `Retry-After` asks.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Why an audit from Loki could not be carried out (as opposed to findings about what it read).
#[derive(Debug, thiserror::Error)]
pub enum LokiAuditError {
    /// The time range is empty or reversed.
    #[error("--from {from} must be before --to {to}")]
    Range {
        /// `from`, RFC 3339.
        from: String,
        /// `to`, RFC 3339.
        to: String,
    },
    /// The job and static labels do not make a valid Loki layout.
    #[error("labels")]
    Labels(#[source] LabelError),
    /// A stream name cannot be put into a Loki selector.
    #[error("stream {stream:?}")]
    Stream {
        /// The stream, as given.
        stream: String,
        /// Why it is not a valid label value.
        #[source]
        source: LabelError,
    },
    /// The HTTP client could not be built (e.g. a bad URL or TLS setting).
    #[error(transparent)]
    Client(#[from] LokiError),
    /// A query Loki did not answer, or answered with an error, after the retries.
    #[error("{what}")]
    Query {
        /// The query, in words (Loki's URL, what was asked, the time range).
        what: String,
        /// The last error.
        #[source]
        source: LokiError,
    },
    /// An answer that cannot be the complete answer to the query.
    #[error("{what}")]
    Answer {
        /// The query, in words.
        what: String,
        /// What is wrong with the answer.
        #[source]
        source: QueryError,
    },
}

/// What to read from which Loki.
#[derive(Debug, Clone)]
pub struct LokiAudit {
    /// Loki's (or its gateway's) base URL.
    pub url: String,
    /// The teelog streams to audit; none: every teelog stream with entries in the range.
    pub streams: Vec<String>,
    /// The `job` label and the static labels the batches were pushed with.
    pub job: String,
    /// The static labels (name, value), as the shipper's Loki sink was configured.
    pub labels: Vec<(String, String)>,
    /// Sent as X-Scope-OrgID, for a multi-tenant Loki.
    pub tenant: Option<String>,
    /// Sent as `Authorization: Bearer`, when Loki (or its gateway) asks for one.
    pub bearer_token: Option<String>,
    /// The range, `[from, to)`.
    pub from: UnixNanos,
    /// The end of the range (exclusive).
    pub to: UnixNanos,
    /// Entries per query, at most [`MAX_QUERY_LIMIT`].
    pub page_size: u32,
    /// Queries of one selector sent at once, at least 1: a range that one page does not hold
    /// is read on in this many parts at a time.
    pub concurrent_queries: usize,
    /// Finding no teelog stream at all is not a finding.
    pub allow_empty: bool,
    /// The wall clock, for Loki's `Retry-After` dates.
    pub clock: fn() -> UnixNanos,
}

/// What the caller hears while the audit runs.
pub trait Progress {
    /// A query failed (`error` says why) and is tried again after `delay`.
    fn retrying(&mut self, error: &str, delay: Duration);
    /// `read` entries of `selector` have been read so far.
    fn reading(&mut self, selector: &str, read: u64);
    /// Every entry of `selector` has been read.
    fn read_all(&mut self, selector: &str);
}

/// What the audit read and how long it took, besides the verifier's report.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Loki's base URL.
    pub loki: String,
    /// The range's start, RFC 3339.
    pub from: String,
    /// The range's end (exclusive), RFC 3339.
    pub to: String,
    /// The teelog streams read.
    pub streams: Vec<String>,
    /// Batch lines rebuilt from batch entries and verified (copies of one batch count once).
    pub batch_entries: u64,
    /// Of those, the ones validly signed, intact, attested as required and allowed.
    pub batches_valid: u64,
    /// Record entries put into a batch line of the range.
    pub record_entries: u64,
    /// Entries of the range that belong to no signed batch (each a `malformed` finding, the
    /// first ones listed).
    pub foreign_entries: u64,
    /// The verifier's sequence gaps, with where in Loki to look for them.
    pub gaps: Vec<Gap>,
    /// Queries sent to Loki, retries included.
    pub queries: u64,
    /// Wall time the reader waited for Loki's next answer (retry waits included). With queries
    /// at once, answers are also decoded meanwhile on other threads.
    pub loki_seconds: f64,
    /// CPU time of teelog's own work, every thread of the process (decoding Loki's answers,
    /// rebuilding and verifying) from the start of the read to the verdict. Overlaps the waits;
    /// on several cores it can exceed the wall time.
    pub teelog_seconds: f64,
}

/// Missing batches of one epoch, with the Loki timestamps of the batches around them (a hint
/// for where to look, not evidence).
#[derive(Debug, Serialize)]
pub struct Gap {
    /// The stream.
    pub stream: String,
    /// The epoch (hex).
    pub epoch: String,
    /// The first missing seq.
    pub first_seq: u64,
    /// The last missing seq; `None` when no later batch of the epoch was read.
    pub last_seq: Option<u64>,
    /// The Loki timestamp (RFC 3339) of the batch entry before the gap, if one was read.
    pub after: Option<String>,
    /// The Loki timestamp (RFC 3339) of the batch entry after the gap, if one was read.
    pub before: Option<String>,
}

/// What a read of Loki took in, for an audit's [`Summary`] once its verifier has judged.
pub struct LokiRead {
    url: String,
    from: UnixNanos,
    to: UnixNanos,
    streams: Vec<String>,
    audited: Audited,
    queries: u64,
    waited: Duration,
    cpu_started: Duration,
}

impl LokiRead {
    /// The audit's summary, with the verdicts of `report`.
    pub fn summary(self, report: &Report) -> Summary {
        let loki_seconds = self.waited.as_secs_f64();
        Summary {
            loki: self.url,
            from: format_rfc3339(self.from),
            to: format_rfc3339(self.to),
            batch_entries: self.audited.batch_lines.saturating_sub(report.duplicates),
            batches_valid: valid_batches(report),
            record_entries: self.audited.record_entries,
            foreign_entries: self.audited.foreign_entries,
            gaps: self.audited.gaps(report),
            streams: self.streams,
            queries: self.queries,
            loki_seconds,
            teelog_seconds: cpu_time().saturating_sub(self.cpu_started).as_secs_f64(),
        }
    }
}

/// Reads the streams `options` names from Loki, rebuilding their batch lines, into `sink`: the
/// verifier for an audit, an evidence exporter for a bundle.
pub async fn read(
    sink: &mut impl LineSink,
    options: &LokiAudit,
    progress: &mut dyn Progress,
) -> Result<LokiRead, LokiAuditError> {
    let cpu_started = cpu_time();
    let (from, to) = (options.from, options.to);
    if from >= to {
        return Err(LokiAuditError::Range { from: format_rfc3339(from), to: format_rfc3339(to) });
    }
    let layout = Layout::new(LayoutOptions {
        job: options.job.clone(),
        extra_labels: options.labels.clone(),
        ..LayoutOptions::default()
    })
    .map_err(LokiAuditError::Labels)?;
    let client_options = ClientOptions {
        tenant: options.tenant.clone(),
        bearer_token: options.bearer_token.clone(),
        ..ClientOptions::default()
    };
    let client = LokiClient::new(&options.url, client_options)?;
    let mut loki = Loki {
        client: &client,
        url: &options.url,
        page_size: options.page_size,
        concurrent_queries: options.concurrent_queries.max(1),
        clock: options.clock,
        progress,
        queries: 0,
        waited: Duration::ZERO,
    };
    let streams = if options.streams.is_empty() {
        // Only the kinds a shipper's entries are stored under: a stream that only rejected
        // (gateway-flagged) entries name is nobody's genuine stream.
        let mut found = BTreeSet::new();
        // A stream whose batches were all deleted may have left its checkpoints behind.
        let checkpoints = sink.wants_checkpoints().then_some(Kind::Checkpoint);
        for kind in Kind::AUDITED.into_iter().chain(checkpoints) {
            found.extend(
                loki.streams(&layout.kind_selector(kind).map_err(LokiAuditError::Labels)?, from, to).await?,
            );
        }
        let found: Vec<String> = found.into_iter().collect();
        if found.is_empty() && !options.allow_empty {
            sink.push_malformed(
                Origin { source: "loki", line: nanos(from) },
                &format!(
                    "Loki at {} has no teelog streams under {} from {} to {}: nothing was verified",
                    options.url,
                    layout.base_selector(),
                    format_rfc3339(from),
                    format_rfc3339(to)
                ),
            );
        }
        found
    } else {
        options.streams.clone()
    };
    let mut audited = Audited::default();
    for stream in &streams {
        audit_stream(&mut loki, &layout, stream, from, to, sink, &mut audited).await?;
    }
    Ok(LokiRead {
        url: options.url.clone(),
        from,
        to,
        streams,
        audited,
        queries: loki.queries,
        waited: loki.waited,
        cpu_started,
    })
}

/// The Loki side of an audit: paged, retried queries, timed.
struct Loki<'a> {
    client: &'a LokiClient,
    url: &'a str,
    page_size: u32,
    concurrent_queries: usize,
    clock: fn() -> UnixNanos,
    progress: &'a mut dyn Progress,
    queries: u64,
    waited: Duration,
}

/// The CPU time this process has used so far, all its threads.
fn cpu_time() -> Duration {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(u64::try_from(time.tv_sec).unwrap_or(0), u32::try_from(time.tv_nsec).unwrap_or(0))
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

/// Runs `request`, again after a wait while Loki is overloaded or unreachable, telling
/// `retrying` of each wait; the outcome and the number of requests sent.
async fn with_retries<T, F, Fut>(
    request: F,
    clock: fn() -> UnixNanos,
    mut retrying: impl FnMut(&LokiError, Duration),
) -> (Result<T, LokiError>, u64)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, LokiError>>,
{
    let mut attempt = 0;
    loop {
        match request().await {
            Err(e) if e.is_retryable() && attempt < RETRIES => {
                let asked = match &e {
                    LokiError::QueryStatus { retry_after: Some(r), .. } => Some(r.delay(clock())),
                    _ => None,
                };
                let delay = asked.unwrap_or(FIRST_BACKOFF * 2u32.pow(attempt)).min(MAX_RETRY_DELAY);
                retrying(&e, delay);
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            other => break (other, u64::from(attempt) + 1),
        }
    }
}

impl Loki<'_> {
    /// Runs `request`, again after a wait while Loki is overloaded or unreachable.
    async fn call<T, F, Fut>(&mut self, what: &dyn Fn() -> String, request: F) -> Result<T, LokiAuditError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, LokiError>>,
    {
        let started = Instant::now();
        let progress = &mut *self.progress;
        let (result, sent) =
            with_retries(request, self.clock, |e, delay| progress.retrying(&e.to_string(), delay)).await;
        self.queries += sent;
        self.waited += started.elapsed();
        result.map_err(|source| LokiAuditError::Query { what: what(), source })
    }

    /// The teelog streams with entries under `selector` in `[from, to)`.
    async fn streams(
        &mut self,
        selector: &str,
        from: UnixNanos,
        to: UnixNanos,
    ) -> Result<Vec<String>, LokiAuditError> {
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

    /// Hands every entry under `selector` in `[from, to)` to `take`, in timestamp order (an
    /// entry that several label sets hold comes once per label set), and the timestamps too
    /// crowded to read in full; returns how many entries were read. The range is read in parts
    /// at once (see [`Loki::read_parts`]): cut at `cuts` where the caller knows where entries
    /// lie, else, when one page does not hold it, by the density of the first page.
    async fn each(
        &mut self,
        selector: &str,
        from: UnixNanos,
        to: UnixNanos,
        cuts: &[UnixNanos],
        mut take: impl FnMut(Read<'_>),
    ) -> Result<u64, LokiAuditError> {
        let mut read = 0u64;
        for (start, end) in windows(from, to) {
            let mut pager = self.pager(selector, start, end)?;
            if self.concurrent_queries > 1 && cuts.iter().any(|&at| at > start && at < end) {
                let parts = split_at_each(pager, cuts.iter().copied());
                read = self.read_parts(selector, parts, &mut take, read).await?;
                continue;
            }
            let Some(query) = pager.next_request() else { continue };
            let client = self.client;
            let what = query_words(self.url, &query);
            let mut page = self.call(&|| what.clone(), || client.query_page(&query)).await?;
            pager.accept_page(&mut page).map_err(|source| LokiAuditError::Answer { what, source })?;
            let first = page.iter().next().map_or(start, |(at, _)| at);
            read += page.len() as u64;
            page.iter().for_each(|(at, line)| take(Read::Entry(at, line)));
            if let Some(at) = pager.crowded() {
                take(Read::Crowded(at));
            }
            self.progress.reading(selector, read);
            if !pager.is_done() {
                // One query at a time reads on with the same pager: parts would only add queries.
                let parts = match self.concurrent_queries {
                    1 => vec![pager],
                    _ => split_by_density(pager, first, end),
                };
                read = self.read_parts(selector, parts, &mut take, read).await?;
            }
        }
        self.progress.read_all(selector);
        Ok(read)
    }

    /// A pager over `[start, end)` in pages of the audit's size.
    fn pager(&self, selector: &str, start: UnixNanos, end: UnixNanos) -> Result<Pager, LokiAuditError> {
        let pager = Pager::new(selector, start, end, self.page_size).map_err(|source| {
            LokiAuditError::Answer { what: format!("Loki at {}: query {selector}", self.url), source }
        })?;
        // Below Loki's limit a crowded timestamp is a page size to raise; at it, nothing can be
        // read past it, so the audit reports it and goes on.
        Ok(if self.page_size == MAX_QUERY_LIMIT { pager.skip_crowded() } else { pager })
    }

    /// Reads `parts` (consecutive pieces of one range), up to `concurrent_queries` at once, each
    /// by a task of its own that holds at most [`PAGES_AHEAD`] pages the reader has not taken:
    /// entries reach `take` in order, and what waits in memory is bounded whatever the parts
    /// hold. Returns `read` plus the entries read.
    async fn read_parts(
        &mut self,
        selector: &str,
        parts: Vec<Pager>,
        take: &mut impl FnMut(Read<'_>),
        mut read: u64,
    ) -> Result<u64, LokiAuditError> {
        let (notices, mut retries) = mpsc::unbounded_channel();
        let mut waiting = parts.into_iter();
        let mut running = PartTasks::default();
        let launch = |pager: Pager, running: &mut PartTasks| {
            let (pages, receiver) = mpsc::channel(PAGES_AHEAD);
            let part = Part {
                client: self.client.clone(),
                what: format!("Loki at {}: query {selector}", self.url),
                clock: self.clock,
                pages,
                notices: notices.clone(),
            };
            running.0.push_back((receiver, tokio::spawn(part.read(pager))));
        };
        for pager in waiting.by_ref().take(self.concurrent_queries) {
            launch(pager, &mut running);
        }
        while let Some((mut receiver, _)) = running.0.pop_front() {
            loop {
                let waiting_since = Instant::now();
                let message = tokio::select! {
                    Some((error, delay)) = retries.recv() => {
                        self.progress.retrying(&error, delay);
                        continue;
                    }
                    message = receiver.recv() => message,
                };
                self.waited += waiting_since.elapsed();
                match message {
                    Some(Ok(PartPage { page, crowded, queries })) => {
                        self.queries += queries;
                        read += page.len() as u64;
                        page.iter().for_each(|(at, line)| take(Read::Entry(at, line)));
                        if let Some(at) = crowded {
                            take(Read::Crowded(at));
                        }
                        self.progress.reading(selector, read);
                    }
                    Some(Err(e)) => return Err(e),
                    // The part is read: its task has ended and dropped its sender.
                    None => break,
                }
            }
            if let Some(pager) = waiting.next() {
                launch(pager, &mut running);
            }
        }
        Ok(read)
    }
}

/// Pages a part may hold before the reader takes them.
const PAGES_AHEAD: usize = 4;
/// The pages a part is sized to hold, from the density the first page showed.
const PAGES_PER_PART: u64 = 2;
/// At most this many parts per range, whatever the first page suggests: a first page dense
/// in time over a range mostly empty costs at most this many queries more.
const MAX_PARTS: u64 = 64;

/// The rest of `pager`'s range, past the page it has read (whose first entry was at `first`),
/// up to `end`, in parts of about [`PAGES_PER_PART`] pages each if the entries go on as
/// densely as that page held them.
fn split_by_density(pager: Pager, first: UnixNanos, end: UnixNanos) -> Vec<Pager> {
    let position = pager.position();
    let covered = u64::try_from(position.saturating_sub(first)).unwrap_or(0).max(1);
    let rest = u64::try_from(end.saturating_sub(position)).unwrap_or(0);
    let pages = rest.div_ceil(covered);
    let count = pages.div_ceil(PAGES_PER_PART).clamp(1, MAX_PARTS);
    let step = (rest / count).max(1);
    let cuts =
        (1..count).map(|i| position.saturating_add(UnixNanos::try_from(step * i).unwrap_or(UnixNanos::MAX)));
    split_at_each(pager, cuts)
}

/// `pager`'s range cut at `cuts`, in time order; a cut outside what is left of the range is
/// passed over.
fn split_at_each(mut pager: Pager, cuts: impl IntoIterator<Item = UnixNanos>) -> Vec<Pager> {
    let mut parts = Vec::new();
    for at in cuts {
        if let Some(rest) = pager.split_at(at) {
            parts.push(std::mem::replace(&mut pager, rest));
        }
    }
    parts.push(pager);
    parts
}

/// Times to cut a range of record entries at, so that each part holds about `per_part` of
/// the records that `spans` (batches' first record times and record counts, in time order)
/// say are there: between batches, where no record of the one before need lie.
fn cuts_between(spans: &[(UnixNanos, u64)], per_part: u64) -> Vec<UnixNanos> {
    let mut cuts = Vec::new();
    let mut held = 0u64;
    for &(at, count) in spans {
        if held >= per_part {
            cuts.push(at);
            held = 0;
        }
        held = held.saturating_add(count);
    }
    cuts
}

/// A query and its range, in words, for errors.
fn query_words(url: &str, query: &QueryRange) -> String {
    format!(
        "Loki at {url}: query {} from {} to {}",
        query.query,
        format_rfc3339(query.start),
        format_rfc3339(query.end)
    )
}

/// The parts being read, in order; their tasks are stopped when the read ends early.
#[derive(Default)]
struct PartTasks(VecDeque<(PartPages, JoinHandle<()>)>);

/// What a part's task hands over, page by page; it ends when the part is read.
type PartPages = mpsc::Receiver<Result<PartPage, LokiAuditError>>;

impl Drop for PartTasks {
    fn drop(&mut self) {
        for (_, task) in &self.0 {
            task.abort();
        }
    }
}

/// One page of a part, as its task hands it over.
struct PartPage {
    page: Page,
    crowded: Option<UnixNanos>,
    /// Requests it took, retries included.
    queries: u64,
}

/// A task reading one part of a range.
struct Part {
    client: LokiClient,
    what: String,
    clock: fn() -> UnixNanos,
    pages: mpsc::Sender<Result<PartPage, LokiAuditError>>,
    notices: mpsc::UnboundedSender<(String, Duration)>,
}

impl Part {
    async fn read(self, mut pager: Pager) {
        while let Some(query) = pager.next_request() {
            let notices = &self.notices;
            let (result, queries) = with_retries(
                || self.client.query_page(&query),
                self.clock,
                |e, delay| {
                    let _ = notices.send((e.to_string(), delay));
                },
            )
            .await;
            let what = || {
                format!("{} from {} to {}", self.what, format_rfc3339(query.start), format_rfc3339(query.end))
            };
            let page = result.map_err(|source| LokiAuditError::Query { what: what(), source }).and_then(
                |mut page| {
                    pager
                        .accept_page(&mut page)
                        .map(|()| page)
                        .map_err(|source| LokiAuditError::Answer { what: what(), source })
                },
            );
            let (message, failed) = match page {
                Ok(page) => (Ok(PartPage { page, crowded: pager.crowded(), queries }), false),
                Err(e) => (Err(e), true),
            };
            // The reader is gone (it failed elsewhere), or this part failed: stop.
            if self.pages.send(message).await.is_err() || failed {
                return;
            }
        }
    }
}

/// What a query hands out.
enum Read<'a> {
    /// An entry: where it is stored, and its line.
    Entry(UnixNanos, &'a str),
    /// A timestamp that filled a whole page: entries stored there past the page were not read.
    Crowded(UnixNanos),
}

/// A Loki timestamp as an origin's line number.
fn nanos(timestamp: UnixNanos) -> u64 {
    u64::try_from(timestamp).unwrap_or(0)
}

/// Where an entry came from, for findings: `loki:STREAM:KIND` and the entry's timestamp.
fn origin(source: &str, timestamp: UnixNanos) -> Origin<'_> {
    Origin { source, line: nanos(timestamp) }
}

/// What the streams held, for the summary.
#[derive(Default)]
struct Audited {
    batch_lines: u64,
    record_entries: u64,
    foreign_entries: u64,
    /// The Loki timestamp of each batch entry by stream, epoch and seq, as its header says
    /// (only for placing gaps in time).
    batch_times: BTreeMap<(String, String), BTreeMap<u64, UnixNanos>>,
}

impl Audited {
    /// Hands a rebuilt batch line on.
    fn verify(&mut self, sink: &mut impl LineSink, stream: &str, source: &str, batch: Assembled) {
        sink.push_line(origin(source, batch.timestamp), &batch.line);
        self.batch_lines += 1;
        self.batch_times
            .entry((stream.to_string(), batch.header.epoch))
            .or_default()
            .insert(batch.header.seq, batch.timestamp);
    }

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

async fn audit_stream<S: LineSink>(
    loki: &mut Loki<'_>,
    layout: &Layout,
    stream: &str,
    from: UnixNanos,
    to: UnixNanos,
    sink: &mut S,
    audited: &mut Audited,
) -> Result<(), LokiAuditError> {
    let selector = |kind| {
        layout
            .selector(stream, kind)
            .map_err(|source| LokiAuditError::Stream { stream: stream.to_string(), source })
    };
    let source = |kind: Kind| format!("loki:{stream}:{}", kind.as_str());
    let page_size = loki.page_size;
    let unread = |sink: &mut S, source: &str, at: UnixNanos| {
        sink.push_malformed(
            origin(source, at),
            &format!(
                "at least {page_size} entries share this timestamp and Loki hands out at most \
                 {page_size} per query, so the others were not read (a record among them is \
                 reported missing from its batch)"
            ),
        )
    };

    let attestation_source = source(Kind::Attestation);
    let attestations = loki
        .each(&selector(Kind::Attestation)?, from, to, &[], |read| match read {
            Read::Entry(at, line) => sink.push_line(origin(&attestation_source, at), line.as_bytes()),
            Read::Crowded(at) => unread(sink, &attestation_source, at),
        })
        .await?;

    // The gateway's checkpoints, when the auditor gave a key to judge them by: without one they
    // would be trusted for nothing.
    if sink.wants_checkpoints() {
        let checkpoint_source = source(Kind::Checkpoint);
        loki.each(&selector(Kind::Checkpoint)?, from, to, &[], |read| match read {
            Read::Entry(at, line) => sink.push_line(origin(&checkpoint_source, at), line.as_bytes()),
            Read::Crowded(at) => unread(sink, &checkpoint_source, at),
        })
        .await?;
    }

    // From a second before the range: a batch sealed there may have records inside it.
    let batch_source = source(Kind::Batch);
    let mut batch_entries = BatchEntries::new(stream, from, to);
    loki.each(&selector(Kind::Batch)?, from.saturating_sub(RECORD_SPAN), to, &[], |read| match read {
        Read::Entry(at, line) => {
            if let Err(e) = batch_entries.push(at, line.to_string()) {
                sink.push_malformed(origin(&batch_source, at), &e.to_string());
            }
        }
        Read::Crowded(at) if at >= from => unread(sink, &batch_source, at),
        Read::Crowded(_) => {}
    })
    .await?;
    let batches = batch_entries.len();
    let record_cuts = cuts_between(&batch_entries.record_spans(), PAGES_PER_PART * u64::from(loki.page_size));

    // A batch's records are stored up to a second after it was sealed; records too long for one
    // Loki line in parts, joined first, then taken in time order with the others.
    let part_source = source(Kind::RecordPart);
    let mut joiner = PartJoiner::new(to);
    loki.each(&selector(Kind::RecordPart)?, from, to.saturating_add(RECORD_SPAN), &[], |read| match read {
        Read::Entry(at, line) => joiner.push(at, line),
        Read::Crowded(at) if at < to => unread(sink, &part_source, at),
        Read::Crowded(_) => {}
    })
    .await?;
    let joined = joiner.finish();
    let mut long_records =
        joined.records.into_iter().flat_map(|(at, lines)| lines.into_iter().map(move |l| (at, l))).peekable();
    let record_source = source(Kind::Record);
    let mut assembler = batch_entries.records();
    let records = loki
        .each(&selector(Kind::Record)?, from, to.saturating_add(RECORD_SPAN), &record_cuts, |read| {
            match read {
                Read::Entry(at, line) => {
                    while let Some((long_at, long)) = long_records.next_if(|(long_at, _)| *long_at <= at) {
                        assembler.push(long_at, long);
                    }
                    assembler.push(at, line.to_string())
                }
                Read::Crowded(at) if at < to => unread(sink, &record_source, at),
                Read::Crowded(_) => {}
            }
            for batch in assembler.ready() {
                audited.verify(sink, stream, &batch_source, batch);
            }
        })
        .await?;
    for (at, line) in long_records {
        assembler.push(at, line);
    }
    for batch in assembler.ready() {
        audited.verify(sink, stream, &batch_source, batch);
    }
    let finished = assembler.finish();
    report_foreign(sink, stream, &joined.foreign);
    audited.foreign_entries += joined.foreign.total;
    for batch in finished.batches {
        audited.verify(sink, stream, &batch_source, batch);
    }
    audited.record_entries += finished.records;
    report_foreign(sink, stream, &finished.foreign);
    audited.foreign_entries += finished.foreign.total;

    if batches == 0 {
        let held = if attestations + records == 0 {
            "Loki has no entries of it at all".to_string()
        } else {
            format!(
                "Loki has {attestations} attestation and {records} record entries of it, but no batch entry"
            )
        };
        sink.push_malformed(
            origin(&batch_source, from),
            &format!(
                "teelog stream {stream:?}: {held} under {} from {} to {}: nothing of it was verified",
                layout.base_selector(),
                format_rfc3339(from),
                format_rfc3339(to)
            ),
        );
    }
    Ok(())
}

/// Each listed foreign entry is a `malformed` finding; the rest are counted in one more.
fn report_foreign(sink: &mut impl LineSink, stream: &str, foreign: &ForeignEntries) {
    for entry in &foreign.listed {
        let source = format!("loki:{stream}:{}", entry.kind.as_str());
        sink.push_malformed(
            origin(&source, entry.timestamp),
            &format!("foreign entry, part of no signed batch: {}", entry.reason),
        );
    }
    let unlisted = foreign.total.saturating_sub(foreign.listed.len() as u64);
    if let (Some(last), true) = (foreign.listed.last(), unlisted > 0) {
        let source = format!("loki:{stream}:{}", last.kind.as_str());
        sink.push_malformed(
            origin(&source, last.timestamp),
            &format!("{unlisted} more foreign entries of stream {stream:?}, not listed one by one"),
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ranges_are_cut_between_batches_by_count() {
        let spans = [(100, 4), (200, 4), (300, 10), (400, 1), (500, 1)];
        assert_eq!(cuts_between(&spans, 8), [300, 400]);
        assert_eq!(cuts_between(&spans, 1), [200, 300, 400, 500]);
        assert_eq!(cuts_between(&spans, 100), Vec::<UnixNanos>::new());
        assert_eq!(cuts_between(&[], 8), Vec::<UnixNanos>::new());
    }

    #[test]
    fn the_rest_of_a_range_is_split_by_the_first_pages_density() {
        let mut pager = Pager::new("{}", 0, 1_000, 2).unwrap();
        // A first page of 2 entries at 10 and 20 (the pager moves to 20).
        let q = pager.next_request().unwrap();
        let entry = |ts| teelog_loki::QueryEntry {
            timestamp: ts,
            line: String::new(),
            structured_metadata: BTreeMap::new(),
            parsed: BTreeMap::new(),
        };
        let response = teelog_loki::QueryResponse {
            encoding_flags: vec![],
            streams: vec![teelog_loki::QueryStream {
                labels: BTreeMap::new(),
                entries: vec![entry(10), entry(20)],
            }],
        };
        assert_eq!(q.start, 0);
        pager.accept(response).unwrap();
        // 980 ns left at 2 entries per 10 ns: 98 pages, 49 parts, each [a, b) in order.
        let parts = split_by_density(pager, 10, 1_000);
        assert_eq!(parts.len(), 49);
        let ranges: Vec<(UnixNanos, UnixNanos)> = parts
            .iter()
            .map(|p| {
                let q = p.next_request().unwrap();
                (q.start, q.end)
            })
            .collect();
        assert_eq!((ranges[0].0, ranges[48].1), (20, 1_000));
        assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0));
    }

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
}
