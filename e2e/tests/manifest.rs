//! Every file of the MANIFEST uploaded through the running service (local mode: a real
//! nats-server, the API, the processor and the projector), as a client would: ask for a link,
//! upload, wait for the image to settle. `ok` files end in `done` with four versions of exactly
//! the fitted size (docs/ARCHITECTURE.md §7) that download and decode at that size; `reject` files are refused,
//! at upload or with the right stable code in `error`; `ok-or-reject` files do one or the other
//! with a message; and the processor keeps serving throughout. The set is the shared developer
//! set when `GALLERY_TESTDATA` names it, else the subset committed in `testdata/`.

use gallery_e2e::testset::{manifest, reject_code, testdata_or_subset};
use gallery_e2e::{TestStack, jpeg_photo};
use gallery_schema::{Size, VersionName, fit_inside};
use serde_json::{Value, json};

const PROJECT: &str = "manifest";

/// How an upload went before processing.
enum Submitted {
    /// `POST /images/` refused the name (415 with a JSON error).
    LinkRefused(Value),
    /// The upload itself was refused (4xx with a JSON error): the image id and the body.
    UploadRefused(String, Value),
    /// Accepted: the image id to wait for.
    Accepted(String),
}

async fn submit(stack: &TestStack, name: &str, bytes: Vec<u8>) -> Submitted {
    let (status, link) = stack
        .post_json(
            "/images/",
            &json!({"filename": name, "project_id": PROJECT}),
        )
        .await
        .unwrap();
    if status == 415 {
        return Submitted::LinkRefused(link);
    }
    assert_eq!(status, 201, "{name}: {link}");
    let (status, body) = stack.upload(&link, bytes).await.unwrap();
    if (400..500).contains(&status) {
        return Submitted::UploadRefused(link["image_id"].as_str().unwrap().to_owned(), body);
    }
    assert_eq!(status, 201, "{name}: {body}");
    Submitted::Accepted(link["image_id"].as_str().unwrap().to_owned())
}

fn size_of(meta: &Value) -> Size {
    Size::new(
        meta["width"].as_u64().unwrap() as u32,
        meta["height"].as_u64().unwrap() as u32,
    )
}

/// A `done` image: every version present, of the fitted size, downloadable, decoding at that
/// size; returns the upright size.
async fn check_done(stack: &TestStack, file: &str, rec: &Value) -> Size {
    let upright = size_of(&rec["meta"]);
    for version in VersionName::CASCADE {
        let name = version.as_str();
        let meta = &rec["meta"]["versions"][name];
        assert_eq!(
            size_of(meta),
            fit_inside(upright, version.bounds()),
            "{file} {name}: {rec}"
        );
        let url = rec["versions"][name].as_str().unwrap();
        let resp = stack.http.get(url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{file} {name}");
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(content_type, meta["content_type"], "{file} {name}");
        let bytes = resp.bytes().await.unwrap();
        assert_eq!(bytes.len() as u64, meta["bytes"].as_u64().unwrap());
        let decoded = image::load_from_memory(&bytes).unwrap();
        assert_eq!(
            Size::new(decoded.width(), decoded.height()),
            size_of(meta),
            "{file} {name} as downloaded"
        );
    }
    upright
}

#[tokio::test]
async fn every_manifest_file_through_the_running_service() {
    let dir = testdata_or_subset();
    let rows = manifest(&dir);
    assert!(
        rows.len() >= 40,
        "only {} rows in {}",
        rows.len(),
        dir.display()
    );
    let stack = TestStack::start().await.unwrap();

    // All uploads first, so the processor works through them concurrently, as in a burst.
    let mut submitted = Vec::new();
    for row in &rows {
        let bytes = std::fs::read(dir.join(&row.file)).unwrap();
        let name = row.file.rsplit('/').next().unwrap();
        submitted.push(submit(&stack, name, bytes).await);
    }

    let with_link = submitted
        .iter()
        .filter(|s| !matches!(s, Submitted::LinkRefused(_)))
        .count();
    let (mut done, mut refused) = (0, 0);
    for (row, outcome) in rows.iter().zip(submitted) {
        let file = row.file.as_str();
        match (row.expected.as_str(), outcome) {
            // Refused before processing: only for files that may be refused, with a JSON error.
            (expected, Submitted::LinkRefused(body)) => {
                assert_ne!(expected, "ok", "{file} was refused: {body}");
                // Refused for its name (a type we don't take).
                assert_eq!(
                    body["error"]["code"], "unsupported_format",
                    "{file}: {body}"
                );
                assert!(
                    !body["error"]["message"].as_str().unwrap().is_empty(),
                    "{file}: {body}"
                );
                refused += 1;
            }
            (expected, Submitted::UploadRefused(id, body)) => {
                assert_ne!(expected, "ok", "{file} was refused: {body}");
                // Refused for what it is (an empty file, bytes of no image format), with the
                // code the processor would have given, and the image ended with it at once.
                let code = body["error"]["code"].as_str().unwrap_or_default();
                if expected == "reject" {
                    assert_eq!(code, reject_code(file), "{file}: {body}");
                } else {
                    assert!(
                        code == "unsupported_format" || code == "corrupt_image",
                        "{file}: {body}"
                    );
                }
                assert!(
                    !body["error"]["message"].as_str().unwrap().is_empty(),
                    "{file}: {body}"
                );
                let rec = stack.image(&id).await.unwrap();
                assert_eq!(rec["state"], "error", "{file}: {rec}");
                assert_eq!(rec["error"]["code"], body["error"]["code"], "{file}: {rec}");
                refused += 1;
            }
            (expected, Submitted::Accepted(id)) => {
                let rec = stack.wait_settled(&id).await.unwrap();
                let state = rec["state"].as_str().unwrap();
                match (expected, state) {
                    ("ok" | "ok-or-reject", "done") => {
                        let upright = check_done(&stack, file, &rec).await;
                        if let Some(want) = row.detail.strip_prefix("upright ") {
                            assert_eq!(
                                format!("{}x{}", upright.width, upright.height),
                                want,
                                "{file}"
                            );
                        }
                        if row.category == "tiny" {
                            for version in VersionName::CASCADE {
                                assert_eq!(
                                    size_of(&rec["meta"]["versions"][version.as_str()]),
                                    upright,
                                    "{file} {version} was upscaled"
                                );
                            }
                        }
                        done += 1;
                    }
                    ("reject", "error") => {
                        assert_eq!(rec["error"]["code"], reject_code(file), "{file}: {rec}");
                        refused += 1;
                    }
                    ("ok-or-reject", "error") => {
                        let code = rec["error"]["code"].as_str().unwrap();
                        assert!(
                            code == "unsupported_format" || code == "corrupt_image",
                            "{file}: {rec}"
                        );
                        refused += 1;
                    }
                    _ => panic!("{file}: expected {expected}, ended in {state}: {rec}"),
                }
                if state == "error" {
                    assert!(!rec["error"]["message"].as_str().unwrap().is_empty());
                    // The original is kept for inspection; no version was recorded.
                    assert!(rec["versions"]["original"].is_string(), "{file}");
                    assert_eq!(rec["versions"]["thumb"], Value::Null, "{file}");
                }
            }
        }
    }
    assert_eq!(done + refused, rows.len());
    eprintln!(
        "{done} done, {refused} refused of {} files in {}",
        rows.len(),
        dir.display()
    );

    // The processor kept serving: a photo sent after the whole set is done as usual.
    let after = submit(&stack, "after.jpg", jpeg_photo(1200, 800)).await;
    let Submitted::Accepted(id) = after else {
        panic!("the photo after the set was refused")
    };
    let rec = stack.wait_state(&id, "done").await.unwrap();
    check_done(&stack, "after.jpg", &rec).await;
    let (status, _) = stack.get_json("/ready").await.unwrap();
    assert_eq!(status, 200);
    // Every image that got a link is listed, settled or not, plus the one after.
    let (mut listed, mut cursor) = (0, None::<String>);
    loop {
        let query = cursor.map_or(String::new(), |c| format!("?cursor={c}"));
        let (status, page) = stack
            .get_json(&format!("/projects/{PROJECT}/images{query}"))
            .await
            .unwrap();
        assert_eq!(status, 200, "{page}");
        listed += page["images"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed, with_link + 1);
}
