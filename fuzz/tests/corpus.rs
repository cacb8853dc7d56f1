//! The short run of every fuzz target that the test command makes (issue 18): each target over
//! its seed corpus, the inputs that once failed (fuzz/regressions/<target>/), and a fixed number
//! of deterministic mutations of the seeds, without libFuzzer, in the ordinary test build.
//! `scripts/fuzz` is the long, coverage-guided run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::path::Path;
use std::time::{Duration, Instant};

use teelog_fuzz::{corpus, TARGETS};

/// Mutants tried per target, and the time after which a target stops early (debug builds on a
/// shared machine vary; the seeds and regressions always run whole).
const MUTANTS: usize = 2000;
const BUDGET: Duration = Duration::from_secs(4);

/// xorshift64: the mutations are the same on every run, so a failure here repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random change to `seed`: a flipped bit, an interesting byte, a cut, a copied slice, or
/// a spliced part of another seed.
fn mutate(seed: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(6) {
            0 if len > 0 => {
                let at = rng.below(len);
                out[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                out[at] = [0, 0xff, 0x7f, 0x80, b'"', b'\\', b'\n', b'{', b'9'][rng.below(9)];
            }
            2 => out.truncate(rng.below(len + 1)),
            3 if len > 0 => {
                let from = rng.below(len);
                let to = (from + rng.below(64)).min(len);
                let copy = out[from..to].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, copy);
            }
            4 if !other.is_empty() => {
                let from = rng.below(other.len());
                let to = (from + rng.below(256)).min(other.len());
                let at = rng.below(len + 1);
                out.splice(at..at, other[from..to].iter().copied());
            }
            _ => {
                let at = rng.below(len + 1);
                out.insert(at, rng.next() as u8);
            }
        }
    }
    out
}

fn regressions(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions").join(target);
    let mut paths: Vec<_> =
        std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn every_target_runs_over_its_corpus_and_mutants() {
    let fixtures = teelog_fixtures::dir().join("attestation");
    let fixtures = fixtures.is_dir().then_some(fixtures.as_path());
    for target in TARGETS {
        let seeds = corpus::seeds(target.name, fixtures);
        assert!(!seeds.is_empty(), "{}: no seeds", target.name);
        for input in seeds.iter().chain(&regressions(target.name)) {
            (target.run)(input);
        }
        let started = Instant::now();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.name.len() as u64);
        let mut ran = 0;
        while ran < MUTANTS && started.elapsed() < BUDGET {
            let seed = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            (target.run)(&mutate(seed, other, &mut rng));
            ran += 1;
        }
        eprintln!("{}: {} seeds, {ran} mutants in {:?}", target.name, seeds.len(), started.elapsed());
    }
}

#[test]
fn generated_streams_verify_until_storage_changes_them() {
    // The generator's own output, unchanged, must verify: otherwise the order property would be
    // checked only on streams that fail anyway.
    // Bytes below 0x40 choose neither forks nor restarts; [1, 0, 0, 0, 0, 0x80] is two
    // heartbeats, the second in a new epoch linked to the first.
    for data in [&[][..], &[5, 0, 1, 0, 0, 2, 7, 0, 3, 1, 2, 3, 9][..], &[1, 0, 0, 0, 0, 0x80, 0, 0][..]] {
        let lines = teelog_fuzz::targets::generate_stream(&mut teelog_fuzz::input::Choices::new(data));
        let verdict = teelog_fuzz::targets::verdict(lines.iter().map(Vec::as_slice));
        assert!(verdict.ok, "{data:?}: {verdict:?}");
        assert_eq!(verdict.batches, lines.len() as u64);
    }
    // A fork signed at a used seq is equivocation, whatever the order.
    let lines =
        teelog_fuzz::targets::generate_stream(&mut teelog_fuzz::input::Choices::new(&[0, 0, 0x40, 0, 0]));
    let verdict = teelog_fuzz::targets::verdict(lines.iter().map(Vec::as_slice));
    assert!(!verdict.ok && verdict.kinds.contains(&teelog_core::FindingKind::Equivocation), "{verdict:?}");
}

#[test]
fn a_generated_stream_reads_back_from_loki_as_signed() {
    use teelog_fuzz::targets::{loki_answer, loki_entries, rebuilt_lines};
    let data = [5, 0, 1, 0, 0, 2, 7, 0, 3, 1, 2, 3, 9];
    let lines = teelog_fuzz::targets::generate_stream(&mut teelog_fuzz::input::Choices::new(&data));
    let answer = loki_answer(&loki_entries(&lines));
    let response = teelog_loki::query::parse_query_response(&answer).unwrap();
    let mut rebuilt = rebuilt_lines("fuzz", response);
    let mut signed = lines.clone();
    rebuilt.sort();
    signed.sort();
    assert_eq!(rebuilt, signed);
}
