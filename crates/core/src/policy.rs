//! The measurement policy: which code measurements an auditor accepts, per platform, each with
//! a version label and an optional validity window; and which instances (signers) each stream may
//! have. Parsed by the caller (TOML at the CLI) into these types; judged here.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::batch::{check_stream_name, normalize_epoch, normalize_measurement, HeaderError};
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
    /// The instances of streams (docs/FORMAT.md §5.5): `[[stream]]` entries, in file order.
    #[serde(rename = "stream", default)]
    pub streams: Vec<StreamEntry>,
}

/// The instances one stream may have, as written in the policy file: the ones it has (pins), or
/// how many.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamEntry {
    /// The stream's name.
    pub name: String,
    /// The epochs that start its instances (32 hex digits each): it must have each of them and
    /// may have no other.
    #[serde(default)]
    pub instances: Vec<String>,
    /// How many instances it may have, when they are not pinned.
    pub max_instances: Option<u64>,
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

/// Why a policy was refused: which entry (its table, its position among that table's entries
/// counting from 1, and its label, as the auditor wrote them) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{table} entry {entry} ({label}): {problem}")]
pub struct PolicyError {
    /// `measurement` or `stream`.
    pub table: &'static str,
    /// The entry's position among its table's entries, counting from 1.
    pub entry: usize,
    /// The entry's version label (a measurement) or name (a stream).
    pub label: String,
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
    /// A stream's name or one of its instances is not what a header could carry.
    #[error("{0}")]
    Stream(HeaderError),
    /// A stream entry gives both its instances and a number of them, or neither, or a number
    /// below one.
    #[error("give either instances = [\"<epoch>\", …] (the instances it has) or max_instances = N (at least 1), not both")]
    Instances,
    /// A stream is named by more than one entry.
    #[error("the stream has an entry already")]
    DuplicateStream,
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
                table: "measurement",
                entry: i + 1,
                label: entry.version.clone(),
                problem,
            })?;
        }
        let mut names = BTreeSet::new();
        for (i, entry) in self.streams.iter_mut().enumerate() {
            let fresh = names.insert(entry.name.clone());
            let checked = if fresh { entry.normalise() } else { Err(EntryProblem::DuplicateStream) };
            checked.map_err(|problem| PolicyError {
                table: "stream",
                entry: i + 1,
                label: entry.name.clone(),
                problem,
            })?;
        }
        Ok(self)
    }

    /// The instances each stream the policy names must have (its pins).
    pub fn pinned_instances(&self) -> BTreeMap<String, BTreeSet<String>> {
        let pinned = self.streams.iter().filter(|s| !s.instances.is_empty());
        pinned.map(|s| (s.name.clone(), s.instances.iter().cloned().collect())).collect()
    }

    /// How many instances each stream the policy names by number may have.
    pub fn instance_limits(&self) -> BTreeMap<String, u64> {
        self.streams.iter().filter_map(|s| Some((s.name.clone(), s.max_instances?))).collect()
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

impl StreamEntry {
    fn normalise(&mut self) -> Result<(), EntryProblem> {
        check_stream_name(&self.name).map_err(EntryProblem::Stream)?;
        match (self.instances.is_empty(), self.max_instances) {
            (false, None) | (true, Some(1..)) => {}
            _ => return Err(EntryProblem::Instances),
        }
        for epoch in &mut self.instances {
            *epoch = normalize_epoch(epoch).map_err(EntryProblem::Stream)?;
        }
        Ok(())
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
            streams: Vec::new(),
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

    #[test]
    fn stream_entries_pin_instances_or_count_them() {
        let entry = |name: &str, instances: &[&str], max: Option<u64>| StreamEntry {
            name: name.into(),
            instances: instances.iter().map(|e| e.to_string()).collect(),
            max_instances: max,
        };
        let checked = |streams: Vec<StreamEntry>| Policy { entries: Vec::new(), streams }.validated();
        let (upper, other) = ("00112233445566778899AABBCCDDEEFF", "ffeeddccbbaa99887766554433221100");
        let ok = checked(vec![entry("pay", &[upper, other], None), entry("logs", &[], Some(3))]).unwrap();
        let pins = BTreeSet::from([upper.to_ascii_lowercase(), other.to_string()]);
        assert_eq!(ok.pinned_instances(), BTreeMap::from([("pay".to_string(), pins)]));
        assert_eq!(ok.instance_limits(), BTreeMap::from([("logs".to_string(), 3)]));

        let err = checked(vec![entry("pay", &[other], None), entry("pay", &[], Some(2))]).unwrap_err();
        assert_eq!((err.table, err.entry, err.problem.clone()), ("stream", 2, EntryProblem::DuplicateStream));
        assert!(err.to_string().starts_with("stream entry 2 (pay): "), "{err}");
        let refused = |e: StreamEntry| checked(vec![e]).unwrap_err().problem;
        assert_eq!(refused(entry("pay", &[other], Some(2))), EntryProblem::Instances);
        assert_eq!(refused(entry("pay", &[], Some(0))), EntryProblem::Instances);
        assert_eq!(refused(entry("pay", &[], None)), EntryProblem::Instances);
        assert!(matches!(refused(entry("pay", &["abc"], None)), EntryProblem::Stream(_)));
        assert!(matches!(refused(entry("no spaces", &[], Some(2))), EntryProblem::Stream(_)));
    }
}
