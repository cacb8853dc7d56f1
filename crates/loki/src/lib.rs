//! A thin Grafana Loki 3.x client for teelog.
//!
//! - [`layout`]: how signed batch lines become Loki entries in a few bounded streams, and how
//!   the exact batch line is rebuilt from them (docs/LOKI.md);
//! - [`assemble`]: batch lines rebuilt from the entries a query returned, each record found by
//!   its time and signed hint, and the entries no signed batch holds reported as foreign;
//! - [`proto`] and [`push`]: the push body (protobuf, raw snappy) and what Loki's answer means;
//! - [`query`]: `query_range` requests, responses, and a forward pager that de-duplicates at
//!   page boundaries;
//! - `client` (feature `http`, on by default): [`LokiClient`], a small async reqwest adapter.
//!
//! Everything but the adapter is sans-IO: no sockets, no clock.
#![forbid(unsafe_code)]

pub mod assemble;
#[cfg(feature = "http")]
mod client;
pub mod labels;
pub mod layout;
pub mod proto;
pub mod push;
pub mod query;

pub use assemble::{
    Assembled, Assembler, BatchEntries, Finished, Foreign, ForeignEntries, ForeignReason, JoinedRecords,
    PartJoiner,
};
#[cfg(feature = "http")]
pub use client::{error_chain, http_client, read_message, ClientOptions, LokiClient, LokiError};
pub use labels::{LabelError, LabelSet};
pub use layout::{
    batch_to_push, parse_batch_entry, rebuild_batch_line, split_batch_line, AttestationInput, BatchEntry,
    Kind, Layout, LayoutError, LayoutOptions, Placement, PushBuilder, SplitBatch,
};
pub use proto::PushRequest;
pub use push::{classify_push_response, encode_push, PushError, PushOutcome, RetryAfter};
pub use query::{
    label_values_path, parse_label_values, parse_query_page, parse_query_response, Page, PagedEntry, Pager,
    QueryEntry, QueryError, QueryRange, QueryResponse, QueryStream,
};
