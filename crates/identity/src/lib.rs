//! Signing identities kept in a directory, and the per-stream chain state that lets a signer
//! continue its stream across runs.
//!
//! Kinds: `software` (a key file), `dev` (a key file bound by a dev document), `tpm` (a key inside
//! a TPM) and `nitro`: inside an AWS Nitro Enclave, a key generated in enclave memory on every
//! start and never stored, which the enclave's NSM attests for the epoch that start begins
//! ([`Identity::begin_epoch`]), its nonce the previous epoch's last header.
//!
//! Layout of an identity directory:
//! - `identity.json`: kind, algorithm, key id (not for nitro identities, whose key is new on
//!   every start), measurement (nitro: none; each start's is its document's PCR0), and for a dev
//!   or TPM identity made to follow a stream, `previous_head`: the head its document attests
//! - `private-key.pem`: PKCS#8, mode 0600 (software and dev identities; nothing for nitro)
//! - `tpm-private.bin`: TPM identities, the key as the TPM wrapped it (TPM2B_PRIVATE), loadable
//!   only in that TPM; `ek-certificate.der`, the EK certificate enrollment checked
//! - `public-key.pem`: SubjectPublicKeyInfo (not for nitro identities)
//! - `attestation.cbor`: dev and TPM identities, the document binding the key (a Nitro-layout
//!   document, or a TPM evidence bundle); `dev-root.pem`: the dev root an auditor must be given
//! - `state/<stream>.json`: where each stream's chain stands, replaced atomically
//! - `LOCK`: held while a signer uses the identity, so two signers never fork a stream
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use teelog_attest::dev::DevClaims;
use teelog_attest::nitro::NitroDocument;
use teelog_attest::tpm::bundle::TpmBundle;
use teelog_attest::tpm::enrollment::EnrollmentCa;
use teelog_attest::TrustRoot;
use teelog_core::batch::{normalize_measurement, SealError, SoftwareSigner};
use teelog_core::crypto::pem_encode;
use teelog_core::merkle::sha256;
use teelog_core::{ChainHead, HeaderSigner, KeyError, PublicKey, SigAlg, SoftwareKey};
use teelog_store::DirLockError;
use teelog_tpm::provision::{provision, Request, SRK_HANDLE};
use teelog_tpm::signer::KeyBlobs;
use teelog_tpm::{Tcti, TpmSigner};

const META_FILE: &str = "identity.json";
const PRIVATE_KEY_FILE: &str = "private-key.pem";
const PUBLIC_KEY_FILE: &str = "public-key.pem";
const STATE_DIR: &str = "state";
const ATTESTATION_FILE: &str = "attestation.cbor";
const DEV_ROOT_FILE: &str = "dev-root.pem";
const TPM_PRIVATE_FILE: &str = "tpm-private.bin";
const EK_CERTIFICATE_FILE: &str = "ek-certificate.der";
const PROVISION_DIR: &str = ".tpm-provision";
const SOFTWARE: &str = "software";
const DEV: &str = "dev";
const TPM: &str = "tpm";
const NITRO: &str = "nitro";

/// Why an identity could not be created, loaded or used. Each variant names the identity's
/// directory or the file concerned (`path`).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    // The causes are fields, not `source`s: their text is already in the message, and a
    // source would print it twice at the binary's edge.
    /// A file of the identity could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// [`Identity::create`] was pointed at a directory that already holds an identity; it is
    /// never overwritten.
    #[error("{0}: already holds an identity; choose another directory")]
    Exists(PathBuf),
    /// The private key could not be made, read or used.
    #[error("{path}: {error}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        error: KeyError,
    },
    /// The identity's files do not fit together (e.g. `identity.json` does not fit its kind, the
    /// key does not match its key id, a stream's state is corrupt); `detail` says what.
    #[error("{path}: {detail}")]
    Invalid {
        /// The file or directory.
        path: PathBuf,
        /// What does not fit, in words.
        detail: String,
    },
    /// Another signer holds the identity's lock: two signers would fork its streams.
    #[error("{0}: another signer is using this identity")]
    Locked(PathBuf),
    /// The TPM could not create or load the key, or refused to sign.
    #[error("{path}: {error}")]
    Tpm {
        /// The identity's directory.
        path: PathBuf,
        /// What the TPM (or tpm2-tools) said.
        error: teelog_tpm::TpmError,
    },
    /// The NSM gave no document.
    #[error("{path}: {error}")]
    Attestation {
        /// The identity's directory.
        path: PathBuf,
        /// Why the NSM gave none.
        error: SourceError,
    },
    /// The NSM's document does not answer this start's request.
    #[error("{path}: {error}")]
    NsmDocument {
        /// The identity's directory.
        path: PathBuf,
        /// How the document differs from the request.
        error: NsmDocumentError,
    },
}

/// The most an identity's file (its description, key, attestation or a chain state) holds.
const MAX_IDENTITY_FILE_BYTES: u64 = 1 << 20;

/// One of an identity's files, read as host storage is read (see
/// [`teelog_store::read_host_file`]): a FIFO or link in its place is refused, not waited on.
fn read_identity_file(path: &Path) -> Result<Vec<u8>, IdentityError> {
    teelog_store::read_host_file(path, MAX_IDENTITY_FILE_BYTES).map_err(io_err(path))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |error| IdentityError::Io { path: path.to_path_buf(), error }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    v: u32,
    kind: String,
    alg: String,
    /// Absent for a nitro identity, whose key is new on every start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    measurement: Option<String>,
    /// TPM identities: where the TPM is, and the SHA-256 PCRs the key is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tpm: Option<TpmMeta>,
    /// Dev and TPM identities made to follow a stream (`keygen --follow`): the header hash
    /// their document attests, which their first epoch links to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_head: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TpmMeta {
    tcti: String,
    pcrs: Vec<u8>,
}

/// A signing identity: a software key in a file (for development and for signers outside a
/// TEE), a key that lives in a TPM, or a nitro enclave's key of this start.
pub struct Identity {
    dir: PathBuf,
    signer: Signer,
    /// The attestation document binding the key (dev and TPM identities: made at keygen; nitro
    /// identities: made by [`begin_epoch`](Self::begin_epoch)).
    attestation: Option<Vec<u8>>,
    /// The head this identity's document attests its first epoch continues from (hex).
    previous_head: Option<String>,
    _lock: Option<File>,
}

enum Signer {
    /// Software, dev and TPM identities: the identity's own key.
    Fixed(Box<dyn HeaderSigner + Send + Sync>),
    /// A nitro identity: this start's key, and the NSM that attests it.
    Fresh { signer: Box<FreshSigner>, nsm: Box<dyn AttestationSource> },
}

/// Why an [`AttestationSource`] gave no document.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Where a nitro identity's attestation documents come from: the enclave's NSM ([`NsmDevice`]),
/// or a test double that answers like it.
pub trait AttestationSource: Send + Sync {
    /// A Nitro attestation document (COSE_Sign1) whose `public_key` is `public_key` (DER
    /// SubjectPublicKeyInfo) and whose `nonce` is `nonce`.
    fn attest(&self, public_key: &[u8], nonce: Option<&[u8]>) -> Result<Vec<u8>, SourceError>;

    /// The roots this source's documents chain to: a document of an earlier start that chains
    /// to one of them binds a key whose batches a new start may link to. The NSM's is AWS's.
    fn roots(&self) -> Vec<TrustRoot> {
        vec![TrustRoot::aws_nitro()]
    }
}

/// The enclave's Nitro Secure Module, `/dev/nsm`, opened for each document (one per start).
pub struct NsmDevice;

impl AttestationSource for NsmDevice {
    fn attest(&self, public_key: &[u8], nonce: Option<&[u8]>) -> Result<Vec<u8>, SourceError> {
        let request = teelog_nsm::proto::Attestation { user_data: None, nonce, public_key: Some(public_key) };
        Ok(teelog_nsm::Nsm::open()?.attest(&request)?)
    }
}

/// A nitro identity's signer: a key made in memory for this start, which signs only once the NSM
/// has attested it.
struct FreshSigner {
    key: SoftwareKey,
    /// The measurement (PCR0, hex) and the document's SHA-256 (hex), once attested.
    attested: Option<(String, String)>,
}

impl HeaderSigner for FreshSigner {
    fn public_key(&self) -> &PublicKey {
        self.key.public()
    }
    fn measurement(&self) -> Option<&str> {
        self.attested.as_ref().map(|(measurement, _)| measurement.as_str())
    }
    fn attestation(&self) -> Option<&str> {
        self.attested.as_ref().map(|(_, document)| document.as_str())
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SealError> {
        if self.attested.is_none() {
            // Unattested, its batches would pass for a software signer's.
            return Err(SealError::Signer("a nitro key signs only once the NSM has attested it".into()));
        }
        self.key.sign(message).map_err(|e| SealError::Signer(e.to_string()))
    }
}

/// How a new identity vouches for its key.
pub enum Provider<'a> {
    /// A plain software key, with an optional measurement the user asserts.
    Software {
        /// The asserted measurement (hex); nothing vouches for it.
        measurement: Option<&'a str>,
    },
    /// A software key bound by a dev attestation document (Nitro layout, local root) to these
    /// PCRs; the measurement is PCR0.
    /// `previous_head`, the header hash the new epoch will link to, goes into the document's
    /// nonce, so that the hand-over from the previous epoch is attested too.
    Dev {
        /// PCR index to value, as a Nitro document carries them.
        pcrs: BTreeMap<u64, Vec<u8>>,
        /// The header hash the new epoch links to, if it follows a stream.
        previous_head: Option<[u8; 32]>,
    },
    /// A key created inside a TPM, bound to its SHA-256 PCRs `pcrs`; its evidence bundle is the
    /// attestation document, and the measurement is the quoted PCR digest. `previous_head` goes
    /// into the quote.
    Tpm {
        /// The TPM, as tpm2-tools names it.
        tcti: Tcti,
        /// The SHA-256 PCR indices the key is bound to.
        pcrs: Vec<u8>,
        /// The TPM maker's roots (and issuing CAs), which the EK certificate must chain to.
        ek_roots: Vec<TrustRoot>,
        /// The enrollment CA that certifies the attestation key.
        ca: &'a EnrollmentCa,
        /// The header hash the new epoch links to, if it follows a stream.
        previous_head: Option<[u8; 32]>,
    },
    /// Inside an AWS Nitro Enclave: no key is made now. Each start makes one in memory, and the
    /// NSM attests it with the measurement (PCR0) and the epoch's previous head as nonce.
    Nitro,
}

impl Identity {
    /// Creates a new identity in `dir` (which must not hold one) and returns its public key;
    /// `None` for a nitro identity, whose key is made on every start.
    pub fn create(
        dir: &Path,
        alg: SigAlg,
        provider: Provider<'_>,
    ) -> Result<Option<PublicKey>, IdentityError> {
        let meta_path = dir.join(META_FILE);
        if meta_path.exists() {
            return Err(IdentityError::Exists(dir.to_path_buf()));
        }
        let invalid = |detail: String| IdentityError::Invalid { path: dir.to_path_buf(), detail };
        let previous_head = match &provider {
            Provider::Dev { previous_head, .. } | Provider::Tpm { previous_head, .. } => {
                previous_head.map(hex::encode)
            }
            Provider::Software { .. } | Provider::Nitro => None,
        };
        let (kind, public, measurement, tpm) = match provider {
            Provider::Software { measurement } => {
                let measurement =
                    measurement.map(normalize_measurement).transpose().map_err(|e| invalid(e.to_string()))?;
                (SOFTWARE, Some(create_software_key(dir, alg)?), measurement, None)
            }
            Provider::Dev { pcrs, previous_head } => {
                let pcr0 = pcrs
                    .get(&0)
                    .map(hex::encode)
                    .ok_or_else(|| invalid("a dev identity needs PCR0".into()))?;
                let public = create_software_key(dir, alg)?;
                let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
                let module_id = format!("dev-{}", &public.id_hex()[..16]);
                let issued = teelog_attest::dev::issue(&DevClaims {
                    module_id: &module_id,
                    timestamp_ms: u64::try_from(now_ms).unwrap_or(u64::MAX),
                    pcrs: &pcrs,
                    bound_key: &public,
                    nonce: previous_head.as_ref().map(|h| &h[..]),
                })
                .map_err(|e| invalid(e.to_string()))?;
                write_atomic(&dir.join(ATTESTATION_FILE), &issued.document)?;
                write_atomic(
                    &dir.join(DEV_ROOT_FILE),
                    pem_encode("CERTIFICATE", &issued.root_der).as_bytes(),
                )?;
                (DEV, Some(public), Some(pcr0), None)
            }
            Provider::Tpm { tcti, pcrs, ek_roots, ca, previous_head } => {
                if alg != SigAlg::Es256 {
                    return Err(invalid("a TPM key is P-256 (--curve p256)".into()));
                }
                let (public, measurement) = create_tpm_key(dir, &tcti, &pcrs, &ek_roots, ca, previous_head)?;
                (TPM, Some(public), Some(measurement), Some(TpmMeta { tcti: tcti.to_tools_string(), pcrs }))
            }
            Provider::Nitro => {
                fs::create_dir_all(dir).map_err(io_err(dir))?;
                (NITRO, None, None, None)
            }
        };
        if let Some(public) = &public {
            write_atomic(&dir.join(PUBLIC_KEY_FILE), public.to_pem().as_bytes())?;
        }
        let meta = Meta {
            v: 1,
            kind: kind.into(),
            alg: alg.name().into(),
            key_id: public.as_ref().map(PublicKey::id_hex),
            measurement,
            tpm,
            previous_head,
        };
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| IdentityError::Invalid { path: meta_path.clone(), detail: e.to_string() })?;
        write_atomic(&meta_path, &json)?;
        Ok(public)
    }

    fn load(dir: &Path, nsm: Box<dyn AttestationSource>) -> Result<Self, IdentityError> {
        let meta_path = dir.join(META_FILE);
        let text = read_identity_file(&meta_path)?;
        let invalid = |detail: String| IdentityError::Invalid { path: meta_path.clone(), detail };
        let meta: Meta = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
        let (signer, attestation) = if meta.kind == NITRO {
            let fixed = [
                ("key_id", meta.key_id.is_some()),
                ("measurement", meta.measurement.is_some()),
                ("tpm", meta.tpm.is_some()),
            ];
            if let Some((member, _)) = fixed.iter().find(|(_, present)| *present) {
                return Err(invalid(format!(
                    "a nitro identity has no {member}: its key is new on every start"
                )));
            }
            let alg = SigAlg::from_name(&meta.alg)
                .ok_or_else(|| invalid(format!("alg {:?} is neither ES256 nor ES384", meta.alg)))?;
            let key_err = |error| IdentityError::Key { path: dir.to_path_buf(), error };
            let key = SoftwareKey::from_pkcs8(alg, &SoftwareKey::generate_pkcs8(alg).map_err(key_err)?)
                .map_err(key_err)?;
            (Signer::Fresh { signer: Box::new(FreshSigner { key, attested: None }), nsm }, None)
        } else {
            open_fixed_key(dir, &meta)?
        };
        let previous_head = match &meta.previous_head {
            Some(head) if !is_sha256_hex(head) => {
                return Err(invalid(format!("previous_head {head:?} is not a SHA-256 in lower-case hex")))
            }
            head => head.clone(),
        };
        Ok(Self { dir: dir.to_path_buf(), signer, attestation, previous_head, _lock: None })
    }

    /// Loads an identity and takes its lock for as long as the value lives. A nitro identity
    /// makes this start's key, which [`begin_epoch`](Self::begin_epoch) has `/dev/nsm` attest.
    pub fn load_exclusive(dir: &Path) -> Result<Self, IdentityError> {
        Self::load_exclusive_with(dir, Box::new(NsmDevice))
    }

    /// As [`load_exclusive`](Self::load_exclusive), with `nsm` in place of the enclave's NSM
    /// (asked by nitro identities only).
    pub fn load_exclusive_with(dir: &Path, nsm: Box<dyn AttestationSource>) -> Result<Self, IdentityError> {
        // Named first: a directory that is no identity should say so, not fail on its lock.
        let meta_path = dir.join(META_FILE);
        fs::metadata(&meta_path).map_err(io_err(&meta_path))?;
        let lock = teelog_store::lock_dir(dir).map_err(|e| match e {
            DirLockError::Held => IdentityError::Locked(dir.to_path_buf()),
            DirLockError::Io { path, source } => IdentityError::Io { path, error: source },
        })?;
        let mut identity = Self::load(dir, nsm)?;
        identity._lock = Some(lock);
        Ok(identity)
    }

    /// Whether the key was made for this start (a nitro identity): it continues no epoch, so
    /// every start begins a new one.
    pub fn has_fresh_key(&self) -> bool {
        matches!(self.signer, Signer::Fresh { .. })
    }

    /// Before the first batch of a new epoch, whose chain head is `head`: a nitro identity asks
    /// the NSM for a document binding this start's key, with `head.prev` (the previous epoch's
    /// last header) as its nonce, and signs from then on under that document's PCR0. Other
    /// kinds' documents were made at keygen; for them this does nothing.
    pub fn begin_epoch(&mut self, head: &ChainHead) -> Result<(), IdentityError> {
        let Signer::Fresh { signer, nsm } = &mut self.signer else {
            return Ok(());
        };
        let invalid = |detail: String| IdentityError::Invalid { path: self.dir.clone(), detail };
        if signer.attested.is_some() || head.next_seq != 1 {
            return Err(invalid("a nitro key is attested once, for the epoch its start begins".into()));
        }
        let nonce = head
            .prev
            .as_deref()
            .map(|prev| {
                hex::decode(prev).ok().and_then(|h| <[u8; 32]>::try_from(h).ok()).ok_or_else(|| {
                    invalid(format!(
                        "the previous head {prev:?} of stream {:?} is not a SHA-256",
                        head.stream
                    ))
                })
            })
            .transpose()?;
        let nonce = nonce.as_ref().map(|n| &n[..]);
        let public = signer.key.public();
        let document = nsm
            .attest(public.spki_der(), nonce)
            .map_err(|error| IdentityError::Attestation { path: self.dir.clone(), error })?;
        let measurement = attested_measurement(&document, public, nonce)
            .map_err(|error| IdentityError::NsmDocument { path: self.dir.clone(), error })?;
        signer.attested = Some((measurement, hex::encode(sha256(&document))));
        self.attestation = Some(document);
        Ok(())
    }

    /// The identity's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The identity's own key, kept across starts (not a nitro identity's key of this start):
    /// headers it validly signs are this signer's own.
    pub fn own_key(&self) -> Option<&PublicKey> {
        match &self.signer {
            Signer::Fixed(signer) => Some(signer.public_key()),
            Signer::Fresh { .. } => None,
        }
    }

    /// The header hash (hex) this identity's document attests its first epoch links to, for an
    /// identity made with `keygen --follow`.
    pub fn attested_previous_head(&self) -> Option<&str> {
        self.previous_head.as_deref()
    }

    /// Roots whose documents bind keys of this signer's earlier starts (a nitro identity's:
    /// those of its NSM); none for identities with a key of their own.
    pub fn attestation_roots(&self) -> Vec<TrustRoot> {
        match &self.signer {
            Signer::Fixed(_) => Vec::new(),
            Signer::Fresh { nsm, .. } => nsm.roots(),
        }
    }

    /// What signs this identity's headers. A nitro identity's signer refuses to sign until
    /// [`Identity::begin_epoch`] has had its key attested.
    pub fn signer(&self) -> &dyn HeaderSigner {
        match &self.signer {
            Signer::Fixed(signer) => signer.as_ref(),
            Signer::Fresh { signer, .. } => signer.as_ref(),
        }
    }

    /// The attestation document that binds the key, to be stored alongside the batches.
    pub fn attestation_document(&self) -> Option<&[u8]> {
        self.attestation.as_deref()
    }

    /// The chain state of `stream`, if this identity has signed it before. A state file that
    /// names another stream is refused: the host keeps these files, and one copied over another
    /// would have the next batch signed into the other stream's chain.
    pub fn load_state(&self, stream: &str) -> Result<Option<ChainHead>, IdentityError> {
        let path = state_path(&self.dir, stream);
        let head: ChainHead = match teelog_store::read_host_file(&path, MAX_IDENTITY_FILE_BYTES) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| IdentityError::Invalid { path: path.clone(), detail: e.to_string() })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(IdentityError::Io { path, error }),
        };
        if head.stream != stream {
            let detail = format!(
                "it is the chain state of stream {:?}, not of {stream:?}: a chain state is never moved between streams",
                head.stream
            );
            return Err(IdentityError::Invalid { path, detail });
        }
        Ok(Some(head))
    }

    /// Durably records where `head.stream` stands (write, fsync, rename, fsync directory).
    pub fn save_state(&self, head: &ChainHead) -> Result<(), IdentityError> {
        self.state_store().save(head)
    }

    /// Where this identity's chain states are saved, for a thread other than the signing one.
    pub fn state_store(&self) -> StateStore {
        StateStore { dir: self.dir.clone() }
    }
}

/// The chain states of an identity's directory (see [`Identity::state_store`]).
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// See [`Identity::save_state`].
    pub fn save(&self, head: &ChainHead) -> Result<(), IdentityError> {
        let dir = self.dir.join(STATE_DIR);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = state_path(&self.dir, &head.stream);
        // Never an empty file in place of the state: the write fails instead.
        let json = serde_json::to_vec(head)
            .map_err(|e| IdentityError::Invalid { path: path.clone(), detail: e.to_string() })?;
        write_atomic(&path, &json)
    }
}

/// The key of a software, dev or TPM identity, which must be the one `identity.json` names, and
/// its attestation document.
fn open_fixed_key(dir: &Path, meta: &Meta) -> Result<(Signer, Option<Vec<u8>>), IdentityError> {
    let meta_path = dir.join(META_FILE);
    let invalid = |detail: String| IdentityError::Invalid { path: meta_path.clone(), detail };
    let key_id = meta.key_id.as_deref().ok_or_else(|| invalid("key_id is missing".into()))?;
    let attestation = match meta.kind.as_str() {
        SOFTWARE => None,
        DEV | TPM => {
            let path = dir.join(ATTESTATION_FILE);
            Some(read_identity_file(&path)?)
        }
        other => {
            return Err(invalid(format!("kind {other:?} is not a software, dev, tpm or nitro identity")))
        }
    };
    let attestation_sha256 = attestation.as_deref().map(|d| hex::encode(sha256(d)));
    let signer: Box<dyn HeaderSigner + Send + Sync> = match &meta.tpm {
        Some(tpm) if meta.kind == TPM => {
            Box::new(open_tpm_key(dir, tpm, meta.measurement.clone(), attestation_sha256)?)
        }
        _ if meta.kind == TPM => return Err(invalid("a tpm identity needs its \"tpm\" member".into())),
        _ => {
            let key_path = dir.join(PRIVATE_KEY_FILE);
            let pem = read_identity_file(&key_path)?;
            let key = SoftwareKey::from_pkcs8_pem(&pem)
                .map_err(|error| IdentityError::Key { path: key_path.clone(), error })?;
            let signer = SoftwareSigner::new(key, meta.measurement.clone());
            Box::new(match attestation_sha256 {
                Some(sha) => signer.with_attestation(sha),
                None => signer,
            })
        }
    };
    let public = signer.public_key();
    if public.id_hex() != key_id || public.alg().name() != meta.alg {
        return Err(IdentityError::Invalid {
            path: dir.to_path_buf(),
            detail: format!("the key does not match {META_FILE} (key id {key_id})"),
        });
    }
    Ok((Signer::Fixed(signer), attestation))
}

/// Why the NSM's answer to this start's request cannot be signed under. Its signature and chain
/// are the auditor's to check; these are the answers to another question than the one asked.
#[derive(Debug, thiserror::Error)]
pub enum NsmDocumentError {
    /// Not a Nitro attestation document.
    #[error("the NSM's document: {0}")]
    Parse(teelog_attest::AttestError),
    /// It binds no key, or another key than the one this start generated.
    #[error("the NSM's document binds another public key than this start's")]
    OtherKey,
    /// Its nonce is not the previous epoch's head that was asked for (hex), or it carries one
    /// where the stream starts (`expected` is `None`).
    #[error("{}", match expected {
        Some(nonce) => format!("the NSM's document does not carry the nonce {nonce}"),
        None => "the NSM's document carries a nonce where the stream starts".to_string(),
    })]
    Nonce {
        /// The nonce asked for, hex.
        expected: Option<String>,
    },
    /// It has no PCR0, the measurement batches are signed under.
    #[error("the NSM's document has no PCR0")]
    NoPcr0,
}

/// The measurement (PCR0, hex) of the NSM's `document`, which must parse as a Nitro document and
/// bind `key` and `nonce`. Its signature and chain are the auditor's to check, against the root
/// the auditor trusts; here a mismatch means the wrong answer, caught before it is signed under.
fn attested_measurement(
    document: &[u8],
    key: &PublicKey,
    nonce: Option<&[u8]>,
) -> Result<String, NsmDocumentError> {
    let document = NitroDocument::parse(document).map_err(NsmDocumentError::Parse)?;
    if document.public_key.as_deref() != Some(key.spki_der()) {
        return Err(NsmDocumentError::OtherKey);
    }
    if document.nonce.as_deref() != nonce {
        return Err(NsmDocumentError::Nonce { expected: nonce.map(hex::encode) });
    }
    let pcr0 = document.pcrs.get(&0).ok_or(NsmDocumentError::NoPcr0)?;
    Ok(hex::encode(pcr0))
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A new software key in `dir/private-key.pem`, mode 0600.
fn create_software_key(dir: &Path, alg: SigAlg) -> Result<PublicKey, IdentityError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let key_path = dir.join(PRIVATE_KEY_FILE);
    let key_err = |error| IdentityError::Key { path: key_path.clone(), error };
    let pkcs8 = SoftwareKey::generate_pkcs8(alg).map_err(key_err)?;
    let key = SoftwareKey::from_pkcs8(alg, &pkcs8).map_err(key_err)?;
    teelog_store::write_new_private(&key_path, pem_encode("PRIVATE KEY", &pkcs8).as_bytes())
        .map_err(io_err(&key_path))?;
    Ok(key.public().clone())
}

/// A new key inside the TPM, and its evidence as the identity's attestation document. Returns
/// the key and the measurement (the quoted PCR digest).
fn create_tpm_key(
    dir: &Path,
    tcti: &Tcti,
    pcrs: &[u8],
    ek_roots: &[TrustRoot],
    ca: &EnrollmentCa,
    previous_head: Option<[u8; 32]>,
) -> Result<(PublicKey, String), IdentityError> {
    let work = dir.join(PROVISION_DIR);
    fs::create_dir_all(&work).map_err(io_err(&work))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let request = Request {
        tcti,
        pcrs,
        qualifying_data: previous_head.as_ref().map_or(&[][..], |h| &h[..]),
        ek_roots,
        ca,
        now,
        work: &work,
    };
    let provisioned = provision(&request);
    // tpm2-tools' scratch files hold nothing secret (the key blob is wrapped), but are clutter.
    let _ = fs::remove_dir_all(&work);
    let provisioned = provisioned.map_err(|error| IdentityError::Tpm { path: dir.to_path_buf(), error })?;
    let private_path = dir.join(TPM_PRIVATE_FILE);
    write_atomic(&private_path, &provisioned.key_private)?;
    write_atomic(&dir.join(EK_CERTIFICATE_FILE), &provisioned.ek_certificate)?;
    let document_path = dir.join(ATTESTATION_FILE);
    let document = provisioned
        .bundle
        .encode()
        .map_err(|e| IdentityError::Invalid { path: document_path.clone(), detail: e.to_string() })?;
    write_atomic(&document_path, &document)?;
    Ok((provisioned.verified.key, hex::encode(provisioned.verified.measurement)))
}

/// Loads the TPM key of the identity in `dir`, ready to sign.
fn open_tpm_key(
    dir: &Path,
    meta: &TpmMeta,
    measurement: Option<String>,
    attestation_sha256: Option<String>,
) -> Result<TpmSigner, IdentityError> {
    let tpm_err = |error| IdentityError::Tpm { path: dir.to_path_buf(), error };
    let tcti = Tcti::parse(&meta.tcti).map_err(tpm_err)?;
    let private_path = dir.join(TPM_PRIVATE_FILE);
    let private = read_identity_file(&private_path)?;
    let bundle_path = dir.join(ATTESTATION_FILE);
    let bundle = read_identity_file(&bundle_path)?;
    let bundle = TpmBundle::parse(&bundle).map_err(|e| tpm_err(e.into()))?;
    let key = KeyBlobs { private: &private, public: &bundle.key_public };
    TpmSigner::open(&tcti, SRK_HANDLE, &key, &meta.pcrs, measurement, attestation_sha256).map_err(tpm_err)
}

/// Stream names may hold `/` and `:`; file names get them escaped.
fn state_path(dir: &Path, stream: &str) -> PathBuf {
    let name: String = stream
        .chars()
        .map(|c| match c {
            '/' => "%2F".to_string(),
            ':' => "%3A".to_string(),
            '%' => "%25".to_string(),
            c => c.to_string(),
        })
        .collect();
    dir.join(STATE_DIR).join(format!("{name}.json"))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    teelog_store::write_atomic(path, bytes).map_err(|(path, error)| IdentityError::Io { path, error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_load_and_state_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let id_dir = dir.path().join("id");
        let public =
            Identity::create(&id_dir, SigAlg::Es384, Provider::Software { measurement: Some("ABCD") })
                .unwrap()
                .unwrap();
        let mode = fs::metadata(id_dir.join(PRIVATE_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            Identity::create(&id_dir, SigAlg::Es256, Provider::Software { measurement: None }),
            Err(IdentityError::Exists(_))
        ));

        let identity = Identity::load_exclusive(&id_dir).unwrap();
        assert_eq!(identity.signer().public_key(), &public);
        assert_eq!(identity.signer().measurement(), Some("abcd"));
        assert!(!identity.has_fresh_key());
        assert!(matches!(Identity::load_exclusive(&id_dir), Err(IdentityError::Locked(_))));

        assert_eq!(identity.load_state("a/b:c").unwrap(), None);
        let head = ChainHead {
            stream: "a/b:c".into(),
            epoch: "00".repeat(16),
            next_seq: 7,
            prev: Some("11".repeat(32)),
            prev_sealed_at: Some(1_796_227_200_000_000_000),
        };
        identity.save_state(&head).unwrap();
        assert_eq!(identity.load_state("a/b:c").unwrap(), Some(head));
        // The host copies that stream's state over another's.
        fs::copy(state_path(&id_dir, "a/b:c"), state_path(&id_dir, "other")).unwrap();
        let err = identity.load_state("other").unwrap_err().to_string();
        assert!(err.contains("chain state of stream \"a/b:c\", not of \"other\""), "{err}");
        // A FIFO in its place is refused, not waited on (which would hold the stop too).
        let fifo = state_path(&id_dir, "fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let err = identity.load_state("fifo").unwrap_err().to_string();
        assert!(err.contains("a FIFO, not a regular file"), "{err}");
    }

    #[test]
    fn wrong_key_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        Identity::create(dir.path(), SigAlg::Es256, Provider::Software { measurement: None }).unwrap();
        fs::write(dir.path().join(PRIVATE_KEY_FILE), "not a key").unwrap();
        let err = Identity::load(dir.path(), Box::new(NsmDevice)).err().unwrap().to_string();
        assert!(err.contains("private-key.pem") && err.contains("no PRIVATE KEY PEM block"), "{err}");
    }

    /// A test double, not the NSM: it answers an attestation request with a dev document (the
    /// Nitro layout, under a new local root) binding `key` and `nonce` where they are set, and
    /// the requested ones where not.
    #[derive(Default)]
    struct DevNsm {
        key: Option<PublicKey>,
        nonce: Option<Option<Vec<u8>>>,
        pcrs: Option<BTreeMap<u64, Vec<u8>>>,
    }

    impl AttestationSource for DevNsm {
        fn attest(&self, public_key: &[u8], nonce: Option<&[u8]>) -> Result<Vec<u8>, SourceError> {
            let requested = PublicKey::from_spki_der(public_key)?;
            let pcrs = self.pcrs.clone().unwrap_or_else(teelog_attest::dev::default_pcrs);
            let issued = teelog_attest::dev::issue(&DevClaims {
                module_id: "dev-nsm-double",
                timestamp_ms: 1_800_000_000_000,
                pcrs: &pcrs,
                bound_key: self.key.as_ref().unwrap_or(&requested),
                nonce: self.nonce.as_ref().map_or(nonce, |n| n.as_deref()),
            })?;
            Ok(issued.document)
        }
    }

    /// A test double answering with fixed bytes.
    struct Garbage(&'static [u8]);

    impl AttestationSource for Garbage {
        fn attest(&self, _: &[u8], _: Option<&[u8]>) -> Result<Vec<u8>, SourceError> {
            Ok(self.0.to_vec())
        }
    }

    fn nitro_identity(dir: &Path) -> PathBuf {
        let id_dir = dir.join("id");
        assert_eq!(Identity::create(&id_dir, SigAlg::Es384, Provider::Nitro).unwrap(), None);
        id_dir
    }

    fn head_after(prev: Option<[u8; 32]>) -> ChainHead {
        ChainHead::new_epoch("app", prev.map(hex::encode), &teelog_core::random::SystemRandom).unwrap()
    }

    #[test]
    fn a_nitro_identity_keeps_no_key_and_makes_one_per_start() {
        let dir = tempfile::tempdir().unwrap();
        let id_dir = nitro_identity(dir.path());
        let mut files: Vec<_> = fs::read_dir(&id_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        files.sort();
        assert_eq!(files, [META_FILE]);
        let meta: serde_json::Value =
            serde_json::from_slice(&fs::read(id_dir.join(META_FILE)).unwrap()).unwrap();
        assert_eq!(meta, serde_json::json!({"v": 1, "kind": "nitro", "alg": "ES384", "measurement": null}));

        let mut identity = Identity::load_exclusive_with(&id_dir, Box::new(DevNsm::default())).unwrap();
        assert!(identity.has_fresh_key());
        assert_eq!(identity.signer().public_key().alg(), SigAlg::Es384);
        assert_eq!((identity.signer().attestation(), identity.attestation_document()), (None, None));
        let refused = identity.signer().sign(b"x").err().unwrap().to_string();
        assert!(refused.contains("only once the NSM has attested it"), "{refused}");

        let previous = [7u8; 32];
        identity.begin_epoch(&head_after(Some(previous))).unwrap();
        let document = identity.attestation_document().unwrap().to_vec();
        let parsed = NitroDocument::parse(&document).unwrap();
        assert_eq!(parsed.nonce.as_deref(), Some(&previous[..]));
        assert_eq!(parsed.public_key.as_deref(), Some(identity.signer().public_key().spki_der()));
        let pcr0 = hex::encode(&teelog_attest::dev::default_pcrs()[&0]);
        assert_eq!(identity.signer().measurement(), Some(pcr0.as_str()));
        assert_eq!(identity.signer().attestation(), Some(hex::encode(sha256(&document)).as_str()));
        let signature = identity.signer().sign(b"x").unwrap();
        assert!(identity.signer().public_key().verify_p1363(b"x", &signature));

        let again = identity.begin_epoch(&head_after(Some(previous))).err().unwrap().to_string();
        assert!(again.contains("attested once"), "{again}");
        let first_key = identity.signer().public_key().clone();
        drop(identity);

        // The next start: another key, and a genesis head attests no nonce.
        let mut identity = Identity::load_exclusive_with(&id_dir, Box::new(DevNsm::default())).unwrap();
        assert_ne!(identity.signer().public_key(), &first_key);
        identity.begin_epoch(&head_after(None)).unwrap();
        assert_eq!(NitroDocument::parse(identity.attestation_document().unwrap()).unwrap().nonce, None);
    }

    #[test]
    fn the_nsm_must_attest_this_key_and_this_head() {
        let dir = tempfile::tempdir().unwrap();
        let id_dir = nitro_identity(dir.path());
        let stranger =
            SoftwareKey::from_pkcs8(SigAlg::Es384, &SoftwareKey::generate_pkcs8(SigAlg::Es384).unwrap())
                .unwrap()
                .public()
                .clone();
        let no_pcr0 = BTreeMap::from([(1, vec![1; 48]), (2, vec![2; 48])]);
        // The NSM's stand-in, the head the epoch links to, the cause, what the refusal says.
        type Case =
            (Box<dyn AttestationSource>, Option<[u8; 32]>, fn(&NsmDocumentError) -> bool, &'static str);
        use NsmDocumentError as E;
        let cases: Vec<Case> = vec![
            (
                Box::new(DevNsm { key: Some(stranger), ..DevNsm::default() }),
                None,
                |e| matches!(e, E::OtherKey),
                "binds another public key",
            ),
            (
                Box::new(DevNsm { nonce: Some(Some(vec![8; 32])), ..DevNsm::default() }),
                Some([7; 32]),
                |e| matches!(e, E::Nonce { expected: Some(n) } if n == &"07".repeat(32)),
                "does not carry the nonce 0707",
            ),
            (
                Box::new(DevNsm { nonce: Some(Some(vec![8; 32])), ..DevNsm::default() }),
                None,
                |e| matches!(e, E::Nonce { expected: None }),
                "carries a nonce where the stream starts",
            ),
            (
                Box::new(DevNsm { pcrs: Some(no_pcr0), ..DevNsm::default() }),
                None,
                |e| matches!(e, E::NoPcr0),
                "has no PCR0",
            ),
            (
                Box::new(Garbage(b"\xd2\x84")),
                None,
                |e| matches!(e, E::Parse(_)),
                "the NSM's document: malformed COSE_Sign1",
            ),
            (Box::new(Garbage(b"")), None, |e| matches!(e, E::Parse(_)), "the NSM's document"),
        ];
        for (nsm, previous, cause, expected) in cases {
            let mut identity = Identity::load_exclusive_with(&id_dir, nsm).unwrap();
            let err = identity.begin_epoch(&head_after(previous)).err().unwrap();
            assert!(matches!(&err, IdentityError::NsmDocument { error, .. } if cause(error)), "{err:?}");
            let err = err.to_string();
            assert!(err.contains(expected), "{expected}: {err}");
            assert!(identity.signer().sign(b"x").is_err() && identity.attestation_document().is_none());
        }
        let mut identity = Identity::load_exclusive_with(&id_dir, Box::new(DevNsm::default())).unwrap();
        let corrupt = ChainHead { prev: Some("abc".into()), ..head_after(None) };
        let err = identity.begin_epoch(&corrupt).err().unwrap().to_string();
        assert!(err.contains("previous head \"abc\" of stream \"app\" is not a SHA-256"), "{err}");
    }

    /// This machine is no enclave: the real device is asked, and its absence is said plainly.
    #[test]
    fn outside_an_enclave_a_nitro_identity_says_so() {
        if Path::new(teelog_nsm::DEVICE).exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut identity = Identity::load_exclusive(&nitro_identity(dir.path())).unwrap();
        let err = identity.begin_epoch(&head_after(None)).err().unwrap().to_string();
        assert!(
            err.contains("/dev/nsm not found: a nitro identity signs only inside an AWS Nitro Enclave"),
            "{err}"
        );
    }

    #[test]
    fn identity_json_must_fit_its_kind() {
        let dir = tempfile::tempdir().unwrap();
        let id_dir = nitro_identity(dir.path());
        let meta_path = id_dir.join(META_FILE);
        fs::write(&meta_path, r#"{"v":1,"kind":"nitro","alg":"ES384","key_id":"00","measurement":null}"#)
            .unwrap();
        let err = Identity::load(&id_dir, Box::new(NsmDevice)).err().unwrap().to_string();
        assert!(err.contains("a nitro identity has no key_id"), "{err}");
        fs::write(&meta_path, r#"{"v":1,"kind":"nitro","alg":"ES384","measurement":null,"tpm":{"tcti":"device:/dev/tpmrm0","pcrs":[0]}}"#).unwrap();
        let err = Identity::load(&id_dir, Box::new(NsmDevice)).err().unwrap().to_string();
        assert!(err.contains("a nitro identity has no tpm"), "{err}");
        fs::write(&meta_path, r#"{"v":1,"kind":"nitro","alg":"ES512","measurement":null}"#).unwrap();
        let err = Identity::load(&id_dir, Box::new(NsmDevice)).err().unwrap().to_string();
        assert!(err.contains("alg \"ES512\" is neither ES256 nor ES384"), "{err}");
        fs::write(&meta_path, r#"{"v":1,"kind":"software","alg":"ES256","measurement":null}"#).unwrap();
        let err = Identity::load(&id_dir, Box::new(NsmDevice)).err().unwrap().to_string();
        assert!(err.contains("key_id is missing"), "{err}");
    }
}
