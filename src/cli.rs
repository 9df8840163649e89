//! The command line (docs/ARCHITECTURE.md §10). Every flag has an environment variable of the same name
//! (`--max-upload-bytes` ↔ `GALLERY_MAX_UPLOAD_BYTES`); docker-compose and other tools rely on
//! these names.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use gallery_api::auth::Switch;
use gallery_api::limits::{Rate, RateLimits};
use gallery_nats::Replicas;

use crate::config::{
    AppConfig, DEFAULT_SHUTDOWN_GRACE, NatsUrl, RenderWorker, Roles, S3Config, Secret,
};

#[derive(Parser, Debug)]
#[command(
    name = "gallery",
    version,
    about = "LITE Gallery: photo uploads and versions on NATS JetStream"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text, or as JSON objects (one per line) for log pipelines.
    #[arg(
        long,
        global = true,
        env = "GALLERY_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: crate::telemetry::LogFormat,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Everything in one process: api, projector, processor. Starts a local nats-server when
    /// no NATS URL is given.
    Up(UpArgs),
    /// The api with its projector; needs --nats-url.
    Api(ApiArgs),
    /// A processor replica (a member of the shared consumer); needs --nats-url.
    Processor(ProcessorArgs),
    /// Rebuilds the read model from the event log (service stopped).
    Rebuild(RebuildArgs),
    /// Renders the versions of every image in a directory on one thread and prints timings.
    Bench(BenchArgs),
    /// Re-drives settled errors whose cause has passed (default: `retries_exhausted`).
    Redrive(RedriveArgs),
    /// Removes stored objects no record needs any more, through a running api (`--dry-run`
    /// lists them and their bytes).
    Sweep(SweepArgs),
    /// Re-renders a project's images (or all, or only those of an older renditions
    /// description) through a running api, at a bounded rate.
    Reprocess(ReprocessArgs),
    /// Appends the event log (from --since, or all of it) to a backup file.
    Backup(BackupArgs),
    /// Publishes a backup into an empty stream (or one that ends where the backup begins).
    Restore(RestoreArgs),
    /// Mints a project token (prints it) with the keys file of the deployment.
    Token(TokenArgs),
    /// Drives a running deployment with many clients and prints what it measured.
    Load(crate::load::LoadArgs),
    /// A render worker process (started by the processor, not by hand).
    #[command(hide = true)]
    RenderWorker(RenderWorkerArgs),
}

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
pub struct RenderWorkerArgs {
    /// Address-space limit in bytes (0: none).
    #[arg(long, default_value_t = 0)]
    pub memory_limit: u64,
}

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

/// S3 mode: on when a bucket is named. Endpoint, credentials and region use the standard AWS
/// variables; path-style addressing works with MinIO, Garage and SeaweedFS.
#[derive(Args, Debug, Clone)]
pub struct S3Args {
    /// The bucket for originals and versions (it must exist). Turns S3 mode on.
    #[arg(long, env = "GALLERY_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// The endpoint the services use, e.g. http://minio:9000 (default: AWS).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    /// The endpoint clients use in links, e.g. http://localhost:9000 (default: the endpoint).
    #[arg(long, env = "GALLERY_S3_PUBLIC_ENDPOINT")]
    pub s3_public_endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "AWS_ACCESS_KEY_ID_FILE")]
    pub s3_access_key_id_file: Option<PathBuf>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<Secret>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY_FILE")]
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Allow a plain-HTTP endpoint.
    #[arg(long, env = "AWS_ALLOW_HTTP")]
    pub s3_allow_http: bool,
    /// Deadline of one storage request (e.g. 30s).
    #[arg(long, env = "GALLERY_S3_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub s3_timeout: Duration,
    /// How long the storage client retries one request itself; after that the processor's
    /// failure policy (GALLERY_RETRY_BUDGET) takes over.
    #[arg(long, env = "GALLERY_S3_RETRY_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub s3_retry_timeout: Duration,
}

/// Credentials and TLS for NATS (docs/ARCHITECTURE.md §11). Without them a `user:password@`
/// in the URL is used; the embedded server of `gallery up` needs none of this.
#[derive(Args, Debug, Clone, Default)]
pub struct NatsAuthArgs {
    /// The NATS user of this role (api, processor or admin in nats/conf).
    #[arg(long, env = "GALLERY_NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "GALLERY_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<Secret>,
    /// A file holding the password (docker secrets).
    #[arg(long, env = "GALLERY_NATS_PASSWORD_FILE")]
    pub nats_password_file: Option<PathBuf>,
    /// A .creds file (JWT and NKey seed) instead of a user and password.
    #[arg(long, env = "GALLERY_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// The CA certificate (PEM) of the servers: TLS is then required.
    #[arg(long, env = "GALLERY_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// A client certificate (PEM), for servers that verify clients; needs --nats-key.
    #[arg(long, env = "GALLERY_NATS_CERT", requires = "nats_key")]
    pub nats_cert: Option<PathBuf>,
    #[arg(long, env = "GALLERY_NATS_KEY", requires = "nats_cert")]
    pub nats_key: Option<PathBuf>,
}

impl NatsAuthArgs {
    pub fn resolve(&self) -> anyhow::Result<gallery_nats::NatsAuth> {
        let password = secret(
            self.nats_password.clone().map(|s| s.0),
            self.nats_password_file.as_deref(),
            "GALLERY_NATS_PASSWORD",
        )?;
        anyhow::ensure!(
            password.is_none() || self.nats_user.is_some(),
            "GALLERY_NATS_PASSWORD needs GALLERY_NATS_USER"
        );
        Ok(gallery_nats::NatsAuth {
            user: self.nats_user.clone(),
            password,
            creds_file: self.nats_creds.clone(),
            ca_file: self.nats_ca.clone(),
            client_cert: self.nats_cert.clone().zip(self.nats_key.clone()),
        })
    }
}

/// A secret given directly or as a file (`X_FILE`, as docker secrets provide them); the file's
/// trailing newline is not part of it.
pub fn secret(
    direct: Option<String>,
    file: Option<&std::path::Path>,
    name: &str,
) -> anyhow::Result<Option<String>> {
    match (direct, file) {
        (Some(_), Some(_)) => anyhow::bail!("set {name} or {name}_FILE, not both"),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{name}_FILE {}: {e}", path.display()))?;
            let value = text.trim_end_matches(['\n', '\r']).to_owned();
            anyhow::ensure!(!value.is_empty(), "{name}_FILE {} is empty", path.display());
            Ok(Some(value))
        }
        (None, None) => Ok(None),
    }
}

/// `30s`, `5m`, `24h`, `1h 30m` (humantime), or plain seconds.
pub fn duration(raw: &str) -> Result<Duration, String> {
    if let Ok(secs) = raw.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(raw.trim()).map_err(|e| format!("{raw:?}: {e} (try 30s, 5m or 24h)"))
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
        cfg.redrive_after = self.redrive_after;
        cfg.reconcile_every = self.reconcile_every;
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

impl S3Args {
    pub fn into_config(self) -> anyhow::Result<Option<S3Config>> {
        let Some(bucket) = self.s3_bucket else {
            return Ok(None);
        };
        let access_key_id = secret(
            self.s3_access_key_id,
            self.s3_access_key_id_file.as_deref(),
            "AWS_ACCESS_KEY_ID",
        )?;
        let secret_access_key = secret(
            self.s3_secret_access_key.map(|s| s.0),
            self.s3_secret_access_key_file.as_deref(),
            "AWS_SECRET_ACCESS_KEY",
        )?;
        let (Some(access_key_id), Some(secret_access_key)) = (access_key_id, secret_access_key)
        else {
            anyhow::bail!(
                "S3 mode needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (upload policies are signed with them)"
            );
        };
        Ok(Some(S3Config {
            bucket,
            endpoint: self.s3_endpoint,
            public_endpoint: self.s3_public_endpoint,
            region: self.s3_region,
            access_key_id,
            secret_access_key,
            allow_http: self.s3_allow_http,
            timeout: self.s3_timeout,
            retry_timeout: self.s3_retry_timeout,
        }))
    }
}

#[derive(Args, Debug, Clone)]
pub struct HttpArgs {
    #[arg(long, env = "GALLERY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where Prometheus scrapes `/metrics` (loopback by default: it is for the operator).
    #[arg(long, env = "GALLERY_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,
    /// Base URL of links handed to clients; defaults to http://<listen>.
    #[arg(long, env = "GALLERY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Link-signing secret shared by api replicas; generated into the data dir when absent.
    #[arg(long, env = "GALLERY_SECRET", hide_env_values = true)]
    pub secret: Option<Secret>,
    /// A file holding the link-signing secret (docker secrets).
    #[arg(long, env = "GALLERY_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Lifetime of upload links, seconds.
    #[arg(long, env = "GALLERY_UPLOAD_LINK_TTL", default_value_t = 900)]
    pub upload_link_ttl: u64,
    /// Minimum lifetime of download links, seconds.
    #[arg(long, env = "GALLERY_DOWNLOAD_LINK_TTL", default_value_t = 3600)]
    pub download_link_ttl: u64,
    /// Seconds after a link's expiry during which a started upload may still land; after it an
    /// unused link ends in `upload_expired`.
    #[arg(long, env = "GALLERY_UPLOAD_GRACE", default_value_t = 600)]
    pub upload_grace: u64,
    /// S3 mode: how often the upload watcher lists the originals for uploads (a LIST request
    /// covers up to 1,000 keys, so this sets latency, not a per-link cost).
    #[arg(long, env = "GALLERY_UPLOAD_SCAN_INTERVAL", default_value = "200ms", value_parser = duration)]
    pub upload_scan_interval: Duration,
    /// How long after an image's deletion its objects are removed (a render under way stops
    /// within it).
    #[arg(long, env = "GALLERY_DELETE_SETTLE", default_value = "30s", value_parser = duration)]
    pub delete_settle: Duration,
    /// How often one api replica sweeps the store for objects no record needs (`0s`: only
    /// `gallery sweep`).
    #[arg(long, env = "GALLERY_SWEEP_INTERVAL", default_value = "6h", value_parser = duration)]
    pub sweep_interval: Duration,
    /// How long the sweeper keeps the originals of refused or expired uploads (and objects of
    /// images the read model doesn't know).
    #[arg(long, env = "GALLERY_SWEEP_RETENTION", default_value = "7d", value_parser = duration)]
    pub sweep_retention: Duration,
    /// Imports by URL: comma-separated `host:port`s fetched whatever their address (every
    /// other source must resolve to a public address).
    #[arg(long, env = "GALLERY_IMPORT_ALLOW_HOSTS", default_value = "")]
    pub import_allow_hosts: String,
    /// Imports by URL: the time limit of one fetch, redirects included (below the watcher's
    /// 30 s ack wait).
    #[arg(long, env = "GALLERY_IMPORT_TIMEOUT", default_value = "20s", value_parser = duration)]
    pub import_timeout: Duration,
    /// How often the api writes a read-model snapshot to the object store when the model has
    /// moved on (`0s`: never); a replica on an empty data dir starts from the newest one.
    #[arg(long, env = "GALLERY_SNAPSHOT_INTERVAL", default_value = "1h", value_parser = duration)]
    pub snapshot_interval: Duration,
    /// WebSocket ping interval; a client that answers no ping for three intervals is closed.
    #[arg(long, env = "GALLERY_WS_PING_INTERVAL", default_value = "20s", value_parser = duration)]
    pub ws_ping_interval: Duration,
    /// Project tokens: on, off, or auto (on unless the listen address is loopback).
    #[arg(long, env = "GALLERY_AUTH", default_value = "auto")]
    pub auth: Switch,
    #[command(flatten)]
    pub keys: TokenKeysArgs,
    /// Comma-separated origins whose web pages may open WebSockets (default: the public URL's
    /// origin). A request without Origin (not a browser) is always allowed.
    #[arg(long, env = "GALLERY_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// How long a client may take to send a request's headers.
    #[arg(long, env = "GALLERY_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub http_header_timeout: Duration,
    /// How long a connection may move no byte either way before it is closed (keep it above
    /// the WebSocket ping interval: a socket that answers pings is not idle).
    #[arg(long, env = "GALLERY_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub http_idle_timeout: Duration,
    /// Connections served at once (default: what the file-descriptor limit leaves room for, at
    /// most 50,000).
    #[arg(long, env = "GALLERY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Per-address and per-token limits (docs/ARCHITECTURE.md §11).
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// on, off, or auto (on unless the listen address is loopback).
    #[arg(long, env = "GALLERY_RATE_LIMITS", default_value = "auto")]
    pub rate_limits: Switch,
    /// Upload-link requests per client address: RATE:BURST (per second).
    #[arg(long, env = "GALLERY_RATE_LINKS", default_value = "20:100")]
    pub rate_links: Rate,
    /// Upload-link requests per token: RATE:BURST.
    #[arg(long, env = "GALLERY_RATE_TOKEN_LINKS", default_value = "200:1000")]
    pub rate_token_links: Rate,
    /// Reprocess requests per address and per token: RATE:BURST.
    #[arg(long, env = "GALLERY_RATE_REPROCESS", default_value = "2:20")]
    pub rate_reprocess: Rate,
    /// WebSocket connects per address and per token: RATE:BURST.
    #[arg(long, env = "GALLERY_RATE_WS", default_value = "5:50")]
    pub rate_ws: Rate,
    /// Connections one client address may hold at once (not applied behind a trusted proxy,
    /// where every connection comes from the proxy).
    #[arg(
        long,
        env = "GALLERY_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256
    )]
    pub max_connections_per_address: usize,
    /// Upload links a project may have waiting for their upload (429 beyond).
    #[arg(long, env = "GALLERY_MAX_PENDING_LINKS", default_value_t = 10_000)]
    pub max_pending_links: u64,
    /// The header a trusted load balancer puts the client address in (e.g. x-forwarded-for;
    /// its last entry is used). Set it only when every request comes through that proxy.
    #[arg(long, env = "GALLERY_TRUSTED_PROXY_HEADER")]
    pub trusted_proxy_header: Option<axum::http::HeaderName>,
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

/// The connection cap when none is configured: the open-file limit minus room for NATS,
/// storage, the read model and render workers, between 256 and 50,000.
pub fn default_max_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(soft.saturating_sub(1024))
        .unwrap_or(usize::MAX)
        .clamp(256, 50_000)
}

/// Where the token keys are.
#[derive(Args, Debug, Clone)]
pub struct TokenKeysArgs {
    /// A JSON list of {"kid", "secret"[, "verify_until"]}; the first key signs. Default:
    /// token-keys.json in the data dir, generated when missing.
    #[arg(long, env = "GALLERY_TOKEN_KEYS_FILE")]
    pub token_keys_file: Option<PathBuf>,
    /// The same list inline, as JSON (for deployments that pass secrets in the environment).
    #[arg(
        long,
        env = "GALLERY_TOKEN_KEYS",
        hide_env_values = true,
        conflicts_with = "token_keys_file"
    )]
    pub token_keys: Option<Secret>,
}

impl TokenKeysArgs {
    /// The keys: inline, from the named file, or from (and generated into) the data dir.
    pub fn load(&self, data_dir: &std::path::Path) -> anyhow::Result<gallery_api::auth::TokenKeys> {
        use gallery_api::auth::TokenKeys;
        Ok(match (&self.token_keys, &self.token_keys_file) {
            (Some(json), _) => TokenKeys::from_json(json)?,
            (None, Some(path)) => TokenKeys::load(path)?,
            (None, None) => {
                TokenKeys::load_or_create(&data_dir.join(crate::config::DEFAULT_TOKEN_KEYS_FILE))?
            }
        })
    }
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

impl HttpArgs {
    fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }
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
    cfg.max_pixels = common.max_pixels;
    cfg.max_side = common.max_side;
    cfg.s3 = common.s3.clone().into_config()?;
    cfg.nats_auth = common.nats.resolve()?;
    Ok(cfg)
}

impl HttpArgs {
    fn apply(&self, cfg: &mut AppConfig) -> anyhow::Result<()> {
        cfg.listen = self.listen;
        cfg.metrics_listen = Some(self.metrics_listen);
        cfg.public_url = Some(self.public_url());
        cfg.secret = secret(
            self.secret.clone().map(|s| s.0),
            self.secret_file.as_deref(),
            "GALLERY_SECRET",
        )?
        .map(Secret);
        cfg.upload_link_ttl = Duration::from_secs(self.upload_link_ttl);
        cfg.download_link_ttl = Duration::from_secs(self.download_link_ttl);
        cfg.upload_grace = Duration::from_secs(self.upload_grace);
        cfg.upload_scan_every = self.upload_scan_interval;
        cfg.delete_settle = self.delete_settle;
        cfg.import = gallery_lifecycle::watcher::ImportConfig {
            allow: gallery_lifecycle::import::AllowList::parse(&self.import_allow_hosts)
                .map_err(|e| anyhow::anyhow!("--import-allow-hosts: {e}"))?,
            timeout: self.import_timeout.min(Duration::from_secs(25)),
        };
        cfg.sweep_every = (!self.sweep_interval.is_zero()).then_some(self.sweep_interval);
        cfg.sweep_retention = self.sweep_retention;
        cfg.snapshot_every = (!self.snapshot_interval.is_zero()).then_some(self.snapshot_interval);
        cfg.ws_ping_every = self.ws_ping_interval;
        cfg.auth = self.auth;
        cfg.http.header_timeout = self.http_header_timeout;
        cfg.http.idle_timeout = self.http_idle_timeout;
        cfg.http.max_connections = self.max_connections.unwrap_or_else(default_max_connections);
        cfg.rate_limits = self.limits.rate_limits;
        cfg.limits = RateLimits {
            links: self.limits.rate_links,
            token_links: self.limits.rate_token_links,
            reprocess: self.limits.rate_reprocess,
            ws: self.limits.rate_ws,
            trusted_proxy_header: self.limits.trusted_proxy_header.clone(),
        };
        cfg.max_connections_per_address = self.limits.max_connections_per_address;
        cfg.max_pending_links = self.limits.max_pending_links;
        cfg.token_keys_file = self.keys.token_keys_file.clone();
        cfg.token_keys_json = self.keys.token_keys.clone();
        cfg.allowed_origins = self.allowed_origins.clone();
        Ok(())
    }
}

impl ProcessingArgs {
    fn apply(&self, cfg: &mut AppConfig) {
        cfg.concurrency = self.concurrency;
        cfg.retry_budget = self.retry_budget;
        cfg.shutdown_grace = self.shutdown_grace;
        cfg.job_deadline = self.job_deadline;
        cfg.crash_limit = self.crash_limit;
        cfg.render_memory_budget = self
            .render_memory_budget
            .unwrap_or_else(default_memory_budget);
        // Renders run in worker processes of this very binary.
        cfg.render_worker = std::env::current_exe().ok().map(|program| RenderWorker {
            program,
            memory_limit: self.render_memory,
        });
    }
}

impl UpArgs {
    pub fn into_config(self) -> anyhow::Result<AppConfig> {
        let mut cfg = base_config(&self.common, self.nats_url.clone(), Roles::All)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_configuration_shows_no_secret() {
        let cli = Cli::try_parse_from([
            "gallery",
            "up",
            "--secret",
            "sekrit-link-signing-0123456789abcdef0123",
            "--s3-bucket",
            "b",
            "--s3-access-key-id",
            "AKIDEXAMPLE",
            "--s3-secret-access-key",
            "sekrit-s3-key",
            "--nats-user",
            "api",
            "--nats-password",
            "sekrit-nats",
            "--token-keys",
            r#"[{"kid":"k","secret":"sekrit-token-key-0123456789abcdef0123"}]"#,
            "--nats-url",
            "nats://api:sekrit-in-url@n1:4222",
        ])
        .unwrap();
        let Command::Up(args) = cli.command else {
            panic!("up")
        };
        let cfg = args.into_config().unwrap();
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("sekrit"), "{shown}");
        let args = Cli::try_parse_from([
            "gallery",
            "up",
            "--secret",
            "sekrit-0123456789abcdef0123456789abcdef",
            "--nats-password",
            "sekrit-nats",
        ])
        .unwrap();
        let shown_args = format!("{args:?}");
        assert!(!shown_args.contains("sekrit"), "{shown_args}");
        assert_eq!(
            cfg.secret.as_deref(),
            Some("sekrit-link-signing-0123456789abcdef0123")
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(duration("soon").is_err());
    }

    #[test]
    fn every_run_mode_parses_its_environment_names() {
        let cli = Cli::try_parse_from([
            "gallery",
            "processor",
            "--nats-url",
            "nats://a:4222,nats://b:4222",
            "--retry-budget",
            "2m",
            "--s3-timeout",
            "5s",
        ])
        .unwrap();
        let Command::Processor(args) = cli.command else {
            panic!("processor")
        };
        let cfg = args.into_config().unwrap();
        assert_eq!(cfg.retry_budget, Duration::from_secs(120));
        assert_eq!(cfg.roles, Roles::Processor);
        assert_eq!(cfg.nats_url.as_deref(), Some("nats://a:4222,nats://b:4222"));
    }
}
