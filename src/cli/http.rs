//! The api's settings (`up`, `api`): the listener and its timeouts, links and their
//! lifetimes, the background roles' timing, auth with its token keys, and rate limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use gallery_api::auth::Switch;
use gallery_api::rate_limits::{Rate, RateLimits};

use super::{duration, secret};
use crate::config::{AppConfig, Secret};

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
    /// token-keys.json in the data dir (`gallery up`/`api` make it when missing; `gallery
    /// token` only with --init-keys).
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
    /// The keys a command signs with, never made up: inline, from the named file, or the data
    /// dir's (created only with `create`). Answers where they came from, for the operator.
    pub fn load(
        &self,
        data_dir: &std::path::Path,
        create: bool,
    ) -> anyhow::Result<(gallery_api::auth::TokenKeys, String)> {
        use gallery_api::auth::TokenKeys;
        if let Some(json) = &self.token_keys {
            return Ok((TokenKeys::from_json(json)?, "GALLERY_TOKEN_KEYS".into()));
        }
        if let Some(path) = &self.token_keys_file {
            return Ok((TokenKeys::load(path)?, path.display().to_string()));
        }
        let path = data_dir.join(crate::config::DEFAULT_TOKEN_KEYS_FILE);
        if !path.exists() && !create {
            anyhow::bail!(
                "no token keys at {}: give the data dir the service runs with (--data-dir or \
                 GALLERY_DATA_DIR; `gallery up` makes its keys there), or the keys file \
                 (GALLERY_TOKEN_KEYS_FILE); --init-keys makes new keys in the data dir",
                path.display()
            );
        }
        Ok((
            TokenKeys::load_or_create(&path)?,
            path.display().to_string(),
        ))
    }
}

impl HttpArgs {
    fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

impl HttpArgs {
    pub(super) fn apply(&self, cfg: &mut AppConfig) -> anyhow::Result<()> {
        cfg.listen = self.listen;
        cfg.metrics_listen = Some(self.metrics_listen);
        cfg.public_url = Some(self.public_url());
        cfg.secret = secret(
            self.secret.clone().map(|s| s.0),
            self.secret_file.as_deref(),
            "GALLERY_SECRET",
        )?
        .map(Secret);
        cfg.api.upload_link_ttl = Duration::from_secs(self.upload_link_ttl);
        cfg.api.download_link_ttl = Duration::from_secs(self.download_link_ttl);
        cfg.lifecycle.upload_grace = Duration::from_secs(self.upload_grace);
        cfg.lifecycle.upload_scan_every = self.upload_scan_interval;
        cfg.lifecycle.delete_settle = self.delete_settle;
        cfg.lifecycle.import = gallery_lifecycle::watcher::ImportConfig {
            allow: gallery_lifecycle::import::AllowList::parse(&self.import_allow_hosts)
                .map_err(|e| anyhow::anyhow!("--import-allow-hosts: {e}"))?,
            timeout: self.import_timeout.min(Duration::from_secs(25)),
        };
        cfg.lifecycle.sweep_every = (!self.sweep_interval.is_zero()).then_some(self.sweep_interval);
        cfg.lifecycle.sweep_retention = self.sweep_retention;
        cfg.snapshot_every = (!self.snapshot_interval.is_zero()).then_some(self.snapshot_interval);
        cfg.api.ws_ping_every = self.ws_ping_interval;
        cfg.api.auth = self.auth;
        cfg.api.http.header_timeout = self.http_header_timeout;
        cfg.api.http.idle_timeout = self.http_idle_timeout;
        cfg.api.http.max_connections = self.max_connections.unwrap_or_else(default_max_connections);
        cfg.api.rate_limits = self.limits.rate_limits;
        cfg.api.limits = RateLimits {
            links: self.limits.rate_links,
            token_links: self.limits.rate_token_links,
            reprocess: self.limits.rate_reprocess,
            ws: self.limits.rate_ws,
            trusted_proxy_header: self.limits.trusted_proxy_header.clone(),
        };
        cfg.api.max_connections_per_address = self.limits.max_connections_per_address;
        cfg.api.max_pending_links = self.limits.max_pending_links;
        cfg.token_keys_file = self.keys.token_keys_file.clone();
        cfg.token_keys_json = self.keys.token_keys.clone();
        cfg.api.allowed_origins = self.allowed_origins.clone();
        Ok(())
    }
}
