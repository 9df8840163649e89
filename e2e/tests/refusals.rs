//! Bad input gets a clear error and loses nothing: corrupt files end in `error` with a code and
//! a WebSocket event, hostile project ids get 400, bad links are refused.

use std::time::Duration;

use gallery_e2e::{TestStack, jpeg_photo, upload_with_params};
use serde_json::{Value, json};

/// A file the processor can't decode ends in `error` after its upload; bytes that are no image
/// at all (by their first bytes) and an empty file are refused at the door (415, 422) and end
/// the image at once. Either way the WebSocket hears a `failed` with the code.
#[tokio::test]
async fn corrupt_and_non_image_files_end_in_error_with_a_code() {
    let stack = TestStack::start().await.unwrap();
    let mut ws = stack.ws("bad", None).await.unwrap();
    let photo = jpeg_photo(640, 480);
    let random: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    // (name, bytes, upload status, code); a 201 upload keeps its original for inspection.
    let cases: [(&str, Vec<u8>, u16, &str); 5] = [
        ("truncated.jpg", photo[..300].to_vec(), 201, "corrupt_image"),
        (
            "notes.jpg",
            b"this is a text file, not a photo".to_vec(),
            415,
            "unsupported_format",
        ),
        ("random.jpg", random, 415, "unsupported_format"),
        (
            "logo.jpg",
            b"<svg xmlns='x'/>".to_vec(),
            415,
            "unsupported_format",
        ),
        ("empty.jpg", Vec::new(), 422, "corrupt_image"),
    ];
    for (name, bytes, status_wanted, code) in cases {
        let link = stack.request_link("bad", name).await.unwrap();
        let id = link["image_id"].as_str().unwrap().to_owned();
        let (status, body) = stack.upload(&link, bytes).await.unwrap();
        assert_eq!(status, status_wanted, "{name}: {body}");
        if status != 201 {
            assert_eq!(body["error"]["code"], code, "{name}: {body}");
        }
        let events = ws.collect_until(&id, "failed").await.unwrap();
        let failed = events.last().unwrap();
        assert_eq!(failed["state"], "error", "{name}");
        assert_eq!(failed["error"]["code"], code, "{name}: {failed}");
        assert!(!failed["error"]["message"].as_str().unwrap().is_empty());
        let rec = stack.wait_state(&id, "error").await.unwrap();
        assert_eq!(rec["error"]["code"], code);
        assert_eq!(rec["versions"]["thumb"], Value::Null);
        // An uploaded original is kept for inspection; a refused one was never stored.
        assert_eq!(
            rec["versions"]["original"].is_string(),
            status == 201,
            "{name}: {rec}"
        );
    }
    let (_, svg) = stack
        .get_json("/projects/bad/images?state=error")
        .await
        .unwrap();
    let svg = svg["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["filename"] == "logo.jpg")
        .cloned()
        .unwrap();
    assert!(
        svg["error"]["message"].as_str().unwrap().contains("SVG"),
        "the refusal says what it saw: {svg}"
    );
    // The processor keeps serving after the bad files.
    stack.sample_flow("bad", "fine.jpg", photo).await.unwrap();
}

/// A form that ends without its file: once its fields are signed and current, the image ends
/// at once (a `failed` on the WebSocket, the link spent); a form nobody can attribute (no
/// signature, or a wrong one) is only refused, and the link stays usable.
#[tokio::test]
async fn a_signed_form_without_a_file_ends_the_image_and_an_unsigned_one_does_not() {
    let stack = TestStack::start().await.unwrap();
    let link = stack.request_link("forms", "a.jpg").await.unwrap();
    let id = link["image_id"].as_str().unwrap().to_owned();
    let url = link["upload_link"].as_str().unwrap();
    let form_of = |params: &Value| {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in params.as_object().unwrap() {
            form = form.text(k.clone(), v.as_str().unwrap().to_owned());
        }
        form
    };
    // Unsigned: a 400 that leaves the image waiting.
    let mut forged = link["params"].clone();
    forged["signature"] = json!("00".repeat(32));
    let resp = stack
        .http
        .post(url)
        .multipart(form_of(&forged))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(stack.image(&id).await.unwrap()["state"], "init");

    // Signed: the same 400, and the image ends in error with the refusal.
    let mut ws = stack.ws("forms", None).await.unwrap();
    let resp = stack
        .http
        .post(url)
        .multipart(form_of(&link["params"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"file\""),
        "{body}"
    );
    let heard = ws.collect_until(&id, "failed").await.unwrap();
    assert_eq!(heard.last().unwrap()["error"]["code"], "invalid_request");
    let rec = stack.image(&id).await.unwrap();
    assert_eq!(rec["state"], "error", "{rec}");
    let (status, body) = stack.upload(&link, jpeg_photo(8, 8)).await.unwrap();
    assert_eq!(status, 409, "a new attempt asks for a new link: {body}");
}

#[tokio::test]
async fn hostile_project_ids_get_400_everywhere() {
    let stack = TestStack::start().await.unwrap();
    let long = "a".repeat(65);
    let hostile: Vec<Value> = vec![
        json!("*"),
        json!(">"),
        json!("a.b"),
        json!("a b"),
        json!(""),
        json!(long),
        json!("проект"),
        json!(".."),
        json!("$SYS"),
        json!(1.5),
        json!(null),
        json!(["1"]),
        json!({"a": 1}),
    ];
    for id in &hostile {
        let (status, body) = stack
            .post_json("/images/", &json!({"filename": "a.jpg", "project_id": id}))
            .await
            .unwrap();
        assert_eq!(status, 400, "{id}: {body}");
        assert_eq!(body["error"]["code"], "invalid_project_id", "{id}");
    }
    for raw in [
        "%2A",
        "%3E",
        "a.b",
        "a%20b",
        "a..b",
        "%24SYS",
        "a%2Fb",
        long.as_str(),
    ] {
        let (status, body) = stack
            .get_json(&format!("/projects/{raw}/images"))
            .await
            .unwrap();
        assert_eq!(status, 400, "{raw}: {body}");
        assert_eq!(body["error"]["code"], "invalid_project_id");
        let resp = stack
            .http
            .get(stack.url(&format!("/projects/{raw}/ws")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "ws {raw}");
    }
    // Integers are fine and name the same project as their string.
    let link = stack.request_link("7", "a.jpg").await.unwrap();
    let (status, _) = stack
        .post_json("/images/", &json!({"filename": "b.jpg", "project_id": 7}))
        .await
        .unwrap();
    assert_eq!(status, 201);
    let (_, list) = stack.get_json("/projects/7/images").await.unwrap();
    assert_eq!(list["images"].as_array().unwrap().len(), 2);
    assert_eq!(link["project_id"], "7");
}

#[tokio::test]
async fn malformed_requests_get_json_4xx() {
    let stack = TestStack::start().await.unwrap();
    let resp = stack
        .http
        .post(stack.url("/images/"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    let (status, body) = stack
        .post_json(
            "/images/",
            &json!({"filename": "logo.svg", "project_id": 1}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_format"))
    );
    let (status, body) = stack
        .post_json(
            "/images/",
            &json!({"filename": "a.jpg", "project_id": 1, "size": 60_000_000}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("upload_too_large"))
    );
    let (status, body) = stack
        .get_json("/images/01a2032c-2616-71e1-85a2-cda671cdf92b")
        .await
        .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, body) = stack.get_json("/images/not-an-id").await.unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let resp = stack
        .http
        .delete(stack.url("/images/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_request"
    );
}

#[tokio::test]
async fn tampered_oversize_and_repeated_uploads_are_refused_and_lose_nothing() {
    let stack = TestStack::start().await.unwrap();
    let photo = jpeg_photo(320, 240);
    let link = stack.request_link("links", "a.jpg").await.unwrap();
    let other = stack.request_link("links", "b.jpg").await.unwrap();
    let id = link["image_id"].as_str().unwrap();

    let tamper = |field: &str, value: Value| {
        let mut params = link["params"].clone();
        params[field] = value;
        params
    };
    let cases = [
        ("signature", json!("00".repeat(32))),
        ("expires", json!("99999999999")),
        ("max_bytes", json!("999999999999")),
        ("Content-Type", json!("image/svg+xml")),
        // Aimed at another image's key with this image's signature.
        ("key", other["params"]["key"].clone()),
    ];
    for (field, value) in cases {
        let (status, body) =
            upload_with_params(&stack.http, &link, tamper(field, value), photo.clone())
                .await
                .unwrap();
        assert_eq!(status, 403, "{field}: {body}");
        assert_eq!(body["error"]["code"], "bad_signature", "{field}");
    }
    // Another image's link can't write this image either (its signature names its own id).
    let mut crossed = other.clone();
    crossed["upload_link"] = link["upload_link"].clone();
    let (status, _) = stack.upload(&crossed, photo.clone()).await.unwrap();
    assert_eq!(status, 403);
    assert_eq!(stack.image(id).await.unwrap()["state"], "init");

    // Over the declared size: refused while streaming, nothing stored, and the image ends in
    // `error` at once (its WebSocket hears it now, not at the link's expiry).
    let mut ws = stack.ws("links", None).await.unwrap();
    let (status, body) = stack
        .post_json(
            "/images/",
            &json!({"filename": "s.jpg", "project_id": "links", "size": 100}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    let small = body;
    let (status, body) = stack.upload(&small, photo.clone()).await.unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("upload_too_large"))
    );
    let small_id = small["image_id"].as_str().unwrap();
    let rec = stack.image(small_id).await.unwrap();
    assert_eq!(rec["state"], "error", "{rec}");
    assert_eq!(rec["error"]["code"], "upload_too_large", "{rec}");
    let heard = ws.collect_until(small_id, "failed").await.unwrap();
    let failed = heard.last().unwrap();
    assert_eq!(failed["error"]["code"], "upload_too_large", "{failed}");
    // The link is spent: a new attempt asks for a new link.
    let (status, body) = stack.upload(&small, jpeg_photo(8, 8)).await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ask for a new upload link"),
        "{body}"
    );

    // The real upload works once; a second upload through the same link is refused.
    let (status, _) = stack.upload(&link, photo.clone()).await.unwrap();
    assert_eq!(status, 201);
    let (status, body) = stack.upload(&link, jpeg_photo(10, 10)).await.unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let rec = stack.wait_state(id, "done").await.unwrap();
    assert_eq!(rec["meta"]["width"], 320);

    // Download links: tampered or unsigned are refused.
    let thumb = rec["versions"]["thumb"].as_str().unwrap();
    let forged = thumb.replace("/thumb.jpg", "/d2500.jpg");
    assert_eq!(stack.http.get(&forged).send().await.unwrap().status(), 403);
    let unsigned = thumb.split('?').next().unwrap();
    assert_eq!(stack.http.get(unsigned).send().await.unwrap().status(), 403);
}

#[tokio::test]
async fn an_expired_upload_link_is_refused_and_the_unused_image_ends_in_upload_expired() {
    let stack = TestStack::start_with(|c| {
        c.api.upload_link_ttl = Duration::from_secs(1);
        // Long enough that the watcher can't settle the image before the checks below.
        c.lifecycle.upload_grace = Duration::from_secs(4);
    })
    .await
    .unwrap();
    let mut ws = stack.ws("exp", None).await.unwrap();
    let link = stack.request_link("exp", "a.jpg").await.unwrap();
    let id = link["image_id"].as_str().unwrap();
    // Links expire on whole seconds, up to 1 s after the ttl, and are refused after that second.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (status, body) = stack.upload(&link, jpeg_photo(64, 64)).await.unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("link_expired")),
        "{body}"
    );
    assert_eq!(stack.image(id).await.unwrap()["state"], "init");

    // After the grace period the watcher settles it; the WebSocket hears about it.
    let events = ws.collect_until(id, "failed").await.unwrap();
    assert_eq!(events.last().unwrap()["error"]["code"], "upload_expired");
    let rec = stack.wait_state(id, "error").await.unwrap();
    assert_eq!(rec["error"]["code"], "upload_expired");
    // A link used in time is not touched by the watcher.
    let used_id = stack
        .sample_flow("exp", "b.jpg", jpeg_photo(64, 64))
        .await
        .unwrap()
        .id;
    // Past that link's deadline (at most 2 s + 4 s grace): the watcher has looked and left it
    // alone.
    tokio::time::sleep(Duration::from_millis(7000)).await;
    assert_eq!(stack.image(&used_id).await.unwrap()["state"], "done");
}

#[tokio::test]
async fn complete_records_an_upload_that_is_stored_but_not_recorded() {
    let stack = TestStack::start().await.unwrap();
    let link = stack.request_link("fast", "a.jpg").await.unwrap();
    let id = link["image_id"].as_str().unwrap();
    let (status, body) = stack
        .post_json(&format!("/images/{id}/complete"), &Value::Null)
        .await
        .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "nothing uploaded yet"
    );
    // The bytes land in storage by another path (as with a direct S3 upload).
    let key = link["params"]["key"].as_str().unwrap();
    let path = stack.data_dir().join("storage").join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, jpeg_photo(300, 200)).unwrap();
    let (status, body) = stack
        .post_json(&format!("/images/{id}/complete"), &Value::Null)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "uploaded");
    stack.wait_state(id, "done").await.unwrap();
}

#[tokio::test]
async fn a_retried_upload_records_bytes_an_earlier_attempt_stored_but_never_recorded() {
    let stack = TestStack::start().await.unwrap();
    let link = stack.request_link("retry", "a.jpg").await.unwrap();
    let id = link["image_id"].as_str().unwrap();
    // A first attempt stored its bytes, then failed to record them (NATS failing over).
    let key = link["params"]["key"].as_str().unwrap();
    let path = stack.data_dir().join("storage").join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let first = jpeg_photo(300, 200);
    std::fs::write(&path, &first).unwrap();
    // The client retries: the first bytes are kept and recorded, and the image goes on.
    let (status, body) = stack.upload(&link, jpeg_photo(320, 240)).await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("first upload is kept")
    );
    let rec = stack.wait_state(id, "done").await.unwrap();
    assert_eq!(
        rec["meta"]["width"], 300,
        "the first bytes were processed: {rec}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), first);
}

/// Local mode: a name that tells no type is not refused; the bytes decide. A JPEG without an
/// extension is processed, a text file under such a name is refused (415) and ends in
/// `unsupported_format`, and
/// its original is served as `application/octet-stream`. Common extensions of accepted
/// formats (`.apng`, `.jfif`) get their links too.
#[tokio::test]
async fn local_uploads_with_names_that_tell_no_type_are_sniffed() {
    let stack = TestStack::start().await.unwrap();
    let cases: [(&str, Vec<u8>, &str); 2] = [
        ("scan_0001", jpeg_photo(320, 240), "done"),
        ("README", b"plain text, not a photo".to_vec(), "error"),
    ];
    for (name, bytes, state) in cases {
        let link = stack.request_link("sniff", name).await.unwrap();
        assert_eq!(link["params"]["Content-Type"], "application/octet-stream");
        let id = link["image_id"].as_str().unwrap().to_owned();
        let (status, body) = stack.upload(&link, bytes).await.unwrap();
        // The text is refused by its first bytes at the door.
        let wanted = if state == "done" { 201 } else { 415 };
        assert_eq!(status, wanted, "{name}: {body}");
        let rec = stack.wait_settled(&id).await.unwrap();
        assert_eq!(rec["state"], state, "{name}: {rec}");
        assert_eq!(rec["meta"]["content_type"], "application/octet-stream");
        if state == "error" {
            assert_eq!(rec["error"]["code"], "unsupported_format", "{rec}");
        } else {
            let original = rec["versions"]["original"].as_str().unwrap();
            let served = stack.http.get(original).send().await.unwrap();
            assert_eq!(served.headers()["content-type"], "application/octet-stream");
        }
    }
    for (name, want) in [("loop.apng", "image/png"), ("scan.JFIF", "image/jpeg")] {
        let link = stack.request_link("sniff", name).await.unwrap();
        assert_eq!(link["params"]["Content-Type"], want, "{name}");
    }
    // A format we refuse by name stays refused.
    let (status, body) = stack
        .post_json(
            "/images/",
            &json!({"filename": "logo.svg", "project_id": "sniff"}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_format"))
    );
}
