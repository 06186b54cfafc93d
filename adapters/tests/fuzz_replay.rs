//! Replays every committed fuzz input (`fuzz/corpus/<target>/`, `fuzz/crashes/<target>/`)
//! through the same target bodies the fuzzers run (docs/FUZZING.md), so a crash found and fixed
//! once stays fixed, on the ordinary stable `cargo test`.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use snodo_adapters::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; none when the folder does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable folder entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_and_crash_file_passes_its_target() {
    let root = fuzz_dir();
    // A folder for a target that does not exist would be silently skipped: refuse it.
    for kind in ["corpus", "crashes"] {
        for entry in fs::read_dir(root.join(kind)).into_iter().flatten() {
            let name = entry.expect("a readable folder entry").file_name();
            let name = name.to_string_lossy();
            assert!(
                TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/{kind}/{name} is not a fuzz target"
            );
        }
    }
    let mut failures = Vec::new();
    for (name, body) in TARGETS {
        let corpus = files(&root.join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty");
        let crashes = files(&root.join("crashes").join(name));
        for path in corpus.iter().chain(&crashes) {
            let data = fs::read(path).expect("a readable fuzz input");
            if panic::catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
                failures.push(path.strip_prefix(&root).unwrap_or(path).to_path_buf());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "fuzz inputs that fail their target (replay one with `cargo fuzz run TARGET FILE`): \
         {failures:#?}"
    );
}
