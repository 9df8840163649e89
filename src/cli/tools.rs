//! The developer's commands: `gallery bench` (renders on one thread, timed) and the hidden
//! `gallery render-worker` (the child process a processor renders in).

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// A directory of images.
    pub dir: PathBuf,
    /// Renders per image; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(long, default_value_t = 100_000_000)]
    pub max_pixels: u64,
    /// Also time every render through a render worker process, as the processor runs them.
    #[arg(long)]
    pub via_worker: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RenderWorkerArgs {
    /// Address-space limit in bytes (0: none).
    #[arg(long, default_value_t = 0)]
    pub memory_limit: u64,
}
