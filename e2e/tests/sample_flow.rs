//! The sample flow of the original task, end to end in local mode: link → upload → WebSocket
//! events in order → listing shows `done` with five links → the versions have the fitted sizes.

use std::time::Duration;

use gallery_e2e::sample_flow::{
    RENDERED_VERSIONS, SAMPLE_FLOW_STATES, SAMPLE_FLOW_TYPES, types_of,
};
use gallery_e2e::{TestStack, dimensions, jpeg_photo};
use serde_json::Value;

#[tokio::test]
async fn link_upload_websocket_listing_and_versions() {
    let stack = TestStack::start().await.unwrap();
    let mut ws = stack.ws("42", None).await.unwrap();

    let link = stack.request_link("42", "holiday.jpg").await.unwrap();
    let image_id = link["image_id"].as_str().unwrap().to_owned();
    assert_eq!(link["method"], "POST");
    assert_eq!(link["project_id"], "42");
    assert!(
        link["upload_link"]
            .as_str()
            .unwrap()
            .starts_with(&stack.base())
    );
    assert!(link["expires_at"].as_str().unwrap().ends_with('Z'));

    let photo = jpeg_photo(4000, 3000); // 12 MP
    let (status, body) = stack.upload(&link, photo.clone()).await.unwrap();
    assert_eq!(status, 201, "{body}");

    let events = ws.collect_until(&image_id, "processed").await.unwrap();
    assert_eq!(types_of(&events), SAMPLE_FLOW_TYPES);
    let states: Vec<&str> = events
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, SAMPLE_FLOW_STATES);
    let versions: Vec<&str> = events[3..7]
        .iter()
        .map(|e| e["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, RENDERED_VERSIONS);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq must increase: {seqs:?}"
    );
    for e in &events {
        assert_eq!(e["image_id"], image_id.as_str());
        assert_eq!(e["project_id"], "42");
        assert!(e["at"].as_str().unwrap().ends_with('Z'));
    }

    // The listing, read on "done", shows done with five links.
    let (status, list) = stack.get_json("/projects/42/images").await.unwrap();
    assert_eq!(status, 200);
    assert!(list["seq"].as_u64().unwrap() >= *seqs.last().unwrap());
    let rec = &list["images"][0];
    assert_eq!(rec["image_id"], image_id.as_str());
    assert_eq!(rec["state"], "done");
    assert_eq!(rec["filename"], "holiday.jpg");
    let links = rec["versions"].as_object().unwrap();
    assert_eq!(links.len(), 5);

    let expected = [
        ("thumb", (150, 113)),
        ("big_thumb", (700, 525)),
        ("big_1920", (1440, 1080)),
        ("d2500", (2500, 1875)),
    ];
    for (name, size) in expected {
        let url = links[name].as_str().unwrap();
        let resp = stack.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        assert_eq!(resp.headers()["content-type"], "image/jpeg");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        let bytes = resp.bytes().await.unwrap();
        assert_eq!(dimensions(&bytes).unwrap(), size, "{name}");
        assert_eq!(rec["meta"]["versions"][name]["width"], size.0);
        assert_eq!(rec["meta"]["versions"][name]["bytes"], bytes.len());
    }
    // The original comes back byte for byte.
    let original = links["original"].as_str().unwrap();
    assert_eq!(stack.bytes_at(original).await.unwrap(), photo);

    // The WebSocket's version URLs work too.
    let thumb_url = events[6]["url"].as_str().unwrap();
    let thumb = stack.bytes_at(thumb_url).await.unwrap();
    assert_eq!(dimensions(&thumb).unwrap(), (150, 113));
}

#[tokio::test]
async fn listing_pages_filters_and_keeps_projects_apart() {
    let stack = TestStack::start().await.unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        let link = stack
            .request_link("pages", &format!("{n}.png"))
            .await
            .unwrap();
        ids.push(link["image_id"].as_str().unwrap().to_owned());
    }
    stack.request_link("other", "x.jpg").await.unwrap();
    let (_, first) = stack
        .get_json("/projects/pages/images?limit=2")
        .await
        .unwrap();
    let got: Vec<&str> = first["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()], "newest first");
    for r in first["images"].as_array().unwrap() {
        assert_eq!(r["state"], "init");
        assert_eq!(r["versions"]["original"], Value::Null);
        assert_eq!(r["versions"]["thumb"], Value::Null);
    }
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = stack
        .get_json(&format!("/projects/pages/images?limit=2&cursor={cursor}"))
        .await
        .unwrap();
    assert_eq!(second["images"].as_array().unwrap().len(), 1);
    assert_eq!(second["images"][0]["image_id"], ids[0].as_str());
    assert_eq!(second["next_cursor"], Value::Null);

    let (_, done) = stack
        .get_json("/projects/pages/images?state=done")
        .await
        .unwrap();
    assert!(done["images"].as_array().unwrap().is_empty());
    for bad in [
        "?limit=0",
        "?limit=501",
        "?limit=x",
        "?state=nope",
        "?cursor=zzz",
    ] {
        let (status, body) = stack
            .get_json(&format!("/projects/pages/images{bad}"))
            .await
            .unwrap();
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"]["code"], "invalid_request", "{bad}");
    }
}

#[tokio::test]
async fn a_retried_link_request_with_an_idempotency_key_creates_one_image() {
    let stack = TestStack::start().await.unwrap();
    let post = |key: &'static str, filename: &'static str| {
        stack
            .http
            .post(stack.url("/images/"))
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({"filename": filename, "project_id": "idem"}))
            .send()
    };
    let first = post("retry-7", "a.jpg").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    // The same request again (a client retry after a timeout): the same answer, same link.
    let again = post("retry-7", "a.jpg").await.unwrap();
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);
    // The same key for another request is the client's mistake: 409, nothing created.
    let other = post("retry-7", "b.jpg").await.unwrap();
    assert_eq!(other.status(), 409);
    let body: Value = other.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict");
    // A different key is a different image.
    assert_eq!(post("retry-8", "a.jpg").await.unwrap().status(), 201);
    let bad = post("has space", "a.jpg").await.unwrap();
    assert_eq!(bad.status(), 400);

    let (_, list) = stack.get_json("/projects/idem/images").await.unwrap();
    assert_eq!(list["images"].as_array().unwrap().len(), 2);
    // The image of the first answer uploads and finishes as usual.
    let id = first["image_id"].as_str().unwrap();
    let (status, _) = stack.upload(&first, jpeg_photo(300, 200)).await.unwrap();
    assert_eq!(status, 201);
    stack.wait_state(id, "done").await.unwrap();

    // Once that image is deleted, a late retry of its request gets no link to it.
    let (status, _) = stack.delete(&format!("/images/{id}")).await.unwrap();
    assert_eq!(status, 202);
    let late = post("retry-7", "a.jpg").await.unwrap();
    assert_eq!(late.status(), 409);
    let body: Value = late.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("deleted") && message.contains(id),
        "{message}"
    );
}

/// An event the fold refuses (here a `version_rendered` for an image that isn't processing)
/// reaches no client: not the live feed, not a replay. Both carry the same messages.
#[tokio::test]
async fn events_the_fold_refuses_reach_neither_the_live_feed_nor_a_replay() {
    use gallery_schema::{Event, EventBody, EventKind, ImageId, ProjectId, VersionName};
    use gallery_schema::{VersionRendered, keys, subjects};
    // No processor: the test appends the processor's events itself.
    let stack = TestStack::start_with(|c| c.roles = gallery::app::Roles::Api)
        .await
        .unwrap();
    let mut live = stack.ws("refusing", None).await.unwrap();
    let link = stack.request_link("refusing", "a.jpg").await.unwrap();
    let id = link["image_id"].as_str().unwrap().to_owned();
    stack.upload(&link, jpeg_photo(64, 64)).await.unwrap();
    stack.wait_state(&id, "uploaded").await.unwrap();

    let nats = gallery_nats::connect(&stack.nats.url(), Duration::from_secs(10))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(nats);
    let (p, i) = (
        ProjectId::parse("refusing").unwrap(),
        ImageId::parse(&id).unwrap(),
    );
    let append = |kind: EventKind, body: EventBody| {
        let js = js.clone();
        let event = Event::new(p.clone(), i, body);
        let subject = subjects::event_subject(&p, &i, kind);
        async move {
            js.publish(subject, event.encode().into())
                .await
                .unwrap()
                .await
                .unwrap()
                .sequence
        }
    };
    // Well-formed, but the image is `uploaded`, not `processing`: the fold refuses it.
    let refused = append(
        EventKind::VersionRendered,
        EventBody::VersionRendered(VersionRendered {
            version: VersionName::Thumb,
            key: keys::version_key(&p, &i, 1, VersionName::Thumb, "jpg"),
            width: 10,
            height: 10,
            bytes: 10,
            content_type: "image/jpeg".into(),
            generation: 1,
        }),
    )
    .await;
    append(
        EventKind::ProcessingStarted,
        EventBody::ProcessingStarted {
            attempt: 1,
            generation: 1,
        },
    )
    .await;
    let rec = stack.wait_state(&id, "processing").await.unwrap();
    assert!(rec["versions"]["thumb"].is_null(), "{rec}");

    let types = |msgs: &[Value]| -> Vec<(String, u64)> {
        msgs.iter()
            .filter(|m| m["image_id"] == id.as_str())
            .map(|m| {
                (
                    m["type"].as_str().unwrap().to_owned(),
                    m["seq"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let live_msgs = types(&live.collect_until(&id, "processing_started").await.unwrap());
    let mut replay = stack.ws("refusing", Some(0)).await.unwrap();
    let replay_msgs = types(
        &replay
            .collect_until(&id, "processing_started")
            .await
            .unwrap(),
    );
    assert!(
        live_msgs.iter().all(|(_, seq)| *seq != refused),
        "live: {live_msgs:?}"
    );
    assert_eq!(replay_msgs, live_msgs);
    let kinds: Vec<&str> = live_msgs.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        kinds,
        ["upload_requested", "uploaded", "processing_started"]
    );
}
