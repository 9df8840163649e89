//! What deletion and the sweeper give back on a run that looks like use: photos uploaded into
//! two projects, a fifth of them reprocessed (a new generation, as after a change of the
//! renditions), a few refused uploads, then one project deleted. Local mode, so every byte is
//! a file under the data dir; the sweeper's waiting periods are set to zero (in service they
//! are hours to days) and it runs once through `gallery sweep --json`.
//!
//!     BENCH_PHOTOS=DIR cargo bench -p gallery-e2e --bench reclaim
//!
//! DIR holds JPEGs (default: 24 generated 3000x2000 photos). BENCH_COUNT (60) photos in all.
//! Prints the bytes stored at each step and what each part removed; asserts nothing.

use std::path::Path;
use std::time::Duration;

use gallery_e2e::{TestStack, jpeg_photo, metric};
use serde_json::json;

fn dir_bytes(dir: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    entries
        .flatten()
        .fold((0, 0), |(n, b), e| match e.metadata() {
            Ok(m) if m.is_dir() => {
                let (n2, b2) = dir_bytes(&e.path());
                (n + n2, b + b2)
            }
            Ok(m) => (n + 1, b + m.len()),
            Err(_) => (n, b),
        })
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::var("BENCH_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let photos: Vec<Vec<u8>> = match std::env::var("BENCH_PHOTOS") {
        Ok(dir) => {
            let mut files: Vec<_> = std::fs::read_dir(&dir)?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|x| {
                        x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("jpeg")
                    })
                })
                .collect();
            files.sort();
            files.iter().map(std::fs::read).collect::<Result<_, _>>()?
        }
        Err(_) => (0..24).map(|k| jpeg_photo(3000 + 8 * k, 2000)).collect(),
    };
    anyhow::ensure!(!photos.is_empty(), "no JPEGs in BENCH_PHOTOS");
    let stack = TestStack::start_with(|c| {
        c.lifecycle.sweep_every = None;
        c.lifecycle.sweep_policy = Some(gallery_lifecycle::sweeper::SweepPolicy {
            retention: Duration::ZERO,
            superseded_grace: Duration::ZERO,
            deleted_grace: Duration::ZERO,
            staging_age: Duration::ZERO,
        });
        c.lifecycle.delete_settle = Duration::from_secs(1);
        c.snapshot_every = None;
    })
    .await?;
    let storage = stack.data_dir().join("storage");

    let mut kept = Vec::new();
    for i in 0..count {
        let project = if i % 3 == 2 { "gone" } else { "kept" };
        let link = stack.request_link(project, &format!("p{i}.jpg")).await?;
        let id = link["image_id"].as_str().unwrap_or_default().to_owned();
        // Byte-unique copies (a comment after the image's end), as clients' photos are.
        let mut bytes = photos[i % photos.len()].clone();
        bytes.extend_from_slice(format!("copy {i}").as_bytes());
        stack.upload(&link, bytes).await?;
        if project == "kept" {
            kept.push(id);
        }
    }
    for i in 0..4 {
        let link = stack.request_link("kept", &format!("fake{i}.jpg")).await?;
        stack
            .upload(&link, b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec())
            .await?;
    }
    for id in &kept {
        stack.wait_settled(id).await?;
    }
    let reprocessed: Vec<&String> = kept.iter().step_by(5).collect();
    for id in &reprocessed {
        stack
            .post_json(&format!("/images/{id}/reprocess"), &json!({}))
            .await?;
    }
    for id in &reprocessed {
        loop {
            let rec = stack.image(id).await?;
            if rec["meta"]["generation"] == 2 && rec["state"] == "done" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (_, gone) = stack.get_json("/projects/gone/images?limit=500").await?;
    let gone_images = gone["images"].as_array().map_or(0, Vec::len);
    let before = dir_bytes(&storage);
    let (originals, versions) = (
        dir_bytes(&storage.join("originals")),
        dir_bytes(&storage.join("versions")),
    );
    println!(
        "originals: {} objects, {} (mean {}); versions: {} objects, {} (mean {} per generation of four)",
        originals.0,
        mb(originals.1),
        mb(originals.1 / originals.0.max(1)),
        versions.0,
        mb(versions.1),
        mb(versions.1 * 4 / versions.0.max(1))
    );
    println!(
        "{count} photos ({} kept, {gone_images} in the project to delete), {} reprocessed, 4 refused: {} objects, {}",
        kept.len(),
        reprocessed.len(),
        before.0,
        mb(before.1)
    );

    let (status, body) = stack.delete("/projects/gone").await?;
    anyhow::ensure!(status == 202, "{status} {body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let deleted_bytes = loop {
        let text = stack.metrics().await?;
        let images = metric(&text, "gallery_deleter_images_total").unwrap_or(0.0) as usize;
        if images >= gone_images || tokio::time::Instant::now() > deadline {
            break metric(&text, "gallery_deleter_bytes_total").unwrap_or(0.0) as u64;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let after_delete = dir_bytes(&storage);
    println!(
        "after DELETE /projects/gone: the deleter removed {} ({} objects left, {})",
        mb(deleted_bytes),
        after_delete.0,
        mb(after_delete.1)
    );

    let stdout = gallery_e2e::procs::gallery_admin(&stack.nats.url(), &["sweep", "--json"]).await?;
    let report: serde_json::Value = serde_json::from_str(&stdout)?;
    let after_sweep = dir_bytes(&storage);
    println!(
        "gallery sweep: {} objects, {} ({})",
        report["objects"],
        mb(report["bytes"].as_u64().unwrap_or(0)),
        report["by_reason"]
    );
    println!(
        "left: {} objects, {} ({:.0} % of the bytes before the deletion)",
        after_sweep.0,
        mb(after_sweep.1),
        100.0 * after_sweep.1 as f64 / before.1.max(1) as f64
    );
    Ok(())
}
