//! What an operator sees: a request id on every response (the client's, or a generated one),
//! carried by every event the request causes, through the processor's events too, so one grep
//! follows an image from the api to its versions.

use std::time::Duration;

use gallery_e2e::sample_flow::RENDERED_VERSIONS;
use gallery_e2e::{TestStack, jpeg_photo};
use serde_json::{Value, json};

#[tokio::test]
async fn a_request_id_follows_an_image_from_the_api_through_the_processor() {
    let stack = TestStack::start().await.unwrap();
    // Generated when the client sends none.
    let resp = stack.http.get(stack.url("/health")).send().await.unwrap();
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32, "{generated}");
    // A client's own id is kept and returned; a hostile one is replaced.
    let resp = stack
        .http
        .post(stack.url("/images/"))
        .header("x-request-id", "trace-create-1")
        .json(&json!({"filename": "a.jpg", "project_id": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-create-1");
    let link: Value = resp.json().await.unwrap();
    let resp = stack
        .http
        .get(stack.url("/projects/traced/images"))
        .header("x-request-id", "has spaces and <tags>")
        .send()
        .await
        .unwrap();
    assert_ne!(resp.headers()["x-request-id"], "has spaces and <tags>");

    let mut form = reqwest::multipart::Form::new();
    for (k, v) in link["params"].as_object().unwrap() {
        form = form.text(k.clone(), v.as_str().unwrap().to_owned());
    }
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(jpeg_photo(300, 200))
            .file_name("a.jpg")
            .mime_str("image/jpeg")
            .unwrap(),
    );
    let resp = stack
        .http
        .post(link["upload_link"].as_str().unwrap())
        .header("x-request-id", "trace-upload-1")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = link["image_id"].as_str().unwrap();
    stack.wait_state(id, "done").await.unwrap();

    // Every event of the image names the request that caused it.
    let client = gallery_nats::connect(&stack.nats.url(), Duration::from_secs(10))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("IMAGES").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut seen = Vec::new();
    for seq in 1..=last {
        let msg = stream.get_raw_message(seq).await.unwrap();
        if !msg.subject.contains(id) {
            continue;
        }
        let kind = msg.subject.rsplit('.').next().unwrap().to_owned();
        let request = msg
            .headers
            .get(gallery_schema::subjects::HEADER_REQUEST_ID)
            .map(|v| v.as_str().to_owned());
        seen.push((kind, request));
    }
    let by = |kind: &str| {
        seen.iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, r)| r.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        by("upload_requested"),
        [Some("trace-create-1".to_owned())],
        "{seen:?}"
    );
    assert_eq!(
        by("uploaded"),
        [Some("trace-upload-1".to_owned())],
        "{seen:?}"
    );
    for kind in ["processing_started", "processed"] {
        assert_eq!(
            by(kind),
            [Some("trace-upload-1".to_owned())],
            "{kind}: {seen:?}"
        );
    }
    assert_eq!(
        by("version_rendered"),
        vec![Some("trace-upload-1".to_owned()); 4],
        "{seen:?}"
    );
}

#[tokio::test]
async fn metrics_count_the_sample_flow_without_project_labels() {
    let stack = TestStack::start().await.unwrap();
    let _ws = stack.ws("metered-project", None).await.unwrap();
    let image = stack
        .sample_flow("metered-project", "m.jpg", jpeg_photo(640, 480))
        .await
        .unwrap()
        .id;
    let addr = stack
        .running
        .as_ref()
        .unwrap()
        .metrics_addr
        .expect("a metrics listener");
    // The sampler runs every 5 s; its gauges exist from its first round.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let text = loop {
        let resp = stack
            .http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = resp.text().await.unwrap();
        if text.contains("gallery_consumer_pending") || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value(r#"gallery_http_requests_total{route="/images/",status="201"}"#),
        1.0
    );
    assert_eq!(value("gallery_links_requested_total"), 1.0);
    assert_eq!(value(r#"gallery_uploads_detected_total{via="api"}"#), 1.0);
    for version in RENDERED_VERSIONS {
        let line = format!(r#"gallery_versions_rendered_total{{version="{version}"}}"#);
        assert_eq!(value(&line), 1.0, "{version}");
    }
    assert_eq!(value(r#"gallery_jobs_total{outcome="done"}"#), 1.0);
    assert_eq!(value("gallery_upload_to_done_seconds_count"), 1.0);
    assert_eq!(value("gallery_render_duration_seconds_count"), 1.0);
    assert!(text.contains("gallery_http_request_duration_seconds_bucket"));
    assert_eq!(value("gallery_websocket_connections"), 1.0);
    assert!(value(r#"gallery_consumer_pending{consumer="processor"}"#) >= 0.0);
    assert!(value(r#"gallery_consumer_ack_pending{consumer="upload-watcher"}"#) >= 0.0);
    assert!(value("gallery_projector_lag_events") >= 0.0);
    // Routes by template, never by id; no project in any label.
    assert!(text.contains(r#"route="/images/{id}""#), "{text}");
    assert!(
        !text.contains("metered-project"),
        "a project in a label:\n{text}"
    );
    assert!(!text.contains(&image));
}
