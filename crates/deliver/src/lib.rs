//! What the shipper and the gateway share downstream of signing and verifying: a spool's state
//! ([`spool`]), delivery from it to sinks, each from its own durable cursor ([`delivery`],
//! [`sinks`]), the sinks' configuration ([`config`]), loopback HTTP serving ([`serve`]) and the
//! Prometheus metrics ([`metrics`]).
//!
//! It holds no key and judges no batch: a spool line is bytes to deliver. It never depends on
//! the signer (`teelog-ship`), the identities or the TEE devices, so that the gateway, which must
//! trust nothing of a producer, links none of them.
#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod delivery;
pub mod dial;
pub mod metrics;
pub mod serve;
pub mod sinks;
pub mod spool;
pub mod tls;
