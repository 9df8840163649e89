//! Import by URL through the whole stack: `POST /images/` with `source_url` answers 202 and the
//! service fetches the image itself from a local HTTP server (on the allow-list), then the image
//! goes through the same events, states and WebSocket messages as an upload. The refusals end
//! in `error` with their codes: a redirect to the cloud metadata address and a loopback name
//! not on the allow-list (`fetch_refused`, decided by resolution: nothing is sent there), a
//! slow source and a 404 (`fetch_failed`), an oversize body (`upload_too_large`) and a
//! non-image (`unsupported_format`). The full refused-address matrix is unit-tested in
//! `api/lifecycle/src/import.rs`.

use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use gallery_e2e::sample_flow::{SAMPLE_FLOW_TYPES, types_of};
use gallery_e2e::{TestStack, jpeg_photo, metric};
use gallery_lifecycle::import::AllowList;
use gallery_lifecycle::watcher::ImportConfig;
use serde_json::json;

/// A source on a free loopback port: the photo, redirects, a slow, an oversize and a
/// non-image body, and 404 for anything else. Its port.
async fn source(photo: Vec<u8>) -> u16 {
    let app = Router::new()
        .route(
            "/photo.jpg",
            get(move || async move { ([(header::CONTENT_TYPE, "image/jpeg")], photo) }),
        )
        .route(
            "/moved",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/photo.jpg")]) }),
        )
        .route(
            "/to-metadata",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, "http://169.254.169.254/latest/meta-data/")],
                )
            }),
        )
        .route(
            "/slow.jpg",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        )
        .route(
            "/huge.jpg",
            get(|| async { vec![0xffu8; 300_000].into_response() }),
        )
        .route("/notes.txt", get(|| async { "not an image at all" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

async fn import(stack: &TestStack, url: &str) -> String {
    let (status, body) = stack
        .post_json(
            "/images/",
            &json!({ "project_id": "imp", "source_url": url }),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{url}: {body}");
    assert_eq!(body["state"], "init", "{body}");
    assert_eq!(body["source_url"], url, "{body}");
    assert!(body.get("upload_link").is_none(), "no link: {body}");
    body["image_id"].as_str().unwrap().to_owned()
}

async fn error_code(stack: &TestStack, id: &str) -> (String, String) {
    let rec = stack.wait_settled(id).await.unwrap();
    assert_eq!(rec["state"], "error", "{rec}");
    (
        rec["error"]["code"].as_str().unwrap().to_owned(),
        rec["error"]["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn imports_are_fetched_processed_and_refused_by_the_rules() {
    let photo = jpeg_photo(640, 480);
    assert!(photo.len() < 200_000);
    let port = source(photo.clone()).await;
    let base = format!("http://127.0.0.1:{port}");
    let stack = TestStack::start_with(|c| {
        c.max_upload_bytes = 200_000;
        c.lifecycle.import = ImportConfig {
            allow: AllowList::parse(&format!("127.0.0.1:{port}")).unwrap(),
            timeout: Duration::from_secs(2),
        };
    })
    .await
    .unwrap();
    let mut ws = stack.ws("imp", None).await.unwrap();

    // A photo, and one behind a redirect: done, with the same messages as an upload.
    let id = import(&stack, &format!("{base}/photo.jpg")).await;
    let messages = ws.collect_until(&id, "processed").await.unwrap();
    let own = messages.iter().filter(|m| m["image_id"] == id.as_str());
    assert_eq!(types_of(own), SAMPLE_FLOW_TYPES);
    let rec = stack.wait_state(&id, "done").await.unwrap();
    assert_eq!(rec["filename"], "photo.jpg");
    assert_eq!(rec["meta"]["size"], photo.len() as u64);
    assert_eq!(
        (rec["meta"]["width"].clone(), rec["meta"]["height"].clone()),
        (json!(640), json!(480))
    );
    let original = rec["versions"]["original"].as_str().unwrap();
    let stored = stack.bytes_at(original).await.unwrap();
    assert_eq!(stored, photo, "the original is the source's bytes");
    let moved = import(&stack, &format!("{base}/moved")).await;
    assert_eq!(stack.wait_settled(&moved).await.unwrap()["state"], "done");

    // Refusals, each with its code.
    let cases: [(String, &str); 6] = [
        (format!("{base}/to-metadata"), "fetch_refused"),
        (
            format!("http://localhost:{port}/photo.jpg"),
            "fetch_refused",
        ),
        (format!("{base}/slow.jpg"), "fetch_failed"),
        (format!("{base}/missing.jpg"), "fetch_failed"),
        (format!("{base}/huge.jpg"), "upload_too_large"),
        (format!("{base}/notes.txt"), "unsupported_format"),
    ];
    let mut ids = Vec::new();
    for (url, _) in &cases {
        ids.push(import(&stack, url).await);
    }
    for ((url, code), id) in cases.iter().zip(&ids) {
        let (got, message) = error_code(&stack, id).await;
        assert_eq!(got, *code, "{url}: {message}");
    }
    let (_, message) = error_code(&stack, &ids[0]).await;
    assert!(message.contains("169.254.169.254"), "{message}");
    // A private address's refusal names the setting that would allow it.
    let (_, message) = error_code(&stack, &ids[1]).await;
    assert!(
        message.contains(&format!("GALLERY_IMPORT_ALLOW_HOSTS=localhost:{port}")),
        "{message}"
    );
    // The failure reached the WebSocket too.
    let failed = ws.collect_until(&ids[0], "failed").await.unwrap();
    assert_eq!(failed.last().unwrap()["error"]["code"], "fetch_refused");

    // Bad URLs are the request's fault: 400, nothing recorded.
    for bad in [
        "file:///etc/passwd",
        "ftp://example.com/a.jpg",
        "http://u:p@example.com/a.jpg",
    ] {
        let (status, body) = stack
            .post_json(
                "/images/",
                &json!({ "project_id": "imp", "source_url": bad }),
            )
            .await
            .unwrap();
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    }
    let (_, page) = stack
        .get_json("/projects/imp/images?limit=100")
        .await
        .unwrap();
    assert_eq!(page["images"].as_array().unwrap().len(), 2 + cases.len());
    let metrics = stack.metrics().await.unwrap();
    assert_eq!(
        metric(&metrics, "gallery_imports_total{outcome=\"imported\"}"),
        Some(2.0),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("import"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
