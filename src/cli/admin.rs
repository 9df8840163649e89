//! The operator's commands beside the service: `redrive`, `reprocess` and `sweep` (answered by
//! a running api), `backup` and `restore` (the event log out and back), `rebuild` (the read
//! model from the log) and `token` (a project token from the deployment's keys).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::access::NatsAuthArgs;
use super::duration;
use super::http::TokenKeysArgs;
use super::serve::TopologyArgs;

#[derive(Args, Debug, Clone)]
pub struct RedriveArgs {
    #[arg(long, env = "GALLERY_NATS_URL")]
    pub nats_url: String,
    /// Only this project's images.
    #[arg(long)]
    pub project: Option<String>,
    /// Images in `error` with this code.
    #[arg(long, default_value = "retries_exhausted")]
    pub code: String,
    #[command(flatten)]
    pub nats: NatsAuthArgs,
}

#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["project", "all"])))]
pub struct ReprocessArgs {
    #[arg(long, env = "GALLERY_NATS_URL")]
    pub nats_url: String,
    /// This project's images.
    #[arg(long)]
    pub project: Option<String>,
    /// Every project's images.
    #[arg(long)]
    pub all: bool,
    /// Only images rendered with an older renditions description than this build's.
    #[arg(long)]
    pub outdated: bool,
    /// Re-renders requested per second (the processors take them between new uploads).
    #[arg(long, default_value_t = 10)]
    pub rate: u32,
    /// Count the images without requesting anything.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub nats: NatsAuthArgs,
}

#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    #[arg(long, env = "GALLERY_NATS_URL")]
    pub nats_url: String,
    /// List what would be removed, and the bytes, without removing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the whole report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsAuthArgs,
}

#[derive(Args, Debug, Clone)]
pub struct BackupArgs {
    /// The backup file; when it exists, the run appends what came after its last record (an
    /// incremental backup).
    #[arg(long)]
    pub out: PathBuf,
    /// The first stream sequence to copy (default: 1, or one past the file's last record). A
    /// value that would leave a gap or repeat records in the file is refused.
    #[arg(long)]
    pub since: Option<u64>,
    #[arg(long, env = "GALLERY_NATS_URL")]
    pub nats_url: String,
    #[command(flatten)]
    pub nats: NatsAuthArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// A file written by `gallery backup`.
    #[arg(long)]
    pub from: PathBuf,
    #[arg(long, env = "GALLERY_NATS_URL")]
    pub nats_url: String,
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub nats: NatsAuthArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RebuildArgs {
    #[arg(long, env = "GALLERY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Without it, the local nats-server under the data dir is started, as `up` does.
    #[arg(long, env = "GALLERY_NATS_URL")]
    pub nats_url: Option<String>,
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub nats: NatsAuthArgs,
}

/// `gallery token`: mints a project token with the deployment's keys file.
#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// A project id, or a prefix of ids ending in `*` (`*` alone: every project).
    #[arg(long)]
    pub project: String,
    /// Comma-separated: upload, read, subscribe, admin.
    #[arg(long, default_value = "upload,read,subscribe")]
    pub rights: String,
    /// Lifetime (e.g. 24h, 30d; at most 366 days).
    #[arg(long, default_value = "24h", value_parser = duration)]
    pub ttl: Duration,
    #[arg(long, env = "GALLERY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub keys: TokenKeysArgs,
}
