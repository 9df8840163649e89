//! `gallery load`, the real binary, against a running stack: its figures must count what really
//! happened (every photo done, nothing missed, no error), in each mode, with tokens, and in S3
//! mode through the watcher alone (`--no-complete`).

use std::process::Command;

use gallery_e2e::procs::gallery_bin;
use gallery_e2e::secure::secured;
use gallery_e2e::{TestStack, jpeg_photo};
use serde_json::Value;

/// A directory of photos: `n` JPEGs, plus a corrupt one when `corrupt`.
fn photo_dir(n: u32, corrupt: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for k in 0..n {
        std::fs::write(
            dir.path().join(format!("p{k}.jpg")),
            jpeg_photo(640 + 16 * k, 480),
        )
        .unwrap();
    }
    if corrupt {
        let mut bytes = jpeg_photo(300, 200);
        bytes.truncate(400);
        std::fs::write(dir.path().join("zz-broken.jpg"), bytes).unwrap();
    }
    dir
}

/// Runs `gallery load --json` with these arguments and returns its report.
async fn load(stack: &TestStack, args: &[&str]) -> Value {
    let bin = gallery_bin().unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("load").arg("--url").arg(stack.base()).arg("--json");
    cmd.args(args);
    if let Some(token) = &stack.token {
        cmd.env("GALLERY_TOKEN", token);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gallery load failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn check_percentiles(p: &Value, count: u64) {
    assert_eq!(p["count"], count, "{p}");
    let (p50, p90, p99, max) = (
        p["p50"].as_f64().unwrap(),
        p["p90"].as_f64().unwrap(),
        p["p99"].as_f64().unwrap(),
        p["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max, "{p}");
}

#[tokio::test]
async fn the_flow_mode_counts_every_photo_and_every_error_closed_and_open_loop() {
    let stack = TestStack::start().await.unwrap();
    let photos = photo_dir(3, false);
    let dir = photos.path().to_str().unwrap();
    let report = load(
        &stack,
        &[
            "--photos",
            dir,
            "--concurrency",
            "3",
            "--count",
            "9",
            "--projects",
            "2",
            "--cleanup",
        ],
    )
    .await;
    assert_eq!(report["mode"], "flow");
    assert_eq!(report["done"], 9, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    check_percentiles(&report["upload_to_done_ms"], 9);
    check_percentiles(&report["link_ms"], 9);
    assert!(report["link_rps"].as_f64().unwrap() > 0.0);
    assert!(report["photos_per_s"].as_f64().unwrap() > 0.0);
    // `--cleanup` deleted what the run made: both projects are empty.
    assert_eq!(report["cleaned_up"], 9, "{report}");
    for k in 0..2 {
        let run = report["run"].as_str().unwrap();
        let (status, page) = stack
            .get_json(&format!("/projects/{run}-{k}/images"))
            .await
            .unwrap();
        assert_eq!((status, &page["images"]), (200, &serde_json::json!([])));
    }

    // Open loop with bursts, and a corrupt file among the photos: its code is counted.
    let with_bad = photo_dir(1, true);
    let report = load(
        &stack,
        &[
            "--photos",
            with_bad.path().to_str().unwrap(),
            "--rate",
            "20",
            "--burst",
            "2",
            "--count",
            "4",
        ],
    )
    .await;
    assert_eq!(report["done"], 2, "{report}");
    assert_eq!(
        report["errors"],
        serde_json::json!({ "corrupt_image": 2 }),
        "{report}"
    );
}

#[tokio::test]
async fn the_links_and_list_modes_with_tokens() {
    let stack = secured().await;
    let report = load(
        &stack,
        &["--mode", "links", "--concurrency", "4", "--count", "40"],
    )
    .await;
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    check_percentiles(&report["link_ms"], 40);
    let report = load(
        &stack,
        &["--mode", "list", "--concurrency", "4", "--count", "40"],
    )
    .await;
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    check_percentiles(&report["list_ms"], 40);
    assert!(report["list_rps"].as_f64().unwrap() > 0.0);

    // Without the token every request is refused, and the report says so by code.
    let mut cmd = Command::new(gallery_bin().unwrap());
    cmd.args(["load", "--json", "--mode", "links", "--count", "3", "--url"])
        .arg(stack.base())
        .env_remove("GALLERY_TOKEN");
    // (Off the test's thread: the stack answers on it.)
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["errors"],
        serde_json::json!({ "unauthorized": 3 }),
        "{report}"
    );
    // ... and stderr names the fix: the flag, the projects and the rights.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("3 requests were refused for the token (401/403): pass --token")
            && stderr.contains("upload,read,subscribe on the run's projects `load-*`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_ws_mode_sees_every_event_at_every_subscriber() {
    let stack = TestStack::start().await.unwrap();
    let report = load(
        &stack,
        &[
            "--mode",
            "ws",
            "--subscribers",
            "30",
            "--projects",
            "4",
            "--rate",
            "50",
            "--count",
            "40",
        ],
    )
    .await;
    // 40 links over 4 projects, each project followed by 7 or 8 of the 30 sockets.
    let expected: u64 = (0..40).map(|i| if i % 4 < 2 { 8 } else { 7 }).sum();
    assert_eq!(report["messages_expected"], expected, "{report}");
    assert_eq!(report["messages_missed"], 0, "{report}");
    check_percentiles(&report["event_to_client_ms"], expected);
}

#[tokio::test]
async fn s3_mode_without_complete_relies_on_the_watcher() {
    let stack = TestStack::start_s3().await.unwrap();
    let photos = photo_dir(2, false);
    let report = load(
        &stack,
        &[
            "--photos",
            photos.path().to_str().unwrap(),
            "--concurrency",
            "2",
            "--count",
            "4",
            "--no-complete",
        ],
    )
    .await;
    assert_eq!(report["done"], 4, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    check_percentiles(&report["upload_to_done_ms"], 4);
}
