//! Where the core's random bytes come from. The core draws none itself: callers pass a
//! [`SecureRandom`] (the system's, in the product), so that tests and fuzzing can fix what would
//! otherwise differ on every run, and a generator that fails is an error, never zeros.
//!
//! ECDSA nonces are the exception: ring draws them from its own generator, which no caller can
//! replace, and a failure there is [`KeyError::SigningFailed`](crate::KeyError::SigningFailed).

/// A source of unpredictable bytes.
pub trait SecureRandom {
    /// Fills `dest` entirely, or fails.
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError>;
}

/// The generator could not give the bytes asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the random number generator failed, so no fresh epoch id can be drawn")]
pub struct RandomError;

/// The operating system's generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRandom;

impl SecureRandom for SystemRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), dest).map_err(|_| RandomError)
    }
}
