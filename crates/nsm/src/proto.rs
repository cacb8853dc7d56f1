//! The NSM's messages, sans-IO. Requests and responses are CBOR in the layout that AWS's
//! `aws-nitro-enclaves-nsm-api` gives them through serde: an enum variant is a map of one entry,
//! the variant's name to its fields (a map of text keys, in declaration order); a variant
//! without fields is just its name as text. Byte strings are CBOR byte strings; an absent
//! optional field is null.

use ciborium::Value;

use crate::NsmError;

/// The largest request the NSM driver takes.
pub const MAX_REQUEST_BYTES: usize = 0x1000;
/// The response buffer handed to the driver, as AWS's library sizes it.
pub const MAX_RESPONSE_BYTES: usize = 0x3000;

/// The error codes of the NSM's `Error` response (`Success` never comes as an error).
const ERROR_CODES: [&str; 8] = [
    "InvalidArgument",
    "InvalidIndex",
    "InvalidResponse",
    "ReadOnlyIndex",
    "InvalidOperation",
    "BufferTooSmall",
    "InputTooLarge",
    "InternalError",
];

/// Containers nested in a response: the variant's map and its fields' map.
const MAX_DEPTH: usize = 2;

/// An `Attestation` request: the NSM puts each given field into the document it signs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attestation<'a> {
    /// Opaque bytes for the relying party; teelog sends none.
    pub user_data: Option<&'a [u8]>,
    /// Freshness: teelog sends the previous epoch's head (32 bytes), or none at a stream's start.
    pub nonce: Option<&'a [u8]>,
    /// The key the document binds: the SubjectPublicKeyInfo DER of this start's signing key.
    pub public_key: Option<&'a [u8]>,
}

impl Attestation<'_> {
    /// `{"Attestation": {"user_data": …, "nonce": …, "public_key": …}}`, with definite lengths
    /// in their shortest form, as serde_cbor writes it.
    pub fn encode(&self) -> Vec<u8> {
        let fields = [("user_data", self.user_data), ("nonce", self.nonce), ("public_key", self.public_key)];
        let mut out =
            Vec::with_capacity(64 + fields.iter().map(|(_, v)| v.map_or(0, <[u8]>::len)).sum::<usize>());
        head(&mut out, MAP, 1);
        text(&mut out, "Attestation");
        head(&mut out, MAP, fields.len());
        for (name, value) in fields {
            text(&mut out, name);
            match value {
                Some(bytes) => {
                    head(&mut out, BYTES, bytes.len());
                    out.extend_from_slice(bytes);
                }
                None => out.push(NULL),
            }
        }
        out
    }
}

const BYTES: u8 = 2;
const TEXT: u8 = 3;
const MAP: u8 = 5;
const NULL: u8 = 0xf6;

/// A CBOR item head: major type and length, the length in its shortest encoding.
fn head(out: &mut Vec<u8>, major: u8, len: usize) {
    let major = major << 5;
    let len = len as u64;
    match len {
        0..=23 => out.push(major | len as u8),
        24..=0xff => out.extend_from_slice(&[major | 24, len as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

fn text(out: &mut Vec<u8>, s: &str) {
    head(out, TEXT, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn malformed(why: impl Into<String>) -> NsmError {
    NsmError::Response(why.into())
}

/// The document of the NSM's answer to an `Attestation` request:
/// `{"Attestation": {"document": <bytes>}}`. Its `Error` answer is [`NsmError::Refused`];
/// anything else — another variant, other fields, trailing bytes, deeper nesting — is
/// [`NsmError::Response`], saying what was found.
pub fn decode_attestation_response(bytes: &[u8]) -> Result<Vec<u8>, NsmError> {
    let mut reader = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut reader, MAX_DEPTH)
        .map_err(|e| malformed(format!("not CBOR of at most {MAX_DEPTH} levels: {e}")))?;
    if !reader.is_empty() {
        return Err(malformed(format!("{} bytes after the response", reader.len())));
    }
    let (variant, fields) = match value {
        Value::Map(entries) => match <[(Value, Value); 1]>::try_from(entries) {
            Ok([(Value::Text(variant), fields)]) => (variant, fields),
            Ok([(key, _)]) => return Err(malformed(format!("the variant is {}, not text", kind(&key)))),
            Err(entries) => {
                return Err(malformed(format!("a map of {} entries, not one variant", entries.len())))
            }
        },
        Value::Text(variant) => {
            return Err(malformed(format!("the answer is {}, not Attestation", name(&variant))))
        }
        other => return Err(malformed(format!("{}, not a map", kind(&other)))),
    };
    match (variant.as_str(), fields) {
        ("Attestation", Value::Map(fields)) => match <[(Value, Value); 1]>::try_from(fields) {
            Ok([(Value::Text(key), Value::Bytes(document))]) if key == "document" && !document.is_empty() => {
                Ok(document)
            }
            Ok([(key, value)]) => Err(malformed(format!(
                "Attestation holds {} = {}, not a non-empty document",
                match &key {
                    Value::Text(t) => name(t),
                    other => kind(other).to_string(),
                },
                kind(&value)
            ))),
            Err(fields) => {
                Err(malformed(format!("Attestation has {} fields, not one document", fields.len())))
            }
        },
        ("Error", Value::Text(code)) => match ERROR_CODES.iter().find(|c| **c == code) {
            Some(code) => Err(NsmError::Refused(code)),
            None => Err(malformed(format!("unknown error code {}", name(&code)))),
        },
        (variant @ ("Attestation" | "Error"), other) => {
            Err(malformed(format!("{variant} holds {}", kind(&other))))
        }
        (variant, _) => Err(malformed(format!("the answer is {}, not Attestation", name(variant)))),
    }
}

/// A name from the response, quoted, cut short if it is long.
fn name(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) => "an integer",
        Value::Bytes(_) => "a byte string",
        Value::Float(_) => "a float",
        Value::Text(_) => "text",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        Value::Tag(..) => "a tagged item",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        _ => "an unknown CBOR item",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unhex(h: &str) -> Vec<u8> {
        (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect()
    }

    // The expected bytes below are what aws-nitro-enclaves-nsm-api 0.5.2 (serde_cbor 0.11)
    // encodes for the same values: its `Request::Attestation` and `Response` variants.

    #[test]
    fn requests_are_laid_out_as_aws_library_encodes_them() {
        let nonce = [0x11; 32];
        let request = Attestation { user_data: None, nonce: Some(&nonce), public_key: Some(&[0x30, 1, 2]) };
        assert_eq!(
            request.encode(),
            unhex(concat!(
                "a16b4174746573746174696f6e", // {"Attestation":
                "a369757365725f64617461f6",   //   {"user_data": null,
                "656e6f6e63655820",           //    "nonce": 32 bytes
                "1111111111111111111111111111111111111111111111111111111111111111",
                "6a7075626c69635f6b657943300102", //    "public_key": 3 bytes}}
            ))
        );
        // A genesis epoch: no nonce; a key long enough for a one-byte length.
        let key = [0xab; 120];
        let encoded = Attestation { public_key: Some(&key), ..Attestation::default() }.encode();
        let expected = format!(
            "a16b4174746573746174696f6ea369757365725f64617461f6656e6f6e6365f66a7075626c69635f6b65795878{}",
            "ab".repeat(120)
        );
        assert_eq!(encoded, unhex(&expected));
    }

    #[test]
    fn heads_use_the_shortest_length() {
        for (len, expected) in [
            (23, "57"),
            (24, "5818"),
            (255, "58ff"),
            (256, "590100"),
            (65535, "59ffff"),
            (65536, "5a00010000"),
            (1 << 32, "5b0000000100000000"),
        ] {
            let mut out = Vec::new();
            head(&mut out, BYTES, len);
            assert_eq!(out, unhex(expected), "{len}");
        }
    }

    #[test]
    fn the_document_is_taken_from_an_attestation_response() {
        let document =
            decode_attestation_response(&unhex("a16b4174746573746174696f6ea168646f63756d656e7443d28444"));
        assert_eq!(document.unwrap(), [0xd2, 0x84, 0x44]);
        // A two-byte length, as a real document's (a few KiB) has.
        let long = format!("a16b4174746573746174696f6ea168646f63756d656e7459012c{}", "5a".repeat(300));
        assert_eq!(decode_attestation_response(&unhex(&long)).unwrap(), vec![0x5a; 300]);
        // Indefinite lengths are CBOR too.
        let indefinite = "bf6b4174746573746174696f6ebf68646f63756d656e745f41d24184ffffff";
        assert_eq!(decode_attestation_response(&unhex(indefinite)).unwrap(), [0xd2, 0x84]);
    }

    #[test]
    fn error_answers_name_the_code() {
        for (hex, code) in [
            ("a1654572726f726f496e76616c6964417267756d656e74", "InvalidArgument"),
            ("a1654572726f726d496e707574546f6f4c61726765", "InputTooLarge"),
            ("a1654572726f726d496e7465726e616c4572726f72", "InternalError"),
            ("a1654572726f726e427566666572546f6f536d616c6c", "BufferTooSmall"),
        ] {
            match decode_attestation_response(&unhex(hex)) {
                Err(NsmError::Refused(c)) => assert_eq!(c, code),
                other => panic!("{hex}: {other:?}"),
            }
        }
    }

    #[test]
    fn anything_else_is_malformed_and_says_what_it_is() {
        let cases = [
            ("", "not CBOR"),
            ("674c6f636b504352", "the answer is \"LockPCR\", not Attestation"),
            ("a16947657452616e646f6da16672616e646f6d420102", "the answer is \"GetRandom\""),
            ("a16b4174746573746174696f6ea168646f63756d656e7440", "not a non-empty document"),
            ("a16b4174746573746174696f6ea168646f63756d656e7463616263", "\"document\" = text"),
            ("a16b4174746573746174696f6ea0", "Attestation has 0 fields"),
            ("a16b4174746573746174696f6e40", "Attestation holds a byte string"),
            ("a1654572726f726553746f6c65", "unknown error code \"Stole\""),
            ("a1654572726f7201", "Error holds an integer"),
            ("a20102030a", "a map of 2 entries"),
            ("a10102", "the variant is an integer"),
            ("a16b4174746573746174696f6ea168646f63756d656e7441d200", "1 bytes after the response"),
            ("820102", "an array, not a map"),
            ("a16b4174746573746174696f6ea168646f63756d656e74a10101", "not CBOR of at most 2 levels"),
            ("a16b4174746573746174696f6ea168646f63756d656e745a00010000", "not CBOR"),
        ];
        for (hex, expected) in cases {
            match decode_attestation_response(&unhex(hex)) {
                Err(NsmError::Response(why)) => assert!(why.contains(expected), "{hex}: {why}"),
                other => panic!("{hex}: {other:?}"),
            }
        }
        // Names from the response are quoted and cut short.
        let mut long_name = vec![0xa1];
        text(&mut long_name, &"x".repeat(50));
        long_name.push(NULL);
        let Err(NsmError::Response(why)) = decode_attestation_response(&long_name) else { panic!() };
        assert!(why.contains(&format!("{:?}…", "x".repeat(40))), "{why}");
    }

    proptest! {
        #[test]
        fn arbitrary_responses_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_attestation_response(&bytes);
        }

        #[test]
        fn encoded_documents_decode(document in proptest::collection::vec(any::<u8>(), 1..2048)) {
            let mut response = unhex("a16b4174746573746174696f6ea168646f63756d656e74");
            head(&mut response, BYTES, document.len());
            response.extend_from_slice(&document);
            prop_assert_eq!(decode_attestation_response(&response).unwrap(), document);
        }
    }
}
