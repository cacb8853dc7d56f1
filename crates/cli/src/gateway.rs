//! `teelog gateway`: verify batches from shippers before they are stored in Loki and/or the
//! embedded store (docs/GATEWAY.md).

use std::path::PathBuf;
use std::process::ExitCode;

use teelog_core::gate::Gate;
use teelog_core::verify::InstanceRules;
use teelog_core::VerifyOptions;
use teelog_gateway::config::GatewayConfig;
use teelog_trust::{Trust, TrustFiles};

#[derive(clap::Args)]
pub struct GatewayArgs {
    /// TOML configuration (see docs/GATEWAY.md).
    #[arg(long)]
    pub config: PathBuf,
    /// The daemon's own log level: error, warn, info, debug. Findings are logged at warn.
    #[arg(long, default_value = "info")]
    pub log_level: tracing::Level,
    /// Listen beyond loopback although clients need neither a bearer token nor a client
    /// certificate (anyone who can reach the gateway can then send to it).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Print the gateway's checkpoint public key (PEM; made first if the configuration's
    /// `[checkpoint]` has none yet) and exit: what auditors pass as `--checkpoint-key`.
    #[arg(long)]
    pub print_checkpoint_key: bool,
}

pub fn run(args: &GatewayArgs) -> anyhow::Result<ExitCode> {
    let config = GatewayConfig::load(&args.config)?;
    if args.print_checkpoint_key {
        let Some(key) = teelog_gateway::checkpoint_key(&config)? else {
            anyhow::bail!(
                "{}: no [checkpoint] section, so the gateway signs no checkpoints",
                args.config.display()
            );
        };
        print!("{}", key.public().to_pem());
        return Ok(ExitCode::SUCCESS);
    }
    config
        .check_auth(args.insecure_no_auth)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let v = &config.verify;
    let files = TrustFiles {
        pubkeys: v.pubkeys.clone(),
        trust_roots: v.trust_roots.clone(),
        policy: v.policy.clone(),
        allow_debug: v.allow_debug,
    };
    let trust = Trust::load(&files, crate::attest::now_seconds())?;
    crate::daemon::run("teelog-gateway", args.log_level, |shutdown| async move {
        let gate = move |continuity| {
            let options = VerifyOptions {
                trusted_keys: trust.keys,
                instances: InstanceRules::of_policy(trust.policy.as_ref()),
                policy: trust.policy,
                ..VerifyOptions::default()
            };
            Gate::new(options, continuity).with_attestation(Box::new(trust.attestation))
        };
        anyhow::Ok(teelog_gateway::run(config, gate, shutdown).await?)
    })?;
    Ok(ExitCode::SUCCESS)
}
