//! The corpus replay shared by the crates' `tests/fuzz_corpus.rs`: every
//! committed input of a target (`fuzz/seeds/<target>/`,
//! `fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) goes through the
//! `fuzzing::` function its fuzz target calls. Included with `#[path]`.

use std::path::{Path, PathBuf};

/// The committed inputs of a target, in a stable order.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for dir in ["seeds", "corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable corpus directory").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs every input of `target` through `run`; names each one that fails.
pub(crate) fn replay(target: &str, run: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no committed inputs for {target}");
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("a readable input");
            std::panic::catch_unwind(|| run(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: inputs failing: {failed:#?}");
}
