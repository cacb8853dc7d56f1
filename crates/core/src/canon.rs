//! RFC 8785 JSON Canonicalization Scheme (JCS).
//!
//! Input is parsed by serde_json into a borrowed tree (strings without escapes are not copied),
//! then written back with members sorted by their UTF-16 code units, strings escaped minimally
//! and numbers in ECMAScript form. Duplicate member names are rejected (I-JSON, RFC 7493), and so
//! are integers that an IEEE double cannot hold exactly: JCS would silently change them.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Largest integer magnitude an IEEE 754 double represents exactly (2^53).
pub const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// Nesting limit: deeper input is refused before it can exhaust the stack.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonError {
    #[error("not valid JSON: {0}")]
    Syntax(String),
    #[error("duplicate member name {0:?}")]
    DuplicateKey(String),
    #[error("integer {0} is beyond ±2^53 and cannot be represented exactly in canonical JSON; send it as a string")]
    InexactInteger(String),
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// A parsed JSON value borrowing from its input where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    /// An integer literal, kept exact until it is written (see [`MAX_EXACT_INTEGER`]).
    Integer(i128),
    Float(f64),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses `input` strictly: one JSON value, nothing after it but white space.
    pub fn parse(input: &'a [u8]) -> Result<Self, CanonError> {
        // Validating UTF-8 once for the whole text is much faster than serde_json doing it
        // string by string.
        let text = std::str::from_utf8(input).map_err(|e| {
            CanonError::Syntax(format!("invalid UTF-8 at byte {}", e.valid_up_to()))
        })?;
        let mut de = serde_json::Deserializer::from_str(text);
        let value = Json::deserialize(&mut de).map_err(map_serde_error)?;
        de.end().map_err(map_serde_error)?;
        Ok(value)
    }

    /// Appends the canonical (RFC 8785) form of this value to `out`.
    pub fn write_canonical(&self, out: &mut Vec<u8>) -> Result<(), CanonError> {
        match self {
            Json::Null => out.extend_from_slice(b"null"),
            Json::Bool(true) => out.extend_from_slice(b"true"),
            Json::Bool(false) => out.extend_from_slice(b"false"),
            Json::Integer(n) => {
                if n.unsigned_abs() > u128::from(MAX_EXACT_INTEGER) {
                    return Err(CanonError::InexactInteger(n.to_string()));
                }
                out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes());
            }
            Json::Float(n) => write_number(*n, out),
            Json::String(s) => write_string(s, out),
            Json::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_canonical(out)?;
                }
                out.push(b']');
            }
            Json::Object(members) => write_object(members, out)?,
        }
        Ok(())
    }
}

/// Canonicalises one JSON text into `out`.
pub fn canonicalize(input: &[u8], out: &mut Vec<u8>) -> Result<(), CanonError> {
    Json::parse(input)?.write_canonical(out)
}

/// Writes an object's members sorted by UTF-16 code units; members are given in any order.
pub fn write_object(
    members: &[(Cow<'_, str>, Json<'_>)],
    out: &mut Vec<u8>,
) -> Result<(), CanonError> {
    let mut order: Vec<&(Cow<'_, str>, Json<'_>)> = members.iter().collect();
    order.sort_unstable_by(|a, b| compare_utf16(&a.0, &b.0));
    if let Some(pair) = order.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(CanonError::DuplicateKey(pair[0].0.to_string()));
    }
    out.push(b'{');
    for (i, (key, value)) in order.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        value.write_canonical(out)?;
    }
    out.push(b'}');
    Ok(())
}

/// RFC 8785 §3.2.3: member names sort by their UTF-16 code units. UTF-8 byte order equals code
/// point order, which differs from UTF-16 order only when a non-ASCII character is involved.
fn compare_utf16(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.as_bytes().cmp(b.as_bytes())
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

/// RFC 8785 §3.2.2.2: escape only `"`, `\` and control characters, the short forms where JSON
/// has them, otherwise `\u00xx` in lower case.
pub fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(offset) = bytes[start..]
        .iter()
        .position(|&b| NEEDS_ESCAPE[usize::from(b)])
    {
        let i = start + offset;
        let b = bytes[i];
        out.extend_from_slice(&bytes[start..i]);
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            _ => 0,
        };
        if short == 0 {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.push(b'\\');
            out.push(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Bytes that a canonical string must escape: control characters, `"` and `\`.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// RFC 8785 §3.2.2.3: numbers as ECMAScript's Number.prototype.toString writes them.
fn write_number(n: f64, out: &mut Vec<u8>) {
    if n == 0.0 {
        // Covers -0, which ECMAScript prints as "0".
        out.push(b'0');
    } else if n.fract() == 0.0 && n.abs() < MAX_EXACT_INTEGER as f64 {
        // Integral doubles below 2^53 print as plain integers; skip the float formatter.
        out.extend_from_slice(itoa::Buffer::new().format(n as i64).as_bytes());
    } else {
        out.extend_from_slice(ryu_js::Buffer::new().format_finite(n).as_bytes());
    }
}

fn map_serde_error(e: serde_json::Error) -> CanonError {
    let message = e.to_string();
    if message.starts_with(TOO_DEEP) || message.starts_with("recursion limit exceeded") {
        return CanonError::TooDeep;
    }
    CanonError::Syntax(message)
}

// The depth error raised inside the visitor travels through serde_json as a custom message; this
// marker lets `map_serde_error` turn it back into a typed error.
const TOO_DEEP: &str = "teelog-too-deep";

struct JsonVisitor {
    depth: usize,
}

struct Seed {
    depth: usize,
}

impl<'de> de::DeserializeSeed<'de> for Seed {
    type Value = Json<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        if self.depth > MAX_DEPTH {
            return Err(de::Error::custom(TOO_DEEP));
        }
        d.deserialize_any(JsonVisitor { depth: self.depth })
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::DeserializeSeed::deserialize(Seed { depth: 0 }, d)
    }
}

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Integer(i128::from(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Integer(i128::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        Ok(Json::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(Seed {
            depth: self.depth + 1,
        })? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Json<'de>)> = Vec::with_capacity(8);
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            let value = map.next_value_seed(Seed {
                depth: self.depth + 1,
            })?;
            members.push((key.0, value));
        }
        Ok(Json::Object(members))
    }
}

/// A map key that borrows from the input when it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(input: &str) -> Result<String, CanonError> {
        let mut out = Vec::new();
        canonicalize(input.as_bytes(), &mut out)?;
        Ok(String::from_utf8(out).expect("canonical output is UTF-8"))
    }

    // RFC 8785 §3.2.4 / Appendix: the worked example.
    #[test]
    fn rfc8785_section_3_2_4_example() {
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50,
                      2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        assert_eq!(
            canon(input).unwrap(),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    // RFC 8785 §3.2.3: sorting by UTF-16 code units.
    #[test]
    fn rfc8785_sorting_example() {
        let input = "{\"\\u20ac\":\"Euro Sign\",\"\\r\":\"Carriage Return\",\"\\ufb33\":\"Hebrew Letter Dalet With Dagesh\",\"1\":\"One\",\"\\ud83d\\ude00\":\"Emoji: Grinning Face\",\"\\u0080\":\"Control\",\"\\u00f6\":\"Latin Small Letter O With Diaeresis\"}";
        let out = canon(input).unwrap();
        let keys: Vec<String> = match Json::parse(out.as_bytes()).unwrap() {
            Json::Object(m) => m.into_iter().map(|(k, _)| k.into_owned()).collect(),
            _ => unreachable!(),
        };
        assert_eq!(
            keys,
            [
                "\r",
                "1",
                "\u{80}",
                "\u{f6}",
                "\u{20ac}",
                "\u{1f600}",
                "\u{fb33}"
            ]
        );
    }

    // RFC 8785 Appendix B: IEEE 754 values and their canonical text.
    #[test]
    fn rfc8785_appendix_b_numbers() {
        let cases: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for &(bits, expected) in cases {
            let mut out = Vec::new();
            write_number(f64::from_bits(bits), &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "bits {bits:016x}"
            );
        }
    }

    #[test]
    fn literal_non_ascii_and_del_are_not_escaped() {
        assert_eq!(
            canon("\"\\u00e9\\u007f\\u2028\"").unwrap(),
            "\"é\u{7f}\u{2028}\""
        );
    }

    #[test]
    fn rejects_duplicates_inexact_integers_depth_and_trailing_bytes() {
        assert_eq!(
            canon(r#"{"a":1,"a":2}"#),
            Err(CanonError::DuplicateKey("a".into()))
        );
        assert!(matches!(
            canon("12345678901234567890"),
            Err(CanonError::InexactInteger(_))
        ));
        assert!(matches!(
            canon("-9007199254740993"),
            Err(CanonError::InexactInteger(_))
        ));
        assert_eq!(canon("9007199254740992").unwrap(), "9007199254740992");
        assert_eq!(canon(&"[".repeat(MAX_DEPTH + 2)), Err(CanonError::TooDeep));
        assert!(matches!(canon("{} x"), Err(CanonError::Syntax(_))));
        assert!(matches!(canon("\"\\ud800\""), Err(CanonError::Syntax(_))));
    }

    #[test]
    fn canonical_output_is_a_fixed_point() {
        let once = canon(r#"{"b":[1.0,{"z":null,"a":"x"}],"a":-0.0}"#).unwrap();
        assert_eq!(once, r#"{"a":0,"b":[1,{"a":"x","z":null}]}"#);
        assert_eq!(canon(&once).unwrap(), once);
    }
}
