//! The fuzz targets. Each takes the fuzz input, feeds it to the parsers of one kind of outside
//! bytes, and asserts what must hold whatever the input: beyond not panicking, where the format
//! allows, that a value read back from its own serialisation is the same value and that
//! canonical forms are fixed points.

use std::collections::BTreeSet;

use teelog_core::batch::{BatchBuilder, ChainHead, Header, ParsedBatch};
use teelog_core::canon::{canonicalize, Canonicalizer};
use teelog_core::gate::{Continuity, Gate};
use teelog_core::record::canonicalize_record;
use teelog_core::timestamp::{parse_rfc3339, UnixNanos};
use teelog_core::verify::{FindingKind, Origin, Verifier, VerifyOptions};

use crate::input::{split_parts, Choices};
use crate::signer::{seed_vector_key, signer};

/// The verification time of every target: the vectors' `now`.
pub const NOW: &str = "2026-12-02T12:00:00.000000000Z";

pub fn now() -> UnixNanos {
    match parse_rfc3339(NOW) {
        Ok(now) => now,
        Err(e) => panic!("{NOW}: {e}"),
    }
}

/// Unix seconds of [`NOW`], for certificate checks.
fn now_secs() -> u64 {
    now().unsigned_abs() / 1_000_000_000
}

fn origin(line: u64) -> Origin<'static> {
    Origin { source: "fuzz", line }
}

fn verify_options() -> VerifyOptions {
    VerifyOptions {
        trusted_keys: vec![
            teelog_core::HeaderSigner::public_key(signer()).clone(),
            seed_vector_key().clone(),
        ],
        now: Some(now()),
        ..VerifyOptions::default()
    }
}

/// What a verifier concluded about `lines`: everything of its report that must not depend on
/// the order the lines were stored in.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub kinds: BTreeSet<FindingKind>,
    pub batches: u64,
    pub records: u64,
}

pub fn verdict<'l>(lines: impl IntoIterator<Item = &'l [u8]>) -> Verdict {
    let mut verifier = Verifier::new(verify_options());
    for (i, line) in lines.into_iter().enumerate() {
        verifier.push_line(origin(i as u64 + 1), line);
    }
    let report = verifier.finish();
    Verdict {
        ok: report.ok,
        kinds: report
            .findings
            .iter()
            .map(|f| f.kind)
            .chain(report.omitted_findings.keys().copied())
            .collect(),
        batches: report.batches,
        records: report.records,
    }
}

/// A header must read back from its canonical bytes as itself, and those bytes must be canonical.
fn header_round_trip(header: &Header) {
    let bytes = match header.to_canonical_bytes() {
        Ok(bytes) => bytes,
        Err(e) => panic!("a validated header does not serialise: {e}"),
    };
    let back: Header = match serde_json::from_slice(&bytes) {
        Ok(back) => back,
        Err(e) => panic!("a header's canonical bytes do not parse: {e}"),
    };
    assert_eq!(&back, header, "a header read back from its canonical bytes differs");
    let mut again = Vec::new();
    assert!(canonicalize(&bytes, &mut again).is_ok(), "a header's canonical bytes do not canonicalise");
    assert_eq!(again, bytes, "a header's canonical bytes are not canonical");
}

/// One batch line as the verifier and the gateway meet it.
pub fn batch_line(data: &[u8]) {
    if let Ok(parsed) = ParsedBatch::parse(data) {
        header_round_trip(&parsed.header);
        let _ = parsed.layout_deviation(data);
        let _ = parsed.check_records();
        let _ = parsed.signature_status(&verify_options().trusted_keys);
        let _ = parsed.signed_hints();
        let _ = parsed.identity();
    }
    let _ = verdict([data]);
}

/// A gateway checkpoint line (docs/FORMAT.md §17) as a verifier meets it, under the fixed key as
/// An RFC 3161 verifier for fuzzing: a token is valid over `digest` when its bytes are the
/// digest followed by eight bytes of big-endian Unix nanoseconds, its time.
struct FuzzTokens;

impl teelog_core::evidence::TimestampVerifier for FuzzTokens {
    fn verify_token(&self, token: &[u8], digest: &[u8; 32]) -> Result<UnixNanos, String> {
        match token.split_at_checked(32) {
            Some((d, t)) if d == digest => {
                t.try_into().map(i64::from_be_bytes).map_err(|_| "length".to_string())
            }
            _ => Err("not over this digest".into()),
        }
    }
}

/// Evidence bundles (docs/FORMAT.md §16): the input's first line as a bundle, checked with and
/// without trusted time; its other lines fed to a linker for the bundle's batches. A bundle
/// checked OK proves every record it carries.
pub fn evidence_bundle(data: &[u8]) {
    use teelog_core::evidence::{check_bundle, Bundle};
    let (first, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(bundle) = serde_json::from_slice::<Bundle>(first) else { return };
    let key = teelog_core::HeaderSigner::public_key(signer()).clone();
    for timestamps in [None, Some(&FuzzTokens as &dyn teelog_core::evidence::TimestampVerifier)] {
        let report = check_bundle(
            &bundle,
            &verify_options(),
            None,
            timestamps,
            std::slice::from_ref(&key),
            Some(now()),
        );
        assert!(
            !report.ok || report.proven.len() == bundle.records.len(),
            "an OK bundle left a record unproven"
        );
    }
    let mut linker = teelog_core::anchor::Linker::new(&bundle, Some(Box::new(FuzzTokens)));
    rest.split(|&b| b == b'\n').for_each(|line| linker.push_line(line));
    let mut linked = bundle.clone();
    if linker.finish(&mut linked).is_ok() {
        let _ = check_bundle(&linked, &verify_options(), None, Some(&FuzzTokens), &[], Some(now()));
    }
}

/// the gateway's: a checkpoint that parses is canonical and reads back from its body as itself,
/// and one that names a batch the input lacks is never OK.
pub fn checkpoint_line(data: &[u8]) {
    let key = teelog_core::HeaderSigner::public_key(signer()).clone();
    let parsed = teelog_core::checkpoint::ParsedCheckpoint::parse(data);
    if let Ok(parsed) = &parsed {
        let body = match parsed.checkpoint.to_canonical_bytes() {
            Ok(body) => body,
            Err(e) => panic!("a parsed checkpoint does not serialise: {e}"),
        };
        let back: Result<teelog_core::checkpoint::Checkpoint, _> = serde_json::from_slice(&body);
        assert!(back.is_ok_and(|b| b == parsed.checkpoint), "a checkpoint read back from its body differs");
        let _ = parsed.verify(std::slice::from_ref(&key));
    }
    let mut verifier = Verifier::new(verify_options()).with_checkpoint_keys(vec![key.clone()], None);
    verifier.push_line(origin(1), data);
    let report = verifier.finish();
    // With a key, input without batches is never OK: a checkpoint naming batches finds them
    // missing, and none at all is missing_checkpoint.
    assert!(!report.ok, "a lone checkpoint line verified as OK");
    if parsed.is_ok_and(|p| p.verify(std::slice::from_ref(&key)).is_ok()) {
        let kind = FindingKind::TruncatedAfterCheckpoint;
        let reported =
            report.findings.iter().any(|f| f.kind == kind) || report.omitted_findings.contains_key(&kind);
        assert!(reported, "a verified checkpoint naming batches the input lacks is not reported");
    }
}

/// Records a generated batch may hold: the vector's inputs, and one whose message comes from
/// the fuzz input.
fn record(c: &mut Choices<'_>) -> Vec<u8> {
    let message = String::from_utf8_lossy(c.bytes(24)).into_owned();
    let level = ["Information", "Warning", "Error"][c.below(3)];
    let ts =
        ["\"2026-12-02T09:00:00Z\"", "1796202002000000001", "\"2026-12-02T10:00:01.5+01:00\""][c.below(3)];
    let message = serde_json::Value::String(message).to_string();
    format!("{{\"ts\":{ts},\"level\":\"{level}\",\"message\":{message}}}").into_bytes()
}

fn epoch_id(n: usize) -> String {
    format!("{n:032x}")
}

/// A stream of validly signed batch lines (without newlines) chosen by `c`: epochs restarted and
/// linked, a fork signed at a seq already used, heartbeats.
pub fn generate_stream(c: &mut Choices<'_>) -> Vec<Vec<u8>> {
    let mut chain = ChainHead {
        stream: "fuzz".into(),
        epoch: epoch_id(0),
        next_seq: 1,
        prev: None,
        prev_sealed_at: None,
    };
    let mut at = now() - 3_600_000_000_000;
    let mut lines = Vec::new();
    let batches = 1 + c.below(6);
    for i in 0..batches {
        let shape = c.byte();
        if shape & 0x80 != 0 && i > 0 {
            // A restart: a new epoch linked to the last header.
            chain = ChainHead { epoch: epoch_id(i), next_seq: 1, ..chain };
        }
        let fork = (shape & 0x40 != 0).then(|| chain.clone());
        at += 1 + i64::from(c.u16()) * 1_000_000;
        lines.push(seal(&mut chain, usize::from(shape % 4), at, c));
        if let Some(mut fork) = fork {
            // Another batch signed at the same seq: equivocation.
            lines.push(seal(&mut fork, usize::from(shape % 4) + 1, at, c));
        }
    }
    lines
}

fn seal(chain: &mut ChainHead, records: usize, at: UnixNanos, c: &mut Choices<'_>) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for _ in 0..records {
        // A record the canonicaliser refuses is simply not in the batch.
        let _ = builder.push_input(&record(c), &|| at);
    }
    let mut line = Vec::new();
    if let Err(e) = builder.seal(chain, signer(), at, &mut line) {
        panic!("the fixed signer cannot seal: {e}");
    }
    line.pop();
    line
}

/// Changes the stream as whoever holds the storage may: drops, copies, reorders, flips bytes,
/// cuts lines short, plants lines.
fn mutate(lines: &mut Vec<Vec<u8>>, c: &mut Choices<'_>) {
    for _ in 0..16 {
        if c.is_empty() {
            return;
        }
        let op = c.byte() % 7;
        let n = lines.len();
        if n == 0 {
            lines.push(c.bytes(64).to_vec());
            continue;
        }
        let i = c.below(n);
        match op {
            0 => {
                lines.remove(i);
            }
            1 => {
                let copy = lines[i].clone();
                lines.insert(c.below(n + 1), copy);
            }
            2 => lines.swap(i, c.below(n)),
            3 => {
                let line = &mut lines[i];
                if !line.is_empty() {
                    let at = c.below(line.len());
                    line[at] ^= c.byte() | 1;
                }
            }
            4 => {
                let at = c.below(lines[i].len() + 1);
                lines[i].truncate(at);
            }
            5 => lines.insert(i, c.bytes(64).to_vec()),
            _ => {
                let line = &mut lines[i];
                let at = c.below(line.len() + 1);
                let end = (at + c.below(16)).min(line.len());
                let with = c.bytes(16).to_vec();
                line.splice(at..end, with);
            }
        }
    }
}

/// A generated stream, changed as storage may change it: the verifier's verdict must not depend
/// on the order the lines are stored in, copies and reordering must change nothing, and a line
/// changed or planted must be found. The gateway's gate checks the same lines.
pub fn verifier_order(data: &[u8]) {
    let mut c = Choices::new(data);
    let original = generate_stream(&mut c);
    let mut lines = original.clone();
    mutate(&mut lines, &mut c);
    let stored = verdict(lines.iter().map(Vec::as_slice));
    // A line that was not signed as it stands (and is not blank, which is skipped) is always
    // a finding: every byte of a line that verifies is signed or checked.
    let blank = |line: &Vec<u8>| line.iter().all(u8::is_ascii_whitespace);
    let planted = lines.iter().any(|line| !blank(line) && !original.contains(line));
    assert!(!(planted && stored.ok), "a changed or planted line verified: {lines:?}");
    // Copies and another order of the very lines signed change nothing.
    if !planted && original.iter().all(|line| lines.contains(line)) {
        let signed = verdict(original.iter().map(Vec::as_slice));
        assert_eq!(stored, signed, "copies or another order of the signed lines changed the verdict");
    }
    let reversed = verdict(lines.iter().rev().map(Vec::as_slice));
    assert_eq!(stored, reversed, "the verdict changed when the lines were stored in reverse");
    if lines.len() > 2 {
        let mid = lines.len() / 2;
        let rotated = verdict(lines[mid..].iter().chain(&lines[..mid]).map(Vec::as_slice));
        assert_eq!(stored, rotated, "the verdict changed when the lines were stored rotated");
    }
    // The gateway meets the same lines one by one, and saves what it learnt across restarts.
    let mut gate = Gate::new(verify_options(), Continuity::default());
    for (i, line) in lines.iter().enumerate() {
        let _ = gate.check_line(origin(i as u64 + 1), line, now());
    }
    // Compared as saved: the recent headers are kept in memory only (docs/GATEWAY.md).
    let save = |continuity: &Continuity| serde_json::to_vec(continuity).map_err(|e| e.to_string());
    let saved = save(gate.continuity());
    let restored = saved
        .clone()
        .and_then(|bytes| serde_json::from_slice::<Continuity>(&bytes).map_err(|e| e.to_string()));
    assert_eq!(restored.and_then(|c| save(&c)), saved, "the gateway's saved continuity does not read back");
}

/// RFC 8785 canonicalisation and the record rules built on it.
pub fn canonical_json(data: &[u8]) {
    let mut once = Vec::new();
    if canonicalize(data, &mut once).is_ok() {
        let mut twice = Vec::new();
        assert!(canonicalize(&once, &mut twice).is_ok(), "canonical output does not canonicalise");
        assert_eq!(once, twice, "canonicalisation is not idempotent");
    }
    let mut builder = BatchBuilder::new();
    let _ = builder.push_input(data, &now);
    // Readers canonicalise a record once and hand the signer its canonical bytes and `ts`
    // (`Input::Canonical`), which it takes as they are: they must be what it would have made.
    let mut record = Vec::new();
    if let Ok(ts) = canonicalize_record(&mut Canonicalizer::new(), data, &now, &mut record) {
        let mut again = Vec::new();
        let retold =
            canonicalize_record(&mut Canonicalizer::new(), &record, &|| ts.wrapping_add(1), &mut again);
        assert_eq!(retold.ok(), Some(ts), "a canonical record's ts is not what it was made with");
        assert_eq!(again, record, "a canonical record is not canonical");
    }
}

/// The seed's `SignedLogBatch` lines: as found, and with a payload from the input signed by the
/// fixed key, so that the checks after the signature are reached.
pub fn seed_batch(data: &[u8]) {
    let _ = verdict([data]);
    let mut c = Choices::new(data);
    let sequence = u64::from(c.u16());
    let payload = c.rest();
    let b64 = |bytes: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
    let line = serde_json::json!({
        "Sequence": sequence,
        "PayloadBase64": b64(payload),
        "SignatureBase64": b64(&signer().sign_bytes(payload)),
        "AttestationCertThumbprint": "sha256:00",
    });
    let _ = verdict([line.to_string().as_bytes()]);
}

/// Nitro (and dev) documents: COSE_Sign1 over CBOR, in any of the encodings accepted.
pub fn nitro_document(data: &[u8]) {
    use teelog_attest::nitro::NitroDocument;
    use teelog_attest::TrustRoot;
    for bytes in [Some(data.to_vec()), teelog_attest::decode_document(data).ok()].into_iter().flatten() {
        if let Ok(document) = NitroDocument::parse(&bytes) {
            let _ = document.is_debug_mode();
            // At the document's own time, so that a real document verifies all the way.
            let _ = document.verify(&[TrustRoot::aws_nitro()], None, false);
        }
    }
}

/// AMD SEV-SNP reports, verified with a VCEK and AMD's chain (a PEM bundle) from the input.
pub fn snp_report(data: &[u8]) {
    use teelog_attest::snp::{AmdChain, SnpReport};
    let parts = split_parts(data, 3);
    let chain = AmdChain::from_pem(parts[2]);
    if let Ok(report) = SnpReport::parse(parts[0]) {
        let _ = report.debug_allowed();
        if let Ok(chain) = chain {
            let _ = report.verify(parts[1], &chain, now_secs(), false);
        }
    }
}

/// Intel TDX DCAP v4 quotes, with their PCK chain checked to the pinned root.
pub fn tdx_quote(data: &[u8]) {
    if let Ok(quote) = teelog_attest::tdx::TdxQuote::parse(data) {
        let _ = quote.debug();
        let _ = quote.verify(now_secs(), false);
    }
}

/// Intel's TDX collateral: TCB Info, QE Identity, their issuer chains, the CRLs and a root.
pub fn tdx_collateral(data: &[u8]) {
    use teelog_attest::tcb::{CollateralFiles, TdxCollateral};
    let parts = split_parts(data, 7);
    let files = CollateralFiles {
        tcb_info: parts[0],
        tcb_info_issuer_chain: parts[1],
        qe_identity: parts[2],
        qe_identity_issuer_chain: parts[3],
        pck_crl: (!parts[4].is_empty()).then_some(parts[4]),
        root_ca_crl: (!parts[5].is_empty()).then_some(parts[5]),
    };
    if let Ok(collateral) = TdxCollateral::parse(files) {
        // The seventh part stands for the root the quote carried.
        let _ = collateral.verify(parts[6], now_secs());
    }
}

/// TPM evidence bundles (CBOR) and the TPM structures inside them.
pub fn tpm_evidence(data: &[u8]) {
    use teelog_attest::tpm::bundle::TpmBundle;
    if let Ok(bundle) = TpmBundle::parse(data) {
        let encoded = match bundle.encode() {
            Ok(encoded) => encoded,
            Err(e) => panic!("a TPM bundle that was read cannot be written: {e}"),
        };
        assert_eq!(encoded, data, "a TPM bundle does not serialise back to the bytes it was read from");
        let again = TpmBundle::parse(&encoded);
        assert!(again.is_ok_and(|b| b.members() == bundle.members()), "a TPM bundle does not read back");
        let _ = bundle.evidence().verify(None);
        let _ = bundle.verify(&[], now_secs());
    }
    if let Ok(public) = teelog_attest::tpm::TpmPublic::parse(data) {
        let _ = public.check_attestation_key();
        let _ = public.name();
    }
    let _ = teelog_attest::tpm::signature_p1363(data, "fuzz");
}

/// OTLP log export requests, protobuf (first byte even) or OTLP/JSON (odd), mapped to records.
pub fn otlp(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else { return };
    let request = if kind % 2 == 0 {
        let in_place = teelog_otlp::WireRequest::new(body.to_vec()).ok();
        let decoded = teelog_otlp::decode_protobuf(body);
        if let Some(in_place) = &in_place {
            // Read in place only what prost reads, and to the same records.
            let Ok(decoded) = &decoded else { panic!("a body read in place that prost refuses") };
            assert!(
                mapped(in_place.into()) == mapped(decoded.into()),
                "read in place, a body maps otherwise"
            );
        }
        let Ok(request) = decoded else { return };
        // Compared as bytes: a NaN attribute is never equal to itself.
        let encoded = teelog_otlp::encode_protobuf(&request);
        let again = teelog_otlp::decode_protobuf(&encoded).map(|r| teelog_otlp::encode_protobuf(&r));
        assert!(again.is_ok_and(|r| r == encoded), "an OTLP request does not read back from its protobuf");
        request
    } else {
        let Ok(request) = teelog_otlp::decode_json(body) else { return };
        request
    };
    let mut out = Vec::new();
    let _ = teelog_otlp::for_each_record(&request, now(), &mut out, |record| {
        // The signer takes mapped records as they are: each must be canonical already.
        let mut again = Vec::new();
        let canon = &mut teelog_core::canon::Canonicalizer::new();
        let canonical = teelog_core::record::canonicalize_record(canon, record, &now, &mut again).is_ok()
            && again == record;
        assert!(canonical, "a mapped record is not in canonical form: {}", String::from_utf8_lossy(record));
        Ok::<(), ()>(())
    });
}

/// Everything the OTLP mapping makes of a request, in order.
fn mapped(request: teelog_otlp::RequestRef<'_>) -> Vec<String> {
    let mut seen = Vec::new();
    let _ = teelog_otlp::for_each_mapped(request, now(), &mut Vec::new(), |mapped| {
        seen.push(match mapped {
            teelog_otlp::Mapped::Record { record, ts, .. } => {
                format!("{ts} {}", String::from_utf8_lossy(record))
            }
            teelog_otlp::Mapped::Refused { path, fault, log_record } => {
                format!("{path} {fault} {:?}", log_record.encode_to_vec())
            }
            teelog_otlp::Mapped::Empty { path, fault } => format!("{path} {fault}"),
        });
        Ok::<(), ()>(())
    });
    seen
}

/// The relay protocol on both sides, and the gateway's spool lines made from its frames.
pub fn relay_frames(data: &[u8]) {
    use teelog_relay::{check_line, FrameReader, Hello, ServerMessage};
    let Some((&step, stream)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    for reader in [FrameReader::server(), FrameReader::client()] {
        let whole = frames(reader_like(&reader), &[stream]);
        let pieces: Vec<&[u8]> = stream.chunks(step).collect();
        let chunked = frames(reader_like(&reader), &pieces);
        assert_eq!(whole, chunked, "frames depend on how the bytes arrived");
    }
    let (frames, _) = frames(FrameReader::server(), &[stream]);
    // Frames written again read back as the same payloads.
    let written: Vec<u8> = frames.iter().flat_map(|f| teelog_relay::frame(f)).collect();
    let mut client = FrameReader::client();
    client.set_max(usize::MAX);
    let (again, error) = self::frames(client, &[&written]);
    assert_eq!((&again, error), (&frames, None), "frames written again do not read back");
    for (i, payload) in frames.iter().enumerate() {
        if i == 0 {
            if let Ok(hello) = Hello::parse(payload) {
                let opening = hello.opening();
                let mut reader = FrameReader::server();
                reader.push(&opening);
                let back = reader.next_frame().ok().flatten().map(Hello::parse);
                assert!(
                    matches!(back, Some(Ok(h)) if h == hello),
                    "a hello does not read back from its opening"
                );
            }
            continue;
        }
        if let Ok(message) = ServerMessage::parse(payload) {
            let frame = message.to_frame();
            let mut reader = FrameReader::client();
            reader.push(&frame);
            let back = reader.next_frame().ok().flatten().map(ServerMessage::parse);
            assert!(matches!(back, Some(Ok(m)) if m == message), "a server message does not read back");
        }
        if check_line(payload).is_ok() {
            // The gateway names only streams that passed check_stream_name (relay hello, HTTP
            // query, signed header), which need no JSON escapes: the note is read borrowed.
            let stream = std::str::from_utf8(payload)
                .ok()
                .filter(|s| teelog_core::batch::check_stream_name(s).is_ok());
            for valid in [None, Some(true), Some(false)] {
                let mut spooled = Vec::new();
                teelog_gateway::envelope::encode(&mut spooled, stream, valid, payload);
                let entry = teelog_gateway::envelope::decode(&spooled[..spooled.len() - 1]);
                assert_eq!(entry.line, payload, "a spool line does not give back its line");
                assert_eq!(
                    (entry.stream, entry.signature_valid),
                    (stream, valid),
                    "a spool note does not read back"
                );
            }
            let _ = teelog_gateway::envelope::decode(payload);
        }
    }
}

/// A fresh reader of the same side as `reader`.
fn reader_like(reader: &teelog_relay::FrameReader) -> teelog_relay::FrameReader {
    if format!("{reader:?}").contains("expect_magic: true") {
        teelog_relay::FrameReader::server()
    } else {
        teelog_relay::FrameReader::client()
    }
}

/// The frames of `pieces` as they arrive one after another, and the error that ended them.
fn frames(
    mut reader: teelog_relay::FrameReader,
    pieces: &[&[u8]],
) -> (Vec<Vec<u8>>, Option<teelog_relay::RelayError>) {
    let mut out = Vec::new();
    for piece in pieces {
        reader.push(piece);
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    out.push(frame.to_vec());
                    // The server raises its limit once the hello is in, as the gateway does.
                    reader.set_max(1 << 16);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// The entries `(timestamp, line)` under which the shipper stores `lines` in Loki: each batch
/// entry at its `sealed_at`, record `i` at `sealed_at + i`.
pub fn loki_entries(lines: &[Vec<u8>]) -> Vec<(UnixNanos, String)> {
    let mut entries = Vec::new();
    for line in lines {
        let Ok(split) = teelog_loki::layout::split_batch_line(line) else { continue };
        entries.push((split.sealed_at, split.batch_entry));
        for (at, record) in (split.sealed_at..).zip(&split.records) {
            entries.push((at, record.to_string()));
        }
    }
    entries
}

/// A `query_range` answer of one stream holding `entries`.
pub fn loki_answer(entries: &[(UnixNanos, String)]) -> Vec<u8> {
    let values: Vec<_> = entries.iter().map(|(at, line)| serde_json::json!([at.to_string(), line])).collect();
    serde_json::json!({"status": "success", "data": {"resultType": "streams",
        "result": [{"stream": {"teelog_stream": "fuzz"}, "values": values}]}})
    .to_string()
    .into_bytes()
}

/// The batch lines `teelog audit` rebuilds from the entries of an answer, for `stream`.
pub fn rebuilt_lines(stream: &str, response: teelog_loki::QueryResponse) -> Vec<Vec<u8>> {
    let (from, to) = (now() - 86_400_000_000_000, now());
    let mut entries: Vec<_> = response.streams.into_iter().flat_map(|s| s.entries).collect();
    entries.sort_by_key(|e| e.timestamp);
    let mut batches = teelog_loki::BatchEntries::new(stream, from, to);
    for entry in &entries {
        let _ = batches.push(entry.timestamp, entry.line.clone());
    }
    let _ = batches.len();
    let mut assembler = batches.records();
    let mut lines = Vec::new();
    for entry in entries {
        assembler.push(entry.timestamp, entry.line);
        lines.extend(assembler.ready().map(|a| a.line));
    }
    lines.extend(assembler.finish().batches.into_iter().map(|a| a.line));
    lines
}

/// Loki `query_range` and label-values answers, and the batch lines rebuilt from their entries.
/// An input that starts with `{` is an answer; any other is read as choices: a generated
/// stream stored in Loki, whose entries are then dropped, copied, moved or changed.
pub fn loki_query(data: &[u8]) {
    use teelog_loki::query::{parse_label_values, parse_query_response};
    if data.first() == Some(&b'{') {
        let _ = parse_label_values(data);
        let Ok(response) = parse_query_response(data) else { return };
        let _ = response.is_categorized();
        let lines = rebuilt_lines("vectors", response);
        let _ = verdict(lines.iter().map(Vec::as_slice));
        return;
    }
    let mut c = Choices::new(data);
    let original = generate_stream(&mut c);
    let stored = loki_entries(&original);
    let mut entries = stored.clone();
    for _ in 0..8 {
        if c.is_empty() || entries.is_empty() {
            break;
        }
        let i = c.below(entries.len());
        match c.byte() % 4 {
            0 => {
                entries.remove(i);
            }
            1 => entries.insert(c.below(entries.len() + 1), entries[i].clone()),
            2 => entries[i].0 += i64::from(c.u16()) - 32_768,
            _ => {
                let mut line = std::mem::take(&mut entries[i].1).into_bytes();
                if !line.is_empty() {
                    let at = c.below(line.len());
                    line[at] ^= c.byte() | 1;
                }
                entries[i].1 = String::from_utf8_lossy(&line).into_owned();
            }
        }
    }
    let response = match parse_query_response(&loki_answer(&entries)) {
        Ok(response) => response,
        Err(e) => panic!("an answer written as Loki writes it does not parse: {e}"),
    };
    let lines = rebuilt_lines("fuzz", response);
    let through_loki = verdict(lines.iter().map(Vec::as_slice));
    let planted = lines.iter().any(|line| !original.contains(line));
    assert!(!(planted && through_loki.ok), "a batch changed in Loki verified: {lines:?}");
    let direct = verdict(original.iter().map(Vec::as_slice));
    if entries == stored && direct.ok {
        assert_eq!(through_loki, direct, "a stream read back from Loki verifies otherwise than as signed");
    }
}

/// What the Nitro Secure Module and a TPM answer (first byte even: NSM, odd: TPM).
pub fn device_responses(data: &[u8]) {
    use teelog_tpm::command;
    let Some((&kind, body)) = data.split_first() else { return };
    if kind % 2 == 0 {
        let _ = teelog_nsm::proto::decode_attestation_response(body);
        return;
    }
    if let Some(header) = body.get(..command::RESPONSE_HEADER_LEN).and_then(|h| h.try_into().ok()) {
        let _ = command::response_len(header);
    }
    let _ = command::parse_session(body);
    let _ = command::parse_empty(body, "fuzz");
    let _ = command::parse_load(body);
    let _ = command::parse_sign(body).map(|sig| teelog_attest::tpm::signature_p1363(sig, "fuzz"));
}

/// Configuration files: the shipper's, the gateway's, a measurement policy, trusted roots and
/// keys (the first byte chooses).
pub fn config_files(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else { return };
    let text = std::str::from_utf8(body).ok();
    match (kind % 5, text) {
        (0, Some(text)) => {
            let _ = teelog_deliver::config::parse_checked(text, teelog_ship::config::Config::check);
        }
        (1, Some(text)) => {
            let _ = teelog_deliver::config::parse_checked(text, teelog_gateway::config::GatewayConfig::check);
        }
        (2, Some(text)) => {
            if let Ok(policy) = toml::from_str::<teelog_core::policy::Policy>(text).map(|p| p.validated()) {
                let _ = policy.map(|p| p.judge("nitro", "00", now()));
            }
        }
        (3, _) => {
            let _ = teelog_attest::TrustRoot::all_from_pem_or_der(body);
        }
        (4, _) => {
            let _ = teelog_core::PublicKey::from_pem(body);
            let _ = teelog_core::PublicKey::from_spki_der(body);
            let _ = teelog_core::SoftwareKey::from_pkcs8_pem(body);
        }
        _ => {}
    }
}
