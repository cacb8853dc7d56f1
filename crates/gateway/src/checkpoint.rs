//! The gateway's checkpoints (docs/FORMAT.md §17, docs/GATEWAY.md "Checkpoints"): at an interval
//! and on shutdown, the writer signs, per stream, the chain tips it has durably spooled, and
//! spools the checkpoint behind the batches it covers, so that every sink receives it after them.
//! The newest checkpoint of each stream is also kept apart, in `<spool>/checkpoints.ndjson`, for an
//! auditor to copy out of reach of whoever holds the storage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use teelog_audit::tsa::TsaClient;
use teelog_core::checkpoint::{sign, SignedCheckpoint, Tip};
use teelog_core::crypto::{pem_encode, SigAlg};
use teelog_core::timestamp::UnixNanos;
use teelog_core::{KeyError, SoftwareKey};

use crate::envelope;

/// The key's default file in the spool directory (PKCS#8 PEM, mode 0600), made on first start.
pub const KEY_FILE: &str = "checkpoint-key.pem";
/// Its public key (SubjectPublicKeyInfo PEM), written beside it: what auditors pass as
/// `--checkpoint-key`.
pub const PUBLIC_KEY_FILE: &str = "checkpoint-key.pub.pem";
/// The newest checkpoint line of every stream.
pub const KEPT_FILE: &str = "checkpoints.ndjson";

/// Why the checkpoint key cannot be had; names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointKeyError {
    /// The key file exists but cannot be read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The file is not a P-256 or P-384 PKCS#8 private key.
    #[error("{}: {error}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: KeyError,
    },
}

/// The checkpoint key at `path`; with `create`, a new P-256 key is made there first if there is
/// none (its public key is written beside the spool's default key file).
pub fn load_key(path: &Path, create: bool) -> Result<SoftwareKey, CheckpointKeyError> {
    let io = |error| CheckpointKeyError::Io { path: path.to_path_buf(), error };
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let der = SoftwareKey::generate_pkcs8(SigAlg::Es256)
                .map_err(|error| CheckpointKeyError::Key { path: path.to_path_buf(), error })?;
            let pem = pem_encode("PRIVATE KEY", &der);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            teelog_store::write_new_private(path, pem.as_bytes()).map_err(io)?;
            pem.into_bytes()
        }
        Err(e) => return Err(io(e)),
    };
    SoftwareKey::from_pkcs8_pem(&pem)
        .map_err(|error| CheckpointKeyError::Key { path: path.to_path_buf(), error })
}

/// Signs checkpoints for the writer and remembers what it last signed per stream.
pub struct Checkpointer {
    key: SoftwareKey,
    /// Where each checkpoint is stamped, if anywhere.
    tsa: Option<TsaClient>,
    kept: PathBuf,
    /// The tips of each stream's last checkpoint: a stream whose tips did not move since gets
    /// no new one (its last one still says everything).
    signed: BTreeMap<String, Vec<Tip>>,
    /// The newest checkpoint line of each stream, as kept in [`KEPT_FILE`].
    newest: BTreeMap<String, Vec<u8>>,
}

impl Checkpointer {
    /// Signs with `key`; the newest lines are kept in `spool`'s [`KEPT_FILE`].
    pub fn new(key: SoftwareKey, spool: &Path) -> Self {
        Self { key, tsa: None, kept: spool.join(KEPT_FILE), signed: BTreeMap::new(), newest: BTreeMap::new() }
    }

    /// The same, stamping each checkpoint at `tsa`. The writer waits for the answer (at most the
    /// client's timeout), once per checkpoint.
    pub fn with_tsa(mut self, tsa: TsaClient) -> Self {
        self.tsa = Some(tsa);
        self
    }

    /// A token over `signed` from the TSA, if one is configured and answers.
    fn stamp(&self, stream: &str, signed: &SignedCheckpoint) -> Option<Vec<u8>> {
        let tsa = self.tsa.as_ref()?;
        match tsa.stamp(&signed.body_hash()) {
            Ok(token) => Some(token),
            Err(e) => {
                tracing::warn!(target: "teelog::gateway", stream, "checkpoint.tsa {}: no timestamp for this checkpoint: {e}", tsa.url());
                None
            }
        }
    }

    /// The public key, as PEM.
    pub fn public_pem(&self) -> String {
        self.key.public().to_pem()
    }

    /// The spool lines of the checkpoints due at `now` for `tips` (per stream), for the streams
    /// whose tips moved since their last checkpoint. What is returned counts as signed: the
    /// caller spools it before anything else.
    pub fn due(&mut self, tips: BTreeMap<String, Vec<Tip>>, now: UnixNanos) -> Vec<u8> {
        let mut out = Vec::new();
        for (stream, tips) in tips {
            if tips.is_empty() || self.signed.get(&stream) == Some(&tips) {
                continue;
            }
            match sign(&self.key, &stream, now, tips.clone()) {
                Ok(signed) => {
                    let mut line = signed.line(self.stamp(&stream, &signed).as_deref());
                    line.pop();
                    envelope::encode(&mut out, Some(&stream), None, &line);
                    line.push(b'\n');
                    self.newest.insert(stream.clone(), line);
                    self.signed.insert(stream, tips);
                }
                Err(e) => tracing::error!(target: "teelog::gateway", stream, "cannot sign a checkpoint: {e}"),
            }
        }
        out
    }

    /// Where the newest checkpoint of every stream is kept, and its bytes.
    pub fn kept(&self) -> (&Path, Vec<u8>) {
        (&self.kept, self.newest.values().flatten().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_a_file_that_is_no_key_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(KEY_FILE);
        assert!(matches!(load_key(&path, false), Err(CheckpointKeyError::Io { .. })));
        let made = load_key(&path, true).unwrap();
        let again = load_key(&path, true).unwrap();
        assert_eq!(made.public(), again.public(), "the key is kept, not made again");
        std::fs::write(&path, "not a key").unwrap();
        let Err(err) = load_key(&path, true) else { panic!("a file that is no key was taken") };
        assert!(err.to_string().contains(KEY_FILE), "{err}");
    }

    #[test]
    fn only_streams_whose_tips_moved_get_a_new_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_key(&dir.path().join(KEY_FILE), true).unwrap();
        let mut checkpointer = Checkpointer::new(key, dir.path());
        let tip = |seq| Tip { epoch: "a".repeat(32), head: "b".repeat(64), seq };
        let tips = |a, b| BTreeMap::from([("a".to_string(), vec![tip(a)]), ("b".to_string(), vec![tip(b)])]);
        let first = checkpointer.due(tips(1, 1), 1);
        assert_eq!(first.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(), 2);
        assert!(checkpointer.due(tips(1, 1), 2).is_empty(), "nothing moved");
        let second = String::from_utf8(checkpointer.due(tips(1, 2), 3)).unwrap();
        assert!(second.starts_with("{\"stream\":\"b\"}{\"v\":1,\"checkpoint\":"), "{second}");
        assert_eq!(second.lines().count(), 1);
        let (_, kept) = checkpointer.kept();
        assert_eq!(String::from_utf8(kept).unwrap().lines().count(), 2, "the newest of each stream");
    }
}
