//! Signing identities kept in a directory, and the per-stream chain state that lets a signer
//! continue its stream across runs.
//!
//! Layout of an identity directory:
//! - `identity.json`: kind, algorithm, key id, measurement
//! - `private-key.pem`: PKCS#8, mode 0600 (software and dev identities)
//! - `tpm-private.bin`: TPM identities, the key as the TPM wrapped it (TPM2B_PRIVATE), loadable
//!   only in that TPM; `ek-certificate.der`, the EK certificate enrollment checked
//! - `public-key.pem`: SubjectPublicKeyInfo
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
use teelog_attest::tpm::bundle::TpmBundle;
use teelog_attest::tpm::enrollment::EnrollmentCa;
use teelog_attest::TrustRoot;
use teelog_core::batch::{normalize_measurement, SoftwareSigner};
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

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}: already holds an identity; choose another directory")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Key { path: PathBuf, source: KeyError },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("{0}: another signer is using this identity")]
    Locked(PathBuf),
    #[error("{path}: {source}")]
    Tpm { path: PathBuf, source: teelog_tpm::TpmError },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    v: u32,
    kind: String,
    alg: String,
    key_id: String,
    measurement: Option<String>,
    /// TPM identities: where the TPM is, and the SHA-256 PCRs the key is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tpm: Option<TpmMeta>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TpmMeta {
    tcti: String,
    pcrs: Vec<u8>,
}

/// A signing identity: a software key in a file (for development and for signers outside a
/// TEE), or a key that lives in a TPM.
pub struct Identity {
    dir: PathBuf,
    signer: Box<dyn HeaderSigner + Send + Sync>,
    /// The dev provider's attestation document binding the key, if this is a dev identity.
    attestation: Option<Vec<u8>>,
    _lock: Option<File>,
}

/// How a new identity vouches for its key.
pub enum Provider<'a> {
    /// A plain software key, with an optional measurement the user asserts.
    Software { measurement: Option<&'a str> },
    /// A software key bound by a dev attestation document (Nitro layout, local root) to these
    /// PCRs; the measurement is PCR0.
    /// `previous_head`, the header hash the new epoch will link to, goes into the document's
    /// nonce, so that the hand-over from the previous epoch is attested too.
    Dev { pcrs: BTreeMap<u64, Vec<u8>>, previous_head: Option<[u8; 32]> },
    /// A key created inside a TPM, bound to its SHA-256 PCRs `pcrs`; its evidence bundle is the
    /// attestation document, and the measurement is the quoted PCR digest. `previous_head` goes
    /// into the quote.
    Tpm {
        tcti: Tcti,
        pcrs: Vec<u8>,
        ek_roots: Vec<TrustRoot>,
        ca: &'a EnrollmentCa,
        previous_head: Option<[u8; 32]>,
    },
}

impl Identity {
    /// Creates a new identity in `dir` (which must not hold one) and returns its public key.
    pub fn create(dir: &Path, alg: SigAlg, provider: Provider<'_>) -> Result<PublicKey, IdentityError> {
        let meta_path = dir.join(META_FILE);
        if meta_path.exists() {
            return Err(IdentityError::Exists(dir.to_path_buf()));
        }
        let invalid = |detail: String| IdentityError::Invalid { path: dir.to_path_buf(), detail };
        let (kind, public, measurement, tpm) = match provider {
            Provider::Software { measurement } => {
                let measurement =
                    measurement.map(normalize_measurement).transpose().map_err(|e| invalid(e.to_string()))?;
                (SOFTWARE, create_software_key(dir, alg)?, measurement, None)
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
                (DEV, public, Some(pcr0), None)
            }
            Provider::Tpm { tcti, pcrs, ek_roots, ca, previous_head } => {
                if alg != SigAlg::Es256 {
                    return Err(invalid("a TPM key is P-256 (--curve p256)".into()));
                }
                let (public, measurement) = create_tpm_key(dir, &tcti, &pcrs, &ek_roots, ca, previous_head)?;
                (TPM, public, Some(measurement), Some(TpmMeta { tcti: tcti.to_tools_string(), pcrs }))
            }
        };
        write_atomic(&dir.join(PUBLIC_KEY_FILE), public.to_pem().as_bytes())?;
        let meta = Meta {
            v: 1,
            kind: kind.into(),
            alg: alg.name().into(),
            key_id: public.id_hex(),
            measurement,
            tpm,
        };
        let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        write_atomic(&meta_path, &json)?;
        Ok(public)
    }

    fn load(dir: &Path) -> Result<Self, IdentityError> {
        let meta_path = dir.join(META_FILE);
        let text = fs::read(&meta_path).map_err(io_err(&meta_path))?;
        let meta: Meta = serde_json::from_slice(&text)
            .map_err(|e| IdentityError::Invalid { path: meta_path.clone(), detail: e.to_string() })?;
        let attestation = match meta.kind.as_str() {
            SOFTWARE => None,
            DEV | TPM => {
                let path = dir.join(ATTESTATION_FILE);
                Some(fs::read(&path).map_err(io_err(&path))?)
            }
            other => {
                return Err(IdentityError::Invalid {
                    path: meta_path,
                    detail: format!("kind {other:?} is not a software, dev or tpm identity"),
                })
            }
        };
        let attestation_sha256 = attestation.as_deref().map(|d| hex::encode(sha256(d)));
        let signer: Box<dyn HeaderSigner + Send + Sync> = match &meta.tpm {
            Some(tpm) if meta.kind == TPM => {
                Box::new(open_tpm_key(dir, tpm, meta.measurement.clone(), attestation_sha256)?)
            }
            _ if meta.kind == TPM => {
                return Err(IdentityError::Invalid {
                    path: meta_path,
                    detail: "a tpm identity needs its \"tpm\" member".into(),
                })
            }
            _ => {
                let key_path = dir.join(PRIVATE_KEY_FILE);
                let pem = fs::read(&key_path).map_err(io_err(&key_path))?;
                let key = SoftwareKey::from_pkcs8_pem(&pem)
                    .map_err(|source| IdentityError::Key { path: key_path.clone(), source })?;
                let signer = SoftwareSigner::new(key, meta.measurement.clone());
                Box::new(match attestation_sha256 {
                    Some(sha) => signer.with_attestation(sha),
                    None => signer,
                })
            }
        };
        let public = signer.public_key();
        if public.id_hex() != meta.key_id || public.alg().name() != meta.alg {
            return Err(IdentityError::Invalid {
                path: dir.to_path_buf(),
                detail: format!("the key does not match {META_FILE} (key id {})", meta.key_id),
            });
        }
        Ok(Self { dir: dir.to_path_buf(), signer, attestation, _lock: None })
    }

    /// Loads an identity and takes its lock for as long as the value lives.
    pub fn load_exclusive(dir: &Path) -> Result<Self, IdentityError> {
        // Named first: a directory that is no identity should say so, not fail on its lock.
        let meta_path = dir.join(META_FILE);
        fs::metadata(&meta_path).map_err(io_err(&meta_path))?;
        let lock = teelog_store::lock_dir(dir).map_err(|e| match e {
            DirLockError::Held => IdentityError::Locked(dir.to_path_buf()),
            DirLockError::Io { path, source } => IdentityError::Io { path, source },
        })?;
        let mut identity = Self::load(dir)?;
        identity._lock = Some(lock);
        Ok(identity)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn signer(&self) -> &dyn HeaderSigner {
        self.signer.as_ref()
    }

    /// The attestation document that binds the key, to be stored alongside the batches.
    pub fn attestation_document(&self) -> Option<&[u8]> {
        self.attestation.as_deref()
    }

    /// The chain state of `stream`, if this identity has signed it before.
    pub fn load_state(&self, stream: &str) -> Result<Option<ChainHead>, IdentityError> {
        let path = state_path(&self.dir, stream);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| IdentityError::Invalid { path, detail: e.to_string() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(IdentityError::Io { path, source }),
        }
    }

    /// Durably records where `head.stream` stands (write, fsync, rename, fsync directory).
    pub fn save_state(&self, head: &ChainHead) -> Result<(), IdentityError> {
        let dir = self.dir.join(STATE_DIR);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let json = serde_json::to_vec(head).unwrap_or_default();
        write_atomic(&state_path(&self.dir, &head.stream), &json)
    }
}

/// A new software key in `dir/private-key.pem`, mode 0600.
fn create_software_key(dir: &Path, alg: SigAlg) -> Result<PublicKey, IdentityError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let key_path = dir.join(PRIVATE_KEY_FILE);
    let key_err = |source| IdentityError::Key { path: key_path.clone(), source };
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
    let provisioned = provisioned.map_err(|source| IdentityError::Tpm { path: dir.to_path_buf(), source })?;
    let private_path = dir.join(TPM_PRIVATE_FILE);
    write_atomic(&private_path, &provisioned.key_private)?;
    write_atomic(&dir.join(EK_CERTIFICATE_FILE), &provisioned.ek_certificate)?;
    write_atomic(&dir.join(ATTESTATION_FILE), &provisioned.bundle.encode())?;
    Ok((provisioned.verified.key, hex::encode(provisioned.verified.measurement)))
}

/// Loads the TPM key of the identity in `dir`, ready to sign.
fn open_tpm_key(
    dir: &Path,
    meta: &TpmMeta,
    measurement: Option<String>,
    attestation_sha256: Option<String>,
) -> Result<TpmSigner, IdentityError> {
    let tpm_err = |source| IdentityError::Tpm { path: dir.to_path_buf(), source };
    let tcti = Tcti::parse(&meta.tcti).map_err(tpm_err)?;
    let private_path = dir.join(TPM_PRIVATE_FILE);
    let private = fs::read(&private_path).map_err(io_err(&private_path))?;
    let bundle_path = dir.join(ATTESTATION_FILE);
    let bundle = fs::read(&bundle_path).map_err(io_err(&bundle_path))?;
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
    teelog_store::write_atomic(path, bytes).map_err(|(path, source)| IdentityError::Io { path, source })
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
        assert!(matches!(Identity::load_exclusive(&id_dir), Err(IdentityError::Locked(_))));

        assert_eq!(identity.load_state("a/b:c").unwrap(), None);
        let head = ChainHead {
            stream: "a/b:c".into(),
            epoch: "00".repeat(16),
            next_seq: 7,
            prev: Some("11".repeat(32)),
        };
        identity.save_state(&head).unwrap();
        assert_eq!(identity.load_state("a/b:c").unwrap(), Some(head));
    }

    #[test]
    fn wrong_key_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        Identity::create(dir.path(), SigAlg::Es256, Provider::Software { measurement: None }).unwrap();
        fs::write(dir.path().join(PRIVATE_KEY_FILE), "not a key").unwrap();
        let err = Identity::load(dir.path()).err().unwrap().to_string();
        assert!(err.contains("private-key.pem") && err.contains("no PRIVATE KEY PEM block"), "{err}");
    }
}
