//! `gallery load`: drives a running deployment through the sample API with many concurrent
//! clients and prints what it measured (docs/PERFORMANCE.md).
//!
//! Modes:
//! - `flow` (default): the sample flow per photo: a link, the upload with the link's form
//!   (byte-unique bytes), `complete` (unless `--no-complete`), then the image's `processed` (or
//!   `failed`) message on its project's WebSocket;
//! - `links`: `POST /images/` alone; `list`: `GET /projects/{id}/images?limit=50` alone;
//! - `ws`: opens `--subscribers` WebSockets over `--projects` projects, then asks for links at
//!   the pace and measures each event's time from the api (`at`) to every subscriber.
//!
//! Run it as its own process, not inside the server: it needs its own cores' share and file
//! descriptors (it raises its soft open-file limit to the hard one).
//!
//! Where things are: `runs` sets a run up, runs its mode and makes the report; each mode has a
//! module (`flow`; `hammer` for links and list; `fanout` for ws) whose jobs collect into the
//! tally of `jobs`; `client` speaks to the deployment, `pace` spaces the jobs, `photos` reads
//! the photos, `stats` sums up and prints.

pub mod client;
mod fanout;
mod flow;
mod hammer;
mod jobs;
pub mod pace;
pub mod photos;
mod runs;
pub mod stats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};

use pace::{Limit, Pace};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Flow,
    Links,
    List,
    Ws,
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// The api's base URL.
    #[arg(long, env = "GALLERY_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, value_enum, default_value = "flow")]
    pub mode: Mode,
    /// A directory of photos to upload (flow mode), each upload made byte-unique.
    #[arg(long)]
    pub photos: Option<PathBuf>,
    /// Open loop: arrivals per second (whatever the answers).
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Open loop: arrivals come in groups of this many (same mean rate).
    #[arg(long, default_value_t = 1, requires = "rate")]
    pub burst: u32,
    /// Closed loop: this many clients, each starting its next job when the last ends.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Stop after this many jobs...
    #[arg(long, conflicts_with = "duration")]
    pub count: Option<u64>,
    /// ...or after this long (e.g. 2m); jobs under way finish.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Spread the jobs over this many new projects (named `load-<run>-<n>`).
    #[arg(long, default_value_t = 1, conflicts_with = "project")]
    pub projects: usize,
    /// Use this existing project instead (e.g. list mode on a project that has images).
    #[arg(long)]
    pub project: Option<String>,
    /// After the run, delete the projects it made, with every image and object in them
    /// (`DELETE /projects/{id}`; the token needs `admin`). Not with `--project`: that project
    /// may hold more than the run's images.
    #[arg(long, conflicts_with = "project")]
    pub cleanup: bool,
    /// A token with upload, read and subscribe on `load-*` (when the api requires tokens),
    /// and admin for `--cleanup`.
    #[arg(long, env = "GALLERY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Don't call `POST /images/{id}/complete` after an upload (then the api's watcher must
    /// notice it: the S3-mode path without a client callback).
    #[arg(long)]
    pub no_complete: bool,
    /// ws mode: WebSockets to open, spread over the projects.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// How long a photo may take from its upload to `processed`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    pub timeout: Duration,
    /// The api's Prometheus endpoint (e.g. http://127.0.0.1:9464/metrics): read before and
    /// after the run, it adds the server's S3 requests for finding and checking uploads, per
    /// second, to the report (the watcher's next to `complete`'s).
    #[arg(long)]
    pub metrics: Option<String>,
    /// Print the report as JSON (on stdout) instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl LoadArgs {
    pub fn pace(&self) -> anyhow::Result<Pace> {
        Ok(match (self.rate, self.concurrency) {
            (Some(rate), None) if rate > 0.0 && rate.is_finite() => Pace::Open {
                rate,
                burst: self.burst.max(1),
            },
            (Some(_), None) => bail!("--rate must be above 0"),
            (None, Some(c)) if c > 0 => Pace::Closed { concurrency: c },
            (None, None) => Pace::Closed { concurrency: 8 },
            _ => bail!("give --rate R or --concurrency C"),
        })
    }

    pub fn limit(&self) -> Limit {
        match (self.count, self.duration) {
            (Some(n), _) => Limit::Count(n),
            (None, Some(d)) => Limit::For(d),
            (None, None) => Limit::Count(100),
        }
    }
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    raise_open_files();
    let report = runs::run(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Many sockets need many descriptors: the soft limit goes up to the hard one.
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
