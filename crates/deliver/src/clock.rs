//! The wall clock. The core reads none (it is handed every time it needs); the daemons and the
//! binary read this one.

use std::time::{SystemTime, UNIX_EPOCH};

use teelog_core::timestamp::UnixNanos;

/// The wall clock as teelog timestamps; before 1970 (a clock not yet set) reads as 1970.
pub fn now() -> UnixNanos {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    UnixNanos::try_from(since.as_nanos()).unwrap_or(UnixNanos::MAX)
}
