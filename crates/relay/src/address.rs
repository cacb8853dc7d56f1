//! Where a relay client dials and a gateway listens: `host:port` (TCP, with or without TLS) or
//! `vsock://CID:PORT` (AF_VSOCK, between a virtual machine or enclave and its host; a Nitro
//! enclave reaches its parent instance at CID 3). Parsing only: the sockets are the caller's.

use std::fmt;
use std::str::FromStr;

/// How a vsock address is written.
pub const VSOCK_SCHEME: &str = "vsock://";
/// `VMADDR_CID_ANY`: a listener on it takes connections to every CID of this machine. Written
/// `ANY`.
pub const CID_ANY: u32 = u32::MAX;
/// `VMADDR_PORT_ANY`: a port the kernel picks, which no client could know; refused.
const PORT_ANY: u32 = u32::MAX;

/// A relay address as a client dials it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayAddress {
    /// `host:port`, resolved when dialled (an IPv6 address in brackets).
    Tcp(String),
    /// `vsock://CID:PORT`; never [`CID_ANY`].
    Vsock(VsockAddress),
}

/// An AF_VSOCK address: a context ID (one virtual machine or enclave, or this machine) and a
/// port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VsockAddress {
    /// The context ID; [`CID_ANY`] only for a listener.
    pub cid: u32,
    /// The port.
    pub port: u32,
}

/// An address that cannot be used; names it and says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address {address:?}: {why}")]
pub struct AddressError {
    /// The address as given.
    pub address: String,
    /// What is wrong with it, and what to write instead.
    pub why: String,
}

fn refuse(address: &str, why: impl Into<String>) -> AddressError {
    AddressError { address: address.to_string(), why: why.into() }
}

impl RelayAddress {
    /// The address a relay client dials: `host:port` or `vsock://CID:PORT` with a numeric CID.
    pub fn parse(address: &str) -> Result<Self, AddressError> {
        if address.starts_with(VSOCK_SCHEME) {
            let vsock = VsockAddress::parse(address)?;
            if vsock.cid == CID_ANY {
                return Err(refuse(
                    address,
                    "ANY is for a listener; a client dials a CID (3: a Nitro enclave's parent, 2: the \
                     host of a virtual machine, 1: this machine)",
                ));
            }
            return Ok(Self::Vsock(vsock));
        }
        if let Some((scheme, _)) = address.split_once("://") {
            return Err(refuse(address, format!("scheme {scheme:?}; give host:port or vsock://CID:PORT")));
        }
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(refuse(address, "give host:port or vsock://CID:PORT"));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(refuse(address, "give host:port or vsock://CID:PORT"));
        }
        let bracketed = host.starts_with('[') && host.ends_with(']');
        if host.contains(':') && !bracketed {
            // `vsock:3:7400` would otherwise be looked up as a host name.
            return Err(refuse(address, "give host:port (an IPv6 address in brackets) or vsock://CID:PORT"));
        }
        Ok(Self::Tcp(address.to_string()))
    }

    /// The host a TLS certificate is checked against: the host of `host:port`, without brackets;
    /// none for vsock, which has no names.
    pub fn host(&self) -> Option<&str> {
        match self {
            Self::Tcp(address) => {
                let host = address.rsplit_once(':').map_or(address.as_str(), |(host, _)| host);
                Some(host.trim_start_matches('[').trim_end_matches(']'))
            }
            Self::Vsock(_) => None,
        }
    }
}

impl fmt::Display for RelayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(address) => f.write_str(address),
            Self::Vsock(vsock) => vsock.fmt(f),
        }
    }
}

impl VsockAddress {
    /// `vsock://CID:PORT`, the CID a decimal number or `ANY` (a listener on every CID), the
    /// port a decimal number.
    pub fn parse(address: &str) -> Result<Self, AddressError> {
        let Some(rest) = address.strip_prefix(VSOCK_SCHEME) else {
            return Err(refuse(address, "give vsock://CID:PORT"));
        };
        let Some((cid, port)) = rest.split_once(':') else {
            return Err(refuse(address, "give vsock://CID:PORT"));
        };
        let cid = match cid {
            "ANY" => CID_ANY,
            digits => number(digits).ok_or_else(|| {
                refuse(address, format!("the CID {digits:?} is not a number from 0 to {} nor ANY", u32::MAX))
            })?,
        };
        let port = number(port).filter(|&port| port != PORT_ANY).ok_or_else(|| {
            refuse(address, format!("the port {port:?} is not a number from 0 to {}", PORT_ANY - 1))
        })?;
        Ok(Self { cid, port })
    }
}

/// A decimal u32 written with digits only (no sign, no spaces).
fn number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl FromStr for VsockAddress {
    type Err = AddressError;

    fn from_str(address: &str) -> Result<Self, AddressError> {
        Self::parse(address)
    }
}

impl fmt::Display for VsockAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cid {
            CID_ANY => write!(f, "{VSOCK_SCHEME}ANY:{}", self.port),
            cid => write!(f, "{VSOCK_SCHEME}{cid}:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_dial_tcp_or_a_vsock_cid() {
        assert_eq!(RelayAddress::parse("gw.example:7400"), Ok(RelayAddress::Tcp("gw.example:7400".into())));
        assert_eq!(RelayAddress::parse("[::1]:7400").unwrap().host(), Some("::1"));
        assert_eq!(RelayAddress::parse("10.0.0.1:7400").unwrap().host(), Some("10.0.0.1"));
        let parent = RelayAddress::parse("vsock://3:7400").unwrap();
        assert_eq!(parent, RelayAddress::Vsock(VsockAddress { cid: 3, port: 7400 }));
        assert_eq!(parent.host(), None);
        assert_eq!(parent.to_string(), "vsock://3:7400");
        assert_eq!(
            RelayAddress::parse("vsock://4294967294:4294967294"),
            Ok(RelayAddress::Vsock(VsockAddress { cid: u32::MAX - 1, port: u32::MAX - 1 }))
        );
    }

    #[test]
    fn errors_name_the_address_and_what_to_write() {
        for (bad, says) in [
            ("gateway", "give host:port or vsock://CID:PORT"),
            (":7400", "give host:port"),
            ("gw:70000", "give host:port"),
            ("gw:", "give host:port"),
            ("vsock:3:7400", "an IPv6 address in brackets"),
            ("::1:7400", "an IPv6 address in brackets"),
            ("tcp://gw:7400", "scheme \"tcp\""),
            ("VSOCK://3:7400", "scheme \"VSOCK\""),
            ("vsock://3", "give vsock://CID:PORT"),
            ("vsock://", "give vsock://CID:PORT"),
            ("vsock://ANY:7400", "ANY is for a listener"),
            ("vsock://any:7400", "the CID \"any\" is not a number"),
            ("vsock://-1:7400", "the CID \"-1\""),
            ("vsock://+3:7400", "the CID \"+3\""),
            ("vsock://4294967296:7400", "the CID \"4294967296\""),
            ("vsock://3:", "the port \"\""),
            ("vsock://3:7400:1", "the port \"7400:1\""),
            ("vsock://3: 7400", "the port \" 7400\""),
            ("vsock://3:4294967295", "the port \"4294967295\""),
            ("vsock://3:99999999999999999999", "the port"),
        ] {
            let err = RelayAddress::parse(bad).unwrap_err();
            assert_eq!(err.address, bad);
            let text = err.to_string();
            assert!(text.starts_with(&format!("address {bad:?}: ")) && text.contains(says), "{bad}: {text}");
        }
    }

    #[test]
    fn listeners_take_any_cid() {
        let any: VsockAddress = "vsock://ANY:7400".parse().unwrap();
        assert_eq!(any, VsockAddress { cid: CID_ANY, port: 7400 });
        assert_eq!(any.to_string(), "vsock://ANY:7400");
        assert_eq!("vsock://1:5".parse(), Ok(VsockAddress { cid: 1, port: 5 }));
        let err = "127.0.0.1:7400".parse::<VsockAddress>().unwrap_err();
        assert!(err.to_string().contains("give vsock://CID:PORT"), "{err}");
    }
}
