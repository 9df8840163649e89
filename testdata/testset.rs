//! The test image set and its MANIFEST, shared by the pixel pipeline's tests
//! (`processor/render/tests/`) and the end-to-end tests (`e2e/`), which include this file with
//! `#[path]`: where the set is, how a row reads, and which code each `reject` file must get.

use std::path::{Path, PathBuf};

/// The whole shared developer set, when `GALLERY_TESTDATA` names it.
pub fn full_testdata() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("GALLERY_TESTDATA")?);
    dir.join("MANIFEST.tsv").is_file().then_some(dir)
}

/// The whole set if present, else the subset committed in the repository's `testdata/`.
pub fn testdata_or_subset() -> PathBuf {
    full_testdata().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|p| p.join("testdata"))
            .find(|p| p.join("MANIFEST.tsv").is_file())
            .expect("the committed testdata/ beside the workspace")
    })
}

/// One row of a `MANIFEST.tsv`.
#[derive(Debug, Clone)]
pub struct Row {
    pub file: String,
    pub category: String,
    pub expected: String,
    pub detail: String,
}

/// The rows of `dir/MANIFEST.tsv`, header skipped.
pub fn manifest(dir: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    text.lines()
        .skip(1)
        .map(|line| {
            let c: Vec<&str> = line.split('\t').collect();
            assert!(c.len() >= 4, "short MANIFEST row: {line}");
            Row {
                file: c[0].into(),
                category: c[1].into(),
                expected: c[2].into(),
                detail: c[3].into(),
            }
        })
        .collect()
}

/// The stable code (docs/ARCHITECTURE.md §6) each `reject` file must end with when it is processed.
pub fn reject_code(file: &str) -> &'static str {
    match file {
        "bad/random_bytes.jpg" | "bad/text_file.jpg" => "unsupported_format",
        f if f.starts_with("bomb/") && f != "bomb/gif_claims_4gpx.gif" => "image_too_large",
        _ => "corrupt_image",
    }
}
