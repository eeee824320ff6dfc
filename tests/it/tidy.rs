//! House rules checked by a test: every source file opens with a `//!` line and stays under 800
//! lines; no `mod.rs` files.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_file_opens_with_a_purpose_line_and_stays_small() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "bench"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.strip_prefix(root).unwrap().display().to_string();
        assert!(text.starts_with("//!"), "{name} must open with a //! line");
        assert!(
            text.lines().count() <= 800,
            "{name} is over 800 lines: split it"
        );
        assert!(
            !name.ends_with("mod.rs"),
            "{name}: use foo.rs + foo/, not mod.rs"
        );
    }
}
