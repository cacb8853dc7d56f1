//! `teelog`: sign logs into tamper-evident batches and verify them offline.
#![forbid(unsafe_code)]

mod attest;
mod bench;
mod quickstart;
mod sample;
mod sign;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Tamper-evident, TEE-signed logs: sign records into chained Merkle batches, verify them offline.
#[derive(Parser)]
#[command(name = "teelog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a software signing identity (private key mode 0600, public key PEM).
    Keygen {
        /// Directory to create the identity in.
        #[arg(long)]
        out: PathBuf,
        /// Code measurement to put in every batch header (hex).
        #[arg(long)]
        measurement: Option<String>,
        #[arg(long, value_enum, default_value_t = Curve::P256)]
        curve: Curve,
    },
    /// Read NDJSON records on stdin and write signed batches, one per line.
    Sign(sign::SignArgs),
    /// Verify signed batches; exit 0 if all verify, 1 on any finding, 2 on errors.
    Verify(verify::VerifyArgs),
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
        Command::Keygen { out, measurement, curve } => keygen(&out, measurement.as_deref(), curve),
        Command::Sign(args) => sign::run(&args).map(|_| ExitCode::SUCCESS),
        Command::Verify(args) => verify::run(&args),
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

fn keygen(out: &std::path::Path, measurement: Option<&str>, curve: Curve) -> anyhow::Result<ExitCode> {
    let alg = match curve {
        Curve::P256 => teelog_core::SigAlg::Es256,
        Curve::P384 => teelog_core::SigAlg::Es384,
    };
    let public = teelog_identity::SoftwareIdentity::create(out, alg, measurement)?;
    println!("created {} identity in {}", alg.curve(), out.display());
    println!("key id     {}", public.id_hex());
    println!("public key {}", out.join("public-key.pem").display());
    Ok(ExitCode::SUCCESS)
}
