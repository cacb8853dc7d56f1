//! `teelog`: sign logs into tamper-evident batches and verify them offline.
#![forbid(unsafe_code)]

mod attest;
mod audit;
mod daemon;
mod evidence;
mod gateway;
mod keygen;
mod quickstart;
mod ship;
mod sign;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tamper-evident, TEE-signed logs: sign records into chained Merkle batches, verify them offline.
#[derive(Parser)]
#[command(name = "teelog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a signing identity: a software key (private key mode 0600, public key PEM); with
    /// --dev one bound by a dev attestation document in the Nitro layout; with --tpm a key that
    /// lives in a TPM 2.0, bound to its PCRs.
    Keygen(keygen::KeygenArgs),
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
    /// Evidence for chosen records: export a bundle that proves them without the rest of the
    /// log, and check one offline.
    Evidence {
        #[command(subcommand)]
        command: evidence::EvidenceCommand,
    },
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(args) => keygen::run(&args),
        Command::Sign(args) => sign::run(&args),
        Command::Ship(args) => ship::run(&args),
        Command::Gateway(args) => gateway::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Audit(args) => audit::run(&args),
        Command::Evidence { command } => evidence::run(&command),
        Command::Attest { command } => attest::run(&command),
        Command::Quickstart { dir } => quickstart::run(&dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Errors quote input (file names, fields): nothing in them may pass for output.
            eprintln!("teelog: error: {}", teelog_core::display::escape_controls(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}
