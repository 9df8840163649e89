//! `gallery reprocess`: bulk re-renders through a running api. A dry run counts; a real run
//! gives every selected image a new generation at the asked rate through the normal
//! processor consumer, and leaves other projects alone; `--outdated` selects only images
//! rendered with an older renditions description (none, right after rendering). While a
//! reprocess renders, the listing keeps serving the previous generation's versions.

use std::time::Duration;

use gallery::app::Roles;
use gallery_e2e::{TestStack, jpeg_photo};
use serde_json::Value;

/// An image of `project` rendered with today's renditions; its id.
async fn done_image(stack: &TestStack, project: &str) -> String {
    let photo = jpeg_photo(400, 300);
    let done = stack.sample_flow(project, "a.jpg", photo).await.unwrap();
    assert_eq!(
        done.record["meta"]["renditions_version"],
        gallery_schema::RENDITIONS_VERSION
    );
    done.id
}

/// Runs `gallery reprocess ARGS` against the stack's NATS; its stdout.
async fn reprocess(stack: &TestStack, args: &[&str]) -> String {
    let args: Vec<&str> = std::iter::once("reprocess")
        .chain(args.iter().copied())
        .collect();
    gallery_e2e::procs::gallery_admin(&stack.nats.url(), &args)
        .await
        .unwrap()
}

#[tokio::test]
async fn bulk_reprocess_renders_a_project_again_at_a_rate() {
    let stack = TestStack::start().await.unwrap();
    let mine = [
        done_image(&stack, "rr").await,
        done_image(&stack, "rr").await,
        done_image(&stack, "rr").await,
    ];
    let other = done_image(&stack, "untouched").await;

    let out = reprocess(&stack, &["--project", "rr", "--dry-run"]).await;
    assert!(out.starts_with("found 3 images to re-render"), "{out}");
    let out = reprocess(&stack, &["--all", "--outdated", "--dry-run"]).await;
    assert!(out.starts_with("found 0 images"), "{out}");

    let out = reprocess(&stack, &["--project", "rr", "--rate", "20"]).await;
    assert!(out.starts_with("found 3 images; the api requests"), "{out}");
    for id in &mine {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let rec = stack.image(id).await.unwrap();
            if rec["meta"]["generation"] == 2 && rec["state"] == "done" {
                assert_eq!(
                    rec["meta"]["renditions_version"],
                    gallery_schema::RENDITIONS_VERSION
                );
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{rec}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let rec = stack.image(&other).await.unwrap();
    assert_eq!(
        rec["meta"]["generation"], 1,
        "another project is left alone"
    );

    // Naming neither a project nor --all is refused by the command line.
    assert!(
        gallery_e2e::procs::gallery_admin(&stack.nats.url(), &["reprocess"])
            .await
            .is_err()
    );
}

/// The image's entry in its project's listing.
async fn listed(stack: &TestStack, project: &str, id: &str) -> Value {
    let (status, body) = stack
        .get_json(&format!("/projects/{project}/images"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not listed: {body}"))
}

const VERSIONS: [&str; 4] = ["thumb", "big_thumb", "big_1920", "d2500"];

#[tokio::test]
async fn a_reprocessed_image_keeps_its_version_urls_until_the_new_ones_are_rendered() {
    let mut stack = TestStack::start().await.unwrap();
    let id = done_image(&stack, "keep").await;
    let before = listed(&stack, "keep", &id).await;
    let first_thumb = stack
        .bytes_at(before["versions"]["thumb"].as_str().unwrap())
        .await
        .unwrap();

    // No processor: the new generation waits, as it would behind a long queue.
    stack.restart(|c| c.roles = Roles::Api).await.unwrap();
    let (_, listing) = stack.get_json("/projects/keep/images").await.unwrap();
    let mut ws = stack.ws("keep", listing["seq"].as_u64()).await.unwrap();
    let (status, body) = stack
        .post_json(&format!("/images/{id}/reprocess"), &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    // The WebSocket tells it (after the listing's seq, with no gap).
    ws.collect_until(&id, "reprocess_requested").await.unwrap();

    let waiting = listed(&stack, "keep", &id).await;
    assert_eq!(waiting["state"], "uploaded", "{waiting}");
    assert_eq!(waiting["meta"]["generation"], 2, "{waiting}");
    for name in VERSIONS {
        let url = waiting["versions"][name].as_str();
        assert!(
            url.is_some(),
            "{name} is still served while it renders: {waiting}"
        );
        assert_eq!(
            waiting["meta"]["versions"][name]["generation"], 1,
            "{waiting}"
        );
        let bytes = stack.bytes_at(url.unwrap()).await.unwrap();
        assert!(gallery_e2e::dimensions(&bytes).is_ok(), "{name} downloads");
    }
    assert_eq!(
        stack
            .bytes_at(waiting["versions"]["thumb"].as_str().unwrap())
            .await
            .unwrap(),
        first_thumb
    );
    assert_eq!(waiting["meta"]["width"], before["meta"]["width"]);

    // With a processor back, the new generation replaces them all.
    stack.restart(|c| c.roles = Roles::All).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let after = loop {
        let rec = listed(&stack, "keep", &id).await;
        if rec["state"] == "done" {
            break rec;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rec}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(after["meta"]["generation"], 2, "{after}");
    for name in VERSIONS {
        assert_eq!(after["meta"]["versions"][name]["generation"], 2, "{after}");
        assert_ne!(after["versions"][name], before["versions"][name], "{name}");
        let bytes = stack
            .bytes_at(after["versions"][name].as_str().unwrap())
            .await
            .unwrap();
        assert!(gallery_e2e::dimensions(&bytes).is_ok(), "{name} downloads");
    }
}
