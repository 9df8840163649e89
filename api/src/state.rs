//! What every handler shares, built once at start.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use gallery_nats::EventLog;
use gallery_projector::ProjectorHandle;
use object_store::ObjectStore;

use crate::signing::Signer;
use crate::sigv4::Credentials;

/// Where clients send bytes and fetch versions.
#[derive(Debug, Clone)]
pub enum LinkMode {
    /// The api serves uploads and downloads itself, with HMAC-signed links.
    Local,
    /// Clients go straight to S3: presigned POST policies and presigned GETs.
    S3(S3Links),
}

#[derive(Debug, Clone)]
pub struct S3Links {
    pub bucket: String,
    /// Scheme and authority clients use (`http://localhost:9000`), which may differ from the
    /// endpoint the services use.
    pub public_endpoint: String,
    pub credentials: Credentials,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Absolute base of the links this api hands out (`http://host:port`), no trailing slash.
    pub public_url: String,
    pub upload_link_ttl: Duration,
    pub download_link_ttl: Duration,
    pub max_upload_bytes: u64,
    /// How far the read model may trail the stream for `/ready` to say yes.
    pub ready_max_lag: u64,
    pub links: LinkMode,
    /// WebSocket ping interval; a peer silent for three intervals is closed.
    pub ws_ping_every: Duration,
}

impl ApiConfig {
    pub fn new(public_url: impl Into<String>) -> Self {
        Self {
            public_url: public_url.into().trim_end_matches('/').to_owned(),
            upload_link_ttl: Duration::from_secs(15 * 60),
            download_link_ttl: Duration::from_secs(60 * 60),
            max_upload_bytes: 50_000_000,
            ready_max_lag: 10_000,
            links: LinkMode::Local,
            ws_ping_every: Duration::from_secs(20),
        }
    }
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub(crate) js: jetstream::Context,
    pub(crate) log: EventLog,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) projector: ProjectorHandle,
    pub(crate) signer: Signer,
    pub(crate) config: ApiConfig,
    pub(crate) readiness: Arc<crate::readiness::Readiness>,
    idempotency: tokio::sync::OnceCell<jetstream::kv::Store>,
}

impl AppState {
    pub fn new(
        client: async_nats::Client,
        store: Arc<dyn ObjectStore>,
        projector: ProjectorHandle,
        secret: &[u8],
        config: ApiConfig,
        roles: crate::readiness::RoleBoard,
    ) -> Self {
        let js = jetstream::new(client.clone());
        let readiness = Arc::new(crate::readiness::Readiness {
            client: client.clone(),
            js: js.clone(),
            store: store.clone(),
            projector: Some(projector.clone()),
            roles,
            max_lag: config.ready_max_lag,
        });
        Self(Arc::new(Inner {
            readiness,
            idempotency: tokio::sync::OnceCell::new(),
            log: EventLog::new(js.clone()),
            js,
            store,
            projector,
            signer: Signer::new(secret),
            config,
        }))
    }
}

impl AppState {
    /// The `Idempotency-Key` bucket (declared with the topology), looked up once.
    pub(crate) async fn idempotency(&self) -> crate::error::ApiResult<jetstream::kv::Store> {
        self.idempotency
            .get_or_try_init(|| async {
                self.js
                    .get_key_value(gallery_schema::subjects::IDEMPOTENCY_BUCKET)
                    .await
            })
            .await
            .cloned()
            .map_err(|e| {
                crate::error::ApiError::unavailable("opening the Idempotency-Key bucket", e)
            })
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
