//! Role supervision: every long-running role (processor, projector, upload watcher, deleter,
//! reconciler, http) runs under [`Supervisor::spawn`]. A role that ends while the process is not stopping, by an error
//! or a panic, is restarted with backoff (1 s doubling to 30 s) and named on `/ready` while it
//! is down. A role that fails [`START_ATTEMPTS`] times without ever reporting itself running
//! can't start at all: the supervisor reports it as fatal and the process exits non-zero, so an
//! orchestrator restarts it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gallery_api::{RoleBoard, RoleState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Failed starts, in a row and before the role ever ran, after which the process gives up.
pub const START_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a role gets from its supervisor on each start.
#[derive(Clone)]
pub struct RoleCtx {
    name: &'static str,
    board: RoleBoard,
    ran: Arc<AtomicBool>,
    /// Fires when the role must stop.
    pub shutdown: CancellationToken,
}

impl RoleCtx {
    /// The role is serving: `/ready` stops naming it.
    pub fn running(&self) {
        self.ran.store(true, Ordering::Relaxed);
        self.board.set(self.name, RoleState::Running);
    }
}

#[derive(Clone)]
pub struct Supervisor {
    board: RoleBoard,
    fatal: mpsc::UnboundedSender<anyhow::Error>,
}

impl Supervisor {
    /// A supervisor and the receiver of fatal role failures.
    pub fn new(board: RoleBoard) -> (Self, mpsc::UnboundedReceiver<anyhow::Error>) {
        let (fatal, rx) = mpsc::unbounded_channel();
        (Self { board, fatal }, rx)
    }

    /// Runs a role (started anew by calling `make` each time) on `tasks` until `shutdown` fires.
    /// [`spawn`](Self::spawn) for a role that reports itself running once it serves: each
    /// (re)start calls `run` with a fresh clone of `state`, the shutdown token, and the
    /// callback that marks the role running.
    pub fn spawn_role<S, F, Fut>(
        &self,
        tasks: &TaskTracker,
        name: &'static str,
        shutdown: CancellationToken,
        state: S,
        run: F,
    ) where
        S: Clone + Send + 'static,
        F: Fn(S, CancellationToken, Box<dyn FnOnce() + Send>) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.spawn(tasks, name, shutdown, move |ctx| {
            let shutdown = ctx.shutdown.clone();
            run(state.clone(), shutdown, Box::new(move || ctx.running()))
        });
    }

    pub fn spawn<F, Fut>(
        &self,
        tasks: &TaskTracker,
        name: &'static str,
        shutdown: CancellationToken,
        mut make: F,
    ) where
        F: FnMut(RoleCtx) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let board = self.board.clone();
        let fatal = self.fatal.clone();
        board.set(name, RoleState::Starting);
        tasks.spawn(async move {
            let ran = Arc::new(AtomicBool::new(false));
            let mut restarts = 0u32;
            let mut backoff = FIRST_BACKOFF;
            loop {
                let ctx = RoleCtx {
                    name,
                    board: board.clone(),
                    ran: ran.clone(),
                    shutdown: shutdown.clone(),
                };
                // Its own task, so a panic ends this run of the role, not the supervisor.
                let result = match tokio::spawn(make(ctx)).await {
                    Ok(result) => result,
                    Err(join) => Err(anyhow::anyhow!("panicked: {join}")),
                };
                if shutdown.is_cancelled() {
                    if let Err(err) = result {
                        tracing::warn!(role = name, "stopped with an error: {err:#}");
                    }
                    return;
                }
                let error = match result {
                    Ok(()) => "ended unexpectedly".to_owned(),
                    Err(err) => format!("{err:#}"),
                };
                restarts += 1;
                board.set(
                    name,
                    RoleState::Restarting {
                        error: error.clone(),
                        restarts,
                    },
                );
                if !ran.load(Ordering::Relaxed) && restarts >= START_ATTEMPTS {
                    tracing::error!(role = name, %error, "role could not start; giving up");
                    let _ = fatal.send(anyhow::anyhow!(
                        "role {name} could not start after {restarts} attempts: {error}"
                    ));
                    return;
                }
                tracing::error!(role = name, %error, restarts, "role stopped; restarting in {backoff:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[tokio::test(start_paused = true)]
    async fn a_role_that_fails_after_running_is_restarted_and_shown_down() {
        let board = RoleBoard::default();
        let (sup, mut fatal) = Supervisor::new(board.clone());
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        sup.spawn(&tasks, "worker", stop.clone(), move |ctx| {
            let counter = counter.clone();
            async move {
                ctx.running();
                if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
                ctx.shutdown.cancelled().await;
                Ok(())
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(matches!(
            board.get("worker"),
            Some(RoleState::Restarting { restarts: 1, .. })
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(board.get("worker"), Some(RoleState::Running));
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        assert!(fatal.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_role_that_never_starts_is_fatal() {
        let board = RoleBoard::default();
        let (sup, mut fatal) = Supervisor::new(board.clone());
        sup.spawn(
            &TaskTracker::new(),
            "broken",
            CancellationToken::new(),
            |_ctx| async { Err(anyhow::anyhow!("no such bucket")) },
        );
        let err = tokio::time::timeout(Duration::from_secs(120), fatal.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(err.to_string().contains("no such bucket"), "{err}");
        assert!(board.problems()[0].starts_with("broken: down"));
    }
}
