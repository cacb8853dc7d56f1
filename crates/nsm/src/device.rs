//! `/dev/nsm`: one ioctl, `NSM_IOCTL_RAW`, hands the driver a request buffer and a response
//! buffer (Linux's `include/uapi/linux/nsm.h`); the driver fills the response and writes its
//! length back.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::proto::{self, Attestation, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use crate::NsmError;

/// Where the NSM driver appears inside an enclave.
pub const DEVICE: &str = "/dev/nsm";

/// `struct nsm_iovec`: fixed 64-bit fields whatever the architecture.
#[repr(C)]
struct NsmIovec {
    addr: u64,
    len: u64,
}

/// `struct nsm_raw`.
#[repr(C)]
struct NsmRaw {
    request: NsmIovec,
    response: NsmIovec,
}

/// `_IOWR(NSM_MAGIC = 0x0A, 0, struct nsm_raw)` in Linux's generic ioctl encoding (x86-64 and
/// arm64, the machines Nitro Enclaves run on): direction read|write in bits 30–31, the argument's
/// size in bits 16–29, the magic in bits 8–15, the number in bits 0–7.
const NSM_IOCTL_RAW: u32 = (3 << 30) | ((std::mem::size_of::<NsmRaw>() as u32) << 16) | (0x0A << 8);

/// The NSM device, open.
pub struct Nsm {
    file: File,
    path: PathBuf,
}

impl Nsm {
    /// Opens `/dev/nsm`; [`NsmError::Missing`] where there is none (outside an enclave).
    pub fn open() -> Result<Self, NsmError> {
        Self::open_at(Path::new(DEVICE))
    }

    fn open_at(path: &Path) -> Result<Self, NsmError> {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => Ok(Self { file, path: path.to_path_buf() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(NsmError::Missing(path.to_path_buf())),
            Err(source) => Err(NsmError::Io { path: path.to_path_buf(), source }),
        }
    }

    /// Asks the NSM for an attestation document carrying `request`'s fields.
    pub fn attest(&self, request: &Attestation<'_>) -> Result<Vec<u8>, NsmError> {
        proto::decode_attestation_response(&self.call(&request.encode())?)
    }

    /// One request through the driver; the response's bytes.
    fn call(&self, request: &[u8]) -> Result<Vec<u8>, NsmError> {
        if request.len() > MAX_REQUEST_BYTES {
            return Err(NsmError::RequestTooLarge { len: request.len(), max: MAX_REQUEST_BYTES });
        }
        let mut response = vec![0u8; MAX_RESPONSE_BYTES];
        let mut raw = NsmRaw {
            request: NsmIovec { addr: request.as_ptr() as u64, len: request.len() as u64 },
            response: NsmIovec { addr: response.as_mut_ptr() as u64, len: response.len() as u64 },
        };
        // SAFETY: NSM_IOCTL_RAW takes a pointer to a `struct nsm_raw`, which `raw` is (repr(C),
        // the same fields). The driver reads at most `request.len` bytes at `request.addr` and
        // writes at most `response.len` bytes at `response.addr`: both buffers are live, of
        // those lengths, and not otherwise borrowed for the duration of the call. It also writes
        // the response length back into `raw`, which is exclusively borrowed here. A file that
        // is not the NSM fails the ioctl (ENOTTY) without touching the buffers.
        #[allow(unsafe_code)]
        let status =
            unsafe { libc::ioctl(self.file.as_raw_fd(), NSM_IOCTL_RAW as _, &mut raw as *mut NsmRaw) };
        if status < 0 {
            let source = io::Error::last_os_error();
            return Err(match source.raw_os_error() {
                Some(libc::EMSGSIZE) => {
                    NsmError::RequestTooLarge { len: request.len(), max: MAX_REQUEST_BYTES }
                }
                _ => NsmError::Io { path: self.path.clone(), source },
            });
        }
        let len =
            usize::try_from(raw.response.len).ok().filter(|&len| len <= response.len()).ok_or_else(|| {
                NsmError::Response(format!(
                    "the driver reports {} response bytes in a {MAX_RESPONSE_BYTES}-byte buffer",
                    raw.response.len
                ))
            })?;
        response.truncate(len);
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ioctl_number_is_iowr_0x0a_0_of_32_bytes() {
        assert_eq!(std::mem::size_of::<NsmRaw>(), 32);
        assert_eq!(NSM_IOCTL_RAW, 0xC020_0A00);
    }

    #[test]
    fn a_missing_device_says_where_to_sign_instead() {
        let err = Nsm::open_at(Path::new("/nonexistent/nsm")).err().unwrap();
        assert!(matches!(err, NsmError::Missing(_)));
        let text = err.to_string();
        assert!(text.starts_with(
            "/nonexistent/nsm not found: a nitro identity signs only inside an AWS Nitro Enclave"
        ));
        assert!(text.contains("teelog keygen --dev"), "{text}");
        if !Path::new(DEVICE).exists() {
            assert!(matches!(Nsm::open(), Err(NsmError::Missing(p)) if p == Path::new(DEVICE)));
        }
    }

    /// The real ioctl, on a device that is not the NSM: the kernel refuses it, and the error
    /// names the file.
    #[test]
    fn a_device_that_is_not_the_nsm_refuses_the_ioctl() {
        let nsm = Nsm::open_at(Path::new("/dev/null")).unwrap();
        let err = nsm.attest(&Attestation::default()).err().unwrap();
        match &err {
            NsmError::Io { path, source } => {
                assert_eq!(path, Path::new("/dev/null"));
                assert_eq!(source.raw_os_error(), Some(libc::ENOTTY), "{err}");
            }
            other => panic!("{other:?}"),
        }
        let big = vec![0; MAX_REQUEST_BYTES + 1];
        assert!(
            matches!(nsm.call(&big), Err(NsmError::RequestTooLarge { len, .. }) if len == MAX_REQUEST_BYTES + 1)
        );
    }
}
