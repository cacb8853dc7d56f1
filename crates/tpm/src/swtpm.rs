//! A software TPM for development and tests: swtpm, manufactured like a real TPM (EK and EK
//! certificate from a local "maker" CA, storage root key), listening on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::device::Tcti;
use crate::TpmError;

/// A running, manufactured swtpm; the process is killed when this is dropped.
pub struct Swtpm {
    child: Child,
    /// Where it listens (loopback).
    pub tcti: Tcti,
    /// The local maker CA's issuing and root certificates (PEM), which the EK certificate
    /// chains to: what a real TPM's maker publishes.
    pub ek_ca: PathBuf,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(command: &mut Command, what: &str) -> Result<(), TpmError> {
    let out = command.output().map_err(|e| TpmError::Tool {
        tool: what.into(),
        detail: format!("{e} (apt-get install swtpm swtpm-tools tpm2-tools)"),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TpmError::Tool {
            tool: what.into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Two consecutive free loopback ports: swtpm's command port and, one above, its control port.
fn free_port_pair() -> Option<u16> {
    (0..100).find_map(|_| {
        let first = std::net::TcpListener::bind(("127.0.0.1", 0)).ok()?;
        let port = first.local_addr().ok()?.port();
        std::net::TcpListener::bind(("127.0.0.1", port.checked_add(1)?)).ok().map(|_| port)
    })
}

impl Swtpm {
    /// Manufactures a new TPM in `dir` (which it fills) and starts it.
    pub fn manufacture_and_start(dir: &Path) -> Result<Self, TpmError> {
        let io = |e: std::io::Error| TpmError::Provision(format!("{}: {e}", dir.display()));
        let (state, ca) = (dir.join("state"), dir.join("maker-ca"));
        std::fs::create_dir_all(&state).and_then(|()| std::fs::create_dir_all(&ca)).map_err(io)?;
        let localca = dir.join("localca.conf");
        std::fs::write(
            &localca,
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca.display()
            ),
        )
        .map_err(io)?;
        let setup = dir.join("swtpm_setup.conf");
        std::fs::write(
            &setup,
            format!(
                "create_certs_tool = swtpm_localca\ncreate_certs_tool_config = {}\nactive_pcr_banks = sha256\n",
                localca.display()
            ),
        )
        .map_err(io)?;
        run(
            Command::new("swtpm_setup")
                .args(["--tpm2", "--create-ek-cert", "--create-spk", "--ecc", "--tpmstate"])
                .arg(&state)
                .arg("--config")
                .arg(&setup),
            "swtpm_setup",
        )?;
        let ek_ca = dir.join("maker-ca.pem");
        let issuer = std::fs::read(ca.join("issuercert.pem")).map_err(io)?;
        let root = std::fs::read(ca.join("swtpm-localca-rootca-cert.pem")).map_err(io)?;
        std::fs::write(&ek_ca, [issuer, root].concat()).map_err(io)?;

        let port =
            free_port_pair().ok_or_else(|| TpmError::Provision("no two free loopback ports".into()))?;
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .args(["--server", &format!("type=tcp,port={port},bindaddr=127.0.0.1")])
            .args(["--ctrl", &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| TpmError::Tool { tool: "swtpm".into(), detail: e.to_string() })?;
        // From here on, Drop stops it whatever happens.
        let tpm = Self { child, tcti: Tcti::Swtpm { host: "127.0.0.1".into(), port }, ek_ca };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port + 1)).is_ok() {
                return Ok(tpm);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(TpmError::Provision(format!("swtpm did not start on port {port}")))
    }
}
