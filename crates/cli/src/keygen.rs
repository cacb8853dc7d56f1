//! `teelog keygen`: create a signing identity — a software key, a dev-attested one, a key
//! inside a TPM 2.0, or a nitro identity whose key each start makes inside the enclave.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::ValueEnum;
use teelog_attest::tpm::enrollment::EnrollmentCa;
use teelog_attest::TrustRoot;
use teelog_core::crypto::pem_encode;
use teelog_core::SigAlg;
use teelog_identity::{Identity, Provider};
use teelog_ship::{trusted_head, HeadTrust};
use teelog_tpm::Tcti;

use crate::sign::head_trust;

#[derive(clap::Args, Clone)]
pub struct KeygenArgs {
    /// Directory to create the identity in.
    #[arg(long)]
    out: PathBuf,
    /// Code measurement to put in every batch header (hex).
    #[arg(long, conflicts_with_all = ["dev", "tpm", "nitro"])]
    measurement: Option<String>,
    #[arg(long, value_enum, default_value_t = Curve::P256)]
    curve: Curve,
    /// Bind the key with a dev attestation document issued by a new local root
    /// (dev-root.pem); auditors accept it only with --trust-root dev-root.pem.
    #[arg(long, conflicts_with_all = ["tpm", "nitro"])]
    dev: bool,
    /// For signing inside an AWS Nitro Enclave: no key is kept. Every start makes one in enclave
    /// memory, which /dev/nsm attests with the enclave's measurement and, as nonce, the head of
    /// the stream it continues; so every start is a new epoch. Auditors need no extra root.
    #[arg(long, conflicts_with_all = ["tpm", "follow"])]
    nitro: bool,
    /// A PCR of the dev document, IDX=HEX (32, 48 or 64 bytes); repeat for several.
    /// Default: PCR0..2 derived from their index. The measurement is PCR0.
    #[arg(long, requires = "dev", value_parser = parse_pcr)]
    pcr: Vec<(u64, Vec<u8>)>,
    /// Create the key inside the TPM this TCTI names (`device:/dev/tpmrm0`,
    /// `swtpm:host=127.0.0.1,port=2321`), bound to --tpm-pcrs: the TPM signs only while they
    /// hold today's values. Needs tpm2-tools.
    #[arg(long, value_name = "TCTI", requires_all = ["ek_ca", "enrollment_ca"])]
    tpm: Option<String>,
    /// The SHA-256 PCRs a TPM key is bound to; the measurement is their quoted digest.
    #[arg(long, requires = "tpm", value_delimiter = ',', default_value = "0,1,2,3,4,5,6,7")]
    tpm_pcrs: Vec<u8>,
    /// The TPM maker's CA certificates (PEM), which the TPM's EK certificate must chain to.
    #[arg(long, requires = "tpm")]
    ek_ca: Option<PathBuf>,
    /// The enrollment CA that certifies the TPM's attestation key after credential activation:
    /// a directory with ca.pem and ca-key.pem, created if it does not exist. Auditors trust
    /// ca.pem (--trust-root).
    #[arg(long, requires = "tpm")]
    enrollment_ca: Option<PathBuf>,
    /// A restart (with --dev or --tpm): attest the newest head of --stream in this store,
    /// which the new identity's first batch will link to.
    #[arg(long)]
    follow: Option<PathBuf>,
    #[arg(long, default_value = "default", requires = "follow")]
    stream: String,
    /// With --follow: trust this public key (PEM), the previous signer's, for where the stream
    /// stands. The head followed must be signed by a key trusted so (repeatable), or bound by an
    /// attestation document in the store that chains to the AWS root or a --trust-root.
    #[arg(long, requires = "follow")]
    pubkey: Vec<PathBuf>,
    /// With --follow: trust attestation documents in the store that chain to this root (PEM or
    /// DER), e.g. the previous dev identity's dev-root.pem. Repeatable.
    #[arg(long, requires = "follow")]
    trust_root: Vec<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Curve {
    P256,
    P384,
}

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";

pub fn run(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let alg = match args.curve {
        Curve::P256 => SigAlg::Es256,
        Curve::P384 => SigAlg::Es384,
    };
    let previous_head = match &args.follow {
        Some(_) if !args.dev && args.tpm.is_none() => bail!("--follow needs --dev or --tpm"),
        Some(store) => {
            Some(previous_head(store, &args.stream, &head_trust(&args.pubkey, &args.trust_root)?)?)
        }
        None => None,
    };
    let ca;
    let provider = if args.dev {
        let pcrs = if args.pcr.is_empty() {
            teelog_attest::dev::default_pcrs()
        } else {
            args.pcr.iter().cloned().collect()
        };
        Provider::Dev { pcrs, previous_head }
    } else if let (Some(tcti), Some(ek_ca), Some(ca_dir)) = (&args.tpm, &args.ek_ca, &args.enrollment_ca) {
        let tcti = Tcti::parse(tcti).context("--tpm")?;
        if let Some(bad) = args.tpm_pcrs.iter().find(|&&p| p > teelog_attest::tpm::MAX_BOUND_PCR) {
            bail!(
                "--tpm-pcrs: PCR{bad} can be reset by software or is not a boot measurement; bind to PCR0..={}",
                teelog_attest::tpm::MAX_BOUND_PCR
            );
        }
        if args.tpm_pcrs.is_empty() {
            bail!("--tpm-pcrs: name at least one PCR, or the key signs in any state");
        }
        let bytes = std::fs::read(ek_ca).with_context(|| format!("cannot read {}", ek_ca.display()))?;
        let ek_roots = TrustRoot::all_from_pem_or_der(&bytes).with_context(|| ek_ca.display().to_string())?;
        ca = enrollment_ca(ca_dir)?;
        Provider::Tpm { tcti, pcrs: args.tpm_pcrs.clone(), ek_roots, ca: &ca, previous_head }
    } else if args.nitro {
        Provider::Nitro
    } else {
        Provider::Software { measurement: args.measurement.as_deref() }
    };
    let public = Identity::create(&args.out, alg, provider)?;
    let out = &args.out;
    println!("created {} identity in {}", alg.curve(), out.display());
    match public {
        Some(public) => {
            println!("key id     {}", public.id_hex());
            println!("public key {}", out.join("public-key.pem").display());
        }
        None => println!("key        made in enclave memory on every start, attested by /dev/nsm"),
    }
    if args.dev {
        println!("dev root   {} (give it to auditors: --trust-root)", out.join("dev-root.pem").display());
    }
    if let Some(ca_dir) = &args.enrollment_ca {
        println!("key        inside the TPM, bound to PCRs {:?}", args.tpm_pcrs);
        println!("CA root    {} (give it to auditors: --trust-root)", ca_dir.join(CA_CERT_FILE).display());
    }
    if args.dev || args.tpm.is_some() {
        println!("document   {}", out.join("attestation.cbor").display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The enrollment CA kept in `dir`, created there (key mode 0600) on first use.
fn enrollment_ca(dir: &Path) -> anyhow::Result<EnrollmentCa> {
    let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    if cert_path.exists() {
        let cert =
            std::fs::read(&cert_path).with_context(|| format!("cannot read {}", cert_path.display()))?;
        let key = std::fs::read_to_string(&key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?;
        return EnrollmentCa::load(&cert, &key).with_context(|| dir.display().to_string());
    }
    let (ca, key_pem) = EnrollmentCa::generate(crate::attest::now_seconds())?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    teelog_store::write_new_private(&key_path, key_pem.as_bytes())
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    std::fs::write(&cert_path, pem_encode("CERTIFICATE", ca.certificate_der()))
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    eprintln!("teelog: created the enrollment CA in {}", dir.display());
    Ok(ca)
}

/// The head a new epoch of `stream` in `store` will link to, for --follow: the newest there that
/// `trust` vouches for (docs/FORMAT.md §5.3), never a line it cannot verify.
fn previous_head(store: &Path, stream: &str, trust: &HeadTrust) -> anyhow::Result<[u8; 32]> {
    let found = trusted_head(&teelog_store::segments(store)?, stream, trust)?;
    let follow = store.display();
    match (found.head, &found.newest_passed_over) {
        (Some((head, _)), passed) => {
            if let Some(newest) = passed {
                eprintln!(
                    "teelog: --follow {follow}: passed over {} batch(es) of stream {stream:?} that no trusted key signed, the newest seq {} of epoch {} signed by key {}",
                    found.passed_over, newest.seq, newest.epoch, newest.key_id
                );
            }
            Ok(head)
        }
        (None, Some(newest)) => bail!(
            "--follow {follow}: stream {stream:?} has {} batch(es) there (the newest: seq {} of epoch {}, signed by key {}), none signed by a key you trust: give the previous signer's public key (--pubkey) or the root its attestation documents chain to (--trust-root)",
            found.passed_over, newest.seq, newest.epoch, newest.key_id
        ),
        (None, None) => bail!("--follow {follow}: no batch of stream {stream:?} there"),
    }
}

/// `IDX=HEX` for --pcr.
fn parse_pcr(text: &str) -> Result<(u64, Vec<u8>), String> {
    let (index, value) = text.split_once('=').ok_or("expected IDX=HEX, e.g. 0=ab12…")?;
    let index: u64 = index.parse().map_err(|_| format!("{index:?} is not a PCR index"))?;
    let value = hex::decode(value).map_err(|e| format!("PCR{index}: {e}"))?;
    if index > 31 || ![32, 48, 64].contains(&value.len()) {
        return Err(format!("PCR{index}: indexes run 0..=31 and values are 32, 48 or 64 bytes"));
    }
    Ok((index, value))
}
