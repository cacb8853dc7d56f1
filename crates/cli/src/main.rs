//! `teelog`: sign logs into tamper-evident batches and verify them offline.
#![forbid(unsafe_code)]

mod attest;
mod audit;
mod bench;
mod daemon;
mod gateway;
mod quickstart;
mod sample;
mod ship;
mod sign;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use teelog_identity::{Provider, SoftwareIdentity};

/// Tamper-evident, TEE-signed logs: sign records into chained Merkle batches, verify them offline.
#[derive(Parser)]
#[command(name = "teelog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a signing identity: a software key (private key mode 0600, public key PEM), or
    /// with --dev one bound by a dev attestation document in the Nitro layout.
    Keygen {
        /// Directory to create the identity in.
        #[arg(long)]
        out: PathBuf,
        /// Code measurement to put in every batch header (hex).
        #[arg(long, conflicts_with = "dev")]
        measurement: Option<String>,
        #[arg(long, value_enum, default_value_t = Curve::P256)]
        curve: Curve,
        /// Bind the key with a dev attestation document issued by a new local root
        /// (dev-root.pem); auditors accept it only with --trust-root dev-root.pem.
        #[arg(long)]
        dev: bool,
        /// A PCR of the dev document, IDX=HEX (32, 48 or 64 bytes); repeat for several.
        /// Default: PCR0..2 derived from their index. The measurement is PCR0.
        #[arg(long, requires = "dev", value_parser = parse_pcr)]
        pcr: Vec<(u64, Vec<u8>)>,
        /// A restart: attest, in the document's nonce, the newest head of --stream in this
        /// store, which the new identity's first batch will link to.
        #[arg(long, requires = "dev")]
        follow: Option<PathBuf>,
        #[arg(long, default_value = "default", requires = "follow")]
        stream: String,
    },
    /// Read NDJSON records on stdin and write signed batches, one per line.
    Sign(sign::SignArgs),
    /// Run the shipper daemon: receive records (OTLP, stdin), sign them in batches into a
    /// durable spool, deliver the batches to sinks.
    Ship(ship::ShipArgs),
    /// Run the gateway: receive signed batches from shippers (relay, HTTP), verify each one, and
    /// store it, flagged signature_valid true or false, in Loki and/or the embedded store.
    Gateway(gateway::GatewayArgs),
    /// Verify signed batches; exit 0 if all verify, 1 on any finding, 2 on errors.
    Verify(verify::VerifyArgs),
    /// Read teelog streams back from Grafana Loki and verify them like `teelog verify`; exit 0
    /// if all verify, 1 on any finding, 2 on errors.
    Audit(audit::AuditArgs),
    /// Attestation documents: verify what binds a signing key to measured code.
    Attest {
        #[command(subcommand)]
        command: attest::AttestCommand,
    },
    /// Show the whole job on a local store: keygen, sign, verify, tamper, verify again.
    Quickstart {
        /// Working directory (recreated if it holds an earlier quickstart).
        #[arg(long, default_value = "teelog-quickstart")]
        dir: PathBuf,
    },
    /// Measure end-to-end sign and verify throughput against SHA-256 over the same records.
    Bench(bench::BenchArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Curve {
    P256,
    P384,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen { out, measurement, curve, dev, pcr, follow, stream } => {
            let provider = if dev {
                let pcrs = if pcr.is_empty() {
                    teelog_attest::dev::default_pcrs()
                } else {
                    pcr.into_iter().collect()
                };
                follow
                    .as_deref()
                    .map(|store| previous_head(store, &stream))
                    .transpose()
                    .map(|previous_head| Provider::Dev { pcrs, previous_head })
            } else {
                Ok(Provider::Software { measurement: measurement.as_deref() })
            };
            provider.and_then(|provider| keygen(&out, provider, curve))
        }
        Command::Sign(args) => sign::run(&args).map(|_| ExitCode::SUCCESS),
        Command::Ship(args) => ship::run(&args),
        Command::Gateway(args) => gateway::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Audit(args) => audit::run(&args),
        Command::Attest { command } => attest::run(&command),
        Command::Quickstart { dir } => quickstart::run(&dir),
        Command::Bench(args) => bench::run(&args),
    };
    bench::report_resources();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("teelog: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn keygen(out: &std::path::Path, provider: Provider<'_>, curve: Curve) -> anyhow::Result<ExitCode> {
    let alg = match curve {
        Curve::P256 => teelog_core::SigAlg::Es256,
        Curve::P384 => teelog_core::SigAlg::Es384,
    };
    let dev = matches!(provider, Provider::Dev { .. });
    let public = SoftwareIdentity::create(out, alg, provider)?;
    println!("created {} identity in {}", alg.curve(), out.display());
    println!("key id     {}", public.id_hex());
    println!("public key {}", out.join("public-key.pem").display());
    if dev {
        println!("dev root   {} (give it to auditors: --trust-root)", out.join("dev-root.pem").display());
        println!("document   {}", out.join("attestation.cbor").display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The head a new epoch of `stream` in `store` will link to, for --follow.
fn previous_head(store: &std::path::Path, stream: &str) -> anyhow::Result<[u8; 32]> {
    let Some(head) = teelog_ship::stream_head(store, stream)? else {
        anyhow::bail!("--follow {}: no batch of stream {stream:?} there", store.display());
    };
    Ok(<[u8; 32]>::try_from(hex::decode(&head)?.as_slice())?)
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
