//! Differential and robustness properties of the RFC 8785 canonicaliser against serde_json.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use proptest::prelude::*;
use serde_json::Value;
use teelog_core::canon::{canonicalize, MAX_EXACT_INTEGER};

fn json_value() -> impl Strategy<Value = Value> {
    let exact = MAX_EXACT_INTEGER as i64;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-exact..=exact).prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[\\x00-\\x1f\"\\\\a-z\u{e000}-\u{e0ff}\u{10000}-\u{10100}]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-z\u{e000}\u{10000}\"\\\\]{0,6}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Numbers compared as doubles: JCS writes 2.0 as 2, which serde_json then reads as an integer.
fn normalise(v: &Value) -> Value {
    match v {
        Value::Number(n) => Value::from(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(normalise).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), normalise(v))).collect()),
        other => other.clone(),
    }
}

fn canon(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    canonicalize(input, &mut out).ok().map(|()| out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn canonical_form_keeps_the_value_and_is_a_fixed_point(value in json_value(), pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_string_pretty(&value).unwrap() } else { value.to_string() };
        let out = canon(text.as_bytes()).expect("valid JSON canonicalises");
        let back: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(normalise(&back), normalise(&value));
        prop_assert_eq!(canon(&out).unwrap(), out.clone());
        prop_assert!(!out.iter().any(|&b| b == b'\n' || b == b' ' && !text.contains(' ')));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_only_json_is_accepted(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if canon(&bytes).is_some() {
            prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
        }
    }

    #[test]
    fn mutated_json_never_panics(value in json_value(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = value.to_string().into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if canon(&bytes).is_some() {
            prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
        }
    }
}
