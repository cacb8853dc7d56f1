//! The Nitro Secure Module (NSM) of an AWS Nitro Enclave, which issues the enclave's attestation
//! documents. It is reached through `/dev/nsm`: one ioctl carries a CBOR request in and a CBOR
//! response out.
//!
//! - [`proto`]: the messages teelog sends and reads, as bytes (sans-IO), in the layout of AWS's
//!   `aws-nitro-enclaves-nsm-api` crate.
//! - [`Nsm`]: the device. Its ioctl is the only `unsafe` code in the `teelog` binary; every
//!   other crate of it forbids it (the separate bench program has one `wait4` call).
//!
//! This crate is written instead of depending on `aws-nitro-enclaves-nsm-api`, which encodes with
//! the unmaintained `serde_cbor` and needs a newer Rust than the workspace does; what teelog
//! needs of it is one request and one response.
#![deny(unsafe_code)]

mod device;
pub mod proto;

use std::io;
use std::path::PathBuf;

pub use device::{Nsm, DEVICE};

/// Why the NSM gave no attestation document.
#[derive(Debug, thiserror::Error)]
pub enum NsmError {
    /// The device file does not exist: this is not a Nitro Enclave.
    #[error(
        "{} not found: a nitro identity signs only inside an AWS Nitro Enclave; outside one, use a \
         dev identity (teelog keygen --dev)",
        .0.display()
    )]
    Missing(PathBuf),
    /// Opening the device or the ioctl failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The device file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The encoded request does not fit the NSM's request buffer (the fields given are too long).
    #[error("a request of {len} bytes is more than the NSM takes ({max})")]
    RequestTooLarge {
        /// The encoded request's length in bytes.
        len: usize,
        /// The most the NSM takes, [`proto::MAX_REQUEST_BYTES`].
        max: usize,
    },
    /// The NSM answered with one of its error codes.
    #[error("the NSM refused the request: {0}")]
    Refused(&'static str),
    /// The response is not an `Attestation` answer teelog can read; says which part is wrong.
    #[error("malformed NSM response: {0}")]
    Response(String),
}
