//! The long-running roles of a process, each started under supervision
//! ([`crate::supervise`]) with the configuration it needs: the processor, the projector, and an
//! api process's background roles (`gallery-lifecycle`: upload watcher, deleter, reconciler),
//! and the HTTP server.
//! [`crate::app::start`] decides which of them run.

use std::sync::Arc;

use gallery_lifecycle::{deleter, reconciler, sweeper, watcher};
use gallery_processor::ProcessorConfig;
use gallery_projector::{Projector, Store};
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
    let watcher = watcher::WatcherConfig {
        import: cfg.import.clone(),
        grace: cfg.upload_grace,
        scan: lister.map(|lister| watcher::ScanConfig {
            lister,
            every: cfg.upload_scan_every,
        }),
    };
    let state = (launch.js.clone(), launch.store.clone(), watcher);
    launch.spawn_intake(
        "upload-watcher",
        state,
        |(js, store, w), shutdown, running| async move {
            watcher::run(js, store, w, shutdown, running).await?;
            Ok(())
        },
    );

    let deleter = deleter::DeleterConfig {
        settle: cfg.delete_settle,
        upload_grace: cfg.upload_grace,
        reusable_links: cfg.s3.is_some(),
        ..Default::default()
    };
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
        reconciler_config(cfg),
        sweeping(cfg, launch.store.clone()),
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

fn reconciler_config(cfg: &AppConfig) -> reconciler::ReconcilerConfig {
    reconciler::ReconcilerConfig {
        every: cfg.reconcile_every,
        stuck_after: cfg.redrive_after,
        processing_after: cfg.retry_budget + cfg.redrive_after,
    }
}

fn sweeping(cfg: &AppConfig, objects: Arc<dyn ObjectStore>) -> reconciler::Sweeping {
    reconciler::Sweeping {
        objects,
        policy: cfg.sweep_policy.clone().unwrap_or_else(|| {
            sweeper::SweepPolicy::for_links(cfg.download_link_ttl, cfg.sweep_retention)
        }),
        every: cfg.sweep_every,
    }
}
