//! Nothing stays unfinished or lost to an outage: the reconciler re-drives an image stuck in
//! `uploaded`, and an outage that outlasts the retry budget ends in a retryable
//! `retries_exhausted` that `gallery redrive` (a NATS request any api answers) finishes.

use std::time::Duration;

use gallery::app::Roles;
use gallery_e2e::{TestStack, jpeg_photo};
use serde_json::Value;

async fn events_of(stack: &TestStack, project: &str) -> Vec<String> {
    let js = stack.js().await.unwrap();
    let p = gallery_schema::ProjectId::parse(project).unwrap();
    gallery_nats::read::read_until_now(
        &js,
        gallery_schema::subjects::project_filter(&p),
        1,
        Duration::from_secs(5),
    )
    .await
    .unwrap()
    .iter()
    .map(|e| e.event.kind().as_str().to_owned())
    .collect()
}

#[tokio::test]
async fn the_reconciler_redrives_an_image_stuck_in_uploaded() {
    // No processor at first: the upload's delivery waits, as if it had been lost.
    let mut stack = TestStack::start_with(|c| {
        c.roles = Roles::Api;
        c.lifecycle.redrive_after = Duration::from_secs(1);
        c.lifecycle.reconcile_every = Duration::from_secs(1);
    })
    .await
    .unwrap();
    let link = stack.request_link("stuck", "s.jpg").await.unwrap();
    let id = link["image_id"].as_str().unwrap().to_owned();
    stack.upload(&link, jpeg_photo(400, 300)).await.unwrap();
    // The reconciler notices it within a few seconds and drives it again.
    stack.wait_state(&id, "processing").await.unwrap();
    assert!(
        events_of(&stack, "stuck")
            .await
            .contains(&"redrive_requested".to_owned())
    );
    // With a processor, both the upload and the re-drive are consumed; one outcome.
    stack.restart(|c| c.roles = Roles::All).await.unwrap();
    stack.wait_state(&id, "done").await.unwrap();
    let kinds = events_of(&stack, "stuck").await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "processed").count(),
        1,
        "{kinds:?}"
    );
}

#[tokio::test]
async fn an_outage_past_the_budget_is_retryable_and_redrive_finishes_it() {
    let mut stack = TestStack::start_s3_with(|c| {
        c.roles = Roles::Api;
        c.processor.retry.budget = Duration::from_secs(2);
        if let Some(s3) = c.s3.as_mut() {
            s3.timeout = Duration::from_secs(1);
            s3.retry_timeout = Duration::from_secs(1);
        }
    })
    .await
    .unwrap();
    let link = stack.request_link("outage", "o.jpg").await.unwrap();
    let id = link["image_id"].as_str().unwrap().to_owned();
    let (status, body) = stack.upload(&link, jpeg_photo(400, 300)).await.unwrap();
    assert!((200..300).contains(&status), "{status} {body}");
    stack.wait_state(&id, "uploaded").await.unwrap();

    // Storage goes away, then the processor starts: it retries for the budget, then gives up.
    stack.s3.as_mut().unwrap().kill();
    stack.restart(|c| c.roles = Roles::All).await.unwrap();
    let rec = stack.wait_state(&id, "error").await.unwrap();
    assert_eq!(rec["error"]["code"], "retries_exhausted", "{rec}");

    // Storage is back; an operator re-drives what the outage left.
    stack.s3.as_mut().unwrap().start_again().await.unwrap();
    let client = gallery_nats::connect(&stack.nats.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let answer = client
        .request(
            gallery_schema::subjects::ADMIN_REDRIVE,
            serde_json::to_vec(&serde_json::json!({"project": "outage"}))
                .unwrap()
                .into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(reply["redriven"], 1, "{reply}");
    let rec = stack.wait_state(&id, "done").await.unwrap();
    assert_eq!(rec["meta"]["versions"]["thumb"]["width"], 150);
}

#[tokio::test]
async fn an_event_kind_from_a_newer_version_halts_the_projector_instead_of_being_skipped() {
    let stack = TestStack::start().await.unwrap();
    let before = stack.request_link("upgrade", "a.jpg").await.unwrap();
    let js = stack.js().await.unwrap();
    // What a newer version might append: a kind this build has no variant for.
    let image = before["image_id"].as_str().unwrap();
    let ack = js
        .publish(
            format!("images.upgrade.{image}.archived"),
            Vec::new().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // The projector stops there, says why on /ready, and has not marked it seen.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = stack.get_json("/ready").await.unwrap();
        if status == 503 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/ready stayed green"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let problems = body["problems"].to_string();
    assert!(problems.contains("projector: halted"), "{body}");
    assert!(problems.contains("archived"), "{body}");
    assert!(body["seq"].as_u64().unwrap() < ack.sequence, "{body}");
}

/// A log that lost events this read model folded (the stream recreated, or restored from an
/// older backup) would reuse their sequences for new events, which the model would skip as
/// already applied. `/ready` says so instead of reporting no lag.
#[tokio::test]
async fn a_read_model_ahead_of_the_log_is_not_ready() {
    let stack = TestStack::start().await.unwrap();
    for n in 0..3 {
        stack
            .request_link("lost", &format!("{n}.jpg"))
            .await
            .unwrap();
    }
    let js = stack.js().await.unwrap();
    js.delete_stream(gallery_schema::subjects::STREAM)
        .await
        .unwrap();
    gallery_nats::topology::ensure_topology(
        &js,
        1,
        &gallery_nats::ProcessorConsumerConfig::default(),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = stack.get_json("/ready").await.unwrap();
        if status == 503 && body["problems"].to_string().contains("ahead of the stream") {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["seq"], 3, "{body}");
    assert_eq!(body["stream_seq"], 0, "{body}");
}

/// The processor consumer's cap on jobs in flight is the operator's: an api applies
/// `GALLERY_PROCESSOR_MAX_ACK_PENDING` at every start, raising or lowering it.
#[tokio::test]
async fn the_processor_fleet_cap_follows_the_configuration() {
    let mut stack = TestStack::start_with(|c| c.processor_max_ack_pending = 1_000)
        .await
        .unwrap();
    let js = stack.js().await.unwrap();
    let cap = |js: async_nats::jetstream::Context| async move {
        let stream = js
            .get_stream(gallery_schema::subjects::STREAM)
            .await
            .unwrap();
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(gallery_schema::subjects::PROCESSOR_CONSUMER)
            .await
            .unwrap();
        consumer.info().await.unwrap().config.max_ack_pending
    };
    assert_eq!(cap(js.clone()).await, 1_000);
    stack
        .restart(|c| c.processor_max_ack_pending = 300)
        .await
        .unwrap();
    assert_eq!(cap(js).await, 300);
}

/// A retried link request (same Idempotency-Key) whose image was deleted gets no link even
/// when this replica's read model hasn't applied the deletion: here it is halted, so only
/// the log knows.
#[tokio::test]
async fn a_retry_learns_of_a_deletion_from_the_log_when_the_model_is_behind() {
    use gallery_schema::{Event, EventBody, EventKind, ImageId, ProjectId, subjects};
    let stack = TestStack::start().await.unwrap();
    let post = || {
        stack
            .http
            .post(stack.url("/images/"))
            .header("Idempotency-Key", "behind-1")
            .json(&serde_json::json!({"filename": "a.jpg", "project_id": "behind"}))
            .send()
    };
    let first = post().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let id = first["image_id"].as_str().unwrap().to_owned();
    let js = stack.js().await.unwrap();
    // Halt the projector (an event kind from a newer version), then record the deletion.
    let other = ImageId::new_v7();
    js.publish(format!("images.behind.{other}.archived"), Vec::new().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stack.get_json("/ready").await.unwrap().0 != 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/ready stayed green"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (p, i) = (
        ProjectId::parse("behind").unwrap(),
        ImageId::parse(&id).unwrap(),
    );
    let deleted = Event::new(
        p.clone(),
        i,
        EventBody::Deleted {
            whole_project: false,
        },
    );
    js.publish(
        subjects::event_subject(&p, &i, EventKind::Deleted),
        deleted.encode().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let (_, image) = stack.get_json(&format!("/images/{id}")).await.unwrap();
    assert_eq!(
        image["state"], "init",
        "the model hasn't applied it: {image}"
    );
    let late = post().await.unwrap();
    assert_eq!(late.status(), 409);
    let body: serde_json::Value = late.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deleted"),
        "{body}"
    );
}
