//! The teelog signer as a library, and the `teelog ship` daemon built on it. Delivery from the
//! spool to the sinks is `teelog_deliver`'s, shared with the gateway.
//!
//! [`StreamSigner`] turns records into signed, chained batches and writes each one durably to
//! an [`Output`] before anything is acknowledged; after a crash the output is the authority on
//! where the chain stands, so a sequence number is never signed twice.
#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod health;
#[cfg(feature = "tracing-layer")]
pub mod layer;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod signer;
pub mod sources;

pub use output::{trusted_head, HeadTrust, Output, TrustedHead};
pub use signer::{GatewayHead, ShipError, SignSummary, StreamSigner};
