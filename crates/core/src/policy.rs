//! The measurement policy: which code measurements an auditor accepts, per platform, each with
//! a version label and an optional validity window. Parsed by the caller (TOML at the CLI) into
//! these types; judged here.

use serde::{Deserialize, Serialize};

use crate::batch::{normalize_measurement, HeaderError};
use crate::timestamp::{format_rfc3339, parse_rfc3339, TimestampError, UnixNanos};

/// Platforms a measurement can come from: the attestation providers, or a plain software key
/// whose measurement is only asserted.
pub const PLATFORMS: [&str; 6] = ["aws-nitro", "amd-sev-snp", "intel-tdx", "tpm", "dev", "software"];

/// An auditor's measurement policy: the `[[measurement]]` entries of its TOML file, in file
/// order. Deserialising does not check the entries: call [`Policy::validated`] before
/// [`Policy::judge`], which relies on normalised values and well-formed windows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The accepted measurements. Several entries may name one measurement (e.g. one per
    /// validity window); a batch is allowed if any of them allows it.
    #[serde(rename = "measurement", default)]
    pub entries: Vec<PolicyEntry>,
}

/// One accepted measurement, as written in the policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEntry {
    /// Where the measurement comes from: one of [`PLATFORMS`]. A measurement only matches
    /// batches whose key was attested (or, for `software`, asserted) by this platform.
    pub platform: String,
    /// A label for people, e.g. "v1.2.3".
    pub version: String,
    /// The measurement, hex; [`Policy::validated`] lower-cases it, as batch headers carry it.
    pub value: String,
    /// Allowed from this time (RFC 3339), inclusive.
    pub from: Option<String>,
    /// Allowed until this time (RFC 3339), exclusive.
    pub until: Option<String>,
}

/// The verdict on one batch's measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Judgement {
    /// An entry lists the measurement and its window holds the batch's seal time.
    Allowed {
        /// The entry's version label.
        version: String,
    },
    /// Listed, but the batch was sealed outside the entry's window.
    OutsideWindow {
        /// The version label of the first matching entry.
        version: String,
        /// That entry's window, as `from .. until` in RFC 3339, for the auditor to read.
        window: String,
    },
    /// No entry names this measurement on this platform.
    NotListed,
}

impl Judgement {
    /// Whether the batch may be accepted: only [`Judgement::Allowed`] is.
    pub fn allowed(&self) -> bool {
        matches!(self, Judgement::Allowed { .. })
    }

    /// The version label of the entry that matched, if any entry listed the measurement (even
    /// outside its window).
    pub fn version(&self) -> Option<&str> {
        match self {
            Judgement::Allowed { version } | Judgement::OutsideWindow { version, .. } => Some(version),
            Judgement::NotListed => None,
        }
    }
}

/// Why a policy was refused: which entry (1-based, with its version label, as the auditor wrote
/// them) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("measurement entry {entry} ({version}): {problem}")]
pub struct PolicyError {
    /// The entry's position in the file, counting from 1.
    pub entry: usize,
    /// The entry's version label.
    pub version: String,
    /// What is wrong with it.
    pub problem: EntryProblem,
}

/// What is wrong with one policy entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    /// `platform` is not one of [`PLATFORMS`].
    #[error("platform {0:?} is not one of {platforms}", platforms = PLATFORMS.join(", "))]
    UnknownPlatform(String),
    /// `value` is not a measurement (hex of a supported length).
    #[error("value: {0}")]
    Value(HeaderError),
    /// `from` or `until` is not an RFC 3339 timestamp in range.
    #[error("{field}: {error}")]
    Time {
        /// `from` or `until`.
        field: &'static str,
        /// What the timestamp parser refused.
        error: TimestampError,
    },
    /// The window is empty: `from` is not before `until`.
    #[error("from must be before until")]
    EmptyWindow,
}

struct Window {
    from: Option<UnixNanos>,
    until: Option<UnixNanos>,
}

impl Policy {
    /// Checks every entry and normalises its measurement; the error names the first bad entry
    /// and what is wrong with it.
    pub fn validated(mut self) -> Result<Self, PolicyError> {
        for (i, entry) in self.entries.iter_mut().enumerate() {
            entry.normalise().map_err(|problem| PolicyError {
                entry: i + 1,
                version: entry.version.clone(),
                problem,
            })?;
        }
        Ok(self)
    }

    /// Whether `measurement` from `platform` is allowed for a batch sealed at `at`.
    pub fn judge(&self, platform: &str, measurement: &str, at: UnixNanos) -> Judgement {
        let mut outside = None;
        for entry in self.entries.iter().filter(|e| e.platform == platform && e.value == measurement) {
            let window = entry.window().unwrap_or(Window { from: None, until: None });
            let after_start = window.from.is_none_or(|from| at >= from);
            let before_end = window.until.is_none_or(|until| at < until);
            if after_start && before_end {
                return Judgement::Allowed { version: entry.version.clone() };
            }
            outside.get_or_insert_with(|| Judgement::OutsideWindow {
                version: entry.version.clone(),
                window: format!(
                    "{} .. {}",
                    window.from.map_or("(always)".to_string(), format_rfc3339),
                    window.until.map_or("(open)".to_string(), format_rfc3339)
                ),
            });
        }
        outside.unwrap_or(Judgement::NotListed)
    }
}

impl PolicyEntry {
    fn normalise(&mut self) -> Result<(), EntryProblem> {
        if !PLATFORMS.contains(&self.platform.as_str()) {
            return Err(EntryProblem::UnknownPlatform(self.platform.clone()));
        }
        self.value = normalize_measurement(&self.value).map_err(EntryProblem::Value)?;
        let window = self.window()?;
        if let (Some(from), Some(until)) = (window.from, window.until) {
            if from >= until {
                return Err(EntryProblem::EmptyWindow);
            }
        }
        Ok(())
    }

    fn window(&self) -> Result<Window, EntryProblem> {
        let parse = |field: &'static str, v: &Option<String>| {
            v.as_deref().map(parse_rfc3339).transpose().map_err(|error| EntryProblem::Time { field, error })
        };
        Ok(Window { from: parse("from", &self.from)?, until: parse("until", &self.until)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            entries: vec![
                PolicyEntry {
                    platform: "aws-nitro".into(),
                    version: "v1.2.2".into(),
                    value: "AA".into(),
                    from: None,
                    until: Some("2026-02-01T00:00:00Z".into()),
                },
                PolicyEntry {
                    platform: "aws-nitro".into(),
                    version: "v1.2.3".into(),
                    value: "bb".into(),
                    from: Some("2026-01-01T00:00:00Z".into()),
                    until: None,
                },
            ],
        }
        .validated()
        .unwrap()
    }

    #[test]
    fn windows_versions_and_platforms() {
        let p = policy();
        let jan = parse_rfc3339("2026-01-15T00:00:00Z").unwrap();
        let mar = parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
        assert_eq!(p.judge("aws-nitro", "aa", jan), Judgement::Allowed { version: "v1.2.2".into() });
        assert!(matches!(p.judge("aws-nitro", "aa", mar), Judgement::OutsideWindow { .. }));
        assert_eq!(p.judge("aws-nitro", "bb", mar), Judgement::Allowed { version: "v1.2.3".into() });
        assert_eq!(p.judge("dev", "bb", mar), Judgement::NotListed);
        assert_eq!(p.judge("aws-nitro", "cc", mar), Judgement::NotListed);
    }

    #[test]
    fn bad_entries_are_named() {
        let mut p = policy();
        p.entries[1].platform = "azure".into();
        let err = p.validated().unwrap_err();
        assert_eq!((err.entry, err.problem.clone()), (2, EntryProblem::UnknownPlatform("azure".into())));
        assert!(
            err.to_string().contains("entry 2 (v1.2.3): platform \"azure\" is not one of aws-nitro"),
            "{err}"
        );
        let mut p = policy();
        p.entries[0].value = "xyz".into();
        let err = p.validated().unwrap_err();
        assert!(matches!(err.problem, EntryProblem::Value(_)), "{err:?}");
        assert!(err.to_string().contains("entry 1 (v1.2.2): value"), "{err}");
        let mut p = policy();
        p.entries[0].from = Some("yesterday".into());
        let err = p.validated().unwrap_err();
        assert!(
            matches!(err.problem, EntryProblem::Time { field: "from", error: TimestampError::NotRfc3339(_) }),
            "{err:?}"
        );
        let mut p = policy();
        p.entries[1].until = Some("2025-01-01T00:00:00Z".into());
        let err = p.validated().unwrap_err();
        assert_eq!((err.entry, err.problem.clone()), (2, EntryProblem::EmptyWindow));
        assert!(err.to_string().ends_with("from must be before until"), "{err}");
    }
}
