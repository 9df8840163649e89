//! Benchmarks of the whole stack (release build, real nats-server, in-process service):
//! upload-to-done latency of 12 MP photos and api requests per second.
//!
//!     cargo bench -p gallery-e2e --bench flow
//!
//! Photos: the JPEGs in `$GALLERY_TESTDATA/large` when set, else a generated 4000x3000 JPEG.
//! Prints figures; asserts nothing about speed.

use std::time::{Duration, Instant};

use gallery_e2e::{TestStack, jpeg_photo, testdata};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn photos() -> Vec<(String, Vec<u8>)> {
    if let Some(dir) = testdata() {
        let mut out: Vec<_> = std::fs::read_dir(dir.join("large"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg")))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        out.sort();
        if !out.is_empty() {
            return out;
        }
    }
    vec![("generated-4000x3000.jpg".into(), jpeg_photo(4000, 3000))]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let photos = photos();
    let rounds = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);

    // Latency: one photo at a time, from the start of the upload to the `processed` event.
    let mut ws = stack.ws("bench", None).await?;
    for (name, bytes) in &photos {
        let mut times = Vec::new();
        for _ in 0..rounds {
            let link = stack.request_link("bench", name).await?;
            let id = link["image_id"].as_str().unwrap().to_owned();
            let started = Instant::now();
            let (status, _) = stack.upload(&link, bytes.clone()).await?;
            assert_eq!(status, 201);
            ws.collect_until(&id, "processed").await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "upload-to-done {name} ({:.1} MB): n={} median {:.0} ms, min {:.0} ms, max {:.0} ms",
            bytes.len() as f64 / 1e6,
            times.len(),
            percentile(&times, 0.5),
            times[0],
            times[times.len() - 1]
        );
    }

    // Burst: many photos at once; throughput is bounded by the renders (one per core).
    let burst = 4 * rounds;
    let (name, bytes) = &photos[0];
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..burst {
        let link = stack.request_link("burst", name).await?;
        stack.upload(&link, bytes.clone()).await?;
        ids.push(link["image_id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        stack.wait_state(id, "done").await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "burst: {burst} x {name} uploaded and done in {secs:.1} s = {:.2} photos/s",
        burst as f64 / secs
    );

    // API: listing and link requests with 32 concurrent clients for 3 s each.
    for (label, post) in [
        ("GET /projects/{id}/images (50 records)", false),
        ("POST /images/", true),
    ] {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let http = stack.http.clone();
            let list = stack.url("/projects/burst/images");
            let create = stack.url("/images/");
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let ok = if post {
                        http.post(&create)
                            .json(&serde_json::json!({"filename": "a.jpg", "project_id": "rps"}))
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 201)
                    } else {
                        http.get(&list)
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 200)
                    };
                    n += u64::from(ok);
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await?;
        }
        println!("api: {label}: {:.0} requests/s", total as f64 / 3.0);
    }
    Ok(())
}
