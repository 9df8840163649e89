//! The typed configuration of a run, built once: by `cli/` (`serve.rs`, `http.rs`) from flags
//! and environment, or in code by tests ([`AppConfig::local`]). It holds each crate's own
//! settings (`api`, `lifecycle`, `processor`) beside what the process's roles share. Nothing
//! here does I/O.

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
    /// The embedded nats-server's loopback port (`None`: a free one).
    pub nats_port: Option<u16>,
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
    /// The api's settings: link lifetimes, auth, origins, the listener, rate limits.
    pub api: gallery_api::ApiOptions,
    /// The background roles' settings (upload watcher, deleter, reconciler and its sweeps).
    pub lifecycle: gallery_lifecycle::LifecycleConfig,
    /// How often the api looks whether to write a read-model snapshot to the object store
    /// (`None`: never). A replica on an empty data dir restores the newest one either way.
    pub snapshot_every: Option<Duration>,
    /// How long stopping may take before in-flight jobs are released back to the consumer;
    /// below docker's default 10 s between SIGTERM and SIGKILL.
    pub shutdown_grace: Duration,
    /// The processor's settings: renders at once, pixel limits, retry budget, render workers
    /// and their deadline, crash limit and memory budget. Its `max_upload_bytes`,
    /// `shutdown_grace` and `typed_puts` are the process's, filled in when it starts.
    pub processor: gallery_processor::ProcessorConfig,
    /// `None`: local storage under the data dir.
    pub s3: Option<S3Config>,
    /// Token signing keys; `None`: `token-keys.json` in the data dir, generated when missing.
    pub token_keys_file: Option<PathBuf>,
    /// The keys inline (`GALLERY_TOKEN_KEYS`), instead of a file.
    pub token_keys_json: Option<Secret>,
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

pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(7);

impl AppConfig {
    /// Defaults for `gallery up` on `data_dir`, listening on a free loopback port (tests).
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            nats_url: None,
            nats_port: None,
            nats_auth: gallery_nats::NatsAuth::default(),
            stream_replicas: Replicas::Auto,
            processor_max_ack_pending: 256,
            listen: "127.0.0.1:0".parse().expect("valid address"),
            metrics_listen: Some("127.0.0.1:0".parse().expect("valid address")),
            public_url: None,
            secret: None,
            roles: Roles::All,
            max_upload_bytes: 50_000_000,
            api: Default::default(),
            lifecycle: Default::default(),
            snapshot_every: Some(Duration::from_secs(3600)),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            processor: Default::default(),
            s3: None,
            token_keys_file: None,
            token_keys_json: None,
        }
    }
}
