//! Composition: connects to (or starts) NATS, declares the topology, opens storage and the read
//! model, and runs the roles a mode asks for. Start-up is ordered (NATS, topology, storage,
//! projector, processor, http) and so is teardown (http stops accepting, processor stops
//! pulling and finishes in-flight work, projector flushes, the NATS child stops last).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gallery_api::sigv4::Credentials;
use gallery_api::state::{LinkMode, S3Links};
use gallery_api::{ApiConfig, AppState};
use gallery_nats::{NatsServer, topology};
use gallery_processor::{Limits, ProcessorConfig};
use gallery_projector::{Projector, Store};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::{ProcessorArgs, RebuildArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    /// api + projector + processor (`gallery up`).
    All,
    /// api + projector (`gallery api`).
    Api,
    /// processor, with /health and /ready on the listen address (`gallery processor`).
    Processor,
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    pub data_dir: PathBuf,
    /// `None`: start a nats-server child with its store under the data dir.
    pub nats_url: Option<String>,
    pub listen: SocketAddr,
    /// Base of the links handed out; `None`: http://<bound address>.
    pub public_url: Option<String>,
    pub secret: Option<String>,
    pub roles: Roles,
    pub max_upload_bytes: u64,
    pub max_pixels: u64,
    pub max_side: u32,
    pub upload_link_ttl: Duration,
    pub download_link_ttl: Duration,
    /// How long after a link's expiry an upload may still be recorded before the image ends in
    /// `upload_expired`.
    pub upload_grace: Duration,
    pub concurrency: Option<usize>,
    /// `None`: local storage under the data dir.
    pub s3: Option<S3Config>,
}

#[derive(Debug, Clone)]
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
}

impl S3Config {
    fn public_endpoint(&self) -> String {
        self.public_endpoint
            .clone()
            .or_else(|| self.endpoint.clone())
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", self.region))
            .trim_end_matches('/')
            .to_owned()
    }
}

impl AppConfig {
    /// Defaults for `gallery up` on `data_dir`, listening on a free loopback port (tests).
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            nats_url: None,
            listen: "127.0.0.1:0".parse().expect("valid address"),
            public_url: None,
            secret: None,
            roles: Roles::All,
            max_upload_bytes: 50_000_000,
            max_pixels: 100_000_000,
            max_side: 30_000,
            upload_link_ttl: Duration::from_secs(900),
            download_link_ttl: Duration::from_secs(3600),
            upload_grace: Duration::from_secs(600),
            concurrency: None,
            s3: None,
        }
    }
}

/// A started stack. [`Running::stop`] shuts it down in order.
pub struct Running {
    pub addr: SocketAddr,
    pub nats_url: String,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    nats: Option<NatsServer>,
}

impl Running {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(30), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not stop within 30 s");
        }
        if let Some(mut nats) = self.nats.take() {
            nats.stop();
        }
    }
}

async fn connect_nats(
    data_dir: &std::path::Path,
    url: Option<&str>,
) -> anyhow::Result<(String, Option<NatsServer>, async_nats::Client)> {
    let (url, child) = match url {
        Some(url) => (url.to_owned(), None),
        None => {
            let server = NatsServer::start_in(&data_dir.join("nats"))
                .await
                .context("starting the local nats-server")?;
            tracing::info!(url = %server.url(), "started local nats-server");
            (server.url(), Some(server))
        }
    };
    let client = gallery_nats::connect(&url, Duration::from_secs(10))
        .await
        .with_context(|| format!("connecting to NATS at {url}"))?;
    Ok((url, child, client))
}

async fn ensure_topology(js: &async_nats::jetstream::Context) -> anyhow::Result<()> {
    // JetStream may still be starting (or electing a leader in a cluster): retry briefly.
    let mut last = None;
    for _ in 0..50 {
        match topology::ensure_stream(js).await {
            Ok(_) => return Ok(()),
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last.expect("attempted")).context("declaring the JetStream stream")
}

async fn open_storage(cfg: &AppConfig) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let Some(s3) = &cfg.s3 else {
        let dir = cfg.data_dir.join("storage");
        std::fs::create_dir_all(&dir)?;
        return Ok(Arc::new(LocalFileSystem::new_with_prefix(&dir)?));
    };
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region)
        .with_access_key_id(&s3.access_key_id)
        .with_secret_access_key(&s3.secret_access_key)
        .with_allow_http(s3.allow_http)
        .with_virtual_hosted_style_request(false);
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let store: Arc<dyn ObjectStore> = Arc::new(builder.build().context("configuring S3")?);
    // The bucket must exist and take writes: find out now, not on the first upload.
    store
        .put(&object_store::path::Path::from(READY_PROBE), "ok".into())
        .await
        .with_context(|| {
            format!(
                "S3 bucket {:?} at {} is not usable (does it exist, and may these credentials write to it?)",
                s3.bucket,
                s3.endpoint.as_deref().unwrap_or("AWS")
            )
        })?;
    Ok(store)
}

/// A small object the api's /ready looks at.
const READY_PROBE: &str = "ready-probe";

fn processor_config(cfg: &AppConfig) -> ProcessorConfig {
    let mut p = ProcessorConfig::default();
    if let Some(n) = cfg.concurrency {
        p.cpu_concurrency = n.max(1);
        p.job_concurrency = 2 * n.max(1);
    }
    p.limits = Limits {
        max_pixels: cfg.max_pixels,
        max_side: cfg.max_side,
    };
    p.max_upload_bytes = cfg.max_upload_bytes;
    p.typed_puts = cfg.s3.is_some();
    p
}

/// Starts the roles of `cfg` and returns once the http listener is bound.
pub async fn start(cfg: AppConfig) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating the data dir {}", cfg.data_dir.display()))?;
    let (nats_url, nats, client) = connect_nats(&cfg.data_dir, cfg.nats_url.as_deref()).await?;
    let js = async_nats::jetstream::new(client.clone());
    ensure_topology(&js).await?;
    let store = open_storage(&cfg).await?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;

    if matches!(cfg.roles, Roles::All | Roles::Processor) {
        let (js, store, pcfg, token) = (
            js.clone(),
            store.clone(),
            processor_config(&cfg),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            if let Err(err) = gallery_processor::run(js, store, pcfg, token).await {
                tracing::error!(%err, "processor stopped");
            }
        });
    }

    if matches!(cfg.roles, Roles::All | Roles::Api) {
        let read_model = Store::open(&cfg.data_dir.join("readmodel"))
            .context("opening the read model (is another gallery process using this data dir?)")?;
        let projector = Projector::new(read_model)?;
        let handle = projector.handle();
        tasks.spawn(projector.run(js.clone(), shutdown.clone()));
        let secret = crate::secret::load_or_create(cfg.secret.as_deref(), &cfg.data_dir)?;
        let mut api = ApiConfig::new(
            cfg.public_url
                .clone()
                .unwrap_or_else(|| format!("http://{addr}")),
        );
        api.upload_link_ttl = cfg.upload_link_ttl;
        api.download_link_ttl = cfg.download_link_ttl;
        api.max_upload_bytes = cfg.max_upload_bytes;
        if let Some(s3) = &cfg.s3 {
            api.links = LinkMode::S3(S3Links {
                bucket: s3.bucket.clone(),
                public_endpoint: s3.public_endpoint(),
                credentials: Credentials {
                    access_key_id: s3.access_key_id.clone(),
                    secret_access_key: s3.secret_access_key.clone(),
                    region: s3.region.clone(),
                },
            });
        }
        let state = AppState::new(client.clone(), store.clone(), handle, &secret, api);
        // Local mode records uploads at the upload endpoint; with S3 nobody tells us, so look.
        let poll = cfg.s3.as_ref().map(|_| Duration::from_secs(1));
        let watcher = gallery_api::watcher::WatcherConfig {
            grace: cfg.upload_grace,
            poll,
        };
        let (wjs, wstore, wtoken) = (js.clone(), store.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(err) = gallery_api::watcher::run(wjs, wstore, watcher, wtoken).await {
                tracing::error!(%err, "upload watcher stopped");
            }
        });
        let token = shutdown.clone();
        tasks.spawn(async move {
            if let Err(err) = gallery_api::serve(listener, state, token).await {
                tracing::error!(%err, "http server stopped");
            }
        });
    } else {
        let token = shutdown.clone();
        let router = health_router(client.clone(), store.clone());
        tasks.spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::error!(%err, "health server stopped");
            }
        });
    }
    tracing::info!(%addr, roles = ?cfg.roles, "gallery is up");
    Ok(Running {
        addr,
        nats_url,
        shutdown,
        tasks,
        nats,
    })
}

/// /health and /ready for a processor-only process.
fn health_router(client: async_nats::Client, store: Arc<dyn ObjectStore>) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route(
            "/ready",
            get(move || {
                let (client, store) = (client.clone(), store.clone());
                async move {
                    let nats =
                        client.connection_state() == async_nats::connection::State::Connected;
                    let storage = matches!(
                        store
                            .head(&object_store::path::Path::from("ready-probe"))
                            .await,
                        Ok(_) | Err(object_store::Error::NotFound { .. })
                    );
                    let status = if nats && storage {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (
                        status,
                        axum::Json(serde_json::json!({ "nats": nats, "storage": storage })),
                    )
                }
            }),
        )
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub async fn run_until_signal(cfg: AppConfig) -> anyhow::Result<()> {
    let running = start(cfg).await?;
    println!("LITE Gallery listening on {}", running.base_url());
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

pub async fn run_processor_until_signal(args: ProcessorArgs) -> anyhow::Result<()> {
    let mut cfg = AppConfig::local(args.common.data_dir.clone());
    cfg.nats_url = Some(args.nats_url);
    cfg.listen = args.health_listen;
    cfg.roles = Roles::Processor;
    cfg.max_upload_bytes = args.common.max_upload_bytes;
    cfg.max_pixels = args.common.max_pixels;
    cfg.max_side = args.common.max_side;
    cfg.concurrency = args.concurrency;
    cfg.s3 = args.common.s3.into_config()?;
    run_until_signal(cfg).await
}

pub async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let (_url, nats, client) = connect_nats(&args.data_dir, args.nats_url.as_deref()).await?;
    let js = async_nats::jetstream::new(client);
    ensure_topology(&js).await?;
    let dir = args.data_dir.join("readmodel");
    let started = std::time::Instant::now();
    let applied = gallery_projector::rebuild(&js, &dir).await?;
    println!(
        "rebuilt {} from {applied} events in {:.1?}",
        dir.display(),
        started.elapsed()
    );
    drop(nats);
    Ok(())
}
