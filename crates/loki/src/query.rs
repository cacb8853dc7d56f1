//! `query_range` requests, their JSON responses, and a pager that reads a time range forward
//! in pages without losing or repeating entries (sans-IO).
//!
//! The response shape follows Loki's own marshalling, `pkg/util/marshal/query.go`
//! (`encodeData`, `encodeStream`) and its tests in `pkg/util/marshal/marshal_test.go`
//! (`Test_WriteQueryResponseJSON_EncodeFlags`), grafana/loki v3 line:
//!
//! ```json
//! {"status":"success","data":{"resultType":"streams","encodingFlags":["categorize-labels"],
//!  "result":[{"stream":{"job":"teelog"},
//!             "values":[["1569266497240578000","line",{}],
//!                       ["1569266497240578001","line",{"structuredMetadata":{"k":"v"},"parsed":{"p":"q"}}]]}],
//!  "stats":{…}}}
//! ```
//!
//! With the `X-Loki-Response-Encoding-Flags: categorize-labels` request header every value
//! carries a third element (`{}` when empty) and `data.encodingFlags` echoes the flag; without
//! it values are `[ts, line]` and Loki merges structured metadata into the stream labels.
//! `start` is inclusive and `end` exclusive (docs/sources/reference/loki-http-api.md).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use teelog_core::timestamp::UnixNanos;

/// The range query API's path, under Loki's base URL.
pub const QUERY_RANGE_PATH: &str = "/loki/api/v1/query_range";
/// The request header that asks Loki to send structured metadata apart from stream labels.
pub const ENCODING_FLAGS_HEADER: &str = "X-Loki-Response-Encoding-Flags";
/// The flag of [`ENCODING_FLAGS_HEADER`] that does so.
pub const CATEGORIZE_LABELS: &str = "categorize-labels";
/// Loki's default `max_entries_limit_per_query`.
pub const MAX_QUERY_LIMIT: u32 = 5000;

/// A query that cannot be asked, or an answer that cannot be taken as complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `start` is not before `end`.
    #[error("start {start} must be before end {end} (end is exclusive)")]
    EmptyRange {
        /// The range's start, Unix nanoseconds.
        start: UnixNanos,
        /// The range's end, Unix nanoseconds.
        end: UnixNanos,
    },
    /// A page size of 0 or over [`MAX_QUERY_LIMIT`].
    #[error("limit {0} is outside 1..={MAX_QUERY_LIMIT} (Loki's default max_entries_limit_per_query)")]
    Limit(u32),
    /// The response body is not Loki's JSON.
    #[error("the query response is not the JSON Loki sends: {0}")]
    Json(String),
    /// Loki answered `status: error`.
    #[error("Loki reported a failed query ({error_type}): {message}")]
    Failed {
        /// Loki's `errorType`.
        error_type: String,
        /// Loki's `error`.
        message: String,
    },
    /// The result is of another type than `streams` (a metric query).
    #[error("the query returned a {0:?} result, not log streams: query with a stream selector, not a metric query")]
    NotStreams(String),
    /// An entry outside the range asked for: the answer is not the one asked for.
    #[error(
        "Loki returned an entry at {timestamp}, outside the requested range [{start}, {end}): the \
         response cannot be trusted to be complete"
    )]
    OutOfRange {
        /// The entry's time.
        timestamp: UnixNanos,
        /// The range's start.
        start: UnixNanos,
        /// The range's end (exclusive).
        end: UnixNanos,
    },
    /// A whole page of entries at one timestamp: paging by time cannot get past it.
    #[error(
        "{limit} or more entries share timestamp {timestamp}, so paging by timestamp cannot get \
         past it: raise the limit (at most {MAX_QUERY_LIMIT}) or narrow the selector"
    )]
    Stuck {
        /// The crowded timestamp.
        timestamp: UnixNanos,
        /// The page size.
        limit: u32,
    },
}

/// One `query_range` call, always `direction=forward`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRange {
    /// The LogQL query (a stream selector).
    pub query: String,
    /// Inclusive, Unix nanoseconds.
    pub start: UnixNanos,
    /// Exclusive, Unix nanoseconds.
    pub end: UnixNanos,
    /// The most entries in the answer.
    pub limit: u32,
}

impl QueryRange {
    /// A query of `[start, end)`, at most `limit` entries; an empty range or a limit outside
    /// 1..=[`MAX_QUERY_LIMIT`] is refused.
    pub fn new(
        query: impl Into<String>,
        start: UnixNanos,
        end: UnixNanos,
        limit: u32,
    ) -> Result<Self, QueryError> {
        if start >= end {
            return Err(QueryError::EmptyRange { start, end });
        }
        if limit == 0 || limit > MAX_QUERY_LIMIT {
            return Err(QueryError::Limit(limit));
        }
        Ok(Self { query: query.into(), start, end, limit })
    }

    /// `/loki/api/v1/query_range?query=…&start=…&end=…&limit=…&direction=forward`, to append
    /// to the base URL.
    pub fn path_and_query(&self) -> String {
        let mut out = String::with_capacity(QUERY_RANGE_PATH.len() + self.query.len() * 3 + 80);
        out.push_str(QUERY_RANGE_PATH);
        out.push_str("?query=");
        percent_encode(&self.query, &mut out);
        out.push_str(&format!(
            "&start={}&end={}&limit={}&direction=forward",
            self.start, self.end, self.limit
        ));
        out
    }
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn percent_encode(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// One log entry of a response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueryEntry {
    /// When it is stored, Unix nanoseconds.
    pub timestamp: UnixNanos,
    /// The line, as stored.
    pub line: String,
    /// Empty unless the response is categorised.
    pub structured_metadata: BTreeMap<String, String>,
    /// Labels extracted by parsers in the query; empty unless the response is categorised.
    pub parsed: BTreeMap<String, String>,
}

/// One stream of a response: its labels and entries, in the order Loki sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryStream {
    /// The stream's labels (with structured metadata mixed in, unless categorised).
    pub labels: BTreeMap<String, String>,
    /// Its entries.
    pub entries: Vec<QueryEntry>,
}

/// A parsed `query_range` response of `resultType` `streams`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryResponse {
    /// The encoding flags Loki applied (e.g. [`CATEGORIZE_LABELS`]).
    pub encoding_flags: Vec<String>,
    /// The streams.
    pub streams: Vec<QueryStream>,
}

impl QueryResponse {
    /// Whether structured metadata came separately from the stream labels.
    pub fn is_categorized(&self) -> bool {
        self.encoding_flags.iter().any(|f| f == CATEGORIZE_LABELS)
    }
}

#[derive(Deserialize)]
struct RawResponse<'a> {
    status: String,
    #[serde(borrow)]
    data: Option<RawData<'a>>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(rename = "encodingFlags", default)]
    encoding_flags: Vec<String>,
    #[serde(borrow)]
    result: &'a RawValue,
}

#[derive(Deserialize)]
struct RawStream {
    stream: BTreeMap<String, String>,
    values: Vec<RawEntry>,
}

#[derive(Deserialize, Default)]
struct Categories {
    #[serde(rename = "structuredMetadata", default)]
    structured_metadata: BTreeMap<String, String>,
    #[serde(default)]
    parsed: BTreeMap<String, String>,
}

struct RawEntry(QueryEntry);

impl<'de> Deserialize<'de> for RawEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = RawEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[\"<ns timestamp>\", \"<line>\"] or [\"<ns timestamp>\", \"<line>\", {…}]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawEntry, A::Error> {
        let ts: String = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let timestamp = ts
            .parse::<UnixNanos>()
            .map_err(|_| de::Error::custom(format!("timestamp {ts:?} is not integer nanoseconds")))?;
        let line: String = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
        let categories: Categories = seq.next_element()?.unwrap_or_default();
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(4, &self));
        }
        Ok(RawEntry(QueryEntry {
            timestamp,
            line,
            structured_metadata: categories.structured_metadata,
            parsed: categories.parsed,
        }))
    }
}

/// Parses the body of a successful `query_range` answer.
pub fn parse_query_response(body: &[u8]) -> Result<QueryResponse, QueryError> {
    let json = |e: serde_json::Error| QueryError::Json(e.to_string());
    let raw: RawResponse<'_> = serde_json::from_slice(body).map_err(json)?;
    if raw.status != "success" {
        return Err(QueryError::Failed {
            error_type: raw.error_type.unwrap_or_else(|| raw.status.clone()),
            message: raw.error.unwrap_or_else(|| "(no message)".into()),
        });
    }
    let data = raw.data.ok_or_else(|| QueryError::Json("\"data\" is missing".into()))?;
    if data.result_type != "streams" {
        return Err(QueryError::NotStreams(data.result_type));
    }
    let streams: Vec<RawStream> = serde_json::from_str(data.result.get()).map_err(json)?;
    Ok(QueryResponse {
        encoding_flags: data.encoding_flags,
        streams: streams
            .into_iter()
            .map(|s| QueryStream { labels: s.stream, entries: s.values.into_iter().map(|e| e.0).collect() })
            .collect(),
    })
}

/// `/loki/api/v1/label/<name>/values?query=…&start=…&end=…`: the values `name` takes in the
/// streams that `selector` matches within `[start, end)`, to append to the base URL.
pub fn label_values_path(name: &str, selector: &str, start: UnixNanos, end: UnixNanos) -> String {
    let mut out = String::from("/loki/api/v1/label/");
    percent_encode(name, &mut out);
    out.push_str("/values?query=");
    percent_encode(selector, &mut out);
    out.push_str(&format!("&start={start}&end={end}"));
    out
}

#[derive(Deserialize)]
struct RawLabelValues {
    status: String,
    #[serde(default)]
    data: Option<Vec<String>>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

/// Parses the body of a successful label values answer, `{"status":"success","data":["a",…]}`
/// (Loki leaves `data` out when no stream matches).
pub fn parse_label_values(body: &[u8]) -> Result<Vec<String>, QueryError> {
    let raw: RawLabelValues = serde_json::from_slice(body).map_err(|e| QueryError::Json(e.to_string()))?;
    if raw.status != "success" {
        return Err(QueryError::Failed {
            error_type: raw.error_type.unwrap_or_else(|| raw.status.clone()),
            message: raw.error.unwrap_or_else(|| "(no message)".into()),
        });
    }
    Ok(raw.data.unwrap_or_default())
}

/// An entry with the labels of the stream it came in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PagedEntry {
    /// The stream's labels, shared by its entries.
    pub labels: Arc<BTreeMap<String, String>>,
    /// The entry.
    pub entry: QueryEntry,
}

/// Reads `[start, end)` forward in pages of `limit` entries.
///
/// Each page starts at the newest timestamp of the previous full page (inclusive), because a
/// page can end in the middle of the entries sharing that timestamp; the entries of that
/// timestamp already returned (same labels, timestamp, line and metadata) are dropped from the
/// next page. A page with fewer than `limit` entries is the last.
///
/// A full page of one timestamp cannot be paged past (Loki has no offset): it is
/// [`QueryError::Stuck`], or, with [`Pager::skip_crowded`], handed out with the rest of that
/// timestamp left unread and reported by [`Pager::crowded`].
#[derive(Debug, Clone)]
pub struct Pager {
    query: String,
    start: UnixNanos,
    end: UnixNanos,
    limit: u32,
    /// The entries at `start` already handed out.
    seen_at_start: HashSet<PagedEntry>,
    done: bool,
    skip_crowded: bool,
    /// The timestamp the last page filled, when skipped.
    crowded: Option<UnixNanos>,
}

impl Pager {
    /// A pager over `[start, end)` in pages of `limit`; refused as [`QueryRange::new`] refuses.
    pub fn new(
        query: impl Into<String>,
        start: UnixNanos,
        end: UnixNanos,
        limit: u32,
    ) -> Result<Self, QueryError> {
        let first = QueryRange::new(query, start, end, limit)?;
        Ok(Self {
            query: first.query,
            start,
            end,
            limit,
            seen_at_start: HashSet::new(),
            done: false,
            skip_crowded: false,
            crowded: None,
        })
    }

    /// Goes on past a timestamp that fills a whole page instead of failing: for a reader who
    /// cannot raise the limit, and whose answer must not depend on how many entries someone
    /// with push access stored at one timestamp.
    pub fn skip_crowded(mut self) -> Self {
        self.skip_crowded = true;
        self
    }

    /// The timestamp the page just accepted was full of, if the pager skipped past it: entries
    /// stored there beyond the `limit` handed out were not read.
    pub fn crowded(&self) -> Option<UnixNanos> {
        self.crowded
    }

    /// The next call to make, or None when the range has been read.
    pub fn next_request(&self) -> Option<QueryRange> {
        (!self.done).then(|| QueryRange {
            query: self.query.clone(),
            start: self.start,
            end: self.end,
            limit: self.limit,
        })
    }

    /// Whether the last page was read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Where the next page starts: every entry before it has been handed out.
    pub fn position(&self) -> UnixNanos {
        self.start
    }

    /// Ends this pager at `at` and returns a pager over the rest of its range, `[at, end)`, so
    /// that the two can be read at once; None, and nothing changed, unless `at` lies after
    /// where this pager stands and before its end.
    pub fn split_at(&mut self, at: UnixNanos) -> Option<Pager> {
        if self.done || at <= self.start || at >= self.end {
            return None;
        }
        let rest = Pager {
            query: self.query.clone(),
            start: at,
            end: self.end,
            limit: self.limit,
            seen_at_start: HashSet::new(),
            done: false,
            skip_crowded: self.skip_crowded,
            crowded: None,
        };
        self.end = at;
        Some(rest)
    }

    /// Takes the response to [`Pager::next_request`] and returns the entries not handed out
    /// before, in timestamp order.
    pub fn accept(&mut self, response: QueryResponse) -> Result<Vec<PagedEntry>, QueryError> {
        self.crowded = None;
        if self.done {
            return Ok(Vec::new());
        }
        let mut page: Vec<PagedEntry> = Vec::new();
        for stream in response.streams {
            let labels = Arc::new(stream.labels);
            for entry in stream.entries {
                if entry.timestamp < self.start || entry.timestamp >= self.end {
                    return Err(QueryError::OutOfRange {
                        timestamp: entry.timestamp,
                        start: self.start,
                        end: self.end,
                    });
                }
                page.push(PagedEntry { labels: Arc::clone(&labels), entry });
            }
        }
        page.sort_by_key(|e| e.entry.timestamp);
        let full = page.len() >= self.limit as usize;
        let newest = page.last().map(|e| e.entry.timestamp);
        let previous_start = self.start;
        let seen = std::mem::take(&mut self.seen_at_start);
        let fresh: Vec<PagedEntry> =
            page.into_iter().filter(|e| !(e.entry.timestamp == previous_start && seen.contains(e))).collect();
        match newest {
            Some(newest) if full && newest == previous_start => {
                if !self.skip_crowded {
                    return Err(QueryError::Stuck { timestamp: newest, limit: self.limit });
                }
                self.crowded = Some(newest);
                match newest.checked_add(1).filter(|next| *next < self.end) {
                    Some(next) => self.start = next,
                    None => self.done = true,
                }
            }
            Some(newest) if full => {
                self.start = newest;
                self.seen_at_start = fresh.iter().filter(|e| e.entry.timestamp == newest).cloned().collect();
            }
            _ => self.done = true,
        }
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_request_path() {
        let q = QueryRange::new(r#"{job="teelog", teelog_kind="batch"} |= "a&b""#, 10, 20, 5000).unwrap();
        assert_eq!(
            q.path_and_query(),
            "/loki/api/v1/query_range?query=%7Bjob%3D%22teelog%22%2C%20teelog_kind%3D%22batch%22%7D%20%7C%3D%20%22a%26b%22\
             &start=10&end=20&limit=5000&direction=forward"
        );
        assert_eq!(QueryRange::new("{}", 5, 5, 1), Err(QueryError::EmptyRange { start: 5, end: 5 }));
        assert_eq!(QueryRange::new("{}", 0, 5, 0), Err(QueryError::Limit(0)));
        assert_eq!(QueryRange::new("{}", 0, 5, 5001), Err(QueryError::Limit(5001)));
    }

    #[test]
    fn label_values_request_and_answers() {
        assert_eq!(
            label_values_path("teelog_stream", r#"{job="teelog"}"#, 10, 20),
            "/loki/api/v1/label/teelog_stream/values?query=%7Bjob%3D%22teelog%22%7D&start=10&end=20"
        );
        assert_eq!(
            parse_label_values(br#"{"status":"success","data":["a","payments"]}"#).unwrap(),
            vec!["a".to_string(), "payments".to_string()]
        );
        assert_eq!(parse_label_values(br#"{"status":"success"}"#).unwrap(), Vec::<String>::new());
        assert_eq!(
            parse_label_values(br#"{"status":"error","errorType":"bad_data","error":"no"}"#),
            Err(QueryError::Failed { error_type: "bad_data".into(), message: "no".into() })
        );
        assert!(matches!(
            parse_label_values(br#"{"status":"success","data":[1]}"#),
            Err(QueryError::Json(_))
        ));
    }

    #[test]
    fn parses_categorized_and_plain_responses() {
        let categorized = br#"{"status":"success","data":{"resultType":"streams","encodingFlags":["categorize-labels"],
            "result":[{"stream":{"job":"teelog"},"values":[
                ["123456789012345","super line",{}],
                ["123456789012346","with \u003cmeta\u003e",{"structuredMetadata":{"foo":"a","bar":"b"}}],
                ["123456789012347","parsed too",{"structuredMetadata":{"foo":"a"},"parsed":{"msg":"text"}}]]}],
            "stats":{"summary":{"execTime":0.1}}}}"#;
        let r = parse_query_response(categorized).unwrap();
        assert!(r.is_categorized());
        assert_eq!(r.streams.len(), 1);
        let e = &r.streams[0].entries;
        assert_eq!(r.streams[0].labels, BTreeMap::from([("job".to_string(), "teelog".to_string())]));
        assert_eq!((e[0].timestamp, e[0].line.as_str()), (123456789012345, "super line"));
        assert!(e[0].structured_metadata.is_empty() && e[0].parsed.is_empty());
        assert_eq!(e[1].line, "with <meta>");
        assert_eq!(e[1].structured_metadata.get("bar").map(String::as_str), Some("b"));
        assert_eq!(e[2].parsed.get("msg").map(String::as_str), Some("text"));

        let plain = br#"{"status":"success","data":{"resultType":"streams","result":[
            {"stream":{"job":"teelog","teelog_seq":"3"},"values":[["5","x"]]}]}}"#;
        let r = parse_query_response(plain).unwrap();
        assert!(!r.is_categorized());
        assert_eq!(r.streams[0].entries[0].timestamp, 5);
        assert_eq!(r.streams[0].labels.get("teelog_seq").map(String::as_str), Some("3"));
    }

    #[test]
    fn refuses_other_results_and_bad_values() {
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"2"]]}]}}"#;
        assert_eq!(parse_query_response(matrix), Err(QueryError::NotStreams("matrix".into())));
        let failed = br#"{"status":"error","errorType":"bad_data","error":"parse error at line 1"}"#;
        assert_eq!(
            parse_query_response(failed),
            Err(QueryError::Failed {
                error_type: "bad_data".into(),
                message: "parse error at line 1".into()
            })
        );
        for bad in [
            r#"[["x","line"]]"#,
            r#"[[1,"line"]]"#,
            r#"[["1"]]"#,
            r#"[["1","a",{},4]]"#,
            r#"[["1","a",{"structuredMetadata":{"k":1}}]]"#,
            r#"[["99999999999999999999","a"]]"#,
        ] {
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"streams","result":[{{"stream":{{}},"values":{bad}}}]}}}}"#
            );
            assert!(matches!(parse_query_response(body.as_bytes()), Err(QueryError::Json(_))), "{bad}");
        }
        assert!(matches!(parse_query_response(b"not json"), Err(QueryError::Json(_))));
        assert!(matches!(parse_query_response(br#"{"status":"success"}"#), Err(QueryError::Json(_))));
    }

    fn entry(ts: UnixNanos, line: &str, seq: &str) -> QueryEntry {
        QueryEntry {
            timestamp: ts,
            line: line.into(),
            structured_metadata: BTreeMap::from([("teelog_seq".to_string(), seq.to_string())]),
            parsed: BTreeMap::new(),
        }
    }

    /// A fake Loki: all entries of one stream, answering like query_range forward with a limit.
    fn answer(all: &[QueryEntry], q: &QueryRange) -> QueryResponse {
        let mut hits: Vec<QueryEntry> =
            all.iter().filter(|e| e.timestamp >= q.start && e.timestamp < q.end).cloned().collect();
        hits.sort_by_key(|e| e.timestamp);
        hits.truncate(q.limit as usize);
        QueryResponse {
            encoding_flags: vec![CATEGORIZE_LABELS.into()],
            streams: vec![QueryStream {
                labels: BTreeMap::from([("job".into(), "teelog".into())]),
                entries: hits,
            }],
        }
    }

    fn read_all(
        all: &[QueryEntry],
        start: UnixNanos,
        end: UnixNanos,
        limit: u32,
    ) -> Result<Vec<QueryEntry>, QueryError> {
        let mut pager = Pager::new("{job=\"teelog\"}", start, end, limit)?;
        let mut out = Vec::new();
        let mut calls = 0;
        while let Some(q) = pager.next_request() {
            calls += 1;
            assert!(calls < 1000, "the pager does not terminate");
            out.extend(pager.accept(answer(all, &q))?.into_iter().map(|e| e.entry));
        }
        assert!(pager.is_done());
        Ok(out)
    }

    #[test]
    fn pages_across_boundaries_without_loss_or_repeats() {
        // Several entries share timestamps, so that pages end in the middle of a timestamp.
        let all: Vec<QueryEntry> = (0..40)
            .map(|i| entry(100 + i / 3, &format!("line {i}"), &(i % 5).to_string()))
            .chain([entry(120, "same line", "1"), entry(120, "same line", "2")])
            .collect();
        let mut expected = all.clone();
        expected.sort_by_key(|e| e.timestamp);
        for limit in [4, 5, 7, 10, 41, 42, 43, 5000] {
            let got = read_all(&all, 0, 1_000, limit).unwrap();
            let mut got_sorted = got.clone();
            got_sorted.sort_by(|a, b| {
                (a.timestamp, &a.line, &a.structured_metadata).cmp(&(
                    b.timestamp,
                    &b.line,
                    &b.structured_metadata,
                ))
            });
            let mut want = expected.clone();
            want.sort_by(|a, b| {
                (a.timestamp, &a.line, &a.structured_metadata).cmp(&(
                    b.timestamp,
                    &b.line,
                    &b.structured_metadata,
                ))
            });
            assert_eq!(got_sorted, want, "limit {limit}");
            assert!(got.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
        }
        // The range's end is exclusive.
        assert_eq!(read_all(&all, 0, 101, 4).unwrap().len(), 3);
    }

    #[test]
    fn a_pager_split_anywhere_reads_what_it_would_have_read_whole() {
        let all: Vec<QueryEntry> = (0..40).map(|i| entry(100 + i / 3, &format!("line {i}"), "1")).collect();
        let whole = read_all(&all, 0, 1_000, 4).unwrap();
        for split in [1, 101, 103, 105, 113, 500] {
            // One page first, as a reader does before it splits the rest.
            let mut first = Pager::new("{}", 0, 1_000, 4).unwrap();
            let q = first.next_request().unwrap();
            let mut got: Vec<QueryEntry> =
                first.accept(answer(&all, &q)).unwrap().into_iter().map(|e| e.entry).collect();
            let position = first.position();
            let rest = first.split_at(split);
            assert_eq!(rest.is_some(), split > position && split < 1_000, "split at {split}");
            for mut pager in [Some(first), rest].into_iter().flatten() {
                while let Some(q) = pager.next_request() {
                    got.extend(pager.accept(answer(&all, &q)).unwrap().into_iter().map(|e| e.entry));
                }
            }
            assert_eq!(got, whole, "split at {split}");
        }
    }

    #[test]
    fn reports_a_page_it_cannot_get_past() {
        let all: Vec<QueryEntry> = (0..6).map(|i| entry(7, &format!("l{i}"), "1")).collect();
        assert_eq!(read_all(&all, 0, 10, 5), Err(QueryError::Stuck { timestamp: 7, limit: 5 }));
        // A full page of one timestamp cannot tell whether more follow; one more slot can.
        assert_eq!(read_all(&all, 0, 10, 6), Err(QueryError::Stuck { timestamp: 7, limit: 6 }));
        assert_eq!(read_all(&all, 0, 10, 7).unwrap().len(), 6);
    }

    #[test]
    fn can_skip_past_a_crowded_timestamp() {
        let all: Vec<QueryEntry> = (0..7)
            .map(|i| entry(7, &format!("l{i}"), "1"))
            .chain([entry(5, "before", "1"), entry(8, "after", "1")])
            .collect();
        let mut pager = Pager::new("{}", 0, 10, 3).unwrap().skip_crowded();
        let mut got = Vec::new();
        let mut crowded = Vec::new();
        while let Some(q) = pager.next_request() {
            got.extend(pager.accept(answer(&all, &q)).unwrap().into_iter().map(|e| e.entry.line));
            crowded.extend(pager.crowded());
        }
        // The first page ends inside timestamp 7, the second is all 7: skipped, and 8 is read.
        assert_eq!(got, ["before", "l0", "l1", "l2", "after"]);
        assert_eq!(crowded, [7]);
        // At the end of the range there is nothing after it to read.
        let mut pager = Pager::new("{}", 7, 8, 3).unwrap().skip_crowded();
        let q = pager.next_request().unwrap();
        assert_eq!(pager.accept(answer(&all, &q)).unwrap().len(), 3);
        assert_eq!((pager.crowded(), pager.is_done()), (Some(7), true));
    }

    #[test]
    fn refuses_entries_outside_the_range() {
        let mut pager = Pager::new("{}", 10, 20, 100).unwrap();
        let response = QueryResponse {
            encoding_flags: vec![],
            streams: vec![QueryStream { labels: BTreeMap::new(), entries: vec![entry(20, "x", "1")] }],
        };
        assert_eq!(pager.accept(response), Err(QueryError::OutOfRange { timestamp: 20, start: 10, end: 20 }));
    }
}
