//! How long a new api replica takes to get its read model from a snapshot: write a snapshot of
//! a model of N images to a real S3 server (Garage, started here; or the local file store with
//! BENCH_LOCAL=1), then restore it into an empty directory, as `gallery api` does on an empty
//! data dir.
//!
//!     cargo bench -p gallery-e2e --bench snapshot                  # 1,000,000 images
//!     BENCH_IMAGES=100000 cargo bench -p gallery-e2e --bench snapshot
//!
//! The model is built directly (each image folded through the sample flow's eight events and
//! committed in batches), not published to NATS: the figure is the snapshot's, not the log's.
//! Prints figures; asserts only that the restored model has every record.

use std::time::Instant;

use gallery::config::AppConfig;
use gallery_projector::{Record, Store, apply};
use gallery_schema::{ImageId, ProjectId};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let images: usize = std::env::var("BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;

    let started = Instant::now();
    let store = Store::open(&dir.path().join("model"))?;
    let mut seq = 0u64;
    let mut made = 0;
    while made < images {
        let n = (images - made).min(10_000);
        let mut records: Vec<Record> = Vec::with_capacity(n);
        for i in 0..n {
            let project = ProjectId::parse(&format!("p{}", (made + i) % 1000))?;
            let mut rec = None;
            for event in gallery_e2e::sample_flow::sample_flow_events(&project, ImageId::new_v7()) {
                seq += 1;
                rec = Some(apply(rec, seq, &event)?);
            }
            records.push(rec.expect("eight events"));
        }
        store.commit_batch(seq, records.iter())?;
        made += n;
    }
    store.flush().await?;
    println!(
        "built a model of {images} images ({seq} events) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let s3 = if std::env::var_os("BENCH_LOCAL").is_some() {
        None
    } else {
        Some(gallery_e2e::garage::S3Server::start().await?)
    };
    let mut cfg = AppConfig::local(dir.path());
    cfg.s3 = s3.as_ref().map(|s| s.config.clone());
    let objects = gallery::storage::open(&cfg).await?.store;
    let target = if s3.is_some() {
        "Garage (S3)"
    } else {
        "local files"
    };

    let started = Instant::now();
    let info = gallery_projector::snapshots::write(&store, &objects, dir.path()).await?;
    let written = started.elapsed();
    let (_, meta) = gallery_projector::snapshots::list(objects.as_ref())
        .await?
        .pop()
        .expect("the snapshot just written");
    println!(
        "snapshot written to {target}: {} records, {:.1} MB, in {:.2} s",
        info.records,
        meta.size as f64 / 1e6,
        written.as_secs_f64()
    );
    drop(store);

    let restored_dir = dir.path().join("restored");
    let started = Instant::now();
    let restored = gallery_projector::snapshots::restore(objects.as_ref(), &restored_dir, 1, seq)
        .await?
        .expect("a snapshot to restore");
    let took = started.elapsed();
    println!(
        "restore from {target}: {} records in {:.2} s: {:.0} records/s (target: 1,000,000 in under 60 s)",
        restored.records,
        took.as_secs_f64(),
        restored.records as f64 / took.as_secs_f64()
    );
    let reopened = Store::open(&restored_dir)?;
    assert_eq!(reopened.last_seq()?, seq);
    assert_eq!(restored.records as usize, images);
    Ok(())
}
