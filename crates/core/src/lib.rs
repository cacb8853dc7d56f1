//! teelog's sans-IO core: record canonicalisation (RFC 8785), Merkle trees (RFC 6962), signed
//! batch headers, and the chain verifier. No file system, no network, no clock: time is always a
//! parameter. The normative description of every byte is `docs/FORMAT.md`.
#![forbid(unsafe_code)]

pub mod anchor;
pub mod batch;
pub mod canon;
pub mod checkpoint;
pub mod crypto;
pub mod display;
pub mod evidence;
pub mod gate;
pub mod merkle;
pub mod policy;
pub mod random;
pub mod record;
mod runs;
mod scan;
mod seed;
pub mod timestamp;
pub mod verify;

pub use batch::{
    BatchBuilder, ChainHead, Header, HeaderSigner, Input, SealError, Sealed, SoftwareSigner, Taken,
};
pub use crypto::{KeyError, PublicKey, SigAlg, SoftwareKey};
pub use verify::{Finding, FindingKind, Freshness, Origin, Report, TrustBasis, Verifier, VerifyOptions};
