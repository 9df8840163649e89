//! The run modes `up`, `api` and `processor`: their arguments, the settings they share
//! ([`Common`], the topology, the reconciler, rendering), and the [`AppConfig`] each makes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use gallery_nats::Replicas;
use gallery_processor::{Limits, WorkerCommand};

use super::access::{NatsAuthArgs, S3Args};
use super::duration;
use super::http::HttpArgs;

use crate::config::{AppConfig, DEFAULT_SHUTDOWN_GRACE, NatsUrl, Roles};

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Where the read model, local storage, the secret and (in `up`) NATS live.
    #[arg(long, env = "GALLERY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Largest accepted upload in bytes.
    #[arg(long, env = "GALLERY_MAX_UPLOAD_BYTES", default_value_t = 50_000_000)]
    pub max_upload_bytes: u64,
    /// Largest accepted image in pixels (never below 50 MP: phones make 48 MP photos).
    #[arg(long, env = "GALLERY_MAX_PIXELS", default_value_t = 100_000_000)]
    pub max_pixels: u64,
    /// Largest accepted side in pixels.
    #[arg(long, env = "GALLERY_MAX_SIDE", default_value_t = 30_000)]
    pub max_side: u32,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub nats: NatsAuthArgs,
}

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub http: HttpArgs,
    /// An external NATS server (or a comma-separated list of a cluster's servers); without it
    /// `up` runs nats-server as a child.
    #[arg(long, env = "GALLERY_NATS_URL")]
    pub nats_url: Option<String>,
    /// Where the embedded nats-server listens, a loopback address (default: a free port; the
    /// operator's commands find it through the data dir either way).
    #[arg(long, env = "GALLERY_NATS_LISTEN", conflicts_with = "nats_url")]
    pub nats_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub reconciler: ReconcilerArgs,
    #[command(flatten)]
    pub processing: ProcessingArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub http: HttpArgs,
    /// The NATS server, or a comma-separated list of a cluster's servers.
    #[arg(long, env = "GALLERY_NATS_URL")]
    pub nats_url: String,
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub reconciler: ReconcilerArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ProcessorArgs {
    #[command(flatten)]
    pub common: Common,
    /// The NATS server, or a comma-separated list of a cluster's servers.
    #[arg(long, env = "GALLERY_NATS_URL")]
    pub nats_url: String,
    /// Address of the processor's /health and /ready.
    #[arg(long, env = "GALLERY_HEALTH_LISTEN", default_value = "127.0.0.1:8081")]
    pub health_listen: SocketAddr,
    #[command(flatten)]
    pub processing: ProcessingArgs,
}

fn base_config(
    common: &Common,
    nats_url: Option<String>,
    roles: Roles,
) -> anyhow::Result<AppConfig> {
    let mut cfg = AppConfig::local(common.data_dir.clone());
    cfg.nats_url = nats_url.map(NatsUrl);
    cfg.roles = roles;
    cfg.max_upload_bytes = common.max_upload_bytes;
    cfg.processor.limits = Limits {
        max_pixels: common.max_pixels,
        max_side: common.max_side,
    };
    cfg.s3 = common.s3.clone().into_config()?;
    cfg.nats_auth = common.nats.resolve()?;
    Ok(cfg)
}

impl UpArgs {
    pub fn into_config(self) -> anyhow::Result<AppConfig> {
        let mut cfg = base_config(&self.common, self.nats_url.clone(), Roles::All)?;
        if let Some(listen) = self.nats_listen {
            anyhow::ensure!(
                listen.ip().is_loopback(),
                "--nats-listen {listen}: the embedded nats-server listens on loopback only; \
                 for other hosts run nats-server yourself and give --nats-url"
            );
            cfg.nats_port = Some(listen.port());
        }
        self.http.apply(&mut cfg)?;
        self.processing.apply(&mut cfg);
        self.reconciler.apply(&mut cfg);
        cfg.stream_replicas = self.topology.stream_replicas;
        cfg.processor_max_ack_pending = self.topology.processor_max_ack_pending;
        Ok(cfg)
    }
}

impl ApiArgs {
    pub fn into_config(self) -> anyhow::Result<AppConfig> {
        let mut cfg = base_config(&self.common, Some(self.nats_url.clone()), Roles::Api)?;
        self.http.apply(&mut cfg)?;
        cfg.stream_replicas = self.topology.stream_replicas;
        cfg.processor_max_ack_pending = self.topology.processor_max_ack_pending;
        self.reconciler.apply(&mut cfg);
        cfg.shutdown_grace = DEFAULT_SHUTDOWN_GRACE;
        Ok(cfg)
    }
}

impl ProcessorArgs {
    pub fn into_config(self) -> anyhow::Result<AppConfig> {
        let mut cfg = base_config(&self.common, Some(self.nats_url.clone()), Roles::Processor)?;
        cfg.listen = self.health_listen;
        self.processing.apply(&mut cfg);
        Ok(cfg)
    }
}

/// Settings of the roles that manage the JetStream topology (`up`, `api`, `rebuild`).
#[derive(Args, Debug, Clone)]
pub struct TopologyArgs {
    /// Copies of the IMAGES stream when it is created: auto (3 on a cluster of 3 or more
    /// servers, else 1), 1, 3 or 5. An existing stream keeps its replicas.
    #[arg(long, env = "GALLERY_STREAM_REPLICAS", default_value = "auto")]
    pub stream_replicas: Replicas,
    /// Deliveries the processor consumer lets be in flight at once, over all processor
    /// replicas (each job holds one): raise it past twice the render cores of the fleet.
    /// Applied to the consumer at every start of an api.
    #[arg(long, env = "GALLERY_PROCESSOR_MAX_ACK_PENDING", default_value_t = 256)]
    pub processor_max_ack_pending: i64,
}

/// The reconciler's settings (`up`, `api`).
#[derive(Args, Debug, Clone)]
pub struct ReconcilerArgs {
    /// How long after its last event an image still in `uploaded` or `processing` is driven
    /// through the processor again.
    #[arg(long, env = "GALLERY_REDRIVE_AFTER", default_value = "30m", value_parser = duration)]
    pub redrive_after: Duration,
    /// How often the acting reconciler (one per deployment) looks.
    #[arg(long, env = "GALLERY_RECONCILE_EVERY", default_value = "60s", value_parser = duration)]
    pub reconcile_every: Duration,
}

impl ReconcilerArgs {
    fn apply(&self, cfg: &mut AppConfig) {
        cfg.lifecycle.redrive_after = self.redrive_after;
        cfg.lifecycle.reconcile_every = self.reconcile_every;
    }
}

/// Settings of the roles that render (`up`, `processor`).
#[derive(Args, Debug, Clone)]
pub struct ProcessingArgs {
    /// Concurrent renders (default: the number of cores).
    #[arg(long, env = "GALLERY_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// How long transient failures (storage or NATS unavailable) of one image are retried
    /// before it ends in `retries_exhausted`, which `gallery redrive` can take up again.
    #[arg(long, env = "GALLERY_RETRY_BUDGET", default_value = "24h", value_parser = duration)]
    pub retry_budget: Duration,
    /// How long in-flight jobs may finish after SIGTERM before they are released to another
    /// replica (keep it under the orchestrator's kill deadline: docker's is 10 s).
    #[arg(long, env = "GALLERY_SHUTDOWN_GRACE", default_value = "7s", value_parser = duration)]
    pub shutdown_grace: Duration,
    /// Wall-clock limit of one render; past it the worker is killed and the image ends in
    /// `processing_timeout`. The largest allowed image (100 MP) renders in a few seconds.
    #[arg(long, env = "GALLERY_JOB_DEADLINE", default_value = "120s", value_parser = duration)]
    pub job_deadline: Duration,
    /// Render worker crashes of one image before it ends in `processing_crashed`.
    #[arg(long, env = "GALLERY_CRASH_LIMIT", default_value_t = 3)]
    pub crash_limit: u32,
    /// Address-space limit of a render worker process, in bytes (0: none).
    #[arg(long, env = "GALLERY_RENDER_MEMORY", default_value_t = 4 << 30)]
    pub render_memory: u64,
    /// Bytes all renders of this process may need at once, by their headers' estimate
    /// (width x height x bytes per pixel x 3); renders wait for room (default: half the RAM).
    #[arg(long, env = "GALLERY_RENDER_MEMORY_BUDGET")]
    pub render_memory_budget: Option<u64>,
}

impl ProcessingArgs {
    fn apply(&self, cfg: &mut AppConfig) {
        let p = &mut cfg.processor;
        if let Some(n) = self.concurrency {
            p.set_concurrency(n);
        }
        p.retry.budget = self.retry_budget;
        p.job_deadline = self.job_deadline;
        p.crash_limit = self.crash_limit;
        p.memory_budget = self
            .render_memory_budget
            .unwrap_or_else(default_memory_budget);
        // Renders run in render worker processes of this very binary.
        p.render_workers = std::env::current_exe().ok().map(|program| WorkerCommand {
            program,
            args: vec![
                "render-worker".into(),
                "--memory-limit".into(),
                self.render_memory.to_string(),
            ],
        });
        cfg.shutdown_grace = self.shutdown_grace;
    }
}

/// Half the machine's memory (at least 1 GiB): what renders may use at once by default.
pub fn default_memory_budget() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(8 << 30, |kib| kib * 1024);
    (total / 2).max(1 << 30)
}
