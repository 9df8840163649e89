//! How fast the read model folds the log: `gallery rebuild` (a fresh store from sequence 1) and
//! the live projector catching up from zero, on a real nats-server.
//!
//!     cargo bench -p gallery-e2e --bench readmodel            # 25,000 images, 200,000 events
//!     BENCH_IMAGES=100000 cargo bench -p gallery-e2e --bench readmodel
//!
//! Each image gets the sample flow's eight events (upload_requested, uploaded,
//! processing_started, four version_rendered, processed), each image's in order, 256 images at
//! a time. Prints figures; asserts nothing about speed.

use std::time::{Duration, Instant};

use futures::StreamExt;
use gallery_nats::{EventLog, Guard, NatsServer, ProcessorConsumerConfig};
use gallery_projector::{Projector, Store, rebuild};
use gallery_schema::{ImageId, ProjectId};
use tokio_util::sync::CancellationToken;

/// CPU seconds this process has used (user + system), to tell work from waiting.
fn cpu_secs() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(usage.user_time()) + t(usage.system_time())
}

fn main() -> anyhow::Result<()> {
    // BENCH_RUNTIME=current: everything on one thread (no hand-offs between threads).
    let runtime = match std::env::var("BENCH_RUNTIME").as_deref() {
        Ok("current") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let images: usize = std::env::var("BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25_000);
    let server = NatsServer::start_temp().await?;
    let client = gallery_nats::connect(&server.url(), Duration::from_secs(10)).await?;
    let js = async_nats::jetstream::new(client);
    gallery_nats::topology::ensure_topology(&js, 1, &ProcessorConsumerConfig::default()).await?;
    let log = EventLog::new(js.clone());

    let started = Instant::now();
    futures::stream::iter(0..images)
        .map(|i| {
            let log = log.clone();
            async move {
                let project = ProjectId::parse(&format!("p{}", i % 100)).unwrap();
                let mut last = 0;
                for event in
                    gallery_e2e::sample_flow::sample_flow_events(&project, ImageId::new_v7())
                {
                    last = log.append(&event, Guard::LastImageSeq(last)).await?.seq;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let events = images * 8;
    let took = started.elapsed();
    println!(
        "published {events} events ({images} images) in {:.1} s: {:.0} events/s",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    let (started, cpu) = (Instant::now(), cpu_secs());
    let applied = rebuild(&js, &dir.path().join("rebuilt")).await?;
    let took = started.elapsed();
    println!(
        "rebuild: {applied} events in {:.2} s: {:.0} events/s ({:.2} s of CPU in this process)",
        took.as_secs_f64(),
        applied as f64 / took.as_secs_f64(),
        cpu_secs() - cpu
    );

    // The live projector from an empty store: what a new replica does without a snapshot.
    let store = Store::open(&dir.path().join("live"))?;
    let projector = Projector::new(store)?;
    let handle = projector.handle();
    let stop = CancellationToken::new();
    let running = {
        let (js, stop) = (js.clone(), stop.clone());
        tokio::spawn(async move { projector.run(js, stop).await })
    };
    let (started, cpu) = (Instant::now(), cpu_secs());
    let caught_up = handle
        .wait_for(events as u64, Duration::from_secs(3600))
        .await;
    let took = started.elapsed();
    assert!(caught_up);
    println!(
        "live catch-up: {events} events in {:.2} s: {:.0} events/s ({:.2} s of CPU in this process)",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64(),
        cpu_secs() - cpu
    );
    stop.cancel();
    running.await?;
    Ok(())
}
