//! The web page in a real browser: Debian's chromium, driven over WebDriver by Debian's
//! chromedriver through the `fantoccini` client ([`gallery_e2e::browser`]), against the running
//! service in local and in S3 mode. It uploads two real photos and a corrupt file through the
//! page's file picker, sees two thumbnails and an error appear, drops the page's WebSocket while
//! a third photo is uploaded through the API, and sees the page catch up; then the larger view,
//! a deletion, phone width and the `/docs` page, with the browser's console watched throughout.
//! The screenshots are kept in `target/browser/`. `scripts/ensure-browser.sh` (run by
//! `scripts/test.sh`) installs chromium and chromedriver.

use std::path::{Path, PathBuf};

use gallery_e2e::TestStack;
use gallery_e2e::browser::Browser;
use serde_json::{Value, json};

const ESCAPE: &str = "\u{E00C}";

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

/// Waits until the page's live connection is up (`true`) or down (`false`).
async fn wait_live(b: &Browser, live: bool) -> anyhow::Result<()> {
    b.wait_until(
        if live {
            "the page live"
        } else {
            "the page offline"
        },
        "return document.body.dataset.live === String(arguments[0]);",
        vec![live.into()],
    )
    .await
}

/// Opens the page, types the project and opens it, and waits for the live connection.
async fn open_project(b: &Browser, base: &str, project: &str) -> anyhow::Result<()> {
    b.goto(&format!("{base}/")).await?;
    b.wait_until(
        "the page's set-up",
        "return document.body.dataset.ready === 'true';",
        vec![],
    )
    .await?;
    b.field("Project").await?.send_keys(project).await?;
    // The stacks here run without auth: /config has answered, and the token field is hidden.
    assert!(!b.find("#token-field").await?.is_displayed().await?);
    b.click_button("Open").await?;
    wait_live(b, true).await
}

/// Two photos and the corrupt file through the file picker: thumbnails, an error, progress.
async fn upload_through_picker(
    b: &Browser,
    first: &[PathBuf],
    corrupt: &Path,
    seen: &mut Value,
) -> anyhow::Result<()> {
    let mut files = first.to_vec();
    files.push(corrupt.to_path_buf());
    b.choose_files("#files", &files).await?;
    b.wait_until(
        "the thumbnails",
        "return [...document.querySelectorAll('.tile img')]
             .filter((i) => i.complete && i.naturalWidth > 0).length >= arguments[0];",
        vec![first.len().into()],
    )
    .await?;
    b.wait_until(
        "the error tile's reason",
        "return document.querySelector('.tile[data-state=\"error\"] .why')?.textContent.length > 0;",
        vec![],
    )
    .await?;
    seen["error_text"] = b
        .find(".tile[data-state=\"error\"] .why")
        .await?
        .text()
        .await?
        .into();
    seen["progress"] = b
        .js(
            "return [...document.querySelectorAll('#uploads progress')].map((p) => p.value);",
            vec![],
        )
        .await?;
    Ok(())
}

/// Every done tile paints its ThumbHash as its background, decoded by the page: each one's size
/// and mean colour, for the test to compare with the Rust decoder's.
async fn placeholders(b: &Browser, done: usize) -> anyhow::Result<Value> {
    b.wait_until(
        "the placeholders",
        "return [...document.querySelectorAll('.tile[data-state=\"done\"]')]
             .filter((t) => t.dataset.placeholder).length >= arguments[0];",
        vec![done.into()],
    )
    .await?;
    b.js(
        r#"return (async () => {
          const out = [];
          for (const tile of document.querySelectorAll('.tile[data-state="done"]')) {
            const url = tile.querySelector(".thumb").style.backgroundImage.replace(/^url\("?|"?\)$/g, "");
            const img = new Image();
            img.src = url;
            await img.decode();
            const canvas = document.createElement("canvas");
            [canvas.width, canvas.height] = [img.naturalWidth, img.naturalHeight];
            const g = canvas.getContext("2d");
            g.drawImage(img, 0, 0);
            const px = g.getImageData(0, 0, canvas.width, canvas.height).data;
            const mean = [0, 0, 0];
            for (let i = 0; i < px.length; i += 4) for (let c = 0; c < 3; c++) mean[c] += px[i + c];
            out.push({
              thumbhash: tile.dataset.placeholder,
              width: canvas.width,
              height: canvas.height,
              mean: mean.map((m) => m / (px.length / 4)),
            });
          }
          return out;
        })();"#,
        vec![],
    )
    .await
}

async fn tile_count(b: &Browser) -> anyhow::Result<Value> {
    b.js("return document.querySelectorAll('.tile').length;", vec![])
        .await
}

/// The same photo again: the page sends its SHA-256 and the api says the project has it.
async fn upload_duplicate(b: &Browser, photo: &Path, seen: &mut Value) -> anyhow::Result<()> {
    b.choose_files("#files", &[photo]).await?;
    b.wait_until(
        "the duplicate's message",
        "return [...document.querySelectorAll('#uploads .msg')]
             .some((m) => m.textContent === 'already in this project');",
        vec![],
    )
    .await?;
    seen["duplicate_tiles"] = tile_count(b).await?;
    Ok(())
}

/// The connection drops; a photo is uploaded meanwhile through the API, as another client would;
/// the page reconnects with `?since` and shows it. Answers the new image's id.
async fn offline_upload_caught_up(
    b: &Browser,
    stack: &TestStack,
    project: &str,
    photo: &Path,
) -> anyhow::Result<String> {
    b.js("window.gallery.dropConnection(3000);", vec![]).await?;
    wait_live(b, false).await?;
    let name = photo.file_name().unwrap().to_str().unwrap();
    let link = stack.request_link(project, name).await?;
    let (status, body) = stack.upload(&link, std::fs::read(photo)?).await?;
    anyhow::ensure!(
        (200..300).contains(&status),
        "uploading while offline: {status} {body}"
    );
    let id = link["image_id"].as_str().unwrap().to_owned();
    let (status, body) = stack
        .post_json(&format!("/images/{id}/complete"), &json!({}))
        .await?;
    anyhow::ensure!(
        status == 200,
        "/complete after the offline upload: {status} {body}"
    );
    wait_live(b, true).await?;
    b.wait_until(
        "the offline upload's thumbnail",
        "const img = document.querySelector(`.tile[data-image-id=\"${arguments[0]}\"] img`);
         return img && img.complete && img.naturalWidth > 0;",
        vec![id.clone().into()],
    )
    .await?;
    Ok(id)
}

/// The larger view opens on click and closes from the keyboard.
async fn larger_view(b: &Browser, image_id: &str, seen: &mut Value) -> anyhow::Result<()> {
    b.click_css(&format!(".tile[data-image-id=\"{image_id}\"] button"))
        .await?;
    b.wait_until(
        "the larger view's image",
        "const i = document.getElementById('viewer-img'); return i.complete && i.naturalWidth > 0;",
        vec![],
    )
    .await?;
    seen["viewer_width"] = b
        .js(
            "return document.getElementById('viewer-img').naturalWidth;",
            vec![],
        )
        .await?;
    b.press(ESCAPE).await?;
    b.wait_until(
        "the larger view closed",
        "return !document.getElementById('viewer').open;",
        vec![],
    )
    .await
}

/// The viewer deletes the failed image (after the confirmation): its tile goes.
async fn delete_failed(b: &Browser, seen: &mut Value) -> anyhow::Result<()> {
    b.click_css(".tile[data-state=\"error\"] button").await?;
    b.wait_until(
        "the larger view open",
        "return document.getElementById('viewer').open;",
        vec![],
    )
    .await?;
    b.click_button("Delete").await?;
    seen["confirm_text"] = b.accept_dialog().await?.into();
    b.wait_until(
        "the failed image's tile gone",
        "return !document.querySelector('.tile[data-state=\"error\"]');",
        vec![],
    )
    .await?;
    seen["tiles_after_delete"] = tile_count(b).await?;
    Ok(())
}

/// The API docs page renders /openapi.json (under the same CSP, console watched).
async fn docs_page(b: &Browser, base: &str) -> anyhow::Result<Value> {
    b.goto(&format!("{base}/docs")).await?;
    b.wait_until(
        "the docs page",
        "return !!document.querySelector('#doc[aria-busy=\"false\"]');",
        vec![],
    )
    .await?;
    b.js(
        "return {
           operations: document.querySelectorAll('section.op').length,
           websocket: !!document.getElementById('op-subscribe'),
           ws_message_fields: document.querySelectorAll('#schema-WsMessage tbody tr').length,
         };",
        vec![],
    )
    .await
}

/// The whole visit; what the page showed, as one JSON value for [`check`].
async fn visit(b: &Browser, stack: &TestStack, mode: &str) -> anyhow::Result<Value> {
    let tmp = tempfile::tempdir()?;
    let (photos, corrupt) = inputs(tmp.path());
    let (first, last) = photos.split_at(photos.len() - 1);
    let project = format!("browser-{mode}");
    let base = stack.base();
    let mut seen = json!({ "console_errors": [] });
    let mut errors = Vec::new();

    open_project(b, &base, &project).await?;
    upload_through_picker(b, first, &corrupt, &mut seen).await?;
    seen["placeholders"] = placeholders(b, first.len()).await?;
    upload_duplicate(b, &first[0], &mut seen).await?;
    let caught_up = offline_upload_caught_up(b, stack, &project, &last[0]).await?;
    larger_view(b, &caught_up, &mut seen).await?;
    seen["tiles"] = b
        .js(
            "return [...document.querySelectorAll('.tile')].map((t) => ({
               state: t.dataset.state,
               thumb: !!t.querySelector('img'),
               alt: t.querySelector('img')?.alt ?? null,
             }));",
            vec![],
        )
        .await?;
    let shots = root().join("target/browser");
    std::fs::create_dir_all(&shots)?;
    let screenshot = shots.join(format!("{mode}.png"));
    b.screenshot_full_page(&screenshot).await?;
    seen["screenshot_bytes"] = std::fs::metadata(&screenshot)?.len().into();
    delete_failed(b, &mut seen).await?;
    // Phone width: nothing overflows sideways.
    b.set_viewport(375, 800).await?;
    seen["phone_width"] = b.js("return window.innerWidth;", vec![]).await?;
    // The page's width without the scroll bar, which the full-page screenshot leaves out.
    seen["phone_page_width"] = b
        .js("return document.documentElement.clientWidth;", vec![])
        .await?;
    seen["phone_overflow"] = b
        .js(
            "return document.documentElement.scrollWidth > window.innerWidth;",
            vec![],
        )
        .await?;
    let phone = shots.join(format!("{mode}-phone.png"));
    b.screenshot_full_page(&phone).await?;
    seen["phone_screenshot"] = png_size(&phone)?;
    b.set_viewport(1100, 900).await?;
    errors.extend(b.console_errors().await?);
    seen["docs"] = docs_page(b, &base).await?;
    errors.extend(b.console_errors().await?);
    seen["console_errors"] = errors.into();
    Ok(seen)
}

/// A PNG's `[width, height]`, from its header.
fn png_size(path: &Path) -> anyhow::Result<Value> {
    let (w, h) = gallery_e2e::dimensions(&std::fs::read(path)?)?;
    Ok(json!([w, h]))
}

async fn drive(stack: &TestStack, mode: &str) -> Value {
    let browser = Browser::start(1100, 900).await.unwrap();
    let mut seen = match visit(&browser, stack, mode).await {
        Ok(seen) => seen,
        Err(e) => {
            let console = browser.console_errors().await;
            panic!("the browser run ({mode}) failed: {e:#}\nconsole: {console:?}");
        }
    };
    browser.close().await.unwrap();
    println!("{mode}: {seen}");
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
    assert_eq!(seen["phone_width"], 375, "{seen}");
    assert_eq!(seen["phone_overflow"], false, "{seen}");
    // The full page: as wide as the page on the phone, longer than its screen (the tiles
    // stack up).
    assert_eq!(
        seen["phone_screenshot"][0], seen["phone_page_width"],
        "{seen}"
    );
    assert!(
        seen["phone_screenshot"][1].as_u64().unwrap() > 800,
        "{seen}"
    );
    assert_eq!(
        seen["confirm_text"], "Delete this image and every version of it?",
        "{seen}"
    );
    assert!(
        seen["screenshot_bytes"].as_u64().unwrap() > 10_000,
        "{seen}"
    );
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

/// The console check can fail: a page that logs an error, throws, and loads a missing image
/// gives three entries.
#[tokio::test]
async fn the_console_check_sees_errors_exceptions_and_failed_loads() {
    let browser = Browser::start(800, 600).await.unwrap();
    let stack = TestStack::start().await.unwrap();
    browser.goto(&format!("{}/", stack.base())).await.unwrap();
    assert_eq!(
        browser.console_errors().await.unwrap(),
        Vec::<String>::new()
    );
    browser
        .js(
            "console.error('logged'); setTimeout(() => { throw new Error('thrown'); });
             const img = new Image(); img.src = '/no-such-file.png'; document.body.append(img);",
            vec![],
        )
        .await
        .unwrap();
    browser
        .wait_until(
            "the missing image to fail",
            "return document.querySelector('img[src=\"/no-such-file.png\"]').complete;",
            vec![],
        )
        .await
        .unwrap();
    let errors = browser.console_errors().await.unwrap();
    browser.close().await.unwrap();
    assert_eq!(errors.len(), 3, "{errors:?}");
    for needle in ["logged", "thrown", "no-such-file.png"] {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "{needle}: {errors:?}"
        );
    }
}
