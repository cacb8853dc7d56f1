//! TPM 2.0 commands as bytes, and their responses parsed back (TPM 2.0 Library, Part 3): only
//! what signing under a PCR policy needs. Sans-IO: the device adapter moves the bytes.

use teelog_attest::reader::{Endian, Reader};
use teelog_attest::AttestError;

use crate::TpmError;

const ST_NO_SESSIONS: u16 = 0x8001;
const ST_SESSIONS: u16 = 0x8002;
const ST_HASHCHECK: u16 = 0x8024;
const CC_LOAD: u32 = 0x0000_0157;
const CC_SIGN: u32 = 0x0000_015d;
const CC_FLUSH_CONTEXT: u32 = 0x0000_0165;
const CC_START_AUTH_SESSION: u32 = 0x0000_0176;
const CC_POLICY_PCR: u32 = 0x0000_017f;
const RH_NULL: u32 = 0x4000_0007;
const RS_PW: u32 = 0x4000_0009;
const SE_POLICY: u8 = 0x01;
const ALG_NULL: u16 = 0x0010;
const ALG_SHA256: u16 = 0x000b;
const ALG_ECDSA: u16 = 0x0018;
const HEADER_LEN: usize = 10;

/// A command under construction: header, handles, an optional authorization area, parameters.
struct Command(Vec<u8>);

impl Command {
    fn new(sessions: bool, code: u32) -> Self {
        let tag = if sessions { ST_SESSIONS } else { ST_NO_SESSIONS };
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(&tag.to_be_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&code.to_be_bytes());
        Self(bytes)
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// A TPM2B: u16 size, then the bytes. Callers pass at most a few hundred bytes.
    fn sized(self, v: &[u8]) -> Self {
        let mut c = self.u16(u16::try_from(v.len()).unwrap_or(u16::MAX));
        c.0.extend_from_slice(v);
        c
    }
    /// Bytes that already carry their own size prefix (TPM2B_PUBLIC and TPM2B_PRIVATE files).
    fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    /// One authorization: `session` with no nonce, attributes cleared (so a policy session ends
    /// with the command) and an empty HMAC or password.
    fn auth(self, session: u32) -> Self {
        self.u32(4 + 2 + 1 + 2).u32(session).sized(&[]).u8(0).sized(&[])
    }
    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        self.0[2..6].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}

/// A PCR selection in the SHA-256 bank (TPML_PCR_SELECTION), as PolicyPCR takes it.
pub fn pcr_selection(pcrs: &[u8]) -> Vec<u8> {
    let mut bitmap = [0u8; 3];
    for &pcr in pcrs.iter().filter(|&&p| p < 24) {
        bitmap[usize::from(pcr / 8)] |= 1 << (pcr % 8);
    }
    [&1u32.to_be_bytes()[..], &ALG_SHA256.to_be_bytes(), &[3], &bitmap].concat()
}

/// TPM2_StartAuthSession: an unbound, unsalted SHA-256 policy session.
pub fn start_policy_session(nonce_caller: &[u8; 16]) -> Vec<u8> {
    Command::new(false, CC_START_AUTH_SESSION)
        .u32(RH_NULL)
        .u32(RH_NULL)
        .sized(nonce_caller)
        .sized(&[])
        .u8(SE_POLICY)
        .u16(ALG_NULL)
        .u16(ALG_SHA256)
        .finish()
}

/// TPM2_PolicyPCR over the PCRs' current values.
pub fn policy_pcr(session: u32, selection: &[u8]) -> Vec<u8> {
    Command::new(false, CC_POLICY_PCR).u32(session).sized(&[]).raw(selection).finish()
}

/// TPM2_Load of a key blob under `parent`, whose authorization is the empty password.
pub fn load(parent: u32, private: &[u8], public: &[u8]) -> Vec<u8> {
    Command::new(true, CC_LOAD).u32(parent).auth(RS_PW).raw(private).raw(public).finish()
}

/// TPM2_Sign of a SHA-256 digest with ECDSA, authorised by the policy `session`.
pub fn sign(key: u32, session: u32, digest: &[u8; 32]) -> Vec<u8> {
    Command::new(true, CC_SIGN)
        .u32(key)
        .auth(session)
        .sized(digest)
        .u16(ALG_ECDSA)
        .u16(ALG_SHA256)
        .u16(ST_HASHCHECK)
        .u32(RH_NULL)
        .sized(&[])
        .finish()
}

/// TPM2_FlushContext of a loaded object or session.
pub fn flush_context(handle: u32) -> Vec<u8> {
    Command::new(false, CC_FLUSH_CONTEXT).u32(handle).finish()
}

/// The header's declared size, once the first 10 bytes of a response are in.
pub fn response_len(header: &[u8; HEADER_LEN]) -> usize {
    u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize
}

/// A response header's length (tag, size, response code): what [`response_len`] reads.
pub const RESPONSE_HEADER_LEN: usize = HEADER_LEN;
/// No response of these commands comes near this; a larger declared size is a broken device.
pub const MAX_RESPONSE_LEN: usize = 4096;

fn malformed(what: &str) -> impl Fn(AttestError) -> TpmError + '_ {
    move |e| TpmError::Malformed(format!("{what}: {e}"))
}

/// Checks the response code and returns the bytes after the header.
fn body<'a>(response: &'a [u8], what: &'static str) -> Result<&'a [u8], TpmError> {
    let mut r = Reader::new(response, Endian::Big, AttestError::Tpm);
    let (_tag, _size, code) =
        (|| Ok((r.u16("tag")?, r.u32("size")?, r.u32("responseCode")?)))().map_err(malformed(what))?;
    if code != 0 {
        return Err(TpmError::Refused { command: what, code });
    }
    Ok(&response[HEADER_LEN..])
}

/// StartAuthSession's response: the session's handle.
pub fn parse_session(response: &[u8]) -> Result<u32, TpmError> {
    let mut r = Reader::new(body(response, "StartAuthSession")?, Endian::Big, AttestError::Tpm);
    r.u32("sessionHandle").map_err(malformed("StartAuthSession"))
}

/// A command that returns nothing of interest (PolicyPCR, FlushContext).
pub fn parse_empty(response: &[u8], what: &'static str) -> Result<(), TpmError> {
    body(response, what).map(drop)
}

/// Load's response: the loaded object's handle.
pub fn parse_load(response: &[u8]) -> Result<u32, TpmError> {
    let mut r = Reader::new(body(response, "Load")?, Endian::Big, AttestError::Tpm);
    r.u32("objectHandle").map_err(malformed("Load"))
}

/// Sign's response: the TPMT_SIGNATURE.
pub fn parse_sign(response: &[u8]) -> Result<&[u8], TpmError> {
    let mut r = Reader::new(body(response, "Sign")?, Endian::Big, AttestError::Tpm);
    let size = r.u32("parameterSize").map_err(malformed("Sign"))?;
    r.take(size as usize, "signature").map_err(malformed("Sign"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_carry_their_size_and_code() {
        let cmd = flush_context(0x8000_0001);
        assert_eq!(cmd, [0x80, 0x01, 0, 0, 0, 14, 0, 0, 0x01, 0x65, 0x80, 0, 0, 1]);
        let cmd = sign(0x8000_0000, 0x0300_0000, &[7; 32]);
        assert_eq!(response_len(cmd[..10].try_into().unwrap()), cmd.len());
        assert_eq!(&cmd[..2], &ST_SESSIONS.to_be_bytes());
    }

    #[test]
    fn pcr_selection_sets_the_bits_of_the_sha256_bank() {
        assert_eq!(pcr_selection(&[0, 1, 2, 7, 16]), [0, 0, 0, 1, 0, 0x0b, 3, 0x87, 0, 0x01]);
    }

    #[test]
    fn responses_are_checked_not_trusted() {
        assert!(matches!(parse_load(&[0x80, 0x01, 0, 0]), Err(TpmError::Malformed(_))));
        let refused = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x09, 0x9d];
        assert!(matches!(parse_sign(&refused), Err(TpmError::Refused { code: 0x99d, .. })));
        let short = [0x80, 0x02, 0, 0, 0, 14, 0, 0, 0, 0, 0, 0, 0, 200];
        assert!(matches!(parse_sign(&short), Err(TpmError::Malformed(_))));
    }
}
