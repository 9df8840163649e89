//! S3 mode against a real S3-compatible server (Garage on a free loopback port): clients upload
//! straight to S3 with a presigned POST policy, the watcher notices the upload, versions are
//! presigned GETs. The store itself refuses what the policy doesn't allow.

use std::time::Duration;

use gallery_e2e::sample_flow::{SAMPLE_FLOW_TYPES, types_of};
use gallery_e2e::{TestStack, dimensions, jpeg_photo, metric, upload_with_params};
use serde_json::{Value, json};

#[tokio::test]
async fn the_sample_flow_in_s3_mode() {
    let stack = TestStack::start_s3().await.unwrap();
    let endpoint = stack.s3.as_ref().unwrap().config.endpoint.clone().unwrap();
    let mut ws = stack.ws("s3", None).await.unwrap();

    let link = stack.request_link("s3", "beach.jpg").await.unwrap();
    let id = link["image_id"].as_str().unwrap().to_owned();
    // The link points at S3, not at the api.
    assert_eq!(link["method"], "POST");
    assert!(
        link["upload_link"].as_str().unwrap().starts_with(&endpoint),
        "{link}"
    );
    for field in [
        "key",
        "policy",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-date",
        "Content-Type",
    ] {
        assert!(link["params"][field].is_string(), "{field} missing: {link}");
    }

    let photo = jpeg_photo(3000, 2000);
    let (status, _) = stack.upload(&link, photo.clone()).await.unwrap();
    assert!(
        (200..300).contains(&status),
        "S3 refused the upload: {status}"
    );

    let events = ws.collect_until(&id, "processed").await.unwrap();
    assert_eq!(types_of(&events), SAMPLE_FLOW_TYPES);

    let rec = stack.image(&id).await.unwrap();
    assert_eq!(rec["state"], "done");
    let expected = [
        ("thumb", (150, 100)),
        ("big_thumb", (700, 467)),
        ("big_1920", (1620, 1080)),
        ("d2500", (2500, 1667)),
    ];
    for (name, size) in expected {
        let url = rec["versions"][name].as_str().unwrap();
        assert!(
            url.starts_with(&endpoint) && url.contains("X-Amz-Signature="),
            "{url}"
        );
        let resp = stack.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{name}: {url}");
        assert_eq!(resp.headers()["content-type"], "image/jpeg", "{name}");
        assert_eq!(
            dimensions(&resp.bytes().await.unwrap()).unwrap(),
            size,
            "{name}"
        );
    }
    let original = rec["versions"]["original"].as_str().unwrap();
    assert_eq!(stack.bytes_at(original).await.unwrap(), photo);

    // The api carries no bytes in S3 mode: its own upload endpoint is off.
    let (status, body) = stack
        .post_json(&format!("/uploads/{id}"), &Value::Null)
        .await
        .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn the_store_refuses_what_the_policy_does_not_allow() {
    let stack = TestStack::start_s3().await.unwrap();
    let photo = jpeg_photo(200, 100);
    let link = stack.request_link("neg", "a.jpg").await.unwrap();
    let other = stack.request_link("neg", "b.jpg").await.unwrap();
    let id = link["image_id"].as_str().unwrap();

    let tamper = |field: &str, value: Value| {
        let mut params = link["params"].clone();
        params[field] = value;
        params
    };
    let cases = [
        ("Content-Type", json!("image/svg+xml")),
        ("key", other["params"]["key"].clone()), // aimed at another image's key
        ("key", json!("originals/neg/../../elsewhere")),
        ("x-amz-signature", json!("0".repeat(64))),
    ];
    for (field, value) in cases {
        let (status, _) = upload_with_params(
            &stack.http,
            &link,
            tamper(field, value.clone()),
            photo.clone(),
        )
        .await
        .unwrap();
        assert!(
            (400..500).contains(&status),
            "{field}={value} was accepted with {status}"
        );
    }

    // Over the size limit: refused by the store itself, through the policy.
    let (status, small) = stack
        .post_json(
            "/images/",
            &json!({"filename": "s.jpg", "project_id": "neg", "size": 100}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    let (status, _) = stack.upload(&small, photo.clone()).await.unwrap();
    assert!(
        (400..500).contains(&status),
        "an oversize upload was accepted: {status}"
    );

    // Nothing of the above reached the images.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for image in [
        id,
        other["image_id"].as_str().unwrap(),
        small["image_id"].as_str().unwrap(),
    ] {
        assert_eq!(stack.image(image).await.unwrap()["state"], "init");
    }
}

/// Batch detection: with hundreds of links waiting, the watcher finds uploads by listing the
/// originals' key range a few times a second, not by asking S3 about each link. Its LIST
/// requests are bounded by its passes (one page covers every waiting link here), it makes no
/// HEAD before a link's deadline, and one ranged GET per upload it records.
#[tokio::test]
async fn the_watcher_finds_uploads_in_batches_not_per_link() {
    let every = Duration::from_millis(200);
    let stack = TestStack::start_s3_with(|c| c.lifecycle.upload_scan_every = every)
        .await
        .unwrap();
    for i in 0..400 {
        stack
            .request_link("batch", &format!("idle-{i}.jpg"))
            .await
            .unwrap();
    }
    let watcher = |text: &str, op: &str| {
        metric(
            text,
            &format!(r#"gallery_upload_check_s3_requests_total{{by="watcher",op="{op}"}}"#),
        )
        .unwrap_or(0.0)
    };
    let before = stack.metrics().await.unwrap();
    let started = tokio::time::Instant::now();
    let mut ids = Vec::new();
    for i in 0..5 {
        let link = stack
            .request_link("batch", &format!("used-{i}.jpg"))
            .await
            .unwrap();
        let (status, _) = stack.upload(&link, jpeg_photo(320, 240)).await.unwrap();
        assert!((200..300).contains(&status), "{status}");
        ids.push(link["image_id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        stack.wait_state(id, "done").await.unwrap();
    }
    let after = stack.metrics().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        metric(&after, r#"gallery_uploads_detected_total{via="watcher"}"#),
        Some(5.0),
        "the watcher records every upload (no client called complete)"
    );
    let lists = watcher(&after, "list") - watcher(&before, "list");
    let passes = (elapsed.as_millis() / every.as_millis()) as f64 + 1.0;
    assert!(
        lists >= 1.0 && lists <= passes,
        "{lists} LISTs in {elapsed:?}"
    );
    assert_eq!(watcher(&after, "head"), 0.0, "no HEAD before a deadline");
    assert_eq!(watcher(&after, "get") - watcher(&before, "get"), 5.0);
    assert!(
        metric(&after, "gallery_upload_watcher_pending").unwrap() >= 400.0,
        "the idle links wait in the index"
    );
    for id in &ids {
        let rec = stack.image(id).await.unwrap();
        assert_eq!(rec["state"], "done");
    }
}

#[tokio::test]
async fn expired_and_unused_links_end_in_upload_expired() {
    let stack = TestStack::start_s3_with(|c| {
        c.api.upload_link_ttl = Duration::from_secs(1);
        c.lifecycle.upload_grace = Duration::from_secs(1);
    })
    .await
    .unwrap();
    let late = stack.request_link("exp", "late.jpg").await.unwrap();
    let unused = stack.request_link("exp", "never.jpg").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let (status, _) = stack.upload(&late, jpeg_photo(64, 64)).await.unwrap();
    assert!(
        (400..500).contains(&status),
        "an expired policy was accepted: {status}"
    );
    for link in [&late, &unused] {
        let rec = stack
            .wait_state(link["image_id"].as_str().unwrap(), "error")
            .await
            .unwrap();
        assert_eq!(rec["error"]["code"], "upload_expired");
    }
}

#[tokio::test]
async fn a_non_image_is_refused_before_processing() {
    let stack = TestStack::start_s3().await.unwrap();
    let mut ws = stack.ws("notimg", None).await.unwrap();
    let link = stack.request_link("notimg", "a.jpg").await.unwrap();
    let id = link["image_id"].as_str().unwrap();
    let (status, _) = stack
        .upload(&link, b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec())
        .await
        .unwrap();
    assert!((200..300).contains(&status));
    let events = ws.collect_until(id, "failed").await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["upload_requested", "failed"],
        "it must not be processed"
    );
    assert_eq!(events[1]["error"]["code"], "unsupported_format");
    // The watcher says what it saw and what to upload instead.
    let message = events[1]["error"]["message"].as_str().unwrap();
    assert!(message.contains("SVG"), "{message}");
}

/// HEIC and AVIF straight to S3: the policy pins their type, the watcher recognises them, the
/// processor decodes them (libheif), and the versions download from S3: JPEG for the opaque
/// HEIC, PNG for the AVIF with transparency.
#[tokio::test]
async fn heic_and_avif_go_through_s3_mode() {
    let stack = TestStack::start_s3().await.unwrap();
    let subset = gallery_e2e::testset::testdata_or_subset();
    for (name, file, content_type, version_type) in [
        (
            "IMG_0001.HEIC",
            "heic_avif/hopper.heif",
            "image/heic",
            "image/jpeg",
        ),
        (
            "clip.avif",
            "heic_avif/transparency.avif",
            "image/avif",
            "image/png",
        ),
    ] {
        let link = stack.request_link("heif", name).await.unwrap();
        assert_eq!(link["params"]["Content-Type"], content_type, "{link}");
        let id = link["image_id"].as_str().unwrap().to_owned();
        let bytes = std::fs::read(subset.join(file)).unwrap();
        let (status, _) = stack.upload(&link, bytes).await.unwrap();
        assert!((200..300).contains(&status), "{name}: S3 said {status}");
        let rec = stack.wait_state(&id, "done").await.unwrap();
        let meta = &rec["meta"]["versions"]["d2500"];
        let url = rec["versions"]["d2500"].as_str().unwrap();
        let resp = stack.http.get(url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{name}");
        let data = resp.bytes().await.unwrap();
        let (w, h) = dimensions(&data).unwrap();
        assert_eq!(
            (u64::from(w), u64::from(h)),
            (
                meta["width"].as_u64().unwrap(),
                meta["height"].as_u64().unwrap()
            )
        );
        assert_eq!(meta["content_type"], version_type, "{name}: {rec}");
    }
}

#[tokio::test]
async fn a_second_upload_through_the_same_link_changes_nothing_processed() {
    let stack = TestStack::start_s3().await.unwrap();
    let link = stack.request_link("twice", "a.jpg").await.unwrap();
    let id = link["image_id"].as_str().unwrap();
    stack.upload(&link, jpeg_photo(400, 300)).await.unwrap();
    // The fast path: record the upload now instead of waiting for the watcher.
    let (status, body) = stack
        .post_json(&format!("/images/{id}/complete"), &Value::Null)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let done = stack.wait_state(id, "done").await.unwrap();
    let thumb_before = stack
        .bytes_at(done["versions"]["thumb"].as_str().unwrap())
        .await
        .unwrap();

    // S3 can't forbid a second POST with a still-valid policy...
    let (status, _) = stack.upload(&link, jpeg_photo(100, 400)).await.unwrap();
    assert!((200..300).contains(&status));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // ...but what was processed stays: same state, sizes, versions.
    let after = stack.image(id).await.unwrap();
    assert_eq!(after["state"], "done");
    assert_eq!(after["meta"]["width"], 400);
    assert_eq!(after["meta"]["generation"], 1);
    let thumb_after = stack
        .bytes_at(after["versions"]["thumb"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(thumb_before, thumb_after);
    assert_eq!(dimensions(&thumb_after).unwrap(), (150, 113));
}
