//! What every handler shares, built once at start.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use gallery_nats::EventLog;
use gallery_projector::ProjectorHandle;
use object_store::ObjectStore;

use crate::link_mode::LinkMode;
use crate::signing::Signer;

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
    /// Token keys when auth is on; `None`: every request is allowed (`--auth off`).
    pub auth: Option<Arc<crate::auth::TokenKeys>>,
    /// Origins whose pages may open WebSockets (`GALLERY_ALLOWED_ORIGINS`).
    pub allowed_origins: Vec<String>,
    /// How long after its link's expiry an upload may still be streaming in.
    pub upload_grace: Duration,
    /// The time limit of an import by URL (its `link_expires_at` is set this far ahead).
    pub import_timeout: Duration,
    /// Per-address and per-token rate limits; `None`: off (`--rate-limits off`).
    pub rate_limits: Option<crate::rate_limits::RateLimits>,
    /// Upload links a project may have waiting (handed out, neither used nor expired);
    /// `None`: no cap.
    pub max_pending_links: Option<u64>,
}

impl ApiConfig {
    pub fn new(public_url: impl Into<String>) -> Self {
        let public_url = public_url.into().trim_end_matches('/').to_owned();
        Self {
            allowed_origins: crate::headers::default_origins(&public_url),
            auth: None,
            rate_limits: None,
            max_pending_links: None,
            upload_grace: Duration::from_secs(600),
            import_timeout: Duration::from_secs(20),
            public_url,
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
    /// Images' JSON as last rendered, for listings.
    pub(crate) views: crate::view_cache::ViewCache,
    idempotency: tokio::sync::OnceCell<jetstream::kv::Store>,
    /// Images whose upload is streaming in right now (local mode).
    uploading: std::sync::Mutex<std::collections::HashSet<gallery_schema::ImageId>>,
}

/// Marks an image's upload as in progress until dropped.
pub(crate) struct UploadSlot {
    state: AppState,
    image: gallery_schema::ImageId,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.state
            .uploading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.image);
    }
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
            uploading: Default::default(),
            views: Default::default(),
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
    /// Claims the one upload slot of `image`; `None` while another upload of it is running.
    pub(crate) fn begin_upload(&self, image: gallery_schema::ImageId) -> Option<UploadSlot> {
        let fresh = self
            .uploading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(image);
        fresh.then(|| UploadSlot {
            state: self.clone(),
            image,
        })
    }

    /// The `Idempotency-Key` bucket (declared with the topology), looked up once.
    /// The image's record; 404 for an id the model doesn't know and for a deleted image (its
    /// tombstone is not an image any more).
    pub(crate) fn load_record(
        &self,
        image: &gallery_schema::ImageId,
    ) -> crate::error::ApiResult<gallery_projector::Record> {
        self.projector
            .store
            .get(image)
            .map_err(|e| crate::error::ApiError::internal("reading the read model", e))?
            .filter(|rec| rec.state != gallery_schema::ImageState::Deleted)
            .ok_or_else(|| crate::error::ApiError::not_found("image"))
    }

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
