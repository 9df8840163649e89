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
//! [`crate::storage`], the read model's lock, restore and repair in `gallery_projector::open`, and how each
//! role is started (one `spawn_role` shape for all) in `crate::roles`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gallery_api::auth::TokenKeys;
use gallery_api::link_mode::{LinkMode, S3Links};
use gallery_api::options::Shared;
use gallery_api::sigv4::Credentials;
use gallery_api::{ApiConfig, AppState, RoleBoard};
use gallery_nats::{NatsServer, ProcessorConsumerConfig};
use gallery_processor::ProcessorConfig;
use gallery_projector::{Projector, ProjectorHandle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::config::{AppConfig, Roles, S3Config};
use crate::roles::Launch;
use crate::supervise::Supervisor;
use gallery_projector::open::{self as readmodel, ReadModelLock};

/// A started stack. [`Running::stop`] shuts it down in order.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `/metrics` is served (the api role; a processor serves it on `addr`).
    pub metrics_addr: Option<SocketAddr>,
    pub nats_url: String,
    /// Where the api's read model came from at start (`None`: no api role).
    pub read_model: Option<readmodel::Origin>,
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

/// The processor's settings with what the process shares with its other roles.
fn processor_config(cfg: &AppConfig) -> ProcessorConfig {
    ProcessorConfig {
        max_upload_bytes: cfg.max_upload_bytes,
        shutdown_grace: cfg.shutdown_grace,
        typed_puts: cfg.s3.is_some(),
        ..cfg.processor.clone()
    }
}

/// The base of the links handed out: the configured public URL, or the bound address.
fn public_url(cfg: &AppConfig, addr: SocketAddr) -> String {
    cfg.public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
}

/// The routes' configuration: the api's options resolved against the bound address, with
/// what the api shares with the other roles (links, sizes, the upload grace).
fn api_config(cfg: &AppConfig, addr: SocketAddr) -> anyhow::Result<ApiConfig> {
    let public_url = public_url(cfg, addr);
    if addr.ip().is_unspecified() && public_url == format!("http://{addr}") {
        tracing::warn!(
            "upload links will name {public_url}, which no client can reach: set --public-url \
             (GALLERY_PUBLIC_URL) to the address clients use"
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
    let links = match &cfg.s3 {
        None => LinkMode::Local,
        Some(s3) => LinkMode::S3(S3Links {
            bucket: s3.bucket.clone(),
            public_endpoint: s3.public_endpoint(),
            credentials: Credentials {
                access_key_id: s3.access_key_id.clone(),
                secret_access_key: s3.secret_access_key.clone(),
                region: s3.region.clone(),
            },
        }),
    };
    let shared = Shared {
        public_url,
        links,
        max_upload_bytes: cfg.max_upload_bytes,
        upload_grace: cfg.lifecycle.upload_grace,
        import_timeout: cfg.lifecycle.import.timeout,
    };
    Ok(cfg.api.resolve(addr, shared, keys, &keys_path))
}

/// Starts the roles of `cfg` and returns once the http listener is bound.
pub async fn start(cfg: AppConfig) -> anyhow::Result<Running> {
    let lock = prepare(&cfg)?;
    let (nats_url, nats, client) = gallery_nats::connect_or_start(
        &cfg.data_dir,
        cfg.nats_url.as_deref(),
        &cfg.nats_auth,
        cfg.nats_port,
    )
    .await?;
    let js = async_nats::jetstream::new(client.clone());
    if cfg.roles.api() {
        let processor =
            ProcessorConsumerConfig::with_max_ack_pending(cfg.processor_max_ack_pending);
        gallery_nats::declare_topology(&client, &js, cfg.stream_replicas, &processor).await?;
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
        (crate::roles::processor_health(&launch, &board), None)
    };
    let drain = api.as_ref().map(|a| (a.projector.clone(), js.clone()));
    // The api's metrics on their own (loopback) listener, and what the log says, sampled.
    let metrics_addr = match (&api, cfg.metrics_listen) {
        (Some(api), Some(listen)) => Some(crate::roles::serve_metrics(
            &launch,
            listen,
            &api.projector,
        )?),
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

/// The HTTP listener's settings: an api's connection caps follow its rate limits; a
/// processor's health port takes the plain ones.
fn serve_config(cfg: &AppConfig, addr: SocketAddr) -> gallery_api::serve::ServeConfig {
    if cfg.roles.api() {
        cfg.api.serve_config(addr, &public_url(cfg, addr))
    } else {
        cfg.api.http
    }
}

/// What the api role started: its router, its read model's projector, and where the read
/// model came from.
struct ApiRoles {
    router: axum::Router,
    projector: ProjectorHandle,
    origin: readmodel::Origin,
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
        launch.intake_tasks.spawn(gallery_projector::snapshots::run(
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
    let stopping = std::time::Instant::now();
    running.stop().await;
    tracing::info!(
        took_ms = stopping.elapsed().as_millis() as u64,
        "stopped: every role ended in order"
    );
    match fatal {
        Some(err) => Err(err),
        None => Ok(()),
    }
}
