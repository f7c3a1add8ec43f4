//! The README's metrics reference is the code's: every `weir_*` metric registered in the
//! dataplane or controller has a row in the table, and every row names a registered metric.

use std::collections::BTreeSet;
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `"weir_..."` string literals: the names metrics are registered under.
fn registered() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("dataplane/src"), &mut files);
    rust_files(&root.join("controller/src"), &mut files);
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for piece in text.split('"').skip(1).step_by(2) {
            if piece.starts_with("weir_")
                && piece.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                names.insert(piece.to_string());
            }
        }
    }
    names
}

fn documented() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `weir_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("weir_{name}"))
        .collect()
}

#[test]
fn metrics_reference_matches_the_code() {
    let registered = registered();
    let documented = documented();
    assert!(registered.len() >= 20, "found only {registered:?}");
    let missing: Vec<_> = registered.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&registered).collect();
    assert!(
        missing.is_empty(),
        "metrics without a README row: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "README rows for metrics the code does not register: {stale:?}"
    );
}
