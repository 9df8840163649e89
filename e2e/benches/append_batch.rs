//! What JetStream's synced appends allow on this machine, one message per publish (what
//! `POST /images/` does today) against ADR-50 atomic batches of several messages, each
//! message with the headers an `upload_requested` carries (`Nats-Msg-Id`, and the image's
//! ordering guard: no event yet). The stream syncs every write (`sync_interval: always`).
//!
//!     cargo bench -p gallery-e2e --bench append_batch
//!     BENCH_CLUSTER=3 cargo bench -p gallery-e2e --bench append_batch   # R3 on a 3-node cluster
//!
//! Prints messages/s per mode; asserts nothing about speed.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures::StreamExt;
use gallery_nats::NatsServer;
use gallery_schema::subjects::{
    HEADER_EXPECTED_LAST_SUBJECT_SEQ, HEADER_EXPECTED_LAST_SUBJECT_SEQ_SUBJECT, HEADER_MSG_ID,
};

const MESSAGES: usize = 40_000;

fn headers(image: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(HEADER_MSG_ID, format!("{image}:upload_requested").as_str());
    h.insert(HEADER_EXPECTED_LAST_SUBJECT_SEQ, "0");
    h.insert(
        HEADER_EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
        format!("bench.p.{image}.*").as_str(),
    );
    h
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // BENCH_CLUSTER=3: a 3-node cluster on loopback and R3 streams, one message per publish
    // (where nats-server syncs per Raft flush instead of per message).
    let cluster_size: usize = std::env::var("BENCH_CLUSTER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (_single, _cluster, url) = if cluster_size > 1 {
        let cluster = gallery_nats::NatsCluster::start(cluster_size).await?;
        let url = cluster.urls();
        (None, Some(cluster), url)
    } else {
        let server = NatsServer::start_temp().await?;
        let url = server.url();
        (Some(server), None, url)
    };
    let client = gallery_nats::connect(&url, Duration::from_secs(10)).await?;
    let js = async_nats::jetstream::new(client.clone());
    let payload = bytes::Bytes::from(vec![b'x'; 220]);
    let modes: &[(usize, usize)] = if cluster_size > 1 {
        &[(1, 64), (1, 256)]
    } else {
        &[(1, 64), (1, 256), (8, 32), (32, 48), (64, 32), (128, 16)]
    };
    for (n, &(batch, in_flight)) in modes.iter().enumerate() {
        let name = format!("B{batch}x{n}");
        let config = async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("bench{batch}x{n}.>")],
            allow_atomic_publish: batch > 1,
            num_replicas: cluster_size.max(1),
            ..Default::default()
        };
        // A cluster that has just started may still be electing its meta leader.
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(err) = js.create_stream(config.clone()).await {
            anyhow::ensure!(Instant::now() < deadline, "creating {name}: {err}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let started = Instant::now();
        let results = futures::stream::iter(0..MESSAGES / batch)
            .map(|_| {
                let (js, client, payload) = (js.clone(), client.clone(), payload.clone());
                async move {
                    let id = uuid::Uuid::now_v7().to_string();
                    for k in 0..batch {
                        let image = format!("{id}-{k}");
                        let subject = format!("bench{batch}x{n}.p.{image}.upload_requested");
                        let mut h = headers(&image);
                        h.insert(
                            HEADER_EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
                            format!("bench{batch}x{n}.p.{image}.*").as_str(),
                        );
                        if batch > 1 {
                            h.insert("Nats-Batch-Id", id.as_str());
                            h.insert("Nats-Batch-Sequence", (k + 1).to_string().as_str());
                        }
                        if k + 1 < batch {
                            client
                                .publish_with_headers(subject, h, payload.clone())
                                .await?;
                        } else {
                            if batch > 1 {
                                h.insert("Nats-Batch-Commit", "1");
                            }
                            js.publish_with_headers(subject, h, payload.clone())
                                .await?
                                .await?;
                        }
                    }
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(in_flight)
            .collect::<Vec<_>>()
            .await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if let Some(Err(err)) = results.iter().find(|r| r.is_err()) {
            println!("  first failure: {err:#}");
        }
        let took = started.elapsed();
        let mut stream = js.get_stream(&name).await?;
        let stored = stream.info().await?.state.messages;
        println!(
            "batch {batch:>3}, {in_flight:>3} in flight: {stored} messages stored in {:.2} s: {:.0} messages/s ({failed} batches failed)",
            took.as_secs_f64(),
            stored as f64 / took.as_secs_f64()
        );
    }
    Ok(())
}
