//! S3 mode against Garage: how soon the service notices an upload nobody reports, and what
//! noticing costs in S3 requests. Runs `gallery load` (in this process) against a stack with
//! a real Garage:
//! 1. the sample flow at BENCH_RATE photos/s (5) for BENCH_SECS (30) without `complete` (the
//!    upload watcher alone), then with it;
//! 2. `POST /images/` alone for BENCH_SECS: links that are never used pile up in the watcher,
//!    and the report puts its S3 requests per second next to the link rate.
//!
//!     cargo bench -p gallery-e2e --bench s3_watch
//!
//! Prints `gallery load`'s tables; asserts nothing about speed.

use clap::Parser;
use gallery::load::LoadArgs;
use gallery_e2e::{TestStack, jpeg_photo, metric};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    load: LoadArgs,
}

async fn load(args: &[&str]) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("load").chain(args.iter().copied()))?;
    gallery::load::run(cli.load).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let (rate, secs) = (env("BENCH_RATE", "5"), env("BENCH_SECS", "30"));
    let duration = format!("{secs}s");
    let stack = TestStack::start_s3().await?;
    let metrics = format!(
        "http://{}/metrics",
        stack.running.as_ref().unwrap().metrics_addr.unwrap()
    );
    let photos = tempfile::tempdir()?;
    for k in 0..8 {
        std::fs::write(
            photos.path().join(format!("p{k}.jpg")),
            jpeg_photo(1600 + 16 * k, 1200),
        )?;
    }
    let base = stack.base();
    let dir = photos.path().to_str().unwrap().to_owned();
    let flow = [
        "--url",
        &base,
        "--photos",
        &dir,
        "--rate",
        &rate,
        "--duration",
        &duration,
        "--metrics",
        &metrics,
    ];
    println!("== S3 mode, {rate} photos/s for {duration}, no `complete`: the upload watcher alone");
    load(&[&flow[..], &["--no-complete"]].concat()).await?;
    println!("\n== the same with `complete` after each upload");
    load(&flow).await?;
    println!("\n== POST /images/ alone for {duration}: links nobody uses pile up in the watcher");
    load(&[
        "--url",
        &base,
        "--mode",
        "links",
        "--concurrency",
        "16",
        "--duration",
        &duration,
        "--metrics",
        &metrics,
    ])
    .await?;
    let text = stack.metrics().await?;
    println!(
        "links the watcher holds at the end: {}",
        metric(&text, "gallery_upload_watcher_pending").unwrap_or(0.0)
    );
    Ok(())
}
