//! The transport to a TPM: a character device (`/dev/tpmrm0`, the kernel's resource manager) or
//! swtpm's TCP command port. TCTI strings are the ones tpm2-tools takes, so one setting names the
//! TPM for keygen and for signing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::command::{response_len, MAX_RESPONSE_LEN, RESPONSE_HEADER_LEN};
use crate::TpmError;

/// Where the TPM is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tcti {
    /// A TPM character device, normally the resource manager `/dev/tpmrm0`.
    Device(PathBuf),
    /// swtpm's TCP command port.
    Swtpm {
        /// Host name or address.
        host: String,
        /// The command port (swtpm's default is 2321).
        port: u16,
    },
}

impl Tcti {
    /// `device:PATH`, `device` (for /dev/tpmrm0) or `swtpm:host=HOST,port=PORT` (defaults
    /// localhost and 2321), as for tpm2-tools.
    pub fn parse(text: &str) -> Result<Self, TpmError> {
        let bad = || TpmError::Tcti(text.to_string());
        let (kind, conf) = text.split_once(':').unwrap_or((text, ""));
        match kind {
            "device" => Ok(Self::Device(PathBuf::from(if conf.is_empty() { "/dev/tpmrm0" } else { conf }))),
            "swtpm" => {
                let (mut host, mut port) = ("localhost".to_string(), 2321u16);
                for part in conf.split(',').filter(|p| !p.is_empty()) {
                    match part.split_once('=') {
                        Some(("host", h)) if !h.is_empty() => host = h.to_string(),
                        Some(("port", p)) => port = p.parse().map_err(|_| bad())?,
                        _ => return Err(bad()),
                    }
                }
                Ok(Self::Swtpm { host, port })
            }
            _ => Err(bad()),
        }
    }

    /// The TCTI string tpm2-tools understands.
    pub fn to_tools_string(&self) -> String {
        match self {
            Self::Device(path) => format!("device:{}", path.display()),
            Self::Swtpm { host, port } => format!("swtpm:host={host},port={port}"),
        }
    }
}

/// An open connection: one command at a time, each answered before the next.
pub struct Device {
    tcti: Tcti,
    stream: Box<dyn ReadWrite>,
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// A TPM answers within seconds; a hung one must not hang the signer for ever.
const TIMEOUT: Duration = Duration::from_secs(30);

impl Device {
    /// Opens the device or connects to swtpm; reads and writes on a socket time out after 30
    /// seconds.
    pub fn open(tcti: &Tcti) -> Result<Self, TpmError> {
        let io = |source| TpmError::Io { tcti: tcti.to_tools_string(), source };
        let stream: Box<dyn ReadWrite> = match tcti {
            Tcti::Device(path) => {
                Box::new(std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(io)?)
            }
            Tcti::Swtpm { host, port } => {
                let stream = TcpStream::connect((host.as_str(), *port)).map_err(io)?;
                stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
                stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
                Box::new(stream)
            }
        };
        Ok(Self { tcti: tcti.clone(), stream })
    }

    /// Sends one command and returns the whole response. A device returns the response in one
    /// read; a socket may need several.
    pub fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError> {
        let io = |source| TpmError::Io { tcti: self.tcti.to_tools_string(), source };
        self.stream.write_all(command).map_err(io)?;
        let mut response = vec![0u8; MAX_RESPONSE_LEN];
        let mut have = 0;
        loop {
            let n = self.stream.read(&mut response[have..]).map_err(io)?;
            if n == 0 {
                return Err(TpmError::Malformed("the TPM closed the connection mid-response".into()));
            }
            have += n;
            if have >= RESPONSE_HEADER_LEN {
                let header: [u8; RESPONSE_HEADER_LEN] =
                    response[..RESPONSE_HEADER_LEN].try_into().unwrap_or_default();
                let len = response_len(&header);
                if !(RESPONSE_HEADER_LEN..=MAX_RESPONSE_LEN).contains(&len) {
                    return Err(TpmError::Malformed(format!("a response declares {len} bytes")));
                }
                if have >= len {
                    response.truncate(len);
                    return Ok(response);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcti_strings() {
        assert_eq!(Tcti::parse("device").unwrap(), Tcti::Device("/dev/tpmrm0".into()));
        assert_eq!(Tcti::parse("device:/dev/tpm0").unwrap(), Tcti::Device("/dev/tpm0".into()));
        let swtpm = Tcti::parse("swtpm:host=127.0.0.1,port=2421").unwrap();
        assert_eq!(swtpm, Tcti::Swtpm { host: "127.0.0.1".into(), port: 2421 });
        assert_eq!(Tcti::parse(&swtpm.to_tools_string()).unwrap(), swtpm);
        for bad in ["mssim:port=1", "swtpm:port=x", "swtpm:color=red", ""] {
            assert!(matches!(Tcti::parse(bad), Err(TpmError::Tcti(_))), "{bad}");
        }
    }
}
