//! What a teelog verifier trusts, read from the files an auditor names: signing keys (PEM),
//! attestation roots (PEM or DER), a measurement policy (TOML), AMD's ARK and ASK, and Intel's
//! TDX collateral. The verifiers in `teelog-core` and `teelog-attest` are sans-IO; this crate is
//! their edge to the file system, so that `teelog verify`, `teelog audit`, `teelog attest` and
//! the gateway read trust the same way. Errors name the file they are about.
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use teelog_attest::snp::AmdChain;
use teelog_attest::tcb::{CollateralFiles, MAX_COLLATERAL_JSON_BYTES, MAX_CRL_BYTES, MAX_ISSUER_CHAIN_BYTES};
use teelog_attest::{AttestError, BindingVerifier, TrustRoot};
use teelog_core::policy::{Policy, PolicyError};
use teelog_core::{KeyError, PublicKey};

/// Why a trust file was refused. Each variant names the file; the cause, where there is one, is
/// the [`std::error::Error::source`], so print the chain to show both.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A collateral file that must be there is not.
    #[error("{} is missing", path.display())]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Not a public key teelog verifies with.
    #[error("{}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: KeyError,
    },
    /// A root, a certificate or a certificate chain that is not usable as one.
    #[error("{}", path.display())]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it, e.g. a lookalike of a pinned vendor root.
        #[source]
        source: AttestError,
    },
    /// The policy file is not TOML of the policy's shape.
    #[error("{}", path.display())]
    PolicySyntax {
        /// The policy file.
        path: PathBuf,
        /// The TOML parser's error, with line and column.
        #[source]
        source: toml::de::Error,
    },
    /// The policy parses but an entry is wrong (unknown platform, bad value or window).
    #[error("{}", path.display())]
    Policy {
        /// The policy file.
        path: PathBuf,
        /// Which entry and what is wrong with it.
        #[source]
        source: PolicyError,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TrustError> {
    std::fs::read(path).map_err(|source| TrustError::Read { path: path.to_path_buf(), source })
}

/// The files that name what batches are verified against, as `teelog verify` and the gateway's
/// `[verify]` section give them.
#[derive(Debug, Clone, Default)]
pub struct TrustFiles {
    /// Trusted signing keys (SubjectPublicKeyInfo PEM) for batches without an attestation
    /// document.
    pub pubkeys: Vec<PathBuf>,
    /// Roots attestation documents may chain to besides the pinned vendor roots.
    pub trust_roots: Vec<PathBuf>,
    /// A measurement policy (TOML).
    pub policy: Option<PathBuf>,
    /// Accept documents of debug-mode enclaves.
    pub allow_debug: bool,
}

/// What batches are verified against: trusted keys, attestation roots, a measurement policy.
pub struct Trust {
    /// Keys that batches without an attestation document may be signed with.
    pub keys: Vec<PublicKey>,
    /// The measurement policy, checked; without one, measurements are reported but not judged.
    pub policy: Option<Policy>,
    /// The verifier of attestation documents: the pinned vendor roots and the given ones.
    pub attestation: BindingVerifier,
}

impl Trust {
    /// Reads the keys, roots and policy `files` name. Attestation documents without a time of
    /// their own (TPM evidence) are checked at `now` (Unix seconds).
    pub fn load(files: &TrustFiles, now: u64) -> Result<Self, TrustError> {
        let keys = files.pubkeys.iter().map(|path| public_key(path)).collect::<Result<_, _>>()?;
        let roots = trust_roots(&files.trust_roots)?;
        let policy = files.policy.as_deref().map(policy).transpose()?;
        Ok(Self { keys, policy, attestation: BindingVerifier { roots, allow_debug: files.allow_debug, now } })
    }
}

/// A public key (SubjectPublicKeyInfo PEM) from its file.
pub fn public_key(path: &Path) -> Result<PublicKey, TrustError> {
    PublicKey::from_pem(&read(path)?).map_err(|source| TrustError::Key { path: path.to_path_buf(), source })
}

/// A measurement policy (TOML) from its file, checked entry by entry.
pub fn policy(path: &Path) -> Result<Policy, TrustError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| TrustError::Read { path: path.to_path_buf(), source })?;
    let policy: Policy = toml::from_str(&text)
        .map_err(|source| TrustError::PolicySyntax { path: path.to_path_buf(), source })?;
    policy.validated().map_err(|source| TrustError::Policy { path: path.to_path_buf(), source })
}

/// The pinned AWS Nitro root, plus every certificate of the files given with --trust-root (or a
/// gateway's `trust_roots`). A lookalike of a pinned vendor root is an error naming its file.
pub fn trust_roots(paths: &[PathBuf]) -> Result<Vec<TrustRoot>, TrustError> {
    let mut roots = vec![TrustRoot::aws_nitro()];
    for path in paths {
        let certificates = TrustRoot::all_from_pem_or_der(&read(path)?)
            .map_err(|source| TrustError::Certificate { path: path.to_path_buf(), source })?;
        roots.extend(certificates);
    }
    Ok(roots)
}

/// One certificate (PEM or DER) from its file, as DER, e.g. an SEV-SNP chip's VCEK.
pub fn certificate(path: &Path) -> Result<Vec<u8>, TrustError> {
    let bytes = read(path)?;
    // Not PEM: the bytes are taken as DER, and the verifier judges them.
    Ok(CertificateDer::from_pem_slice(&bytes).map(|der| der.to_vec()).unwrap_or(bytes))
}

/// AMD's ARK and ASK (PEM, as AMD's key server serves `cert_chain`) from their file.
pub fn amd_chain(path: &Path) -> Result<AmdChain, TrustError> {
    AmdChain::from_pem(&read(path)?)
        .map_err(|source| TrustError::Certificate { path: path.to_path_buf(), source })
}

/// Intel's TDX collateral as saved from the PCS into one directory: tcb_info.json and
/// qe_identity.json (PCS responses), tcb_info_issuer_chain.pem, optionally
/// qe_identity_issuer_chain.pem (Intel signs both documents with one certificate, so the TCB
/// info's chain serves both by default), and optionally pck_crl.der and root_ca_crl.der.
#[derive(Debug, Clone)]
pub struct CollateralDir {
    tcb_info: Vec<u8>,
    tcb_info_issuer_chain: Vec<u8>,
    qe_identity: Vec<u8>,
    qe_identity_issuer_chain: Vec<u8>,
    pck_crl: Option<Vec<u8>>,
    root_ca_crl: Option<Vec<u8>>,
}

impl CollateralDir {
    /// Reads the files of `dir`. Each is read to at most one byte over its size limit, so that a
    /// huge file is refused by size (when parsed) without being read whole.
    pub fn read(dir: &Path) -> Result<Self, TrustError> {
        let optional = |name: &str, max: usize| -> Result<Option<Vec<u8>>, TrustError> {
            let path = dir.join(name);
            let failed = |source| TrustError::Read { path: path.clone(), source };
            let file = match std::fs::File::open(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                file => file.map_err(failed)?,
            };
            let mut buf = Vec::new();
            file.take(max as u64 + 1).read_to_end(&mut buf).map_err(failed)?;
            Ok(Some(buf))
        };
        let required = |name: &str, max: usize| {
            optional(name, max)?.ok_or_else(|| TrustError::Missing { path: dir.join(name) })
        };
        let tcb_info_issuer_chain = required("tcb_info_issuer_chain.pem", MAX_ISSUER_CHAIN_BYTES)?;
        let qe_identity_issuer_chain = optional("qe_identity_issuer_chain.pem", MAX_ISSUER_CHAIN_BYTES)?
            .unwrap_or_else(|| tcb_info_issuer_chain.clone());
        Ok(Self {
            tcb_info: required("tcb_info.json", MAX_COLLATERAL_JSON_BYTES)?,
            qe_identity: required("qe_identity.json", MAX_COLLATERAL_JSON_BYTES)?,
            tcb_info_issuer_chain,
            qe_identity_issuer_chain,
            pck_crl: optional("pck_crl.der", MAX_CRL_BYTES)?,
            root_ca_crl: optional("root_ca_crl.der", MAX_CRL_BYTES)?,
        })
    }

    /// The files, for [`teelog_attest::tcb::TdxCollateral::parse`].
    pub fn files(&self) -> CollateralFiles<'_> {
        CollateralFiles {
            tcb_info: &self.tcb_info,
            tcb_info_issuer_chain: &self.tcb_info_issuer_chain,
            qe_identity: &self.qe_identity,
            qe_identity_issuer_chain: &self.qe_identity_issuer_chain,
            pck_crl: self.pck_crl.as_deref(),
            root_ca_crl: self.root_ca_crl.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collateral_files_are_named_when_missing_and_read_no_further_than_their_limit() {
        let dir = tempfile::tempdir().unwrap();
        let err = CollateralDir::read(dir.path()).unwrap_err();
        assert!(
            matches!(&err, TrustError::Missing { path } if path.ends_with("tcb_info_issuer_chain.pem")),
            "{err}"
        );
        std::fs::write(dir.path().join("tcb_info_issuer_chain.pem"), b"chain").unwrap();
        std::fs::write(dir.path().join("tcb_info.json"), vec![b' '; MAX_COLLATERAL_JSON_BYTES + 100])
            .unwrap();
        let err = CollateralDir::read(dir.path()).unwrap_err();
        assert!(err.to_string().ends_with("qe_identity.json is missing"), "{err}");
        std::fs::write(dir.path().join("qe_identity.json"), b"{}").unwrap();
        let read = CollateralDir::read(dir.path()).unwrap();
        let files = read.files();
        // One byte over the limit: enough for the parser to refuse it by size.
        assert_eq!(files.tcb_info.len(), MAX_COLLATERAL_JSON_BYTES + 1);
        // Intel signs both documents with one certificate: one chain file serves both.
        assert_eq!(files.qe_identity_issuer_chain, b"chain");
        assert_eq!((files.pck_crl, files.root_ca_crl), (None, None));
    }

    #[test]
    fn errors_name_the_file_they_are_about() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(
            path("policy.toml"),
            "[[measurement]]\nplatform = 'nowhere'\nversion = 'v1'\nvalue = '00'\n",
        )
        .unwrap();
        std::fs::write(path("syntax.toml"), "[[measurement\n").unwrap();
        std::fs::write(path("not-a-root.pem"), "hello").unwrap();
        std::fs::write(path("not-a-key.pem"), "hello").unwrap();
        let cases: [(TrustError, &str); 5] = [
            (policy(&path("policy.toml")).unwrap_err(), "measurement entry 1"),
            (policy(&path("syntax.toml")).unwrap_err(), "syntax.toml"),
            (trust_roots(&[path("not-a-root.pem")]).unwrap_err(), "trust root"),
            (public_key(&path("not-a-key.pem")).unwrap_err(), "not-a-key.pem"),
            (public_key(&path("absent.pem")).unwrap_err(), "cannot read"),
        ];
        for (err, needle) in cases {
            // As the binary prints it: each cause after the last.
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                text = format!("{text}: {cause}");
                source = cause.source();
            }
            assert!(
                text.contains(needle) && text.contains(dir.path().to_str().unwrap()),
                "{needle:?} in {text}"
            );
        }
    }

    #[test]
    fn the_pinned_aws_root_is_always_trusted_and_given_roots_follow_it() {
        let roots = trust_roots(&[]).unwrap();
        assert_eq!(roots.len(), 1);
        assert_eq!(roots[0].vendor(), Some(teelog_attest::VendorRoot::AwsNitroG1));
    }
}
