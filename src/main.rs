use clap::Parser;
use gallery::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    keep_freed_memory();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

/// A render allocates tens of MB (the decoded pixels, each version, libjpeg-turbo's buffers) and
/// frees them when the job ends. By default glibc gives blocks of that size back to the kernel,
/// and the next job pays for faulting them in again: measured with `gallery bench` on 12 real
/// photos, a fifth of the render time (median 120 ms/photo, 100 ms with these settings). Keeping
/// blocks up to 32 MB in the heap, and up to 256 MB of free heap before trimming, lets the next
/// job reuse them; a processor's memory stays at its peak working set.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets two of glibc's allocator thresholds; it runs before any other
    // thread exists and before anything is allocated that these settings could affect.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

async fn run() -> anyhow::Result<()> {
    // One TLS crypto backend for every client (NATS, S3), chosen before any connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    gallery::telemetry::init();
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => gallery::app::run_until_signal(args.into_config()?).await,
        Command::Api(args) => gallery::app::run_until_signal(args.into_config()?).await,
        Command::Processor(args) => gallery::app::run_processor_until_signal(args).await,
        Command::Rebuild(args) => gallery::app::rebuild(args).await,
        Command::Bench(args) => gallery::bench::run(args),
    }
}
