//! Loki label sets: validated names, and the Prometheus text form used both as the stream's
//! labels in a push and as an exact LogQL stream selector.

use std::collections::BTreeMap;
use std::fmt;

/// Loki's default `max_label_name_length`.
pub const MAX_LABEL_NAME_BYTES: usize = 1024;
/// Loki's default `max_label_value_length`.
pub const MAX_LABEL_VALUE_BYTES: usize = 2048;
/// Loki's default `max_label_names_per_series`.
pub const MAX_LABELS: usize = 15;

/// A label Loki would refuse (by its default limits), or one the layout reserves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// Not `[a-zA-Z_][a-zA-Z0-9_]*` of at most [`MAX_LABEL_NAME_BYTES`].
    #[error(
        "label name {0:?} is not valid: use 1 to {MAX_LABEL_NAME_BYTES} characters of \
         [a-zA-Z_][a-zA-Z0-9_]*"
    )]
    InvalidName(String),
    /// A name Loki or the teelog layout keeps for itself.
    #[error("label name {name:?} is reserved: {why}")]
    Reserved {
        /// The name.
        name: String,
        /// Whose it is.
        why: &'static str,
    },
    /// A name given twice with different values.
    #[error("label {name:?} is set twice (to {first:?} and to {second:?})")]
    Duplicate {
        /// The name.
        name: String,
        /// The value set first.
        first: String,
        /// The other value.
        second: String,
    },
    /// An empty value.
    #[error("label {0:?} has an empty value, which Loki treats as no label at all: leave it out")]
    EmptyValue(String),
    /// A value longer than [`MAX_LABEL_VALUE_BYTES`].
    #[error(
        "label {name:?}: its value of {len} bytes is over Loki's default max_label_value_length \
         of {MAX_LABEL_VALUE_BYTES}"
    )]
    ValueTooLong {
        /// The label's name.
        name: String,
        /// The value's length in bytes.
        len: usize,
    },
    /// More labels than [`MAX_LABELS`].
    #[error("{0} labels are over Loki's default max_label_names_per_series of {MAX_LABELS}")]
    TooMany(usize),
}

/// Checks a label (or structured metadata) name: `[a-zA-Z_][a-zA-Z0-9_]*`, not `__`-prefixed.
pub fn check_label_name(name: &str) -> Result<(), LabelError> {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok
        || name.len() > MAX_LABEL_NAME_BYTES
        || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(LabelError::InvalidName(name.to_string()));
    }
    if name.starts_with("__") {
        return Err(LabelError::Reserved {
            name: name.to_string(),
            why: "names starting with \"__\" are Loki's and Prometheus' internal labels",
        });
    }
    Ok(())
}

/// A set of stream labels, kept sorted by name (the order Loki normalises to).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSet {
    labels: BTreeMap<String, String>,
}

impl LabelSet {
    /// No labels.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one label; a name already present is an error rather than an overwrite, so that a
    /// caller's extra label can never silently replace one of the layout's.
    pub fn insert(&mut self, name: &str, value: &str) -> Result<(), LabelError> {
        check_label_name(name)?;
        if value.is_empty() {
            return Err(LabelError::EmptyValue(name.to_string()));
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(LabelError::ValueTooLong { name: name.to_string(), len: value.len() });
        }
        if let Some(first) = self.labels.get(name) {
            return Err(LabelError::Duplicate {
                name: name.to_string(),
                first: first.clone(),
                second: value.to_string(),
            });
        }
        if self.labels.len() == MAX_LABELS {
            return Err(LabelError::TooMany(MAX_LABELS + 1));
        }
        self.labels.insert(name.to_string(), value.to_string());
        Ok(())
    }
}

/// The Prometheus text form, `{job="teelog", teelog_kind="batch"}`: the `labels` of a pushed
/// stream, and equally an exact LogQL stream selector.
impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, value)) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}=")?;
            write_quoted(f, value)?;
        }
        f.write_str("}")
    }
}

/// Writes `value` as a double-quoted Go string literal, the syntax Loki's label parser
/// (strconv.Unquote) reads: `"` and `\` are escaped, and so are control characters, since a raw
/// newline ends the literal.
fn write_quoted(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in value.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() && (c as u32) < 0x80 => write!(f, "\\u{:04x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> Result<LabelSet, LabelError> {
        let mut s = LabelSet::new();
        for (k, v) in pairs {
            s.insert(k, v)?;
        }
        Ok(s)
    }

    #[test]
    fn formats_sorted_with_escapes() {
        let s = set(&[
            ("teelog_stream", "app/x"),
            ("job", "teelog"),
            ("note", "say \"hi\" \\ bye\nnext\ttab\u{1}é"),
        ])
        .unwrap();
        assert_eq!(
            s.to_string(),
            r#"{job="teelog", note="say \"hi\" \\ bye\nnext\ttab\u0001é", teelog_stream="app/x"}"#
        );
        assert_eq!(LabelSet::new().to_string(), "{}");
    }

    #[test]
    fn refuses_bad_names_values_and_duplicates() {
        for bad in ["", "1abc", "a-b", "a.b", "é", "a b"] {
            assert_eq!(set(&[(bad, "v")]), Err(LabelError::InvalidName(bad.into())), "{bad:?}");
        }
        assert!(set(&[(&"a".repeat(1025), "v")]).is_err());
        assert!(matches!(set(&[("__name__", "v")]), Err(LabelError::Reserved { .. })));
        for good in ["a", "_a", "A_1", "job"] {
            assert!(set(&[(good, "v")]).is_ok(), "{good}");
        }
        assert_eq!(set(&[("a", "")]), Err(LabelError::EmptyValue("a".into())));
        assert!(matches!(set(&[("a", &"v".repeat(2049))]), Err(LabelError::ValueTooLong { len: 2049, .. })));
        let err = set(&[("job", "a"), ("job", "b")]).unwrap_err();
        assert_eq!(err.to_string(), r#"label "job" is set twice (to "a" and to "b")"#);
        let names: Vec<String> = (0..16).map(|i| format!("l{i}")).collect();
        let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        assert_eq!(set(&pairs), Err(LabelError::TooMany(16)));
    }
}
