//! A test PKI for the TLS listeners (gateway, OTLP receivers), and a client for them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // not every test uses all of it

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A test CA with a certificate for a server (`localhost`) and one for a client, as PEM files.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
}

pub fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // What OpenSSL's strict verification (Python's default) asks of a CA and its leaves.
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // rcgen gives every certificate one default name: a leaf named like its CA looks self-signed.
    ca.distinguished_name.push(DnType::CommonName, "teelog test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let issue = |names: &[&str]| {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.use_authority_key_identifier_extension = true;
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (
            write(&format!("{}.pem", names[0]), cert.pem()),
            write(&format!("{}.key", names[0]), key.serialize_pem()),
        )
    };
    let (server_cert, server_key) = issue(&["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = issue(&["shipper"]);
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server_cert,
        server_key,
        client_cert,
        client_key,
        ca_der: ca_cert.der().clone(),
    }
}

/// An HTTPS request to a server of `pki`, with the client's certificate or without one.
pub fn https(addr: SocketAddr, pki: &Pki, client_cert: bool, request: &[u8]) -> std::io::Result<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if client_cert {
        let certs = vec![CertificateDer::from_pem_file(&pki.client_cert).unwrap()];
        builder.with_client_auth_cert(certs, PrivateKeyDer::from_pem_file(&pki.client_key).unwrap()).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let socket = TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(connection, socket);
    tls.write_all(request)?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer).to_string())
}
