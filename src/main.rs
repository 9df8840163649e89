use clap::Parser;
use gallery::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Up(_) | Command::Processor(_) | Command::Bench(_) | Command::RenderWorker(_)
    ) {
        keep_freed_memory();
    }
    if let Command::RenderWorker(args) = &cli.command {
        // No async runtime: one request at a time over stdin/stdout.
        return gallery::render_worker::run(args.memory_limit);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

/// A render allocates tens of MB (the decoded pixels, each version, libjpeg-turbo's buffers) and
/// frees them when the job ends. By default glibc gives blocks of that size back to the kernel,
/// and the next job pays for faulting them in again: measured with `gallery bench` on 12 real
/// photos, a fifth of the render time (median 120 ms/photo, 100 ms with these settings). So the
/// processes that render keep blocks up to 32 MB in the heap (larger ones, an RGB image over
/// 11 MP, are still mapped per job) and trim only above 128 MB of free heap. What that can hold
/// on to is bounded by capping glibc's arenas at two per core (its default is eight): at most
/// 128 MB of trimmable free heap per arena on top of the peak working set.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = i32::try_from(2 * cores).unwrap_or(i32::MAX);
        // SAFETY: mallopt changes glibc's allocator parameters under its own locks and has no
        // memory-safety preconditions; it is called before the runtime starts its threads.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20) == 1
                && libc::mallopt(libc::M_ARENA_MAX, arenas) == 1
        };
        if !ok {
            eprintln!("warning: glibc refused the allocator settings; renders will be slower");
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // One TLS crypto backend for every client (NATS, S3), chosen before any connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    gallery::telemetry::init(cli.log_format);
    match cli.command {
        Command::Up(args) => gallery::app::run_until_signal(args.into_config()?).await,
        Command::Api(args) => gallery::app::run_until_signal(args.into_config()?).await,
        Command::Processor(args) => gallery::app::run_until_signal(args.into_config()?).await,
        Command::Rebuild(args) => gallery::admin::rebuild(args).await,
        Command::Bench(args) => gallery::bench::run(args),
        Command::Backup(args) => gallery::admin::backup(args).await,
        Command::Redrive(args) => gallery::admin::redrive(args).await,
        Command::Sweep(args) => gallery::admin::sweep(args).await,
        Command::Reprocess(args) => gallery::admin::reprocess(args).await,
        Command::Restore(args) => gallery::admin::restore(args).await,
        Command::Token(args) => gallery::admin::token(args),
        Command::Load(args) => gallery::load::run(args).await,
        Command::RenderWorker(_) => unreachable!("handled before the runtime starts"),
    }
}
