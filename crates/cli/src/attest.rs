//! `teelog attest verify`: check one attestation document offline and show what it proves.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use teelog_attest::nitro::{NitroDocument, NitroVerified};
use teelog_attest::{decode_document, AttestError, TrustRoot};
use teelog_core::timestamp::{format_rfc3339, parse_rfc3339};
use teelog_core::PublicKey;

#[derive(clap::Subcommand, Clone)]
pub enum AttestCommand {
    /// Verify an attestation document (raw CBOR, base64 or hex); exit 0 verified, 1 rejected,
    /// 2 on usage or I/O errors.
    Verify(AttestVerifyArgs),
}

#[derive(clap::Args, Clone)]
pub struct AttestVerifyArgs {
    /// The document (`-` for stdin).
    pub document: PathBuf,
    /// Also trust this root certificate (PEM or DER), e.g. a dev root; the AWS Nitro root G1 is
    /// always trusted, pinned by its SHA-256.
    #[arg(long)]
    pub trust_root: Vec<PathBuf>,
    /// Check the chain at this time (RFC 3339) instead of the document's own timestamp.
    #[arg(long, default_value = "doc")]
    pub at: String,
    /// Accept debug-mode enclaves (PCR0, PCR1 and PCR2 all zero).
    #[arg(long)]
    pub allow_debug: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: &AttestCommand) -> anyhow::Result<ExitCode> {
    let AttestCommand::Verify(args) = command;
    let raw = if args.document.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf).context("cannot read stdin")?;
        buf
    } else {
        std::fs::read(&args.document).with_context(|| format!("cannot read {}", args.document.display()))?
    };
    let roots = trust_roots(&args.trust_root)?;
    let at = match args.at.as_str() {
        "doc" => None,
        text => {
            let nanos = parse_rfc3339(text).context("--at")?;
            Some(u64::try_from(nanos.div_euclid(1_000_000_000)).context("--at: before 1970")?)
        }
    };
    let outcome = decode_document(&raw)
        .and_then(|bytes| NitroDocument::parse(&bytes))
        .and_then(|doc| doc.verify(&roots, at, args.allow_debug));
    let report = Report::new(&outcome);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.print();
    }
    Ok(if outcome.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The AWS root, plus the roots given with --trust-root.
pub fn trust_roots(paths: &[PathBuf]) -> anyhow::Result<Vec<TrustRoot>> {
    let mut roots = vec![TrustRoot::aws_nitro()];
    for path in paths {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        roots.push(TrustRoot::from_pem_or_der(&bytes).with_context(|| path.display().to_string())?);
    }
    Ok(roots)
}

#[derive(Serialize, Default)]
struct Report {
    verified: bool,
    error: Option<String>,
    platform: Option<&'static str>,
    module_id: Option<String>,
    timestamp: Option<String>,
    checked_at: Option<String>,
    debug_mode: Option<bool>,
    pcrs: BTreeMap<u64, String>,
    /// Key id of the teelog signing key bound in `public_key`, when it holds an EC SPKI.
    bound_key_id: Option<String>,
    public_key: Option<String>,
    user_data: Option<String>,
    nonce: Option<String>,
    root_sha256: Option<String>,
}

impl Report {
    fn new(outcome: &Result<NitroVerified, AttestError>) -> Self {
        match outcome {
            Err(e) => Report { error: Some(e.to_string()), ..Report::default() },
            Ok(v) => {
                let d = &v.document;
                let nanos = |n: u64, per: i64| {
                    format_rfc3339(i64::try_from(n).unwrap_or(i64::MAX).saturating_mul(per))
                };
                Report {
                    verified: true,
                    error: None,
                    platform: Some(if v.dev { "dev (not hardware-backed)" } else { "aws-nitro" }),
                    module_id: Some(d.module_id.clone()),
                    timestamp: Some(nanos(d.timestamp_ms, 1_000_000)),
                    checked_at: Some(nanos(v.checked_at, 1_000_000_000)),
                    debug_mode: Some(v.debug_mode),
                    pcrs: d.pcrs.iter().map(|(i, v)| (*i, hex::encode(v))).collect(),
                    bound_key_id: d
                        .public_key
                        .as_deref()
                        .and_then(|k| PublicKey::from_spki_der(k).ok())
                        .map(|k| k.id_hex()),
                    public_key: d.public_key.as_deref().map(hex::encode),
                    user_data: d.user_data.as_deref().map(hex::encode),
                    nonce: d.nonce.as_deref().map(hex::encode),
                    root_sha256: Some(hex::encode(v.root_sha256)),
                }
            }
        }
    }

    fn print(&self) {
        if let Some(error) = &self.error {
            println!("REJECTED: {error}");
            return;
        }
        let field = |name: &str, value: &Option<String>| {
            if let Some(value) = value {
                println!("{name:<13} {value}");
            }
        };
        println!("VERIFIED");
        field("platform", &self.platform.map(str::to_string));
        field("module", &self.module_id);
        field("timestamp", &self.timestamp);
        field("checked at", &self.checked_at);
        field("root sha256", &self.root_sha256);
        for (index, value) in &self.pcrs {
            println!("{:<13} {value}", format!("PCR{index}"));
        }
        match (&self.bound_key_id, &self.public_key) {
            (Some(id), _) => println!("{:<13} teelog key {id} (public_key)", "bound key"),
            (None, Some(raw)) => println!("{:<13} {raw} (not an EC SubjectPublicKeyInfo)", "public_key"),
            (None, None) => println!("{:<13} none", "bound key"),
        }
        field("user_data", &self.user_data);
        field("nonce", &self.nonce);
        if self.debug_mode == Some(true) {
            println!("WARNING: debug-mode enclave (PCR0/1/2 all zero), accepted because of --allow-debug");
        }
        if self.platform.is_some_and(|p| p.starts_with("dev")) {
            println!("WARNING: this chain ends at a dev root given with --trust-root, not at AWS");
        }
    }
}
