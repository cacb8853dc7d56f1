//! Writes the seed corpus of every fuzz target into `DIR/<target>/` (for `scripts/fuzz`), with
//! the shared fixtures' documents when they are at hand. Nothing it writes is committed.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: teelog-fuzz-corpus DIR");
        return ExitCode::from(2);
    };
    let fixtures = teelog_fixtures::dir().join("attestation");
    let fixtures = fixtures.is_dir().then_some(fixtures.as_path());
    if fixtures.is_none() {
        eprintln!(
            "teelog-fuzz-corpus: no shared fixtures; the attestation targets start from generated seeds only"
        );
    }
    for target in teelog_fuzz::TARGETS {
        let target_dir = dir.join(target.name);
        let written = std::fs::create_dir_all(&target_dir).and_then(|()| {
            teelog_fuzz::corpus::seeds(target.name, fixtures)
                .iter()
                .enumerate()
                .try_for_each(|(i, seed)| std::fs::write(target_dir.join(format!("seed-{i:03}")), seed))
        });
        if let Err(e) = written {
            eprintln!("teelog-fuzz-corpus: {}: {e}", target_dir.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
