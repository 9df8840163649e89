//! The MANIFEST of test images walked through the pixel pipeline: every `ok` file gives four
//! versions of exactly the fitted size (docs/ARCHITECTURE.md §7), every `reject` file the right stable code,
//! `ok-or-reject` files never crash; versions carry no metadata. The set is the shared developer
//! set when `GALLERY_TESTDATA` names it (102 files), else the subset committed in `testdata/`
//! (see its README), so a plain clone runs these checks too. Checks by pixels are in `pixels.rs`.

// Each test binary uses part of the shared module.
#[allow(dead_code)]
#[path = "../../../testdata/testset.rs"]
mod testset;

use gallery_render::{Limits, render};
use gallery_schema::{ErrorCode, Size, fit_inside};
use testset::{manifest, reject_code, testdata_or_subset};

#[test]
fn every_manifest_file_gets_its_expected_outcome() {
    let dir = testdata_or_subset();
    let rows = manifest(&dir);
    let mut checked = 0;
    for row in &rows {
        let bytes = std::fs::read(dir.join(&row.file)).unwrap();
        let started = std::time::Instant::now();
        let result = render(&bytes, Limits::default());
        let elapsed = started.elapsed();
        match (row.expected.as_str(), &result) {
            ("ok" | "ok-or-reject", Ok(r)) => {
                for v in &r.versions {
                    let want = fit_inside(r.upright, v.version.bounds());
                    assert_eq!(v.size, want, "{} {}", row.file, v.version);
                    let decoded = image::load_from_memory(&v.data).unwrap();
                    assert_eq!(
                        (decoded.width(), decoded.height()),
                        (want.width, want.height),
                        "{}",
                        row.file
                    );
                    for marker in [&b"Exif\0"[..], b"http://ns.adobe.com/xap", b"Photoshop 3.0"] {
                        assert!(
                            !v.data.windows(marker.len()).any(|w| w == marker),
                            "{} {} carries metadata",
                            row.file,
                            v.version
                        );
                    }
                }
                if let Some(upright) = row.detail.strip_prefix("upright ") {
                    let (w, h) = upright.split_once('x').unwrap();
                    assert_eq!(
                        r.upright,
                        Size::new(w.parse().unwrap(), h.parse().unwrap()),
                        "{}",
                        row.file
                    );
                }
                if row.category == "tiny" {
                    assert!(
                        r.versions.iter().all(|v| v.size == r.upright),
                        "{} was upscaled",
                        row.file
                    );
                }
            }
            ("reject", Err(e)) => {
                assert_eq!(e.code.as_str(), reject_code(&row.file), "{}: {e}", row.file);
                if row.category == "decompression_bomb" {
                    assert!(
                        elapsed.as_millis() < 50,
                        "{} took {elapsed:?} to refuse",
                        row.file
                    );
                }
            }
            ("ok-or-reject", Err(e)) => {
                assert!(
                    matches!(
                        e.code,
                        ErrorCode::UnsupportedFormat | ErrorCode::CorruptImage
                    ),
                    "{}: {e}",
                    row.file
                );
                assert!(!e.message.is_empty());
            }
            (expected, outcome) => panic!(
                "{}: expected {expected}, got {:?}",
                row.file,
                outcome.as_ref().map(|r| r.upright)
            ),
        }
        checked += 1;
    }
    assert_eq!(checked, rows.len());
    assert!(checked >= 40, "only {checked} files in {}", dir.display());
}
