//! The lifecycle of stored bytes: deleting an image or a whole project takes it out of the
//! listing at once, announces it on the WebSocket, and the deleter removes its original and
//! every generation's versions from the real store (Garage in S3 mode, the directory in local
//! mode). A replay of the log after deletions gives the model the live api has.

use std::time::Duration;

use gallery_e2e::secure::{keys_of, mint, secured};
use gallery_e2e::{TestStack, jpeg_photo, metric};
use gallery_projector::Store;
use serde_json::json;

/// An image of `project` uploaded and rendered; its id.
async fn done_image(stack: &TestStack, project: &str, name: &str) -> String {
    let photo = jpeg_photo(640, 480);
    stack.sample_flow(project, name, photo).await.unwrap().id
}

fn keys_of_image(keys: &[String], image: &str) -> Vec<String> {
    keys.iter().filter(|k| k.contains(image)).cloned().collect()
}

/// Polls the store until no key names `image` (the deleter's purge), up to 30 s.
async fn wait_purged(stack: &TestStack, image: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let keys = stack.object_keys().await.unwrap();
        if keys_of_image(&keys, image).is_empty() {
            return keys;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "objects of {image} still stored: {:?}",
            keys_of_image(&keys, image)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn deleting_an_image_removes_every_generation_from_s3_and_the_listing() {
    let mut stack = TestStack::start_s3_with(|c| {
        c.lifecycle.delete_settle = Duration::from_millis(300);
        // The upload link (a POST policy, usable again until it expires) stays valid for a
        // while after the deletion here.
        c.api.upload_link_ttl = Duration::from_secs(12);
        c.lifecycle.upload_grace = Duration::from_millis(500);
    })
    .await
    .unwrap();
    let mut ws = stack.ws("del", None).await.unwrap();
    let flow = stack
        .sample_flow("del", "gone.jpg", jpeg_photo(640, 480))
        .await
        .unwrap();
    let (gone, gone_link) = (flow.id, flow.link);
    let kept = done_image(&stack, "del", "kept.jpg").await;
    // A second generation: the first one's versions stay in the store until the deletion.
    let (status, body) = stack
        .post_json(&format!("/images/{gone}/reprocess"), &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    ws.collect_until(&gone, "processed").await.unwrap();
    let rec = stack.wait_state(&gone, "done").await.unwrap();
    assert_eq!(rec["meta"]["generation"], 2, "{rec}");
    let thumb_url = rec["versions"]["thumb"].as_str().unwrap().to_owned();
    let before = stack.object_keys().await.unwrap();
    assert_eq!(
        keys_of_image(&before, &gone).len(),
        1 + 2 * 4,
        "the original and two generations of four versions: {before:?}"
    );

    let (status, body) = stack.delete(&format!("/images/{gone}")).await.unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["deleted"], 1);
    let seq = body["seq"].as_u64().unwrap();

    // At once: gone from the listing and the image route, announced on the WebSocket.
    let (_, page) = stack.get_json("/projects/del/images").await.unwrap();
    let listed: Vec<&str> = page["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [kept.as_str()]);
    assert!(page["seq"].as_u64().unwrap() >= seq);
    let (status, body) = stack.get_json(&format!("/images/{gone}")).await.unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let events = ws.collect_until(&gone, "deleted").await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last["state"].as_str(), last["seq"].as_u64()),
        (Some("deleted"), Some(seq))
    );
    // Nothing more can be asked of it.
    for (status, _) in [
        stack.delete(&format!("/images/{gone}")).await.unwrap(),
        stack
            .post_json(&format!("/images/{gone}/reprocess"), &json!({}))
            .await
            .unwrap(),
    ] {
        assert_eq!(status, 404);
    }

    // Past the settle delay, the still-valid link puts an original back: the purge waits for
    // the link's expiry, so that copy goes too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = stack.upload(&gone_link, jpeg_photo(64, 48)).await.unwrap();
    assert!((200..300).contains(&status), "S3 takes it: {status} {body}");

    // Shortly after: every object of the image is gone from the bucket, the other image's stay.
    let after = wait_purged(&stack, &gone).await;
    assert_eq!(
        after.len(),
        before.len() - 9,
        "only the deleted image's objects went"
    );
    assert_eq!(keys_of_image(&after, &kept).len(), 5);
    // A download link signed before the deletion finds nothing.
    let resp = stack.http.get(&thumb_url).send().await.unwrap();
    assert_eq!(resp.status(), 404, "{thumb_url}");
    let metrics = stack.metrics().await.unwrap();
    assert_eq!(metric(&metrics, "gallery_deleter_objects_total"), Some(9.0));
    assert!(metric(&metrics, "gallery_deleter_bytes_total").unwrap() > 0.0);

    // A replay of the log gives the live model, tombstone included.
    stack.stop().await;
    let dir = stack.data_dir().join("readmodel");
    let live = Store::open(&dir).unwrap().all().unwrap();
    let js = stack.js().await.unwrap();
    gallery_projector::rebuild(&js, &dir).await.unwrap();
    let rebuilt = Store::open(&dir).unwrap();
    assert_eq!(rebuilt.all().unwrap(), live);
    let tombstone = live
        .iter()
        .find(|r| r.image_id.to_string() == gone)
        .unwrap();
    assert_eq!(tombstone.state, gallery_schema::ImageState::Deleted);
    assert_eq!(tombstone.filename, "", "the tombstone keeps no file name");
    let project = gallery_schema::ProjectId::parse("del").unwrap();
    assert_eq!(
        rebuilt
            .list(&project, None, 10, None)
            .unwrap()
            .records
            .len(),
        1
    );
}

#[tokio::test]
async fn deleting_a_project_takes_every_image_in_any_state_and_needs_admin() {
    let mut stack = secured().await;
    stack
        .restart(|c| c.lifecycle.delete_settle = Duration::from_millis(300))
        .await
        .unwrap();
    let keys = keys_of(&stack);
    let done = done_image(&stack, "proj", "a.jpg").await;
    let link = stack.request_link("proj", "bad.jpg").await.unwrap();
    let failed = link["image_id"].as_str().unwrap().to_owned();
    // A JPEG cut short: uploaded, then failed by the processor.
    let truncated = gallery_e2e::jpeg_photo(64, 48)[..300].to_vec();
    stack.upload(&link, truncated).await.unwrap();
    stack.wait_state(&failed, "error").await.unwrap();
    let unused = stack.request_link("proj", "never.jpg").await.unwrap();
    let waiting = unused["image_id"].as_str().unwrap().to_owned();
    let other = done_image(&stack, "other", "b.jpg").await;
    let mut ws = stack.ws("proj", None).await.unwrap();

    // Without the admin right: refused, nothing deleted.
    let worker = mint(&keys, "proj", "upload,read,subscribe");
    for path in ["/projects/proj".to_owned(), format!("/images/{done}")] {
        let (status, body) = stack.delete_as(&path, Some(&worker)).await.unwrap();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{path}"
        );
    }
    let (status, _) = stack.delete_as("/projects/proj", None).await.unwrap();
    assert_eq!(status, 401);
    // Admin of another project: the image is not confirmed to exist.
    let elsewhere = mint(&keys, "other", "upload,read,subscribe,admin");
    let (status, _) = stack
        .delete_as(&format!("/images/{done}"), Some(&elsewhere))
        .await
        .unwrap();
    assert_eq!(status, 404);

    let admin = mint(&keys, "proj", "admin");
    let (status, body) = stack
        .delete_as("/projects/proj", Some(&admin))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["deleted"], 3);
    let (_, page) = stack.get_json("/projects/proj/images").await.unwrap();
    assert_eq!(page["images"], json!([]));
    let mut announced = Vec::new();
    while announced.len() < 3 {
        let msg = ws.next_json().await.unwrap();
        if msg["type"] == "deleted" {
            announced.push(msg["image_id"].as_str().unwrap().to_owned());
        }
    }
    announced.sort();
    let mut expected = vec![done.clone(), failed.clone(), waiting.clone()];
    expected.sort();
    assert_eq!(announced, expected);

    // The unused link stops working (local mode) and nothing lands.
    let (status, _) = stack.upload(&unused, jpeg_photo(50, 50)).await.unwrap();
    assert_eq!(status, 404);
    for image in [&done, &failed] {
        wait_purged(&stack, image).await;
    }
    let keys = stack.object_keys().await.unwrap();
    assert!(keys_of_image(&keys, &waiting).is_empty(), "{keys:?}");
    assert_eq!(keys_of_image(&keys, &other).len(), 5, "{keys:?}");
    // Deleting again is harmless.
    let (status, body) = stack
        .delete_as("/projects/proj", Some(&admin))
        .await
        .unwrap();
    assert_eq!((status, &body["deleted"]), (202, &json!(0)));
}

/// Runs `gallery sweep --json` (with `--dry-run` when asked) against the stack's NATS.
async fn sweep(stack: &TestStack, dry_run: bool) -> serde_json::Value {
    let args: &[&str] = if dry_run {
        &["sweep", "--json", "--dry-run"]
    } else {
        &["sweep", "--json"]
    };
    let stdout = gallery_e2e::procs::gallery_admin(&stack.nats.url(), args)
        .await
        .unwrap();
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The sweeper against Garage, with its waiting periods set to zero: a dry run lists exactly
/// the superseded generation, the refused upload's original, what a deleted image left and a
/// stale staging file, and removes nothing; the real run removes exactly those. The current
/// generation, the snapshots and the readiness probe stay.
#[tokio::test]
async fn the_sweeper_removes_only_what_no_record_needs_after_a_dry_run() {
    use object_store::{ObjectStore, PutPayload, path::Path as ObjectPath};
    let stack = TestStack::start_s3_with(|c| {
        c.lifecycle.sweep_every = None;
        c.lifecycle.sweep_policy = Some(gallery_lifecycle::sweeper::SweepPolicy {
            retention: Duration::ZERO,
            superseded_grace: Duration::ZERO,
            deleted_grace: Duration::ZERO,
            staging_age: Duration::ZERO,
        });
        // The deleter leaves the deleted image to the sweeper here.
        c.lifecycle.delete_settle = Duration::from_secs(3600);
    })
    .await
    .unwrap();
    let mut ws = stack.ws("sw", None).await.unwrap();
    let reprocessed = done_image(&stack, "sw", "twice.jpg").await;
    let (status, _) = stack
        .post_json(&format!("/images/{reprocessed}/reprocess"), &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202);
    ws.collect_until(&reprocessed, "processed").await.unwrap();
    let current = stack.wait_state(&reprocessed, "done").await.unwrap();
    let link = stack.request_link("sw", "fake.jpg").await.unwrap();
    let refused = link["image_id"].as_str().unwrap().to_owned();
    stack.upload(&link, b"<svg/>".to_vec()).await.unwrap();
    stack.wait_state(&refused, "error").await.unwrap();
    let deleted = done_image(&stack, "sw", "gone.jpg").await;
    let (status, _) = stack.delete(&format!("/images/{deleted}")).await.unwrap();
    assert_eq!(status, 202);
    let objects = gallery::storage::open(&stack.config).await.unwrap().store;
    for key in [
        "tmp/uploads/left-behind",
        "snapshots/readmodel/00000000000000000001.lgsnap.zst",
    ] {
        objects
            .put(&ObjectPath::from(key), PutPayload::from_static(b"x"))
            .await
            .unwrap();
    }
    let before = stack.object_keys().await.unwrap();
    assert!(before.iter().any(|k| k == "ready-probe"), "{before:?}");

    let superseded: Vec<String> = keys_of_image(&before, &reprocessed)
        .into_iter()
        .filter(|k| k.contains(&format!("{reprocessed}/1/")))
        .collect();
    assert_eq!(superseded.len(), 4, "{before:?}");
    let mut expected: Vec<String> = superseded.clone();
    expected.extend(keys_of_image(&before, &refused));
    expected.extend(keys_of_image(&before, &deleted));
    expected.push("tmp/uploads/left-behind".into());
    expected.sort();
    assert_eq!(expected.len(), 4 + 1 + 5 + 1, "{before:?}");

    let dry = sweep(&stack, true).await;
    let mut listed: Vec<String> = dry["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, expected, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["objects"], 11);
    assert!(dry["bytes"].as_u64().unwrap() > 0);
    assert_eq!(dry["by_reason"]["superseded"]["objects"], 4, "{dry}");
    assert_eq!(dry["by_reason"]["refused"]["objects"], 1, "{dry}");
    assert_eq!(dry["by_reason"]["deleted"]["objects"], 5, "{dry}");
    assert_eq!(dry["by_reason"]["staging"]["objects"], 1, "{dry}");
    assert_eq!(
        stack.object_keys().await.unwrap(),
        before,
        "a dry run removes nothing"
    );

    let real = sweep(&stack, false).await;
    assert_eq!(
        (real["objects"].clone(), real["bytes"].clone()),
        (dry["objects"].clone(), dry["bytes"].clone())
    );
    let after = stack.object_keys().await.unwrap();
    let mut left = before.clone();
    left.retain(|k| !expected.contains(k));
    assert_eq!(after, left);
    // The current generation still downloads.
    let thumb = current["versions"]["thumb"].as_str().unwrap();
    assert_eq!(stack.http.get(thumb).send().await.unwrap().status(), 200);
    let metrics = stack.metrics().await.unwrap();
    assert_eq!(
        metric(
            &metrics,
            "gallery_sweeper_objects_total{reason=\"superseded\"}"
        ),
        Some(4.0)
    );
    // Nothing is left to sweep.
    assert_eq!(sweep(&stack, true).await["objects"], 0);
}

/// Local mode: a deleted image's download links stop working at once, while its files are
/// still on disk waiting for the deleter.
#[tokio::test]
async fn a_deleted_images_links_stop_before_its_files_are_purged() {
    let stack = TestStack::start_with(|c| c.lifecycle.delete_settle = Duration::from_secs(3600))
        .await
        .unwrap();
    let id = done_image(&stack, "links", "a.jpg").await;
    let rec = stack.image(&id).await.unwrap();
    let urls: Vec<String> = ["original", "thumb", "d2500"]
        .iter()
        .map(|v| rec["versions"][*v].as_str().unwrap().to_owned())
        .collect();
    for url in &urls {
        assert_eq!(
            stack.http.get(url).send().await.unwrap().status(),
            200,
            "{url}"
        );
    }
    let (status, _) = stack.delete(&format!("/images/{id}")).await.unwrap();
    assert_eq!(status, 202);
    for url in &urls {
        assert_eq!(
            stack.http.get(url).send().await.unwrap().status(),
            404,
            "{url}"
        );
    }
    let keys = stack.object_keys().await.unwrap();
    assert_eq!(
        keys_of_image(&keys, &id).len(),
        5,
        "not purged yet: {keys:?}"
    );
}

/// A sweep that hangs (the S3 server frozen mid-LIST) doesn't hold up the reconciler's other
/// work: an operator's `gallery reprocess --dry-run` is answered while it hangs, and the sweep
/// itself finishes (with an error) once the store is back.
#[tokio::test]
async fn a_hanging_sweep_doesnt_block_the_operator_requests() {
    let stack = TestStack::start_s3_with(|c| c.lifecycle.sweep_every = None)
        .await
        .unwrap();
    done_image(&stack, "hang", "a.jpg").await;
    let s3 = stack.s3.as_ref().unwrap();
    s3.freeze(true).unwrap();
    let nats = stack.nats.url();
    let sweep = tokio::spawn(async move {
        gallery_e2e::procs::gallery_admin(&nats, &["sweep", "--json", "--dry-run"]).await
    });
    // Let the sweep reach the api and hang on its LIST (the S3 client gives up after 30 s
    // per request, retrying for 60 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !sweep.is_finished(),
        "the sweep should hang on the frozen store"
    );
    let answered = tokio::time::timeout(
        Duration::from_secs(15),
        gallery_e2e::procs::gallery_admin(
            &stack.nats.url(),
            &["reprocess", "--project", "hang", "--dry-run"],
        ),
    )
    .await;
    let out = answered
        .expect("reprocess was not answered while the sweep hung")
        .unwrap();
    assert!(out.starts_with("found 1 image to re-render"), "{out}");
    s3.freeze(false).unwrap();
    // Thawed, the sweep completes: a report, or the store's error if its retries ran out.
    let _ = tokio::time::timeout(Duration::from_secs(120), sweep)
        .await
        .expect("the sweep ended once the store was back");
}
