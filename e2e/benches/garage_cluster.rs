//! S3 mode against a 3-node Garage cluster on loopback (replication factor 3), and what losing
//! a node does: `gallery load` (in this process) drives the sample flow at BENCH_RATE photos/s
//! (5) in three phases of BENCH_SECS (20) each:
//! 1. all three nodes up;
//! 2. node 3 killed with `kill -9` at the start of the phase; then, still without it, 100
//!    uploads at concurrency 16 without `complete` (the upload watcher's LIST path);
//! 3. node 3 started again at the start of the phase (it catches up in the background).
//!
//! Then how long node 3 takes to hold all the data again, and whether every image of the run
//! is `done`.
//!
//!     cargo bench -p gallery-e2e --bench garage_cluster
//!
//! Prints `gallery load`'s tables; asserts nothing about speed.

use clap::Parser;
use gallery::load::LoadArgs;
use gallery_e2e::garage_cluster::GarageCluster;
use gallery_e2e::{TestStack, jpeg_photo};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    load: LoadArgs,
}

async fn load(args: &[&str]) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("load").chain(args.iter().copied()))?;
    gallery::load::run(cli.load).await
}

/// Waits up to `limit` seconds for node 3 to hold as many bytes as node 1: whether it did,
/// after how long, and the bytes per node.
async fn wait_for_node_3(cluster: &GarageCluster, limit: u64) -> (bool, f64, Vec<u64>) {
    let since = std::time::Instant::now();
    loop {
        let bytes = cluster.data_bytes();
        if bytes[2] >= bytes[0] {
            return (true, since.elapsed().as_secs_f64(), bytes);
        }
        if since.elapsed() > std::time::Duration::from_secs(limit) {
            return (false, since.elapsed().as_secs_f64(), bytes);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let (rate, secs) = (env("BENCH_RATE", "5"), env("BENCH_SECS", "20"));
    let duration = format!("{secs}s");
    let mut cluster = GarageCluster::start(3).await?;
    println!("{}", cluster.status());
    let s3 = cluster.config.clone();
    let stack = TestStack::start_with(move |c| c.s3 = Some(s3)).await?;
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
        "--project",
        "cluster",
    ];
    println!("== 3 nodes up: {rate} photos/s for {duration}");
    load(&flow).await?;
    cluster.kill(2);
    println!("\n== node 3 killed (kill -9): {rate} photos/s for {duration}");
    load(&flow).await?;
    println!("\n== node 3 still down, no `complete`: the upload watcher finds 100 uploads");
    load(&[
        "--url",
        &base,
        "--photos",
        &dir,
        "--concurrency",
        "16",
        "--count",
        "100",
        "--no-complete",
        "--project",
        "cluster",
    ])
    .await?;
    cluster.start_again(2).await?;
    println!("\n== node 3 started again: {rate} photos/s for {duration}");
    load(&flow).await?;
    println!("\n{}", cluster.status());
    // Node 3 catches up on what it missed in the background (Garage's resync): how long until
    // it holds as many bytes as the others, first with the defaults, then (if it hasn't) with
    // the resync made eager and a block repair started.
    let patience: u64 = env("BENCH_RESYNC_WAIT", "60").parse()?;
    let (caught_up, secs, bytes) = wait_for_node_3(&cluster, patience).await;
    println!(
        "resync with Garage's defaults: node 3 {} after {secs:.1} s ({bytes:?} bytes of data per node)",
        if caught_up {
            "holds all the data"
        } else {
            "is still behind"
        }
    );
    if !caught_up {
        for args in [
            &["worker", "set", "-a", "resync-tranquility", "0"][..],
            &["worker", "set", "-a", "resync-worker-count", "4"],
            &["repair", "-a", "--yes", "tables"],
            &["repair", "-a", "--yes", "blocks"],
        ] {
            cluster.admin(args)?;
        }
        let (caught_up, secs, bytes) = wait_for_node_3(&cluster, 300).await;
        println!(
            "with resync-tranquility 0, 4 resync workers and `garage repair -a --yes tables`, then \
             `blocks`: \
             node 3 {} after {secs:.1} s ({bytes:?})",
            if caught_up {
                "holds all the data"
            } else {
                "is still behind"
            }
        );
    }
    println!("{}", cluster.status());
    let (_, page) = stack.get_json("/projects/cluster/images?limit=500").await?;
    let images = page["images"].as_array().cloned().unwrap_or_default();
    let done = images.iter().filter(|i| i["state"] == "done").count();
    println!("images of the run: {}, done: {done}", images.len());
    Ok(())
}
