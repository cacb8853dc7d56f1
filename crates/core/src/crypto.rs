//! ECDSA keys and signatures: P-256 with SHA-256 (`ES256`, the default) and P-384 with SHA-384
//! (`ES384`), signatures in IEEE P1363 form (r || s, fixed width), public keys as DER
//! SubjectPublicKeyInfo with a named curve and an uncompressed point.

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};

use crate::merkle::{sha256, Digest};

/// The signature algorithms of batch headers: ECDSA with the curve's own hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigAlg {
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
}

impl SigAlg {
    /// Its JOSE name, as headers carry it: `ES256` or `ES384`.
    pub fn name(self) -> &'static str {
        match self {
            SigAlg::Es256 => "ES256",
            SigAlg::Es384 => "ES384",
        }
    }

    /// The algorithm a JOSE name stands for; `None` for any other name (case matters).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(SigAlg::Es256),
            "ES384" => Some(SigAlg::Es384),
            _ => None,
        }
    }

    /// Its curve's name, for messages: `P-256` or `P-384`.
    pub fn curve(self) -> &'static str {
        match self {
            SigAlg::Es256 => "P-256",
            SigAlg::Es384 => "P-384",
        }
    }

    /// Length of an r || s signature.
    pub fn signature_len(self) -> usize {
        match self {
            SigAlg::Es256 => 64,
            SigAlg::Es384 => 96,
        }
    }

    fn spki_prefix(self) -> &'static [u8] {
        match self {
            // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (65 bytes) }
            SigAlg::Es256 => &[
                0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
                0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
            ],
            // SEQUENCE { SEQUENCE { id-ecPublicKey, secp384r1 }, BIT STRING (97 bytes) }
            SigAlg::Es384 => &[
                0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05,
                0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
            ],
        }
    }

    fn point_len(self) -> usize {
        self.signature_len() + 1
    }

    fn fixed(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            SigAlg::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            SigAlg::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
        }
    }

    fn signing(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            SigAlg::Es256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            SigAlg::Es384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        }
    }
}

impl fmt::Display for SigAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key could not be read, made or used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The text holds no PEM block of the label named (`PUBLIC KEY`, `PRIVATE KEY`).
    #[error("no {0} PEM block found")]
    NoPem(&'static str),
    /// A PEM block that does not decode.
    #[error("unreadable PEM: {0}")]
    BadPem(String),
    /// A public key of another algorithm, curve or encoding than teelog verifies with.
    #[error("unsupported public key: expected an EC P-256 or P-384 SubjectPublicKeyInfo with a named curve and an uncompressed point")]
    UnsupportedPublicKey,
    /// A private key that is not PKCS#8 EC P-256 or P-384, or whose public key does not match.
    #[error("private key rejected: {0} (expected PKCS#8 EC P-256 or P-384)")]
    BadPrivateKey(String),
    /// No new key could be generated (the system's random source failed).
    #[error("key generation failed: the system's random source failed")]
    GenerationFailed,
    /// The signature could not be made (the system's random source failed).
    #[error("signing failed: the system's random source failed")]
    SigningFailed,
}

/// A verification key and its identifier, the SHA-256 of its SubjectPublicKeyInfo DER.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    alg: SigAlg,
    spki: Vec<u8>,
    id: Digest,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} {})", self.alg.curve(), self.id_hex())
    }
}

impl PublicKey {
    /// A key from its SubjectPublicKeyInfo DER: EC P-256 or P-384, named curve, uncompressed
    /// point; anything else is [`KeyError::UnsupportedPublicKey`]. The point is checked to be on
    /// the curve only when a signature is verified.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        for alg in [SigAlg::Es256, SigAlg::Es384] {
            let prefix = alg.spki_prefix();
            if der.len() == prefix.len() + alg.point_len()
                && der.starts_with(prefix)
                && der[prefix.len()] == 0x04
            {
                return Ok(Self { alg, spki: der.to_vec(), id: sha256(der) });
            }
        }
        Err(KeyError::UnsupportedPublicKey)
    }

    /// A key from the first `PUBLIC KEY` PEM block of `pem`.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => KeyError::NoPem("PUBLIC KEY"),
            other => KeyError::BadPem(other.to_string()),
        })?;
        Self::from_spki_der(der.as_ref())
    }

    /// A key from its uncompressed point (0x04 || x || y), as TPMs and other devices give it.
    pub fn from_uncompressed_point(alg: SigAlg, point: &[u8]) -> Result<Self, KeyError> {
        Self::from_spki_der(&[alg.spki_prefix(), point].concat())
    }

    fn from_point(alg: SigAlg, point: &[u8]) -> Self {
        let mut spki = alg.spki_prefix().to_vec();
        spki.extend_from_slice(point);
        let id = sha256(&spki);
        Self { alg, spki, id }
    }

    /// The algorithm its signatures use.
    pub fn alg(&self) -> SigAlg {
        self.alg
    }

    /// Its SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// Its key id: SHA-256 of the SubjectPublicKeyInfo DER, as headers name it.
    pub fn id(&self) -> &Digest {
        &self.id
    }

    /// [`PublicKey::id`] in lower-case hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    fn point(&self) -> &[u8] {
        &self.spki[self.alg.spki_prefix().len()..]
    }

    /// As a `PUBLIC KEY` PEM block, as `public-key.pem` holds it.
    pub fn to_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.spki)
    }

    /// Verifies an r || s signature over `message`, hashed with the key's own hash.
    pub fn verify_p1363(&self, message: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(self.alg.fixed(), self.point()).verify(message, sig).is_ok()
    }

    /// Verifies a signature over SHA-256 of `message`, whatever the curve, in P1363 or DER form:
    /// what .NET's `ECDsa.SignHash(SHA256(payload))` produces (the seed format).
    pub fn verify_sha256_any_encoding(&self, message: &[u8], sig: &[u8]) -> bool {
        let (fixed, der): (Option<&signature::EcdsaVerificationAlgorithm>, _) = match self.alg {
            SigAlg::Es256 => (Some(&signature::ECDSA_P256_SHA256_FIXED), &signature::ECDSA_P256_SHA256_ASN1),
            SigAlg::Es384 => (None, &signature::ECDSA_P384_SHA256_ASN1),
        };
        let point = self.point();
        // A 64- or 96-byte signature may be r || s, or (rarely) DER of that length: try both.
        let as_fixed = sig.len() == self.alg.signature_len()
            && match fixed {
                Some(fixed) => UnparsedPublicKey::new(fixed, point).verify(message, sig).is_ok(),
                None => UnparsedPublicKey::new(der, point).verify(message, &p1363_to_der(sig)).is_ok(),
            };
        as_fixed || UnparsedPublicKey::new(der, point).verify(message, sig).is_ok()
    }
}

/// The order n of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] = hex_literal(b"ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
/// The order n of the P-384 group, big-endian.
const P384_ORDER: [u8; 48] = hex_literal(
    b"ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
);

const fn hex_literal<const N: usize>(text: &[u8]) -> [u8; N] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            _ => c - b'a' + 10,
        }
    }
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = nibble(text[2 * i]) << 4 | nibble(text[2 * i + 1]);
        i += 1;
    }
    out
}

/// The one low-S form of an r || s ECDSA signature: `s` replaced by `n - s` when it is above
/// `n / 2`. Both forms verify, so a copy of a batch with the other one is the same batch
/// (docs/FORMAT.md §8). Anything that is not a signature of `alg`'s width comes back unchanged.
pub fn normalize_signature(alg: SigAlg, sig: &[u8]) -> Vec<u8> {
    match mirror_signature(alg, sig) {
        // s > n / 2 exactly when s > n - s.
        Some(mirror) if sig[sig.len() / 2..] > mirror[sig.len() / 2..] => mirror,
        _ => sig.to_vec(),
    }
}

/// The other r || s signature that verifies wherever `sig` does: (r, n - s); `None` if `sig` is
/// not one of `alg`'s width.
pub fn mirror_signature(alg: SigAlg, sig: &[u8]) -> Option<Vec<u8>> {
    let order: &[u8] = match alg {
        SigAlg::Es256 => &P256_ORDER,
        SigAlg::Es384 => &P384_ORDER,
    };
    let width = order.len();
    if sig.len() != 2 * width {
        return None;
    }
    let n_minus_s = order_minus(order, &sig[width..])?;
    Some([&sig[..width], &n_minus_s[..]].concat())
}

/// `order - s` for big-endian numbers of one width, or `None` when `s` exceeds `order`.
fn order_minus(order: &[u8], s: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; order.len()];
    let mut borrow = 0i16;
    for i in (0..order.len()).rev() {
        let d = i16::from(order[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = d.rem_euclid(256) as u8;
    }
    (borrow == 0).then_some(out)
}

/// An r || s signature from the DER `SEQUENCE { INTEGER r, INTEGER s }` of a curve whose
/// scalars are `width` bytes, or `None` if it is not one.
pub fn der_to_p1363(der: &[u8], width: usize) -> Option<Vec<u8>> {
    fn integer(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
        let (&tag, rest) = bytes.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let len = usize::from(len);
        if tag != 0x02 || len > 0x7f || rest.len() < len {
            return None;
        }
        Some(rest.split_at(len))
    }
    let (&tag, rest) = der.split_first()?;
    let (&len, body) = rest.split_first()?;
    let body = match len {
        0x81 => body.split_first().filter(|(l, b)| usize::from(**l) == b.len()).map(|(_, b)| b)?,
        l if l < 0x80 && usize::from(l) == body.len() => body,
        _ => return None,
    };
    if tag != 0x30 {
        return None;
    }
    let (r, rest) = integer(body)?;
    let (s, rest) = integer(rest)?;
    if !rest.is_empty() {
        return None;
    }
    let mut out = vec![0u8; 2 * width];
    let (r_slot, s_slot) = out.split_at_mut(width);
    for (value, slot) in [(r, r_slot), (s, s_slot)] {
        let value = &value[value.iter().position(|&b| b != 0).unwrap_or(value.len())..];
        if value.len() > width {
            return None;
        }
        slot[width - value.len()..].copy_from_slice(value);
    }
    Some(out)
}

/// Re-encodes r || s as the DER `SEQUENCE { INTEGER r, INTEGER s }`.
pub fn p1363_to_der(sig: &[u8]) -> Vec<u8> {
    let (r, s) = sig.split_at(sig.len() / 2);
    der_tlv(0x30, &[der_unsigned_integer(r), der_unsigned_integer(s)].concat())
}

/// A DER tag, length and content (content under 64 KiB, which is all teelog builds).
pub fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend_from_slice(&[0x81, len as u8]),
        _ => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// The DER INTEGER of a big-endian unsigned number: leading zeros dropped, one added when the
/// top bit is set.
pub fn der_unsigned_integer(v: &[u8]) -> Vec<u8> {
    let v = &v[v.iter().position(|&b| b != 0).unwrap_or(v.len())..];
    let pad = v.first().is_none_or(|&b| b & 0x80 != 0);
    der_tlv(0x02, &[&[0u8][..usize::from(pad)], v].concat())
}

/// A software ECDSA key, held in process memory.
pub struct SoftwareKey {
    pair: EcdsaKeyPair,
    public: PublicKey,
    rng: SystemRandom,
}

impl SoftwareKey {
    /// A new key as PKCS#8 DER.
    pub fn generate_pkcs8(alg: SigAlg) -> Result<Vec<u8>, KeyError> {
        EcdsaKeyPair::generate_pkcs8(alg.signing(), &SystemRandom::new())
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| KeyError::GenerationFailed)
    }

    /// A signing key from PKCS#8 DER of `alg`'s curve.
    pub fn from_pkcs8(alg: SigAlg, der: &[u8]) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(alg.signing(), der, &rng)
            .map_err(|e| KeyError::BadPrivateKey(e.to_string()))?;
        let public = PublicKey::from_point(alg, pair.public_key().as_ref());
        Ok(Self { pair, public, rng })
    }

    /// Reads a `PRIVATE KEY` (PKCS#8) PEM of either curve.
    pub fn from_pkcs8_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => KeyError::NoPem("PRIVATE KEY"),
            other => KeyError::BadPem(other.to_string()),
        })?;
        Self::from_pkcs8(SigAlg::Es256, der.secret_pkcs8_der())
            .or_else(|_| Self::from_pkcs8(SigAlg::Es384, der.secret_pkcs8_der()))
    }

    /// Its public key.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// An r || s signature over `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.pair.sign(&self.rng, message).map(|s| s.as_ref().to_vec()).map_err(|_| KeyError::SigningFailed)
    }
}

/// PEM with 64-column base64 lines, as RFC 7468 writes it.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_pem_round_trip_for_both_curves() {
        for alg in [SigAlg::Es256, SigAlg::Es384] {
            let der = SoftwareKey::generate_pkcs8(alg).unwrap();
            let key = SoftwareKey::from_pkcs8_pem(pem_encode("PRIVATE KEY", &der).as_bytes()).unwrap();
            assert_eq!(key.public().alg(), alg);
            let public = PublicKey::from_pem(key.public().to_pem().as_bytes()).unwrap();
            assert_eq!(&public, key.public());
            let sig = key.sign(b"message").unwrap();
            assert_eq!(sig.len(), alg.signature_len());
            assert!(public.verify_p1363(b"message", &sig));
            assert!(!public.verify_p1363(b"messagf", &sig));
        }
    }

    #[test]
    fn rejects_foreign_keys_and_pem() {
        // An Ed25519 SubjectPublicKeyInfo.
        let ed25519 = hex::decode(
            "302a300506032b6570032100d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        )
        .unwrap();
        assert_eq!(PublicKey::from_spki_der(&ed25519), Err(KeyError::UnsupportedPublicKey));
        assert_eq!(PublicKey::from_pem(b"hello"), Err(KeyError::NoPem("PUBLIC KEY")));
        assert!(matches!(SoftwareKey::from_pkcs8_pem(b"junk"), Err(KeyError::NoPem(_))));
    }

    #[test]
    fn a_malleated_signature_normalises_to_the_original() {
        for alg in [SigAlg::Es256, SigAlg::Es384] {
            let key = SoftwareKey::from_pkcs8(alg, &SoftwareKey::generate_pkcs8(alg).unwrap()).unwrap();
            let width = alg.signature_len() / 2;
            for _ in 0..8 {
                let sig = key.sign(b"m").unwrap();
                let other = mirror_signature(alg, &sig).unwrap();
                assert!(key.public().verify_p1363(b"m", &other), "ring accepts both forms");
                assert_ne!(sig, other);
                assert_eq!(normalize_signature(alg, &sig), normalize_signature(alg, &other));
                let der = p1363_to_der(&other);
                assert_eq!(der_to_p1363(&der, width).as_deref(), Some(other.as_slice()));
            }
        }
        assert_eq!(normalize_signature(SigAlg::Es256, b"short"), b"short");
        assert_eq!(der_to_p1363(&[0x30, 0x00], 32), None);
    }

    #[test]
    fn p1363_to_der_handles_high_bits_and_leading_zeros() {
        let mut sig = vec![0u8; 64];
        sig[0] = 0x80; // r needs a leading zero byte
        sig[63] = 0x01; // s is 1
        let der = p1363_to_der(&sig);
        assert_eq!(&der[..4], &[0x30, 38, 0x02, 33]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 1, 1]);
    }
}
