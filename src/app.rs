//! Composition, read top to bottom: [`start`] connects to (or starts) NATS, declares the
//! topology (api role only), opens storage and the read model, and starts the roles of the run
//! mode under supervision ([`crate::supervise`]); [`Running::stop`] tears them down in order:
//!
//! 1. intake stops: the http listener, the processor's pulls and the upload watcher;
//! 2. in-flight jobs finish, or are released to another replica after the shutdown grace;
//! 3. the projector applies what was appended up to then, and flushes;
//! 4. the embedded nats-server, if any, stops last.
//!
//! Configuration lives in [`crate::config`], the command line in [`crate::cli`], storage in
//! [`crate::storage`], the read model's lock and repair in [`crate::readmodel`], and how each
//! role is started (one `spawn_role` shape for all) in `crate::roles`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gallery_api::auth::TokenKeys;
use gallery_api::link_mode::{LinkMode, S3Links};
use gallery_api::sigv4::Credentials;
use gallery_api::{ApiConfig, AppState, Readiness, RoleBoard};
use gallery_nats::{NatsServer, ProcessorConsumerConfig, topology};
use gallery_processor::plan::RetryPolicy;
use gallery_processor::{Limits, ProcessorConfig};
use gallery_projector::{Projector, ProjectorHandle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::config::{AppConfig, Roles, S3Config};
use crate::readmodel::{self, ReadModelLock};
use crate::roles::Launch;
use crate::supervise::Supervisor;

/// A started stack. [`Running::stop`] shuts it down in order.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `/metrics` is served (the api role; a processor serves it on `addr`).
    pub metrics_addr: Option<SocketAddr>,
    pub nats_url: String,
    /// Where the api's read model came from at start (`None`: no api role).
    pub read_model: Option<crate::readmodel::Origin>,
    /// Stops the http listener, the processor's pulls and the upload watcher.
    intake: CancellationToken,
    intake_tasks: TaskTracker,
    /// Stops the projector, once intake has stopped and the log is applied.
    projector_stop: CancellationToken,
    projector_tasks: TaskTracker,
    drain: Option<(ProjectorHandle, async_nats::jetstream::Context)>,
    grace: Duration,
    fatal: mpsc::UnboundedReceiver<anyhow::Error>,
    nats: Option<NatsServer>,
    _lock: Option<ReadModelLock>,
}

impl Running {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resolves when a role could not start at all (the process should exit non-zero).
    pub async fn fatal(&mut self) -> anyhow::Error {
        match self.fatal.recv().await {
            Some(err) => err,
            None => std::future::pending().await,
        }
    }

    pub async fn stop(mut self) {
        self.intake.cancel();
        self.intake_tasks.close();
        // The processor releases what it can't finish at `grace`; a little more for the naks.
        let limit = self.grace + Duration::from_secs(2);
        if tokio::time::timeout(limit, self.intake_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("intake did not stop within {limit:?}");
        }
        if let Some((projector, js)) = self.drain.take() {
            // Everything appended until now is applied before the projector stops.
            if let Ok(last) = stream_last_seq(&js).await
                && !projector.wait_for(last, Duration::from_secs(2)).await
            {
                tracing::warn!(
                    last,
                    applied = projector.applied_seq(),
                    "the projector did not catch up before stopping"
                );
            }
        }
        self.projector_stop.cancel();
        self.projector_tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.projector_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("the projector did not stop within 5 s");
        }
        if let Some(mut nats) = self.nats.take() {
            nats.stop();
        }
    }
}

async fn stream_last_seq(js: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
    Ok(gallery_nats::last_seq(js).await?)
}

pub(crate) async fn connect_nats(
    data_dir: &std::path::Path,
    url: Option<&str>,
    auth: &gallery_nats::NatsAuth,
) -> anyhow::Result<(String, Option<NatsServer>, async_nats::Client)> {
    let (url, child) = match url {
        Some(url) => (url.to_owned(), None),
        None => {
            let server = NatsServer::start_in(&data_dir.join("nats"))
                .await
                .context("starting the local nats-server")?;
            tracing::info!(address = %server.address(), "started local nats-server (loopback, with a generated credential)");
            (server.url(), Some(server))
        }
    };
    let client = gallery_nats::connect_with(&url, auth, Duration::from_secs(10))
        .await
        .with_context(|| format!("connecting to NATS at {}", gallery_nats::redact(&url)))?;
    Ok((url, child, client))
}

/// The stream and consumers, as the api role declares them. JetStream may still be starting
/// (or electing a leader in a cluster): retried for up to 30 s.
pub(crate) async fn ensure_topology(
    client: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    replicas: gallery_nats::Replicas,
    processor: &ProcessorConsumerConfig,
) -> anyhow::Result<()> {
    // A cluster that is still forming advertises fewer servers than it has: give its routes
    // a moment before `auto` settles on a replica count that a restart won't change.
    let mut cluster = topology::cluster_size(&client.server_info());
    let forming_until = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.server_info().cluster.is_some()
        && cluster < 3
        && replicas == gallery_nats::Replicas::Auto
        && tokio::time::Instant::now() < forming_until
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster = topology::cluster_size(&client.server_info());
    }
    let replicas = replicas.resolve(cluster);
    tracing::info!(cluster, replicas, "stream replicas");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match topology::ensure_topology(js, replicas, processor).await {
            Ok(_) => return Ok(()),
            Err(err) if tokio::time::Instant::now() >= deadline => {
                return Err(err).context("declaring the JetStream stream and consumers");
            }
            Err(err) => tracing::debug!(%err, "topology not declared yet; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

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
    p.retry = RetryPolicy {
        budget: cfg.retry_budget,
        ..RetryPolicy::default()
    };
    p.shutdown_grace = cfg.shutdown_grace;
    p.job_deadline = cfg.job_deadline;
    p.crash_limit = cfg.crash_limit;
    p.memory_budget = cfg.render_memory_budget;
    p.render_workers = cfg
        .render_worker
        .as_ref()
        .map(|w| gallery_processor::WorkerCommand {
            program: w.program.clone(),
            args: vec![
                "render-worker".into(),
                "--memory-limit".into(),
                w.memory_limit.to_string(),
            ],
        });
    p
}

fn api_config(cfg: &AppConfig, addr: SocketAddr) -> anyhow::Result<ApiConfig> {
    let mut api = ApiConfig::new(
        cfg.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}")),
    );
    if addr.ip().is_unspecified() && api.public_url == format!("http://{addr}") {
        tracing::warn!(
            "upload links will name {}, which no client can reach: set --public-url \
             (GALLERY_PUBLIC_URL) to the address clients use",
            api.public_url
        );
    }
    // The keys exist either way (generated into the data dir when no file is named), so
    // `gallery token` works and switching auth on later needs nothing else.
    let keys_path = cfg.token_keys_path();
    let keys = match (&cfg.token_keys_json, &cfg.token_keys_file) {
        (Some(json), _) => TokenKeys::from_json(json)?,
        (None, Some(_)) => TokenKeys::load(&keys_path)?,
        (None, None) => TokenKeys::load_or_create(&keys_path)?,
    };
    if cfg.auth.resolve(addr, &api.public_url) {
        tracing::info!(keys = %keys_path.display(), signing_kid = keys.signing_kid(), "auth is on: requests need project tokens");
        api.auth = Some(Arc::new(keys));
    } else {
        let note = format!(
            "auth is OFF: anyone who can reach {addr} can read and upload to every project \
             (--auth on to require tokens; `gallery token` mints them)"
        );
        tracing::warn!("{note}");
    }
    if let Some(origins) = &cfg.allowed_origins {
        api.allowed_origins = origins.iter().map(|o| o.trim().to_owned()).collect();
    }
    api.upload_grace = cfg.upload_grace;
    api.import_timeout = cfg.import.timeout;
    if cfg.rate_limits.resolve(addr, &api.public_url) {
        api.rate_limits = Some(cfg.limits.clone());
        api.max_pending_links = Some(cfg.max_pending_links);
    } else {
        let note = format!(
            "rate limits are OFF on {addr} (loopback: local benchmarks measure the service, not \
             the limiter; --rate-limits on to apply them)"
        );
        tracing::info!("{note}");
    }
    api.upload_link_ttl = cfg.upload_link_ttl;
    api.download_link_ttl = cfg.download_link_ttl;
    api.max_upload_bytes = cfg.max_upload_bytes;
    api.ws_ping_every = cfg.ws_ping_every;
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
    Ok(api)
}

/// Starts the roles of `cfg` and returns once the http listener is bound.
pub async fn start(cfg: AppConfig) -> anyhow::Result<Running> {
    let lock = prepare(&cfg)?;
    let (nats_url, nats, client) =
        connect_nats(&cfg.data_dir, cfg.nats_url.as_deref(), &cfg.nats_auth).await?;
    let js = async_nats::jetstream::new(client.clone());
    if cfg.roles.api() {
        let processor =
            ProcessorConsumerConfig::with_max_ack_pending(cfg.processor_max_ack_pending);
        ensure_topology(&client, &js, cfg.stream_replicas, &processor).await?;
    }
    let crate::storage::Storage { store, lister } = crate::storage::open(&cfg).await?;
    let std_listener = std::net::TcpListener::bind(cfg.listen)
        .with_context(|| format!("binding {}", cfg.listen))?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;

    let board = RoleBoard::default();
    let (supervisor, fatal) = Supervisor::new(board.clone());
    let launch = Launch {
        supervisor,
        intake: CancellationToken::new(),
        intake_tasks: TaskTracker::new(),
        projector_stop: CancellationToken::new(),
        projector_tasks: TaskTracker::new(),
        client: client.clone(),
        js: js.clone(),
        store: store.clone(),
    };
    if cfg.roles.processor() {
        crate::roles::spawn_processor(&launch, processor_config(&cfg));
    }
    let (router, api) = if cfg.roles.api() {
        let api = start_api_roles(&cfg, &launch, lister, addr, &board).await?;
        (api.router.clone(), Some(api))
    } else {
        (processor_health(&launch, &board), None)
    };
    let drain = api.as_ref().map(|a| (a.projector.clone(), js.clone()));
    // The api's metrics on their own (loopback) listener, and what the log says, sampled.
    let metrics_addr = match (&api, cfg.metrics_listen) {
        (Some(api), Some(listen)) => Some(serve_metrics(&launch, listen, &api.projector)?),
        _ => None,
    };
    crate::roles::spawn_http(&launch, router, std_listener, serve_config(&cfg, addr));

    tracing::info!(%addr, roles = ?cfg.roles, "gallery is up");
    let Launch {
        intake,
        intake_tasks,
        projector_stop,
        projector_tasks,
        ..
    } = launch;
    Ok(Running {
        addr,
        metrics_addr,
        nats_url,
        read_model: api.map(|a| a.origin),
        intake,
        intake_tasks,
        projector_stop,
        projector_tasks,
        drain,
        grace: cfg.shutdown_grace,
        fatal,
        nats,
        _lock: lock,
    })
}

/// Before any connection: the TLS backend, the data dir, the read model's lock (api role) and
/// the metrics recorder.
fn prepare(cfg: &AppConfig) -> anyhow::Result<Option<ReadModelLock>> {
    // One TLS crypto backend for every client (NATS, S3), chosen before any connection: with
    // two compiled in and none chosen, a TLS connection panics (docs/ARCHITECTURE.md §11).
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating the data dir {}", cfg.data_dir.display()))?;
    // One api process per read model: refuse early and clearly.
    let lock = if cfg.roles.api() {
        Some(readmodel::lock(&cfg.data_dir)?)
    } else {
        None
    };
    // Every role records into the one Prometheus recorder from here on.
    let _ = crate::telemetry::metrics();
    Ok(lock)
}

/// The HTTP server's settings: per-address connection caps need the real client address, so
/// they apply to an api with rate limits on that is not behind a proxy.
fn serve_config(cfg: &AppConfig, addr: SocketAddr) -> gallery_api::serve::ServeConfig {
    let mut serve_cfg = cfg.http;
    let public_url = cfg
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    if cfg.roles.api()
        && cfg.rate_limits.resolve(addr, &public_url)
        && cfg.limits.trusted_proxy_header.is_none()
    {
        serve_cfg.max_per_address = Some(cfg.max_connections_per_address);
    }
    serve_cfg
}

/// What the api role started: its router, its read model's projector, and where the read
/// model came from.
struct ApiRoles {
    router: axum::Router,
    projector: ProjectorHandle,
    origin: crate::readmodel::Origin,
}

/// The api role: the read model (opened, restored or rebuilt) and its snapshots, the
/// projector, the background roles, and the HTTP state over them.
async fn start_api_roles(
    cfg: &AppConfig,
    launch: &Launch,
    lister: Option<Arc<dyn object_store::list::PaginatedListStore>>,
    addr: SocketAddr,
    board: &RoleBoard,
) -> anyhow::Result<ApiRoles> {
    let (read_model, origin) =
        readmodel::open_or_rebuild(&launch.js, &cfg.data_dir, launch.store.as_ref()).await?;
    if let Some(every) = cfg.snapshot_every {
        launch.intake_tasks.spawn(crate::snapshots::run(
            read_model.clone(),
            launch.store.clone(),
            cfg.data_dir.clone(),
            every,
            launch.intake.clone(),
        ));
    }
    let projector = Arc::new(Projector::new(read_model)?);
    let handle = projector.handle();
    crate::roles::spawn_projector(launch, projector);
    crate::roles::spawn_lifecycle(launch, cfg, lister, handle.store.clone());
    let secret = crate::secret::load_or_create(cfg.secret.as_deref(), &cfg.data_dir)?;
    let state = AppState::new(
        launch.client.clone(),
        launch.store.clone(),
        handle.clone(),
        &secret,
        api_config(cfg, addr)?,
        board.clone(),
    );
    Ok(ApiRoles {
        router: gallery_api::router(state),
        projector: handle,
        origin,
    })
}

/// A processor's health port, which serves its metrics too (sampled from the log).
fn processor_health(launch: &Launch, board: &RoleBoard) -> axum::Router {
    launch.intake_tasks.spawn(crate::telemetry::sample(
        launch.js.clone(),
        None,
        Duration::from_secs(5),
        launch.intake.clone(),
    ));
    gallery_api::health_router(Arc::new(Readiness {
        client: launch.client.clone(),
        js: launch.js.clone(),
        store: launch.store.clone(),
        projector: None,
        roles: board.clone(),
        max_lag: 0,
    }))
    .merge(crate::telemetry::metrics_router())
}

/// The api's `/metrics` on its own listener, and the sampler of what the log and the consumers
/// say; answers the bound address.
fn serve_metrics(
    launch: &Launch,
    listen: SocketAddr,
    projector: &ProjectorHandle,
) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("binding the metrics listener {listen}"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let stop = launch.intake.clone();
    launch.intake_tasks.spawn(async move {
        let _ = gallery_api::serve::serve(
            listener,
            crate::telemetry::metrics_router(),
            gallery_api::serve::ServeConfig::default(),
            stop,
        )
        .await;
    });
    launch.intake_tasks.spawn(crate::telemetry::sample(
        launch.js.clone(),
        Some(projector.clone()),
        Duration::from_secs(5),
        launch.intake.clone(),
    ));
    Ok(addr)
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

/// Runs until SIGINT/SIGTERM (then stops in order and returns `Ok`) or until a role can't
/// start at all (then stops and returns the error: the process exits non-zero).
pub async fn run_until_signal(cfg: AppConfig) -> anyhow::Result<()> {
    let mut running = start(cfg).await?;
    println!("LITE Gallery listening on {}", running.base_url());
    let fatal = tokio::select! {
        _ = wait_for_signal() => None,
        err = running.fatal() => Some(err),
    };
    tracing::info!("shutting down");
    running.stop().await;
    match fatal {
        Some(err) => Err(err),
        None => Ok(()),
    }
}
