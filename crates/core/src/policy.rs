//! The measurement policy: which code measurements an auditor accepts, per platform, each with
//! a version label and an optional validity window. Parsed by the caller (TOML at the CLI) into
//! these types; judged here.

use serde::{Deserialize, Serialize};

use crate::batch::normalize_measurement;
use crate::timestamp::{format_rfc3339, parse_rfc3339, UnixNanos};

/// Platforms a measurement can come from: the attestation providers, or a plain software key
/// whose measurement is only asserted.
pub const PLATFORMS: [&str; 6] = ["aws-nitro", "amd-sev-snp", "intel-tdx", "tpm", "dev", "software"];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(rename = "measurement", default)]
    pub entries: Vec<PolicyEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEntry {
    pub platform: String,
    /// A label for people, e.g. "v1.2.3".
    pub version: String,
    /// The measurement, hex.
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
    Allowed {
        version: String,
    },
    /// Listed, but the batch was sealed outside the entry's window.
    OutsideWindow {
        version: String,
        window: String,
    },
    NotListed,
}

impl Judgement {
    pub fn allowed(&self) -> bool {
        matches!(self, Judgement::Allowed { .. })
    }

    pub fn version(&self) -> Option<&str> {
        match self {
            Judgement::Allowed { version } | Judgement::OutsideWindow { version, .. } => Some(version),
            Judgement::NotListed => None,
        }
    }
}

struct Window {
    from: Option<UnixNanos>,
    until: Option<UnixNanos>,
}

impl Policy {
    /// Checks every entry and normalises its measurement; errors name the entry and field.
    pub fn validated(mut self) -> Result<Self, String> {
        for (i, entry) in self.entries.iter_mut().enumerate() {
            let at = format!("measurement entry {} ({})", i + 1, entry.version);
            if !PLATFORMS.contains(&entry.platform.as_str()) {
                return Err(format!(
                    "{at}: platform {:?} is not one of {}",
                    entry.platform,
                    PLATFORMS.join(", ")
                ));
            }
            entry.value = normalize_measurement(&entry.value).map_err(|e| format!("{at}: value: {e}"))?;
            let window = entry.window().map_err(|e| format!("{at}: {e}"))?;
            if let (Some(from), Some(until)) = (window.from, window.until) {
                if from >= until {
                    return Err(format!("{at}: from must be before until"));
                }
            }
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
    fn window(&self) -> Result<Window, String> {
        let parse = |name: &str, v: &Option<String>| {
            v.as_deref().map(parse_rfc3339).transpose().map_err(|e| format!("{name}: {e}"))
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
        assert!(p.validated().unwrap_err().contains("entry 2 (v1.2.3): platform \"azure\""));
        let mut p = policy();
        p.entries[0].value = "xyz".into();
        assert!(p.validated().unwrap_err().contains("entry 1 (v1.2.2): value"));
        let mut p = policy();
        p.entries[1].until = Some("2025-01-01T00:00:00Z".into());
        assert!(p.validated().unwrap_err().contains("from must be before until"));
    }
}
