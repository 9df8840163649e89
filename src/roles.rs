//! The long-running roles of a process, each started under supervision
//! ([`crate::supervise`]) with the configuration it needs: the processor, the projector, and an
//! api process's background roles (`gallery-lifecycle`: upload watcher, deleter, reconciler),
//! the HTTP server, a processor's health port and the api's metrics listener.
//! [`crate::app::start`] decides which of them run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gallery_api::{Readiness, RoleBoard};

use gallery_lifecycle::{deleter, reconciler, watcher};
use gallery_processor::ProcessorConfig;
use gallery_projector::{Projector, ProjectorHandle, Store};
use object_store::ObjectStore;
use object_store::list::PaginatedListStore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::AppConfig;
use crate::supervise::Supervisor;

/// What every role is started with: the supervisor, the two shutdown phases (intake first, the
/// projector once the log is applied), and the connections.
pub(crate) struct Launch {
    pub supervisor: Supervisor,
    pub intake: CancellationToken,
    pub intake_tasks: TaskTracker,
    pub projector_stop: CancellationToken,
    pub projector_tasks: TaskTracker,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub store: Arc<dyn ObjectStore>,
}

impl Launch {
    /// A role that stops with intake (the first phase of a shutdown).
    fn spawn_intake<S, F, Fut>(&self, name: &'static str, state: S, run: F)
    where
        S: Clone + Send + 'static,
        F: Fn(S, CancellationToken, Box<dyn FnOnce() + Send>) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.supervisor
            .spawn_role(&self.intake_tasks, name, self.intake.clone(), state, run);
    }
}

/// A processor replica: a member of the shared `processor` consumer.
pub(crate) fn spawn_processor(launch: &Launch, pcfg: ProcessorConfig) {
    let state = (launch.js.clone(), launch.store.clone(), pcfg);
    launch.spawn_intake(
        "processor",
        state,
        |(js, store, pcfg), shutdown, running| async move {
            gallery_processor::run(js, store, pcfg, shutdown, running).await?;
            Ok(())
        },
    );
}

/// The projector: folds the log into the read model; stopped after intake, once applied.
pub(crate) fn spawn_projector(launch: &Launch, projector: Arc<Projector>) {
    let js = launch.js.clone();
    launch.supervisor.spawn(
        &launch.projector_tasks,
        "projector",
        launch.projector_stop.clone(),
        move |ctx| {
            let (projector, js) = (projector.clone(), js.clone());
            async move {
                ctx.running();
                projector.run(js, ctx.shutdown.clone()).await;
                Ok(())
            }
        },
    );
}

/// The background roles of an api process: the upload watcher (with `lister`, S3 mode, it
/// LISTs for uploads nobody reports), the deleter and the reconciler (which also sweeps).
pub(crate) fn spawn_lifecycle(
    launch: &Launch,
    cfg: &AppConfig,
    lister: Option<Arc<dyn PaginatedListStore>>,
    read_model: Store,
) {
    let life = &cfg.lifecycle;
    let watcher = life.watcher(lister);
    let state = (launch.js.clone(), launch.store.clone(), watcher);
    launch.spawn_intake(
        "upload-watcher",
        state,
        |(js, store, w), shutdown, running| async move {
            watcher::run(js, store, w, shutdown, running).await?;
            Ok(())
        },
    );

    // S3 POST policies can be used again until they expire; local links can't.
    let deleter = life.deleter(cfg.s3.is_some());
    let state = (launch.js.clone(), launch.store.clone(), deleter);
    launch.spawn_intake(
        "deleter",
        state,
        |(js, store, d), shutdown, running| async move {
            deleter::run(js, store, d, shutdown, running).await?;
            Ok(())
        },
    );

    let state = (
        launch.js.clone(),
        launch.client.clone(),
        read_model,
        life.reconciler(cfg.processor.retry.budget),
        life.sweeping(launch.store.clone(), cfg.api.download_link_ttl),
    );
    launch.spawn_intake(
        "reconciler",
        state,
        |(js, client, read_model, r, s), shutdown, running| async move {
            reconciler::run(js, client, read_model, r, s, shutdown, running).await?;
            Ok(())
        },
    );
}

/// The HTTP server on the bound `listener`, restarted on the same socket if it fails.
pub(crate) fn spawn_http(
    launch: &Launch,
    router: axum::Router,
    listener: std::net::TcpListener,
    serve_cfg: gallery_api::serve::ServeConfig,
) {
    let listener = Arc::new(listener);
    launch.supervisor.spawn(
        &launch.intake_tasks,
        "http",
        launch.intake.clone(),
        move |ctx| {
            let (router, listener) = (router.clone(), listener.clone());
            async move {
                let listener = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
                ctx.running();
                gallery_api::serve::serve(listener, router, serve_cfg, ctx.shutdown.clone())
                    .await?;
                Ok(())
            }
        },
    );
}

/// A processor's health port, which serves its metrics too (sampled from the log).
pub(crate) fn processor_health(launch: &Launch, board: &RoleBoard) -> axum::Router {
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
pub(crate) fn serve_metrics(
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
