//! `gallery reprocess`: bulk re-renders through a running api. A dry run counts; a real run
//! gives every selected image a new generation at the asked rate through the normal
//! processor consumer, and leaves other projects alone; `--outdated` selects only images
//! rendered with an older renditions description (none, right after rendering).

use std::time::Duration;

use gallery_e2e::{TestStack, jpeg_photo};

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
