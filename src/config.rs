//! The typed configuration of a run, built once: by `cli.rs` from flags and environment, or in
//! code by tests ([`AppConfig::local`]). Nothing here does I/O.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gallery_nats::Replicas;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    /// api + projector + upload watcher + processor (`gallery up`).
    All,
    /// api + projector + upload watcher (`gallery api`).
    Api,
    /// processor, with /health and /ready on the listen address (`gallery processor`).
    Processor,
}

impl Roles {
    /// The api role serves HTTP, folds the read model and manages the JetStream topology.
    pub fn api(self) -> bool {
        matches!(self, Self::All | Self::Api)
    }

    pub fn processor(self) -> bool {
        matches!(self, Self::All | Self::Processor)
    }
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    pub data_dir: PathBuf,
    /// One URL or a comma-separated list of a cluster's servers. `None`: start a nats-server
    /// child with its store under the data dir.
    pub nats_url: Option<NatsUrl>,
    /// Credentials and TLS for an external NATS.
    pub nats_auth: gallery_nats::NatsAuth,
    /// Copies of the stream when the api role creates it.
    pub stream_replicas: Replicas,
    /// The processor consumer's `max_ack_pending`: jobs in flight over the whole fleet.
    pub processor_max_ack_pending: i64,
    pub listen: SocketAddr,
    /// Where `/metrics` is served (api and `up`; a processor serves it on its health port).
    pub metrics_listen: Option<SocketAddr>,
    /// Base of the links handed out; `None`: http://<bound address>.
    pub public_url: Option<String>,
    pub secret: Option<Secret>,
    pub roles: Roles,
    pub max_upload_bytes: u64,
    pub max_pixels: u64,
    pub max_side: u32,
    pub upload_link_ttl: Duration,
    pub download_link_ttl: Duration,
    /// How long after a link's expiry an upload may still be recorded before the image ends in
    /// `upload_expired`.
    pub upload_grace: Duration,
    /// S3 mode: how often the upload watcher lists the originals for links due a look.
    pub upload_scan_every: Duration,
    /// How long after an image's deletion the deleter removes its objects.
    pub delete_settle: Duration,
    /// Imports by URL: hosts fetched whatever their address, and the fetch's time limit.
    pub import: gallery_lifecycle::watcher::ImportConfig,
    /// How often the acting reconciler sweeps the store (`None`: only `gallery sweep`).
    pub sweep_every: Option<Duration>,
    /// How long the sweeper keeps originals of refused or expired uploads and objects the read
    /// model doesn't know.
    pub sweep_retention: Duration,
    /// Replaces the sweep policy derived from the link lifetime and the retention (tests; the
    /// command line always derives it, so the superseded versions' grace stays at least the
    /// download links' lifetime plus an hour).
    pub sweep_policy: Option<gallery_lifecycle::sweeper::SweepPolicy>,
    /// How often the api looks whether to write a read-model snapshot to the object store
    /// (`None`: never). A replica on an empty data dir restores the newest one either way.
    pub snapshot_every: Option<Duration>,
    /// WebSocket ping interval; a client silent for three intervals is closed.
    pub ws_ping_every: Duration,
    /// How often the acting reconciler looks for stuck images.
    pub reconcile_every: Duration,
    /// How long after its last event an unfinished image is re-driven.
    pub redrive_after: Duration,
    pub concurrency: Option<usize>,
    /// How long transient failures of one image are retried before it ends in
    /// `retries_exhausted` (retryable).
    pub retry_budget: Duration,
    /// How long stopping may take before in-flight jobs are released back to the consumer;
    /// below docker's default 10 s between SIGTERM and SIGKILL.
    pub shutdown_grace: Duration,
    /// Render in worker processes of this program; `None`: on this process's threads (tests
    /// that run the stack in-process, whose program has no `render-worker` command).
    pub render_worker: Option<RenderWorker>,
    /// A render's wall-clock limit in a worker.
    pub job_deadline: Duration,
    /// Worker crashes of one image before it ends `processing_crashed`.
    pub crash_limit: u32,
    /// Bytes renders may need at once (their headers' estimate).
    pub render_memory_budget: u64,
    /// `None`: local storage under the data dir.
    pub s3: Option<S3Config>,
    /// Whether requests need project tokens (`auto`: unless listening on loopback).
    pub auth: gallery_api::auth::Switch,
    /// Token signing keys; `None`: `token-keys.json` in the data dir, generated when missing.
    pub token_keys_file: Option<PathBuf>,
    /// The keys inline (`GALLERY_TOKEN_KEYS`), instead of a file.
    pub token_keys_json: Option<Secret>,
    /// Origins whose pages may open WebSockets; `None`: the public URL's.
    pub allowed_origins: Option<Vec<String>>,
    /// Timeouts and the connection cap of the HTTP listener.
    pub http: gallery_api::serve::ServeConfig,
    /// Whether per-address and per-token limits apply (`auto`: unless listening on loopback).
    pub rate_limits: gallery_api::auth::Switch,
    /// The limits when they apply.
    pub limits: gallery_api::limits::RateLimits,
    /// Connections one address may hold when limits apply.
    pub max_connections_per_address: usize,
    /// Upload links a project may have waiting, when limits apply.
    pub max_pending_links: u64,
}

impl AppConfig {
    /// The keys file tokens are signed and checked with.
    pub fn token_keys_path(&self) -> PathBuf {
        self.token_keys_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(DEFAULT_TOKEN_KEYS_FILE))
    }
}

/// The keys file's name in the data dir when `GALLERY_TOKEN_KEYS_FILE` is not set.
pub const DEFAULT_TOKEN_KEYS_FILE: &str = "token-keys.json";

/// The program whose hidden `render-worker` command renders, and its memory limit.
#[derive(Debug, Clone)]
pub struct RenderWorker {
    pub program: PathBuf,
    pub memory_limit: u64,
}

/// A secret value: usable as a `&str`, shown as `***` by `Debug`, so a logged configuration
/// never carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// A NATS URL (list), which may carry `user:password@`: `Debug` shows it without them.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsUrl(pub String);

impl std::ops::Deref for NatsUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for NatsUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl std::fmt::Debug for NatsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", gallery_nats::redact(&self.0))
    }
}

#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// `None`: AWS itself.
    pub endpoint: Option<String>,
    /// What clients use in links; `None`: the endpoint.
    pub public_endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub allow_http: bool,
    /// One request's deadline (`GALLERY_S3_TIMEOUT`).
    pub timeout: Duration,
    /// How long the storage client retries one request before the processor's own policy
    /// takes over (`GALLERY_S3_RETRY_TIMEOUT`).
    pub retry_timeout: Duration,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("public_endpoint", &self.public_endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("allow_http", &self.allow_http)
            .field("timeout", &self.timeout)
            .field("retry_timeout", &self.retry_timeout)
            .finish()
    }
}

impl S3Config {
    pub fn public_endpoint(&self) -> String {
        self.public_endpoint
            .clone()
            .or_else(|| self.endpoint.clone())
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", self.region))
            .trim_end_matches('/')
            .to_owned()
    }
}

pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(24 * 60 * 60);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(7);

impl AppConfig {
    /// Defaults for `gallery up` on `data_dir`, listening on a free loopback port (tests).
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            nats_url: None,
            nats_auth: gallery_nats::NatsAuth::default(),
            stream_replicas: Replicas::Auto,
            processor_max_ack_pending: 256,
            listen: "127.0.0.1:0".parse().expect("valid address"),
            metrics_listen: Some("127.0.0.1:0".parse().expect("valid address")),
            public_url: None,
            secret: None,
            roles: Roles::All,
            max_upload_bytes: 50_000_000,
            max_pixels: 100_000_000,
            max_side: 30_000,
            upload_link_ttl: Duration::from_secs(900),
            download_link_ttl: Duration::from_secs(3600),
            upload_grace: Duration::from_secs(600),
            upload_scan_every: Duration::from_millis(200),
            delete_settle: Duration::from_secs(30),
            import: Default::default(),
            sweep_every: Some(Duration::from_secs(6 * 3600)),
            sweep_retention: Duration::from_secs(7 * 24 * 3600),
            sweep_policy: None,
            snapshot_every: Some(Duration::from_secs(3600)),
            ws_ping_every: Duration::from_secs(20),
            reconcile_every: Duration::from_secs(60),
            redrive_after: Duration::from_secs(30 * 60),
            concurrency: None,
            retry_budget: DEFAULT_RETRY_BUDGET,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            render_worker: None,
            job_deadline: Duration::from_secs(120),
            crash_limit: 3,
            render_memory_budget: 4 << 30,
            s3: None,
            auth: gallery_api::auth::Switch::Auto,
            token_keys_file: None,
            token_keys_json: None,
            allowed_origins: None,
            http: gallery_api::serve::ServeConfig::default(),
            rate_limits: gallery_api::auth::Switch::Auto,
            limits: gallery_api::limits::RateLimits::default(),
            max_connections_per_address: 256,
            max_pending_links: 10_000,
        }
    }
}
