//! The sweeps a reconciler runs (`sweeper.rs` does the work): an operator's `gallery sweep` on
//! any replica, and the acting replica's periodic one every `Sweeping::every`. A sweep lists the
//! whole store (minutes for a big one, longer when the store hangs), so each runs as a task of
//! its own beside the reconciler's loop, which keeps renewing the lease and answering the other
//! requests; sweeps take turns, a request waiting for the one running.

use std::sync::Arc;
use std::time::Duration;

use gallery_projector::Store;
use object_store::ObjectStore;
use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;

use super::requests::respond;
use crate::sweeper::{SweepPolicy, SweepReport, SweepRequest};

/// The store the sweeper cleans, its policy, and how often the acting replica sweeps
/// (`None`: only on request).
#[derive(Clone)]
pub struct Sweeping {
    pub objects: Arc<dyn ObjectStore>,
    pub policy: SweepPolicy,
    pub every: Option<Duration>,
}

/// The sweeps in progress, and when the periodic one is due.
pub(super) struct Sweeps {
    sweeping: Sweeping,
    /// One sweep at a time.
    turn: Arc<Semaphore>,
    /// The periodic sweep (one at a time).
    periodic: Option<JoinHandle<()>>,
    /// When the last periodic sweep started; `None` while not acting, so the first one comes
    /// one interval after taking the lease, not at start.
    last_periodic: Option<Instant>,
    /// Operators' sweeps, as they come.
    requested: JoinSet<()>,
}

impl Sweeps {
    pub(super) fn new(sweeping: Sweeping) -> Self {
        Self {
            sweeping,
            turn: Arc::new(Semaphore::new(1)),
            periodic: None,
            last_periodic: None,
            requested: JoinSet::new(),
        }
    }

    /// Starts an operator's sweep; it replies when done.
    pub(super) fn answer(
        &mut self,
        msg: async_nats::Message,
        store: &Store,
        client: &async_nats::Client,
    ) {
        let (sweeping, store, client) = (self.sweeping.clone(), store.clone(), client.clone());
        let one_at_a_time = self.turn.clone();
        self.requested.spawn(async move {
            let _turn = one_at_a_time.acquire_owned().await;
            let reply = answer_sweep(&sweeping, &store, &msg.payload).await;
            respond(&client, msg.reply, &reply).await;
        });
    }

    /// Whether an operator's sweep is running (the loop then waits for it to end).
    pub(super) fn any_requested(&self) -> bool {
        !self.requested.is_empty()
    }

    /// The end of the next operator's sweep.
    pub(super) async fn next_requested(&mut self) -> Option<Result<(), JoinError>> {
        self.requested.join_next().await
    }

    /// Another replica acts now: its sweeps replace ours.
    pub(super) fn lease_lost(&mut self) {
        self.last_periodic = None;
        if let Some(sweep) = self.periodic.take() {
            sweep.abort();
        }
    }

    /// While acting: notes a periodic sweep that ended, and starts the next when it is due.
    pub(super) async fn tick(&mut self, store: &Store) {
        if let Some(done) = self.periodic.take_if(|h| h.is_finished())
            && let Err(e) = done.await
            && e.is_panic()
        {
            tracing::error!("the periodic sweep panicked: {e}");
        }
        let Some(every) = self.sweeping.every else {
            return;
        };
        let running = self.periodic.is_some();
        match self.last_periodic {
            None => self.last_periodic = Some(Instant::now()),
            Some(t) if t.elapsed() >= every && !running => {
                self.last_periodic = Some(Instant::now());
                self.periodic = Some(self.start_periodic(store));
            }
            Some(_) => {}
        }
    }

    fn start_periodic(&self, store: &Store) -> JoinHandle<()> {
        let (sweeping, store) = (self.sweeping.clone(), store.clone());
        let one_at_a_time = self.turn.clone();
        tokio::spawn(async move {
            let _turn = one_at_a_time.acquire_owned().await;
            let report =
                crate::sweeper::sweep(sweeping.objects.as_ref(), &store, &sweeping.policy, false)
                    .await;
            if let Err(e) = report {
                tracing::warn!("sweep failed: {e}");
            }
        })
    }

    /// Stopping: a sweep in progress is abandoned (what it removed stays removed; the next one
    /// finds the rest).
    pub(super) fn abandon(&mut self) {
        if let Some(sweep) = self.periodic.take() {
            sweep.abort();
        }
        self.requested.abort_all();
    }
}

/// Logs an operator's sweep that panicked.
pub(super) fn report_requested(done: Result<(), JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!("an operator's sweep panicked: {e}");
    }
}

async fn answer_sweep(sweeping: &Sweeping, store: &Store, payload: &[u8]) -> SweepReport {
    // A request that doesn't parse is refused, never read as "for real".
    let req = match serde_json::from_slice::<SweepRequest>(payload) {
        Ok(req) => req,
        Err(e) => {
            return SweepReport {
                error: Some(format!("not a sweep request: {e}")),
                ..Default::default()
            };
        }
    };
    crate::sweeper::sweep(
        sweeping.objects.as_ref(),
        store,
        &sweeping.policy,
        req.dry_run,
    )
    .await
    .unwrap_or_else(|e| SweepReport {
        dry_run: req.dry_run,
        error: Some(format!("listing the store: {e}")),
        ..Default::default()
    })
}
