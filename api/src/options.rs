//! The api's settings as a deployment gives them (flags and environment, read by the binary),
//! before its address is bound. The binary's `AppConfig` holds one [`ApiOptions`]; once the
//! listener is bound, [`ApiOptions::resolve`] makes the [`ApiConfig`] the routes run with (the
//! `auto` switches decided against the address, the keys attached when auth is on) and
//! [`ApiOptions::serve_config`] the listener's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Switch, TokenKeys};
use crate::link_mode::LinkMode;
use crate::rate_limits::RateLimits;
use crate::serve::ServeConfig;
use crate::state::ApiConfig;

#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub upload_link_ttl: Duration,
    /// Download links live at least this long (the sweeper keeps superseded versions longer).
    pub download_link_ttl: Duration,
    /// WebSocket ping interval; a client silent for three intervals is closed.
    pub ws_ping_every: Duration,
    /// Whether requests need project tokens (`auto`: unless listening on loopback).
    pub auth: Switch,
    /// Origins whose pages may open WebSockets; `None`: the public URL's.
    pub allowed_origins: Option<Vec<String>>,
    /// Timeouts and the connection cap of the HTTP listener.
    pub http: ServeConfig,
    /// Whether per-address and per-token limits apply (`auto`: unless listening on loopback).
    pub rate_limits: Switch,
    /// The limits when they apply.
    pub limits: RateLimits,
    /// Connections one address may hold when limits apply.
    pub max_connections_per_address: usize,
    /// Upload links a project may have waiting, when limits apply.
    pub max_pending_links: u64,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            upload_link_ttl: Duration::from_secs(900),
            download_link_ttl: Duration::from_secs(3600),
            ws_ping_every: Duration::from_secs(20),
            auth: Switch::Auto,
            allowed_origins: None,
            http: ServeConfig::default(),
            rate_limits: Switch::Auto,
            limits: RateLimits::default(),
            max_connections_per_address: 256,
            max_pending_links: 10_000,
        }
    }
}

/// What the api shares with the process's other roles, settled before it starts.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The base of the links handed out (the configured public URL, or `http://<bound>`).
    pub public_url: String,
    /// Local links, or S3 POST policies and presigned downloads.
    pub links: LinkMode,
    pub max_upload_bytes: u64,
    /// How long after a link's expiry an upload may still land (the upload watcher's grace).
    pub upload_grace: Duration,
    /// The time limit of an import by URL.
    pub import_timeout: Duration,
}

impl ApiOptions {
    /// The routes' configuration for an api bound at `addr`: auth on (with `keys`) or off, and
    /// rate limits on or off, each logged, since either changes who may do what.
    /// `keys_path` names where `keys` came from, for the log.
    pub fn resolve(
        &self,
        addr: SocketAddr,
        shared: Shared,
        keys: TokenKeys,
        keys_path: &std::path::Path,
    ) -> ApiConfig {
        let mut api = ApiConfig::new(shared.public_url);
        if self.auth.resolve(addr, &api.public_url) {
            tracing::info!(
                keys = %keys_path.display(),
                signing_kid = keys.signing_kid(),
                "auth is on: requests need project tokens"
            );
            api.auth = Some(Arc::new(keys));
        } else {
            let note = format!(
                "auth is OFF: anyone who can reach {addr} can read and upload to every project \
                 (--auth on to require tokens; `gallery token` mints them)"
            );
            tracing::warn!("{note}");
        }
        if let Some(origins) = &self.allowed_origins {
            api.allowed_origins = origins.iter().map(|o| o.trim().to_owned()).collect();
        }
        if self.rate_limits.resolve(addr, &api.public_url) {
            api.rate_limits = Some(self.limits.clone());
            api.max_pending_links = Some(self.max_pending_links);
        } else {
            let note = format!(
                "rate limits are OFF on {addr} (loopback: local benchmarks measure the service, \
                 not the limiter; --rate-limits on to apply them)"
            );
            tracing::info!("{note}");
        }
        api.upload_grace = shared.upload_grace;
        api.import_timeout = shared.import_timeout;
        api.upload_link_ttl = self.upload_link_ttl;
        api.download_link_ttl = self.download_link_ttl;
        api.max_upload_bytes = shared.max_upload_bytes;
        api.ws_ping_every = self.ws_ping_every;
        api.links = shared.links;
        api
    }

    /// The listener's settings at `addr`: per-address connection caps need the real client
    /// address, so they apply when rate limits are on and no trusted proxy forwards for clients.
    pub fn serve_config(&self, addr: SocketAddr, public_url: &str) -> ServeConfig {
        let mut serve = self.http;
        if self.rate_limits.resolve(addr, public_url) && self.limits.trusted_proxy_header.is_none()
        {
            serve.max_per_address = Some(self.max_connections_per_address);
        }
        serve
    }
}
