//! Just enough DER to read what webpki does not expose from certificates it has already verified:
//! the subject's common name and the value of an extension by OID. Definite lengths only, every
//! read bounds-checked; anything unexpected is an error, never a panic.

use crate::AttestError;

pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const SET: u8 = 0x31;
pub(crate) const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const OID: u8 = 0x06;
const EXTENSIONS: u8 = 0xa3;

/// The DER encoding of OID 2.5.4.3 (commonName).
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

fn err(why: &str) -> AttestError {
    AttestError::Certificate(format!("malformed DER: {why}"))
}

/// A cursor over a run of DER elements.
#[derive(Clone, Copy)]
pub(crate) struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Der(bytes)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next element: its tag and contents.
    pub(crate) fn any(&mut self) -> Result<(u8, &'a [u8]), AttestError> {
        let [tag, first, rest @ ..] = self.0 else { return Err(err("truncated element")) };
        let (len, rest) = match *first {
            short @ 0..=0x7f => (usize::from(short), rest),
            // Long form, at most four length bytes; DER has no indefinite length (0x80).
            long @ 0x81..=0x84 => {
                let n = usize::from(long & 0x7f);
                let bytes = rest.get(..n).ok_or_else(|| err("truncated length"))?;
                (bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b)), &rest[n..])
            }
            _ => return Err(err("unsupported length")),
        };
        let value = rest.get(..len).ok_or_else(|| err("element longer than its container"))?;
        self.0 = &rest[len..];
        Ok((*tag, value))
    }

    /// The next element, which must have tag `want`.
    pub(crate) fn expect(&mut self, want: u8, what: &str) -> Result<&'a [u8], AttestError> {
        match self.any()? {
            (tag, value) if tag == want => Ok(value),
            (tag, _) => Err(err(&format!("{what}: tag {tag:#04x}, expected {want:#04x}"))),
        }
    }

    /// The next element as a non-negative INTEGER of at most 16 bits.
    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, AttestError> {
        // Minimal two's complement: a leading zero only where the next byte has its top bit set.
        match *self.expect(INTEGER, what)? {
            [b] if b & 0x80 == 0 => Ok(u16::from(b)),
            [0, b] if b & 0x80 != 0 => Ok(u16::from(b)),
            [hi, lo] if hi != 0 && hi & 0x80 == 0 => Ok(u16::from_be_bytes([hi, lo])),
            [0, hi, lo] if hi & 0x80 != 0 => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(err(&format!("{what}: not a minimal integer in 0..65535"))),
        }
    }
}

/// The fields of a certificate's TBSCertificate that follow the version: serial, signature
/// algorithm, issuer, validity, subject, key, and whatever comes after.
fn tbs_fields(cert_der: &[u8]) -> Result<Der<'_>, AttestError> {
    let cert = Der::new(cert_der).expect(SEQUENCE, "certificate")?;
    let mut tbs = Der::new(Der::new(cert).expect(SEQUENCE, "TBSCertificate")?);
    let mut peek = tbs;
    if peek.any()?.0 == 0xa0 {
        tbs = peek; // an explicit version
    }
    Ok(tbs)
}

/// The subject's first common name, as text.
pub(crate) fn subject_common_name(cert_der: &[u8]) -> Result<String, AttestError> {
    let mut tbs = tbs_fields(cert_der)?;
    for what in ["serial", "signature algorithm", "issuer", "validity"] {
        tbs.any().map_err(|_| err(what))?;
    }
    common_names(tbs.expect(SEQUENCE, "subject")?)?
        .into_iter()
        .next()
        .ok_or_else(|| AttestError::Certificate("the certificate's subject has no common name".into()))
}

/// Every common name in a Name (the contents of its SEQUENCE), as text, whichever string type
/// spells it.
pub(crate) fn common_names(name: &[u8]) -> Result<Vec<String>, AttestError> {
    let mut names = Vec::new();
    let mut rdns = Der::new(name);
    while !rdns.is_empty() {
        let mut rdn = Der::new(rdns.expect(SET, "relative distinguished name")?);
        while !rdn.is_empty() {
            let mut attribute = Der::new(rdn.expect(SEQUENCE, "attribute")?);
            if attribute.expect(OID, "attribute type")? == COMMON_NAME {
                let (tag, value) = attribute.any()?;
                names.push(text(tag, value)?);
            }
        }
    }
    Ok(names)
}

/// A directory string's text: UTF8String, PrintableString, IA5String, TeletexString (read as
/// Latin-1), BMPString (UTF-16) or UniversalString (UTF-32).
fn text(tag: u8, value: &[u8]) -> Result<String, AttestError> {
    let not_text = || err("a name is not text");
    match tag {
        0x0c | 0x13 | 0x16 => String::from_utf8(value.to_vec()).map_err(|_| not_text()),
        0x14 => Ok(value.iter().map(|&b| char::from(b)).collect()),
        0x1e if value.len().is_multiple_of(2) => {
            char::decode_utf16(value.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])))
                .collect::<Result<String, _>>()
                .map_err(|_| not_text())
        }
        0x1c if value.len().is_multiple_of(4) => value
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])).ok_or_else(not_text))
            .collect(),
        _ => Err(not_text()),
    }
}

/// The key of a SubjectPublicKeyInfo (the contents of its SEQUENCE): the contents of its BIT
/// STRING, without the unused-bits count.
pub(crate) fn public_key_bits(spki: &[u8]) -> Result<&[u8], AttestError> {
    let mut spki = Der::new(spki);
    spki.expect(SEQUENCE, "key algorithm")?;
    match spki.expect(BIT_STRING, "public key")? {
        [0, key @ ..] if spki.is_empty() => Ok(key),
        _ => Err(err("the public key is not a whole number of bytes, or something follows it")),
    }
}

/// The contents of the extension `oid` (DER encoding of the OID, without tag and length), if
/// the certificate has it.
pub(crate) fn extension<'a>(cert_der: &'a [u8], oid: &[u8]) -> Result<Option<&'a [u8]>, AttestError> {
    let mut tbs = tbs_fields(cert_der)?;
    while !tbs.is_empty() {
        let (tag, value) = tbs.any()?;
        if tag != EXTENSIONS {
            continue;
        }
        let mut extensions = Der::new(Der::new(value).expect(SEQUENCE, "extensions")?);
        while !extensions.is_empty() {
            let mut extension = Der::new(extensions.expect(SEQUENCE, "extension")?);
            let id = extension.expect(OID, "extension id")?;
            let (mut tag, mut value) = extension.any()?;
            if tag == 0x01 {
                (tag, value) = extension.any()?; // the critical flag
            }
            if tag != OCTET_STRING {
                return Err(err("extension value is not an OCTET STRING"));
            }
            if id == oid {
                return Ok(Some(value));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rcgen_certificates_and_refuses_garbage() {
        let mut params = rcgen::CertificateParams::new(vec!["x.test".into()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "Intel SGX TCB Signing");
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![0x04, 0x01, 0x07]));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der();
        assert_eq!(subject_common_name(der).unwrap(), "Intel SGX TCB Signing");
        assert_eq!(extension(der, &[0x2a, 0x03, 0x04]).unwrap(), Some(&[0x04, 0x01, 0x07][..]));
        assert_eq!(extension(der, &[0x2a, 0x03, 0x05]).unwrap(), None);
        for len in 0..der.len() {
            let _ = subject_common_name(&der[..len]);
            let _ = extension(&der[..len], &[0x2a, 0x03, 0x04]);
        }
        assert!(subject_common_name(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert!(Der::new(&[0x02, 0x03, 1, 0, 0]).u16("n").is_err());
        assert!(Der::new(&[0x02, 0x01, 0x80]).u16("n").is_err());
        assert_eq!(Der::new(&[0x02, 0x02, 0x00, 0x80]).u16("n").unwrap(), 128);
    }
}
