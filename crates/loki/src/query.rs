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

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
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

/// Parses the body of a successful `query_range` answer, every entry with its structured
/// metadata and parsed labels.
pub fn parse_query_response(body: &[u8]) -> Result<QueryResponse, QueryError> {
    let mut streams = Streams::default();
    let encoding_flags = decode_response(body, &mut streams)?;
    Ok(QueryResponse { encoding_flags, streams: streams.0 })
}

/// Parses the body of a successful `query_range` answer into a [`Page`]: the lines and their
/// times only, for a reader that trusts nothing else of the answer. Structured metadata and
/// parsed labels are skipped unread (any JSON value is taken there).
pub fn parse_query_page(body: &[u8]) -> Result<Page, QueryError> {
    let mut page = Page::default();
    decode_response(body, &mut page)?;
    Ok(page)
}

/// One `query_range` answer's entries, decoded for reading through: every line in one buffer,
/// no allocation per entry. [`Pager::accept_page`] puts them in timestamp order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The lines, one after the other.
    text: String,
    entries: Vec<PageEntry>,
    /// Each stream's labels, by the index its entries name.
    labels: Vec<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PageEntry {
    timestamp: UnixNanos,
    stream: usize,
    /// Its line is `text[start..end]`.
    start: usize,
    end: usize,
}

impl Page {
    /// Entries in the page.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the page holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each entry's time and line, in the page's order.
    pub fn iter(&self) -> impl Iterator<Item = (UnixNanos, &str)> + '_ {
        self.entries.iter().map(|e| (e.timestamp, self.line(e)))
    }

    fn line(&self, entry: &PageEntry) -> &str {
        self.text.get(entry.start..entry.end).unwrap_or_default()
    }

    /// What tells an entry from another of the same time, for the pager: its stream's labels
    /// and its line.
    fn identity(&self, entry: &PageEntry) -> Vec<u8> {
        let mut key = labels_key(self.labels.get(entry.stream));
        push_field(&mut key, self.line(entry));
        key
    }
}

/// `labels` in an encoding that nothing appended to it makes ambiguous: how many pairs, then
/// each name and value after its length.
fn labels_key(labels: Option<&BTreeMap<String, String>>) -> Vec<u8> {
    let mut key = (labels.map_or(0, BTreeMap::len) as u64).to_le_bytes().to_vec();
    for (name, value) in labels.into_iter().flatten() {
        push_field(&mut key, name);
        push_field(&mut key, value);
    }
    key
}

fn push_field(key: &mut Vec<u8>, field: &str) {
    key.extend_from_slice(&(field.len() as u64).to_le_bytes());
    key.extend_from_slice(field.as_bytes());
}

/// What a `query_range` answer's streams are decoded into, as the decoder meets them.
trait Collect {
    /// What an entry's third element (`{"structuredMetadata":…,"parsed":…}`) is read as.
    type Categories: for<'de> Deserialize<'de> + Default;
    /// A stream begins: its labels and entries follow, in either order.
    fn stream(&mut self);
    /// The current stream's labels.
    fn labels(&mut self, labels: BTreeMap<String, String>);
    /// An entry of the current stream.
    fn entry(&mut self, timestamp: UnixNanos, line: &str);
    /// The last entry's third element, if it has one.
    fn categories(&mut self, categories: Self::Categories);
}

/// Every entry in full, for [`parse_query_response`].
#[derive(Default)]
struct Streams(Vec<QueryStream>);

impl Collect for Streams {
    type Categories = Categories;
    fn stream(&mut self) {
        self.0.push(QueryStream { labels: BTreeMap::new(), entries: Vec::new() });
    }
    fn labels(&mut self, labels: BTreeMap<String, String>) {
        if let Some(stream) = self.0.last_mut() {
            stream.labels = labels;
        }
    }
    fn entry(&mut self, timestamp: UnixNanos, line: &str) {
        if let Some(stream) = self.0.last_mut() {
            stream.entries.push(QueryEntry {
                timestamp,
                line: line.to_string(),
                structured_metadata: BTreeMap::new(),
                parsed: BTreeMap::new(),
            });
        }
    }
    fn categories(&mut self, categories: Categories) {
        if let Some(entry) = self.0.last_mut().and_then(|s| s.entries.last_mut()) {
            entry.structured_metadata = categories.structured_metadata;
            entry.parsed = categories.parsed;
        }
    }
}

impl Collect for Page {
    type Categories = IgnoredAny;
    fn stream(&mut self) {
        self.labels.push(BTreeMap::new());
    }
    fn labels(&mut self, labels: BTreeMap<String, String>) {
        if let Some(last) = self.labels.last_mut() {
            *last = labels;
        }
    }
    fn entry(&mut self, timestamp: UnixNanos, line: &str) {
        let start = self.text.len();
        self.text.push_str(line);
        let stream = self.labels.len().saturating_sub(1);
        self.entries.push(PageEntry { timestamp, stream, start, end: self.text.len() });
    }
    fn categories(&mut self, _: IgnoredAny) {}
}

#[derive(Deserialize, Default)]
struct Categories {
    #[serde(rename = "structuredMetadata", default)]
    structured_metadata: BTreeMap<String, String>,
    #[serde(default)]
    parsed: BTreeMap<String, String>,
}

/// Decodes a `query_range` answer in one pass, its streams into `collect`; returns the encoding
/// flags. Loki writes `status` and `resultType` before `result`; should an answer put `result`
/// first, it is decoded as streams, and an answer of another type fails as JSON that is not.
fn decode_response(body: &[u8], collect: &mut impl Collect) -> Result<Vec<String>, QueryError> {
    let json = |e: serde_json::Error| QueryError::Json(e.to_string());
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let response =
        de::DeserializeSeed::deserialize(ResponseSeed(collect), &mut deserializer).map_err(json)?;
    deserializer.end().map_err(json)?;
    if response.status != "success" {
        return Err(QueryError::Failed {
            error_type: response.error_type.unwrap_or_else(|| response.status.clone()),
            message: response.error.unwrap_or_else(|| "(no message)".into()),
        });
    }
    let data = response.data.ok_or_else(|| QueryError::Json("\"data\" is missing".into()))?;
    let result_type = data.result_type.ok_or_else(|| QueryError::Json("\"resultType\" is missing".into()))?;
    if result_type != "streams" {
        return Err(QueryError::NotStreams(result_type));
    }
    if !data.result {
        return Err(QueryError::Json("\"result\" is missing".into()));
    }
    Ok(data.encoding_flags)
}

/// The top of an answer, its streams aside.
struct Response {
    status: String,
    data: Option<Data>,
    error_type: Option<String>,
    error: Option<String>,
}

struct Data {
    result_type: Option<String>,
    encoding_flags: Vec<String>,
    /// Whether a `result` was there.
    result: bool,
}

/// Which of `names` a map key is (None: another key, skipped).
struct KeySeed(&'static [&'static str]);

impl<'de> de::DeserializeSeed<'de> for KeySeed {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|name| *name == key))
    }
}

/// The keys met in a map so far, so that one given twice is refused.
struct Seen(u32);

impl Seen {
    fn first<E: de::Error>(&mut self, names: &'static [&'static str], key: usize) -> Result<(), E> {
        if self.0 & 1 << key != 0 {
            return Err(E::duplicate_field(names[key]));
        }
        self.0 |= 1 << key;
        Ok(())
    }
}

struct ResponseSeed<'a, C>(&'a mut C);

const RESPONSE_KEYS: &[&str] = &["status", "data", "errorType", "error"];

impl<'de, C: Collect> de::DeserializeSeed<'de> for ResponseSeed<'_, C> {
    type Value = Response;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Response, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, C: Collect> Visitor<'de> for ResponseSeed<'_, C> {
    type Value = Response;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a query_range answer, {\"status\":…,\"data\":{…}}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Response, A::Error> {
        let (mut status, mut data, mut error_type, mut error) = (None, None, None, None);
        let mut seen = Seen(0);
        while let Some(key) = map.next_key_seed(KeySeed(RESPONSE_KEYS))? {
            let Some(key) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            seen.first(RESPONSE_KEYS, key)?;
            match key {
                0 => status = Some(map.next_value()?),
                1 => data = map.next_value_seed(OptionSeed(DataSeed(&mut *self.0)))?,
                2 => error_type = map.next_value()?,
                _ => error = map.next_value()?,
            }
        }
        let status = status.ok_or_else(|| de::Error::missing_field("status"))?;
        Ok(Response { status, data, error_type, error })
    }
}

/// `null`, or what the inner seed reads.
struct OptionSeed<S>(S);

impl<'de, S: de::DeserializeSeed<'de>> de::DeserializeSeed<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, S: de::DeserializeSeed<'de>> Visitor<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("null or a value")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(deserializer).map(Some)
    }
}

struct DataSeed<'a, C>(&'a mut C);

const DATA_KEYS: &[&str] = &["resultType", "encodingFlags", "result"];

impl<'de, C: Collect> de::DeserializeSeed<'de> for DataSeed<'_, C> {
    type Value = Data;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Data, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, C: Collect> Visitor<'de> for DataSeed<'_, C> {
    type Value = Data;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a query_range answer's data, {\"resultType\":…,\"result\":[…]}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Data, A::Error> {
        let mut data = Data { result_type: None, encoding_flags: Vec::new(), result: false };
        let mut seen = Seen(0);
        while let Some(key) = map.next_key_seed(KeySeed(DATA_KEYS))? {
            let Some(key) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            seen.first(DATA_KEYS, key)?;
            match key {
                0 => data.result_type = Some(map.next_value()?),
                1 => data.encoding_flags = map.next_value()?,
                _ => {
                    data.result = true;
                    // Another type's result is not read: the type is the error.
                    match data.result_type.as_deref() {
                        Some(other) if other != "streams" => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        _ => map.next_value_seed(ListSeed(StreamSeed(&mut *self.0)))?,
                    }
                }
            }
        }
        Ok(data)
    }
}

/// A JSON array, each element read with the same seed.
struct ListSeed<S>(S);

impl<'de, S> de::DeserializeSeed<'de> for ListSeed<S>
where
    for<'s> &'s mut S: de::DeserializeSeed<'de, Value = ()>,
{
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, S> Visitor<'de> for ListSeed<S>
where
    for<'s> &'s mut S: de::DeserializeSeed<'de, Value = ()>,
{
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(&mut self.0)?.is_some() {}
        Ok(())
    }
}

/// One stream of the result, `{"stream":{labels},"values":[[…],…]}`.
struct StreamSeed<'a, C>(&'a mut C);

const STREAM_KEYS: &[&str] = &["stream", "values"];

impl<'de, C: Collect> de::DeserializeSeed<'de> for &mut StreamSeed<'_, C> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, C: Collect> Visitor<'de> for &mut StreamSeed<'_, C> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a log stream, {\"stream\":{…},\"values\":[…]}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.stream();
        let mut seen = Seen(0);
        while let Some(key) = map.next_key_seed(KeySeed(STREAM_KEYS))? {
            let Some(key) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            seen.first(STREAM_KEYS, key)?;
            match key {
                0 => self.0.labels(map.next_value()?),
                _ => map.next_value_seed(ListSeed(EntrySeed(&mut *self.0)))?,
            }
        }
        for (key, name) in STREAM_KEYS.iter().enumerate() {
            if seen.0 & 1 << key == 0 {
                return Err(de::Error::missing_field(name));
            }
        }
        Ok(())
    }
}

/// One entry, `["<ns timestamp>", "<line>"]` or `["<ns timestamp>", "<line>", {…}]`.
struct EntrySeed<'a, C>(&'a mut C);

impl<'de, C: Collect> de::DeserializeSeed<'de> for &mut EntrySeed<'_, C> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, C: Collect> Visitor<'de> for &mut EntrySeed<'_, C> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[\"<ns timestamp>\", \"<line>\"] or [\"<ns timestamp>\", \"<line>\", {…}]")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let timestamp =
            seq.next_element_seed(Timestamp)?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
        seq.next_element_seed(Line { collect: &mut *self.0, timestamp })?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        if let Some(categories) = seq.next_element::<C::Categories>()? {
            self.0.categories(categories);
        }
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(4, &self));
        }
        Ok(())
    }
}

/// A timestamp, integer nanoseconds in a string.
struct Timestamp;

impl<'de> de::DeserializeSeed<'de> for Timestamp {
    type Value = UnixNanos;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<UnixNanos, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for Timestamp {
    type Value = UnixNanos;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a timestamp, integer nanoseconds in a string")
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<UnixNanos, E> {
        text.parse().map_err(|_| E::custom(format!("timestamp {text:?} is not integer nanoseconds")))
    }
}

/// An entry's line, handed to the collector as it is read (serde_json unescapes it into a
/// buffer of its own, reused from line to line).
struct Line<'a, C> {
    collect: &'a mut C,
    timestamp: UnixNanos,
}

impl<'de, C: Collect> de::DeserializeSeed<'de> for Line<'_, C> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<C: Collect> Visitor<'_> for Line<'_, C> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a log line, a string")
    }
    fn visit_str<E: de::Error>(self, line: &str) -> Result<(), E> {
        self.collect.entry(self.timestamp, line);
        Ok(())
    }
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
    /// The entries at `start` already handed out, as `take`'s key tells them apart.
    seen_at_start: HashSet<Vec<u8>>,
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
        let mut page: Vec<PagedEntry> = Vec::new();
        for stream in response.streams {
            let labels = Arc::new(stream.labels);
            page.extend(
                stream.entries.into_iter().map(|entry| PagedEntry { labels: Arc::clone(&labels), entry }),
            );
        }
        self.take(
            page,
            |e| e.entry.timestamp,
            |e| {
                let mut key = labels_key(Some(&e.labels));
                push_field(&mut key, &e.entry.line);
                for map in [&e.entry.structured_metadata, &e.entry.parsed] {
                    key.extend(labels_key(Some(map)));
                }
                key
            },
        )
    }

    /// Takes the page answering [`Pager::next_request`] and leaves in it the entries not handed
    /// out before, in timestamp order. An entry is told from another of its time by its
    /// stream's labels and its line (its metadata is not read).
    pub fn accept_page(&mut self, page: &mut Page) -> Result<(), QueryError> {
        let entries = std::mem::take(&mut page.entries);
        page.entries = self.take(entries, |e| e.timestamp, |e| page.identity(e))?;
        Ok(())
    }

    /// The entries of `page` not handed out before, in timestamp order; `key` tells entries of
    /// one time apart.
    fn take<E>(
        &mut self,
        mut page: Vec<E>,
        timestamp: impl Fn(&E) -> UnixNanos,
        key: impl Fn(&E) -> Vec<u8>,
    ) -> Result<Vec<E>, QueryError> {
        self.crowded = None;
        if self.done {
            return Ok(Vec::new());
        }
        if let Some(outside) = page.iter().map(&timestamp).find(|t| *t < self.start || *t >= self.end) {
            return Err(QueryError::OutOfRange { timestamp: outside, start: self.start, end: self.end });
        }
        // Stable, and cheap on the sorted runs Loki sends.
        page.sort_by_key(&timestamp);
        let full = page.len() >= self.limit as usize;
        let newest = page.last().map(&timestamp);
        let previous_start = self.start;
        let seen = std::mem::take(&mut self.seen_at_start);
        if !seen.is_empty() {
            page.retain(|e| !(timestamp(e) == previous_start && seen.contains(&key(e))));
        }
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
                self.seen_at_start =
                    page.iter().rev().take_while(|e| timestamp(e) == newest).map(&key).collect();
            }
            _ => self.done = true,
        }
        Ok(page)
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

    #[test]
    fn a_page_holds_the_lines_and_times_of_the_full_answer() {
        let body =
            br#"{"status":"success","data":{"resultType":"streams","encodingFlags":["categorize-labels"],
            "result":[{"values":[["7","{\"a\":\"\u00e9\\n\"}",{"structuredMetadata":{"k":1,"deep":[{}]}}],
                                 ["5","plain",{}]],"stream":{"job":"teelog"}},
                      {"stream":{"job":"other"},"values":[["6","x"]],"extra":null}]},"stats":{}}"#;
        let page = parse_query_page(body).unwrap();
        let lines: Vec<(UnixNanos, &str)> = page.iter().collect();
        assert_eq!(lines, [(7, "{\"a\":\"\u{e9}\\n\"}"), (5, "plain"), (6, "x")]);
        // The full parse holds the same, and refuses metadata that is not names to strings.
        assert!(matches!(parse_query_response(body), Err(QueryError::Json(_))));
        let strict =
            String::from_utf8(body.to_vec()).unwrap().replace(r#"{"k":1,"deep":[{}]}"#, r#"{"k":"1"}"#);
        let full = parse_query_response(strict.as_bytes()).unwrap();
        let full_lines: Vec<(UnixNanos, &str)> = full
            .streams
            .iter()
            .flat_map(|s| s.entries.iter().map(|e| (e.timestamp, e.line.as_str())))
            .collect();
        assert_eq!(full_lines, lines);
        assert_eq!(full.streams[0].labels["job"], "teelog");
        // Sorted by the pager, with the stream each came in.
        let mut pager = Pager::new("{}", 0, 10, 100).unwrap();
        let mut page = page;
        pager.accept_page(&mut page).unwrap();
        assert_eq!(page.iter().map(|(at, _)| at).collect::<Vec<_>>(), [5, 6, 7]);
    }

    #[test]
    fn a_page_refuses_what_is_not_a_streams_answer() {
        let page = |text: &str| parse_query_page(text.as_bytes());
        assert_eq!(
            page(
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"2"]]}]}}"#
            ),
            Err(QueryError::NotStreams("matrix".into()))
        );
        assert_eq!(
            page(r#"{"status":"error","errorType":"bad_data","error":"no"}"#),
            Err(QueryError::Failed { error_type: "bad_data".into(), message: "no".into() })
        );
        let streams = |result: &str| {
            format!(r#"{{"status":"success","data":{{"resultType":"streams","result":{result}}}}}"#)
        };
        for bad in [
            streams(r#"[{"stream":{},"values":[["x","line"]]}]"#),
            streams(r#"[{"stream":{},"values":[[1,"line"]]}]"#),
            streams(r#"[{"stream":{},"values":[["1"]]}]"#),
            streams(r#"[{"stream":{},"values":[["1",2]]}]"#),
            streams(r#"[{"stream":{},"values":[["1","a",{},4]]}]"#),
            streams(r#"[{"stream":{},"values":[["99999999999999999999","a"]]}]"#),
            streams(r#"[{"stream":{}}]"#),
            streams(r#"[{"values":[]}]"#),
            streams(r#"[{"stream":{},"values":[],"values":[]}]"#),
            streams(r#"[{"stream":{"a":1},"values":[]}]"#),
            streams(r#"{}"#),
            streams(r#"[]"#) + " trailing",
            r#"{"status":"success","status":"success","data":{"resultType":"streams","result":[]}}"#.into(),
            r#"{"status":"success","data":{"resultType":"streams"}}"#.into(),
            r#"{"status":"success","data":{"result":[]}}"#.into(),
            r#"{"status":"success","data":null}"#.into(),
            r#"{"data":{"resultType":"streams","result":[]}}"#.into(),
            "not json".into(),
        ] {
            assert!(matches!(page(&bad), Err(QueryError::Json(_))), "{bad}");
            assert!(matches!(parse_query_response(bad.as_bytes()), Err(QueryError::Json(_))), "{bad}");
        }
        assert_eq!(page(&streams("[]")).map(|p| p.len()), Ok(0));
    }

    /// `response` as Loki writes it, categorised.
    fn body(response: &QueryResponse) -> String {
        let streams: Vec<serde_json::Value> = response
            .streams
            .iter()
            .map(|s| {
                let values: Vec<serde_json::Value> = s
                    .entries
                    .iter()
                    .map(|e| {
                        serde_json::json!([e.timestamp.to_string(), e.line, {"structuredMetadata": e.structured_metadata}])
                    })
                    .collect();
                serde_json::json!({"stream": s.labels, "values": values})
            })
            .collect();
        serde_json::json!({"status": "success", "data": {"resultType": "streams", "encodingFlags": response.encoding_flags, "result": streams}})
            .to_string()
    }

    #[test]
    fn pages_read_what_entries_read() {
        // Entries of one time told apart by their lines, as Loki keeps them in one stream.
        let all: Vec<QueryEntry> =
            (0..40).map(|i| entry(100 + i / 3, &format!("line \"{i}\""), &(i % 5).to_string())).collect();
        for limit in [4, 5, 7, 10, 41, 5000] {
            let whole: Vec<(UnixNanos, String)> =
                read_all(&all, 0, 1_000, limit).unwrap().into_iter().map(|e| (e.timestamp, e.line)).collect();
            let mut pager = Pager::new("{}", 0, 1_000, limit).unwrap();
            let mut got = Vec::new();
            while let Some(q) = pager.next_request() {
                let mut page = parse_query_page(body(&answer(&all, &q)).as_bytes()).unwrap();
                pager.accept_page(&mut page).unwrap();
                got.extend(page.iter().map(|(at, line)| (at, line.to_string())));
            }
            assert_eq!(got, whole, "limit {limit}");
        }
        // A crowded time is refused or skipped as with whole entries.
        let crowd: Vec<QueryEntry> = (0..6).map(|i| entry(7, &format!("l{i}"), "1")).collect();
        let mut pager = Pager::new("{}", 0, 10, 5).unwrap();
        let q = pager.next_request().unwrap();
        let mut page = parse_query_page(body(&answer(&crowd, &q)).as_bytes()).unwrap();
        pager.accept_page(&mut page).unwrap();
        let q = pager.next_request().unwrap();
        let mut page = parse_query_page(body(&answer(&crowd, &q)).as_bytes()).unwrap();
        assert_eq!(pager.accept_page(&mut page), Err(QueryError::Stuck { timestamp: 7, limit: 5 }));
        let mut pager = Pager::new("{}", 10, 20, 100).unwrap();
        let mut page =
            parse_query_page(body(&answer(&crowd, &QueryRange::new("{}", 0, 10, 5).unwrap())).as_bytes())
                .unwrap();
        assert_eq!(
            pager.accept_page(&mut page),
            Err(QueryError::OutOfRange { timestamp: 7, start: 10, end: 20 })
        );
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
