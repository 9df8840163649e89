//! The log is the source of truth: restarts keep images and finish unfinished work, the
//! WebSocket replays from any sequence with no gap or duplicate, a rebuilt read model equals
//! the live one, a replica restored from a snapshot plus the log's tail equals a rebuild, and
//! reprocessing starts a clean generation.

use std::time::Duration;

use gallery::app::Roles;
use gallery_e2e::{TestStack, jpeg_photo};
use gallery_projector::Store;
use gallery_projector::open::Origin;
use serde_json::Value;

async fn last_seq(js: &async_nats::jetstream::Context) -> u64 {
    let mut stream = js
        .get_stream(gallery_schema::subjects::STREAM)
        .await
        .unwrap();
    stream.info().await.unwrap().state.last_sequence
}

/// A `w`×`h` photo of `project` through the sample flow; its id.
async fn done_image(stack: &TestStack, project: &str, w: u32, h: u32) -> String {
    let photo = jpeg_photo(w, h);
    stack.sample_flow(project, "p.jpg", photo).await.unwrap().id
}

#[tokio::test]
async fn a_restart_keeps_images_and_finishes_unfinished_work() {
    // First run: api only, so an upload stays unprocessed when the service stops.
    let mut stack = TestStack::start_with(|c| c.roles = Roles::Api)
        .await
        .unwrap();
    let link = stack.request_link("r", "later.jpg").await.unwrap();
    let pending = link["image_id"].as_str().unwrap().to_owned();
    stack.upload(&link, jpeg_photo(800, 600)).await.unwrap();
    assert_eq!(stack.image(&pending).await.unwrap()["state"], "uploaded");

    // Second run on the same data dir, everything on: the upload is processed.
    stack.restart(|c| c.roles = Roles::All).await.unwrap();
    let rec = stack.wait_state(&pending, "done").await.unwrap();
    assert_eq!(rec["meta"]["versions"]["big_thumb"]["width"], 700);
    let finished = done_image(&stack, "r", 300, 200).await;

    // Third run: both images are still there, done, with working links.
    stack.restart(|_| {}).await.unwrap();
    let (_, list) = stack.get_json("/projects/r/images").await.unwrap();
    let images = list["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert!(images.iter().all(|r| r["state"] == "done"));
    let ids: Vec<&str> = images
        .iter()
        .map(|r| r["image_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [finished.as_str(), pending.as_str()]);
    let thumb = images[0]["versions"]["thumb"].as_str().unwrap();
    assert_eq!(stack.http.get(thumb).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_restart_with_the_embedded_nats_keeps_everything() {
    // `gallery up` with no NATS URL: the nats-server child lives under the data dir.
    let mut stack = TestStack::start_with(|c| c.nats_url = None).await.unwrap();
    let id = done_image(&stack, "embedded", 640, 480).await;
    stack.restart(|_| {}).await.unwrap();
    assert_eq!(stack.image(&id).await.unwrap()["state"], "done");
    // New work still flows after the restart.
    done_image(&stack, "embedded", 200, 100).await;
}

#[tokio::test]
async fn websocket_since_replays_then_goes_live_without_gap_or_duplicate() {
    let stack = TestStack::start().await.unwrap();
    let first = done_image(&stack, "ws", 400, 300).await;
    let (_, list) = stack.get_json("/projects/ws/images").await.unwrap();
    let seq_after_first = list["seq"].as_u64().unwrap();

    // Everything from the start: the first image's eight events, in order.
    let mut all = stack.ws("ws", Some(0)).await.unwrap();
    let replayed = all.collect_until(&first, "processed").await.unwrap();
    assert_eq!(replayed.len(), 8, "{replayed:?}");
    assert_eq!(replayed[0]["type"], "upload_requested");
    let third = replayed[2]["seq"].as_u64().unwrap();

    // From the middle: only what came after the third event.
    let mut mid = stack.ws("ws", Some(third)).await.unwrap();
    let rest = mid.collect_until(&first, "processed").await.unwrap();
    assert_eq!(rest.len(), 5);
    assert!(rest.iter().all(|e| e["seq"].as_u64().unwrap() > third));

    // From the listing's seq: nothing old, then the next image live, each event once.
    let mut live = stack.ws("ws", Some(seq_after_first)).await.unwrap();
    let second = done_image(&stack, "ws", 300, 300).await;
    let events = live.collect_until(&second, "processed").await.unwrap();
    assert!(
        events.iter().all(|e| e["image_id"] == second.as_str()),
        "{events:?}"
    );
    assert_eq!(events.len(), 8);
    // ...and the socket that replayed from 0 saw the second image too, with no repeats.
    let more = all.collect_until(&second, "processed").await.unwrap();
    let mut seqs: Vec<u64> = replayed
        .iter()
        .chain(more.iter())
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let n = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "duplicates");
    assert_eq!(n, 16);

    let (status, _) = stack.get_json("/projects/ws/ws?since=abc").await.unwrap();
    assert_eq!(status, 400);
}

#[tokio::test]
async fn reprocess_renders_a_new_generation() {
    let stack = TestStack::start().await.unwrap();
    let id = done_image(&stack, "again", 1000, 800).await;
    let before = stack.image(&id).await.unwrap();
    let mut ws = stack.ws("again", None).await.unwrap();
    let (status, body) = stack
        .post_json(&format!("/images/{id}/reprocess"), &Value::Null)
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let events = ws.collect_until(&id, "processed").await.unwrap();
    assert_eq!(events[0]["type"], "reprocess_requested");
    assert_eq!(events[0]["state"], "uploaded");
    let after = stack.wait_state(&id, "done").await.unwrap();
    assert_eq!(after["meta"]["generation"], 2);
    assert_ne!(after["versions"]["thumb"], before["versions"]["thumb"]);
    assert!(
        after["versions"]["thumb"]
            .as_str()
            .unwrap()
            .contains("/2/thumb.jpg")
    );

    // Only done or error images can be reprocessed.
    let link = stack.request_link("again", "x.jpg").await.unwrap();
    let pending = link["image_id"].as_str().unwrap();
    let (status, body) = stack
        .post_json(&format!("/images/{pending}/reprocess"), &Value::Null)
        .await
        .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
}

#[tokio::test]
async fn a_rebuilt_read_model_equals_the_live_one() {
    let mut stack = TestStack::start().await.unwrap();
    done_image(&stack, "rb", 500, 400).await;
    done_image(&stack, "rb", 90, 300).await;
    let link = stack.request_link("rb", "bad.jpg").await.unwrap();
    // A JPEG cut short: uploaded, then failed by the processor.
    stack.upload(&link, truncated_jpeg()).await.unwrap();
    stack
        .wait_state(link["image_id"].as_str().unwrap(), "error")
        .await
        .unwrap();
    stack.request_link("rb", "never.png").await.unwrap();
    stack.stop().await;

    let dir = stack.data_dir().join("readmodel");
    let live = Store::open(&dir).unwrap().all().unwrap();
    let js = stack.js().await.unwrap();
    let applied = gallery_projector::rebuild(&js, &dir).await.unwrap();
    // Two processed images (8 events each), a failed one (4) and an unused link (1).
    assert_eq!(applied, 8 * 2 + 4 + 1);
    let rebuilt = Store::open(&dir).unwrap().all().unwrap();
    assert_eq!(rebuilt, live);
    // Records are in image-id (creation) order; what varies run to run is redacted.
    insta::assert_yaml_snapshot!("rebuilt_read_model", rebuilt, {
        "[].image_id" => "[image_id]",
        "[].created_at" => "[time]",
        "[].updated_at" => "[time]",
        "[].link_expires_at" => "[time]",
        "[].etag" => "[etag]",
        "[].original_key" => "[key]",
        "[].versions.*.key" => "[key]",
        "[].last_seq" => "[seq]",
        "[].error.message" => "[message]",
    });
}

/// A new api replica on an empty data dir starts from the newest read-model snapshot in the
/// object store and folds only the log's tail after it; the model it ends with equals a
/// rebuild from the first event. (S3 mode: replicas share the bucket.)
#[tokio::test]
async fn a_new_replica_restores_the_newest_snapshot_and_folds_only_the_tail() {
    let mut stack = TestStack::start_s3_with(|c| {
        c.snapshot_every = Some(Duration::from_millis(300));
    })
    .await
    .unwrap();
    let js = stack.js().await.unwrap();
    done_image(&stack, "snap", 500, 400).await;
    stack.request_link("snap", "never.png").await.unwrap();
    let covered = last_seq(&js).await;
    let objects = gallery::storage::open(&stack.config).await.unwrap().store;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let snapshot_seq = loop {
        let newest = gallery_projector::snapshots::list(objects.as_ref())
            .await
            .unwrap()
            .pop()
            .map(|(seq, _)| seq);
        if let Some(seq) = newest.filter(|seq| *seq >= covered) {
            break seq;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot covers {covered}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // No more snapshots; the log moves on past the newest one.
    stack.restart(|c| c.snapshot_every = None).await.unwrap();
    done_image(&stack, "snap", 90, 300).await;
    stack.request_link("snap", "later.png").await.unwrap();
    let end = last_seq(&js).await;
    assert!(end > snapshot_seq);

    // A new replica: an empty data dir, the same NATS and bucket.
    let data = tempfile::tempdir().unwrap();
    let mut cfg = stack.config.clone();
    cfg.data_dir = data.path().to_owned();
    cfg.roles = Roles::Api;
    let replica = gallery::app::start(cfg).await.unwrap();
    let Some(Origin::Restored(info)) = replica.read_model else {
        panic!("not restored: {:?}", replica.read_model);
    };
    assert_eq!((info.last_seq, info.records), (snapshot_seq, 2));
    // It serves what the tail added too.
    let url = format!("{}/projects/snap/images", replica.base_url());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page: Value = stack
            .http
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut states: Vec<&str> = page["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["state"].as_str().unwrap())
            .collect();
        states.sort();
        if states == ["done", "done", "init", "init"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    replica.stop().await;
    stack.stop().await;

    // Against another log (a new, empty server) the snapshot is ahead of it: not used.
    let other_nats = gallery_nats::NatsServer::start_temp().await.unwrap();
    let other_data = tempfile::tempdir().unwrap();
    let mut cfg = stack.config.clone();
    cfg.data_dir = other_data.path().to_owned();
    cfg.roles = Roles::Api;
    cfg.nats_url = Some(other_nats.url().into());
    let stranger = gallery::app::start(cfg).await.unwrap();
    assert_eq!(stranger.read_model, Some(Origin::Opened));
    stranger.stop().await;

    let restored = Store::open(&data.path().join("readmodel"))
        .unwrap()
        .all()
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("rebuilt");
    gallery_projector::rebuild(&js, &dir).await.unwrap();
    let rebuilt = Store::open(&dir).unwrap().all().unwrap();
    assert_eq!(restored.len(), 4);
    assert_eq!(restored, rebuilt);
    assert_eq!(Store::open(&dir).unwrap().last_seq().unwrap(), end);
}

/// An upgrade that changes the record format finds a store of the old format: it is replaced
/// (rebuilt from the log here, with no snapshot to start from), not refused and not counted
/// as damage.
#[tokio::test]
async fn a_read_model_of_another_record_format_is_replaced_at_start() {
    let mut stack = TestStack::start().await.unwrap();
    let id = done_image(&stack, "fmt", 300, 200).await;
    stack.stop().await;
    {
        let db = sled::open(stack.data_dir().join("readmodel")).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert("version", &1u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    stack.restart(|_| {}).await.unwrap();
    assert!(
        matches!(
            stack.running.as_ref().unwrap().read_model,
            Some(Origin::Rebuilt { events: 8 })
        ),
        "{:?}",
        stack.running.as_ref().unwrap().read_model
    );
    assert_eq!(stack.image(&id).await.unwrap()["state"], "done");
    let names: Vec<String> = std::fs::read_dir(stack.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("readmodel.damaged")),
        "{names:?}"
    );
}

#[tokio::test]
async fn a_backup_restored_into_a_new_server_rebuilds_an_equal_read_model() {
    let mut stack = TestStack::start().await.unwrap();
    done_image(&stack, "bk", 500, 400).await;
    let link = stack.request_link("bk", "bad.jpg").await.unwrap();
    // A JPEG cut short: uploaded, then failed by the processor.
    stack.upload(&link, truncated_jpeg()).await.unwrap();
    stack
        .wait_state(link["image_id"].as_str().unwrap(), "error")
        .await
        .unwrap();
    let wait = std::time::Duration::from_secs(5);
    let js = async_nats::jetstream::new(
        gallery_nats::connect(&stack.nats.url(), wait)
            .await
            .unwrap(),
    );

    // A full backup, then an incremental one after more work, into one file.
    let mut file = Vec::new();
    let first = gallery_nats::backup::backup(&js, &mut file, 1, true)
        .await
        .unwrap();
    done_image(&stack, "bk", 90, 300).await;
    let second = gallery_nats::backup::backup(&js, &mut file, first.last_seq + 1, false)
        .await
        .unwrap();
    assert_eq!(first.records + second.records, second.last_seq);
    let mut stream = js.get_stream("IMAGES").await.unwrap();
    let info = stream.info().await.unwrap();
    println!(
        "log: {} events, {} bytes on the server: {} bytes per event",
        info.state.messages,
        info.state.bytes,
        info.state.bytes / info.state.messages.max(1)
    );
    stack.stop().await;
    let live = Store::open(&stack.data_dir().join("readmodel"))
        .unwrap()
        .all()
        .unwrap();

    // Restore into a brand-new server and rebuild a read model there.
    let fresh = gallery_nats::NatsServer::start_temp().await.unwrap();
    let fjs = async_nats::jetstream::new(gallery_nats::connect(&fresh.url(), wait).await.unwrap());
    gallery_nats::topology::ensure_topology(&fjs, 1, &Default::default())
        .await
        .unwrap();
    let restored = gallery_nats::backup::restore(&fjs, &mut file.as_slice())
        .await
        .unwrap();
    assert_eq!(restored.last_seq, second.last_seq);
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("readmodel");
    gallery_projector::rebuild(&fjs, &model).await.unwrap();
    assert_eq!(Store::open(&model).unwrap().all().unwrap(), live);
    // Running the restore again (as after an interruption) adds nothing: what the stream has
    // is skipped, and history is never duplicated.
    let again = gallery_nats::backup::restore(&fjs, &mut file.as_slice())
        .await
        .unwrap();
    assert_eq!(again.records, 0);
    let mut fresh_stream = fjs.get_stream("IMAGES").await.unwrap();
    assert_eq!(
        fresh_stream.info().await.unwrap().state.last_sequence,
        second.last_seq
    );
}

/// A JPEG cut short: it starts like one (so the upload is taken), and the processor fails it.
fn truncated_jpeg() -> Vec<u8> {
    gallery_e2e::jpeg_photo(64, 48)[..300].to_vec()
}
