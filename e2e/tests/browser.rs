//! The web page in a real browser: Debian's chromium, driven by `playwright-core` from a Node
//! script (`e2e/browser/upload.mjs`), against the running service in local and in S3 mode.
//! It uploads two real photos and a corrupt file through the page, sees two thumbnails and an
//! error appear, drops the page's WebSocket while a third photo is uploaded, and sees the page
//! catch up. The screenshot is kept in `target/browser/`. `scripts/ensure-browser.sh` (run by
//! `scripts/test.sh`) installs chromium and playwright-core.

use std::path::{Path, PathBuf};
use std::process::Command;

use gallery_e2e::TestStack;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Two photos from the committed test set, a third for the offline part, and a corrupt file.
fn inputs(dir: &Path) -> (Vec<PathBuf>, PathBuf) {
    let testdata = root().join("testdata");
    let photos = [
        "progressive/cat_progressive.jpg",
        "grayscale/concert_gray.jpg",
        "webp/flower_exif.webp",
    ]
    .iter()
    .map(|p| testdata.join(p))
    .collect::<Vec<_>>();
    for p in &photos {
        assert!(p.is_file(), "missing test photo {}", p.display());
    }
    let corrupt = dir.join("corrupt.jpg");
    let mut bytes = std::fs::read(&photos[0]).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&corrupt, bytes).unwrap();
    (photos, corrupt)
}

async fn drive(stack: &TestStack, mode: &str) -> Value {
    let browser_dir = root().join("e2e/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run scripts/ensure-browser.sh"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "no chromium at {chromium}: run scripts/ensure-browser.sh"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (photos, corrupt) = inputs(tmp.path());
    let shots = root().join("target/browser");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join(format!("{mode}.png"));
    let photos: Vec<String> = photos.iter().map(|p| p.display().to_string()).collect();
    let project = format!("browser-{mode}");
    let out = tokio::task::spawn_blocking({
        let base = stack.base();
        let screenshot = screenshot.clone();
        move || {
            Command::new("node")
                .arg(browser_dir.join("upload.mjs"))
                .env("GALLERY_URL", base)
                .env("GALLERY_PROJECT", project)
                .env("GALLERY_PHOTOS", photos.join(","))
                .env("GALLERY_CORRUPT", &corrupt)
                .env("GALLERY_SCREENSHOT", &screenshot)
                .env("CHROMIUM", chromium)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser run failed:\n{stdout}\n{stderr}"
    );
    assert!(screenshot.is_file());
    let mut seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let (_, doc) = stack.get_json("/openapi.json").await.unwrap();
    seen["documented_operations"] = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum::<usize>()
        .into();
    seen
}

fn check(seen: &Value) {
    let tiles = seen["tiles"].as_array().unwrap();
    let with_thumb = tiles.iter().filter(|t| t["thumb"] == true).count();
    let errors: Vec<&Value> = tiles.iter().filter(|t| t["state"] == "error").collect();
    // Two photos through the page, one more while it was offline; the corrupt file in error.
    assert_eq!(with_thumb, 3, "{seen}");
    assert_eq!(errors.len(), 1, "{seen}");
    assert_eq!(tiles.len(), 4, "{seen}");
    assert!(
        seen["error_text"]
            .as_str()
            .unwrap()
            .starts_with("corrupt_image"),
        "{seen}"
    );
    for t in tiles.iter().filter(|t| t["thumb"] == true) {
        assert!(
            t["alt"].as_str().unwrap().starts_with("Thumbnail of "),
            "{t}"
        );
    }
    // Real progress, to the end, for every file sent through the page.
    assert_eq!(
        seen["progress"],
        serde_json::json!([100, 100, 100]),
        "{seen}"
    );
    assert!(
        seen["viewer_width"].as_u64().unwrap() > 150,
        "the larger view: {seen}"
    );
    assert_eq!(seen["phone_overflow"], false, "{seen}");
    // The page's own ThumbHash decoder paints what the reference decoder (the Rust crate) gives.
    let placeholders = seen["placeholders"].as_array().unwrap();
    assert_eq!(placeholders.len(), 2, "{seen}");
    for p in placeholders {
        use base64::Engine;
        let hash = base64::engine::general_purpose::STANDARD
            .decode(p["thumbhash"].as_str().unwrap())
            .unwrap();
        let (w, h, rgba) = thumbhash::thumb_hash_to_rgba(&hash).unwrap();
        assert_eq!(
            (p["width"].as_u64().unwrap(), p["height"].as_u64().unwrap()),
            (w as u64, h as u64),
            "{p}"
        );
        let n = (rgba.len() / 4) as f64;
        for c in 0..3 {
            let want = rgba.chunks_exact(4).map(|px| f64::from(px[c])).sum::<f64>() / n;
            let got = p["mean"][c].as_f64().unwrap();
            assert!(
                (want - got).abs() < 2.0,
                "channel {c}: {want} vs {got}: {p}"
            );
        }
    }
    // Uploading a photo the project has: no new tile.
    assert_eq!(seen["duplicate_tiles"], 3, "{seen}");
    assert_eq!(seen["tiles_after_delete"], 3, "{seen}");
    // The docs page lists every operation of /openapi.json, the WebSocket's message included.
    assert_eq!(
        seen["docs"]["operations"], seen["documented_operations"],
        "{seen}"
    );
    assert_eq!(seen["docs"]["websocket"], true, "{seen}");
    assert!(
        seen["docs"]["ws_message_fields"].as_u64().unwrap() >= 8,
        "{seen}"
    );
    assert_eq!(seen["console_errors"], serde_json::json!([]), "{seen}");
}

#[tokio::test]
async fn the_page_uploads_and_shows_the_gallery_live_in_local_mode() {
    let stack = TestStack::start().await.unwrap();
    check(&drive(&stack, "local").await);
}

#[tokio::test]
async fn the_page_uploads_and_shows_the_gallery_live_in_s3_mode() {
    let stack = TestStack::start_s3().await.unwrap();
    // Browsers upload straight to S3: the bucket lets the page's origin do that.
    stack
        .s3
        .as_ref()
        .unwrap()
        .allow_browser_origin(&stack.base())
        .await
        .unwrap();
    check(&drive(&stack, "s3").await);
}
