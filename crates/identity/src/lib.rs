//! Signing identities kept in a directory, and the per-stream chain state that lets a signer
//! continue its stream across runs.
//!
//! Layout of an identity directory:
//! - `identity.json`: kind, algorithm, key id, measurement
//! - `private-key.pem`: PKCS#8, mode 0600 (software identities only)
//! - `public-key.pem`: SubjectPublicKeyInfo
//! - `attestation.cbor`, `dev-root.pem`: dev identities only, the document binding the key and
//!   the root an auditor must be given
//! - `state/<stream>.json`: where each stream's chain stands, replaced atomically
//! - `LOCK`: held while a signer uses the identity, so two signers never fork a stream
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use teelog_attest::dev::DevClaims;
use teelog_core::batch::{normalize_measurement, SoftwareSigner};
use teelog_core::crypto::pem_encode;
use teelog_core::merkle::sha256;
use teelog_core::{ChainHead, KeyError, PublicKey, SigAlg, SoftwareKey};
use teelog_store::DirLockError;

const META_FILE: &str = "identity.json";
const PRIVATE_KEY_FILE: &str = "private-key.pem";
const PUBLIC_KEY_FILE: &str = "public-key.pem";
const STATE_DIR: &str = "state";
const ATTESTATION_FILE: &str = "attestation.cbor";
const DEV_ROOT_FILE: &str = "dev-root.pem";
const SOFTWARE: &str = "software";
const DEV: &str = "dev";

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
}

/// A software identity: the key lives in a file. For development and for signers outside a TEE;
/// hardware-bound identities implement the same `HeaderSigner`.
pub struct SoftwareIdentity {
    dir: PathBuf,
    signer: SoftwareSigner,
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
}

impl SoftwareIdentity {
    /// Creates a new identity in `dir` (which must not hold one) and returns its public key.
    pub fn create(dir: &Path, alg: SigAlg, provider: Provider<'_>) -> Result<PublicKey, IdentityError> {
        let meta_path = dir.join(META_FILE);
        if meta_path.exists() {
            return Err(IdentityError::Exists(dir.to_path_buf()));
        }
        let invalid = |detail: String| IdentityError::Invalid { path: dir.to_path_buf(), detail };
        let measurement = match &provider {
            Provider::Software { measurement } => {
                measurement.map(normalize_measurement).transpose().map_err(|e| invalid(e.to_string()))?
            }
            Provider::Dev { pcrs, .. } => Some(
                pcrs.get(&0).map(hex::encode).ok_or_else(|| invalid("a dev identity needs PCR0".into()))?,
            ),
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let key_path = dir.join(PRIVATE_KEY_FILE);
        let pkcs8 = SoftwareKey::generate_pkcs8(alg)
            .map_err(|source| IdentityError::Key { path: key_path.clone(), source })?;
        let key = SoftwareKey::from_pkcs8(alg, &pkcs8)
            .map_err(|source| IdentityError::Key { path: key_path.clone(), source })?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(io_err(&key_path))?;
        file.write_all(pem_encode("PRIVATE KEY", &pkcs8).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_err(&key_path))?;
        let public = key.public().clone();
        write_atomic(&dir.join(PUBLIC_KEY_FILE), public.to_pem().as_bytes())?;
        let kind = match &provider {
            Provider::Software { .. } => SOFTWARE,
            Provider::Dev { pcrs, previous_head } => {
                let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
                let module_id = format!("dev-{}", &public.id_hex()[..16]);
                let issued = teelog_attest::dev::issue(&DevClaims {
                    module_id: &module_id,
                    timestamp_ms: u64::try_from(now_ms).unwrap_or(u64::MAX),
                    pcrs,
                    bound_key: &public,
                    nonce: previous_head.as_ref().map(|h| &h[..]),
                })
                .map_err(|e| invalid(e.to_string()))?;
                write_atomic(&dir.join(ATTESTATION_FILE), &issued.document)?;
                write_atomic(
                    &dir.join(DEV_ROOT_FILE),
                    pem_encode("CERTIFICATE", &issued.root_der).as_bytes(),
                )?;
                DEV
            }
        };
        let meta =
            Meta { v: 1, kind: kind.into(), alg: alg.name().into(), key_id: public.id_hex(), measurement };
        let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        write_atomic(&meta_path, &json)?;
        Ok(public)
    }

    /// Loads an identity without locking it (for reading its public key).
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let meta_path = dir.join(META_FILE);
        let text = fs::read(&meta_path).map_err(io_err(&meta_path))?;
        let meta: Meta = serde_json::from_slice(&text)
            .map_err(|e| IdentityError::Invalid { path: meta_path.clone(), detail: e.to_string() })?;
        if meta.kind != SOFTWARE && meta.kind != DEV {
            return Err(IdentityError::Invalid {
                path: meta_path,
                detail: format!("kind {:?} is not a software or dev identity", meta.kind),
            });
        }
        let key_path = dir.join(PRIVATE_KEY_FILE);
        let pem = fs::read(&key_path).map_err(io_err(&key_path))?;
        let key = SoftwareKey::from_pkcs8_pem(&pem)
            .map_err(|source| IdentityError::Key { path: key_path.clone(), source })?;
        if key.public().id_hex() != meta.key_id || key.public().alg().name() != meta.alg {
            return Err(IdentityError::Invalid {
                path: key_path,
                detail: format!("this key does not match {META_FILE} (key id {})", meta.key_id),
            });
        }
        let mut signer = SoftwareSigner::new(key, meta.measurement);
        let attestation = if meta.kind == DEV {
            let path = dir.join(ATTESTATION_FILE);
            let document = fs::read(&path).map_err(io_err(&path))?;
            signer = signer.with_attestation(hex::encode(sha256(&document)));
            Some(document)
        } else {
            None
        };
        Ok(Self { dir: dir.to_path_buf(), signer, attestation, _lock: None })
    }

    /// Loads an identity and takes its lock for as long as the value lives.
    pub fn load_exclusive(dir: &Path) -> Result<Self, IdentityError> {
        let mut identity = Self::load(dir)?;
        let lock = teelog_store::lock_dir(dir).map_err(|e| match e {
            DirLockError::Held => IdentityError::Locked(dir.to_path_buf()),
            DirLockError::Io { path, source } => IdentityError::Io { path, source },
        })?;
        identity._lock = Some(lock);
        Ok(identity)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn signer(&self) -> &SoftwareSigner {
        &self.signer
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
    use teelog_core::HeaderSigner;

    #[test]
    fn create_load_and_state_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let id_dir = dir.path().join("id");
        let public = SoftwareIdentity::create(
            &id_dir,
            SigAlg::Es384,
            Provider::Software { measurement: Some("ABCD") },
        )
        .unwrap();
        let mode = fs::metadata(id_dir.join(PRIVATE_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            SoftwareIdentity::create(&id_dir, SigAlg::Es256, Provider::Software { measurement: None }),
            Err(IdentityError::Exists(_))
        ));

        let identity = SoftwareIdentity::load_exclusive(&id_dir).unwrap();
        assert_eq!(identity.signer().public_key(), &public);
        assert_eq!(identity.signer().measurement(), Some("abcd"));
        assert!(matches!(SoftwareIdentity::load_exclusive(&id_dir), Err(IdentityError::Locked(_))));

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
        SoftwareIdentity::create(dir.path(), SigAlg::Es256, Provider::Software { measurement: None })
            .unwrap();
        fs::write(dir.path().join(PRIVATE_KEY_FILE), "not a key").unwrap();
        let err = SoftwareIdentity::load(dir.path()).err().unwrap().to_string();
        assert!(err.contains("private-key.pem") && err.contains("no PRIVATE KEY PEM block"), "{err}");
    }
}
