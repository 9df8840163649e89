//! Runs the fold against the live log: catch up from the stored sequence with an ordered
//! consumer, fold and commit the events in batches (`batch.rs`: every event already waiting,
//! one transaction per batch; `chunk.rs`: one chunk of the log into a batch), then publish them
//! to subscribers in order (`fanout.rs`). `rebuild.rs` replays the whole log into a fresh store
//! the same way and swaps it in.
//!
//! Two things are never skipped: an event of a kind this version doesn't know (a newer
//! replica wrote it) halts the projector, with a log line and a red `/ready`, until a build
//! that knows it takes over; and a record that can't be read back is re-folded from its
//! image's history rather than stopping the projector for everyone.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use gallery_nats::{StoredEvent, read};
use gallery_schema::ProjectId;
use gallery_schema::subjects::STREAM_SUBJECTS;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::batch::MAX_BATCH;
use crate::chunk::{ProjectorError, fold_chunk};
use crate::fanout::Fanout;
use crate::store::{Store, StoreError};

/// What the api holds: the store for reads, the applied sequence to wait on, the fan-out.
#[derive(Clone)]
pub struct ProjectorHandle {
    pub store: Store,
    applied: watch::Receiver<u64>,
    halted: watch::Receiver<Option<String>>,
    fanout: Arc<Fanout>,
}

impl ProjectorHandle {
    pub fn applied_seq(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the model has applied `seq` (read-your-writes), up to `limit`.
    pub async fn wait_for(&self, seq: u64, limit: Duration) -> bool {
        let mut rx = self.applied.clone();
        tokio::time::timeout(limit, rx.wait_for(|applied| *applied >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Whether the read model took `stored` in (the rule of the live feed, for replays): it
    /// waits up to `limit` for the model to reach the event; an event it hasn't reached by
    /// then, or whose record can't be read, counts as taken. An image the model doesn't know
    /// has no events it took.
    pub async fn accepted(&self, stored: &StoredEvent, limit: Duration) -> bool {
        if !self.wait_for(stored.seq, limit).await {
            return true;
        }
        match self.store.get(&stored.event.image_id) {
            Ok(Some(rec)) => !rec.refused.contains(&stored.seq),
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Committed events of `project`, from now on.
    pub fn subscribe(&self, project: &ProjectId) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.fanout.subscribe(project)
    }

    pub fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// Why the projector stopped applying events, if it did.
    pub fn halted(&self) -> Option<String> {
        self.halted.borrow().clone()
    }
}

pub struct Projector {
    store: Store,
    applied: watch::Sender<u64>,
    halted: watch::Sender<Option<String>>,
    fanout: Arc<Fanout>,
}

impl Projector {
    pub fn new(store: Store) -> Result<Self, StoreError> {
        let (applied, _) = watch::channel(store.last_seq()?);
        let (halted, _) = watch::channel(None);
        Ok(Self {
            store,
            applied,
            halted,
            fanout: Arc::default(),
        })
    }

    pub fn handle(&self) -> ProjectorHandle {
        ProjectorHandle {
            store: self.store.clone(),
            applied: self.applied.subscribe(),
            halted: self.halted.subscribe(),
            fanout: self.fanout.clone(),
        }
    }

    /// Follows the log until `shutdown`; reconnects from the stored sequence after errors.
    /// An event from a newer version halts it (until `shutdown`).
    pub async fn run(&self, js: jetstream::Context, shutdown: CancellationToken) {
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.follow_once(&js, &shutdown) => r,
            };
            match result {
                Err(err @ ProjectorError::NewerEvent { .. }) => {
                    tracing::error!(
                        %err,
                        "projector halted: this version can't fold an event a newer version \
                         wrote; upgrade this replica (nothing was skipped)"
                    );
                    self.halted.send_replace(Some(err.to_string()));
                    shutdown.cancelled().await;
                    break;
                }
                Err(err @ ProjectorError::Stuck(_)) => {
                    tracing::error!(
                        %err,
                        "projector halted: the read model's store stopped answering; restart \
                         this process (the log keeps every event; nothing was skipped)"
                    );
                    self.halted.send_replace(Some(err.to_string()));
                    shutdown.cancelled().await;
                    break;
                }
                Err(err) => tracing::warn!(%err, "projector lost the log; resuming in 1 s"),
                Ok(()) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        self.fanout.close_all();
        if let Err(err) = self.store.flush().await {
            tracing::error!(%err, "flushing the read model");
        }
    }

    async fn follow_once(
        &self,
        js: &jetstream::Context,
        shutdown: &CancellationToken,
    ) -> Result<(), ProjectorError> {
        let from = self.store.last_seq()? + 1;
        // Every event already waiting, up to a batch: one under a trickle, thousands when
        // catching up.
        let mut chunks = read::follow(js, STREAM_SUBJECTS.to_owned(), from)
            .await?
            .ready_chunks(MAX_BATCH);
        let mut watch = StallWatch::default();
        loop {
            let chunk = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                chunk = chunks.next() => chunk,
                _ = tokio::time::sleep(STALL_CHECK) => {
                    let applied = self.store.last_seq()?;
                    // Unreadable stream info says nothing: the next check asks again.
                    if let Ok(last) = gallery_nats::last_seq(js).await {
                        watch.check(applied, last)?;
                    }
                    continue;
                }
            };
            let Some(chunk) = chunk else {
                return Err(ProjectorError::Ended);
            };
            let after = self.store.last_seq()?;
            let (batch, folded, stop) = fold_chunk(&self.store, Some(js), chunk, after).await?;
            if !batch.is_empty() {
                let seq = batch.last_seq();
                let (store, records) = (self.store.clone(), batch.into_records());
                within(COMMIT_DEADLINE, move || {
                    store.commit_batch(seq, records.iter())
                })
                .await?;
                self.applied.send_replace(seq);
                for stored in folded {
                    self.fanout.publish(Arc::new(stored));
                }
            }
            if let Some(err) = stop {
                return Err(err);
            }
        }
    }
}

/// How long the follow may be idle before the projector asks the log whether it is behind.
const STALL_CHECK: Duration = Duration::from_secs(2);

/// Tells a quiet log from a follow that stopped delivering (a server restart or a moved leader
/// the client has not noticed yet; its own heartbeat check takes up to half a minute): behind
/// the log at two idle checks in a row, with nothing applied in between, is stalled. Pure.
#[derive(Debug, Default)]
struct StallWatch {
    /// The log's last sequence at the previous idle check, when the model was behind it.
    behind: Option<u64>,
}

impl StallWatch {
    fn check(&mut self, applied: u64, last: u64) -> Result<(), ProjectorError> {
        match self.behind {
            Some(seen) if applied < seen => Err(ProjectorError::Stalled { applied, last }),
            _ => {
                self.behind = (last > applied).then_some(last);
                Ok(())
            }
        }
    }
}

/// How long one batch's commit may take before the store counts as stuck. sled 0.34 can
/// deadlock under heavy writes (spacejam/sled#1412; seen once in our read-model bench): the
/// projector then halts and `/ready` says so, so that the process gets restarted, instead of
/// silently serving an ever older read model.
pub const COMMIT_DEADLINE: Duration = Duration::from_secs(30);

/// Runs a blocking store call on the blocking pool, waiting at most `deadline` for it (a
/// stuck call keeps its thread; the caller goes on).
async fn within<T: Send + 'static>(
    deadline: Duration,
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ProjectorError> {
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(call)).await {
        Ok(Ok(result)) => Ok(result?),
        Ok(Err(panicked)) => Err(ProjectorError::Stuck(format!(
            "a commit panicked: {panicked}"
        ))),
        Err(_) => Err(ProjectorError::Stuck(format!(
            "a commit took over {} s",
            deadline.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follow_behind_the_log_at_two_idle_checks_is_stalled() {
        // A quiet log: never stalled.
        let mut watch = StallWatch::default();
        for _ in 0..5 {
            watch.check(10, 10).unwrap();
        }
        // Behind once (an event on its way), then caught up: not stalled.
        let mut watch = StallWatch::default();
        watch.check(10, 12).unwrap();
        watch.check(12, 12).unwrap();
        watch.check(12, 12).unwrap();
        // Behind, and nothing applied up to what the log had then: stalled.
        let mut watch = StallWatch::default();
        watch.check(10, 12).unwrap();
        assert!(matches!(
            watch.check(11, 14),
            Err(ProjectorError::Stalled {
                applied: 11,
                last: 14
            })
        ));
        // Behind twice but moving past the first check's end: a busy log, not a stall.
        let mut watch = StallWatch::default();
        watch.check(10, 12).unwrap();
        watch.check(12, 15).unwrap();
        watch.check(15, 15).unwrap();
    }

    #[tokio::test]
    async fn a_store_call_past_its_deadline_counts_as_stuck() {
        let fast = within(Duration::from_secs(5), || Ok(7)).await.unwrap();
        assert_eq!(fast, 7);
        let slow = within(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        })
        .await;
        assert!(matches!(slow, Err(ProjectorError::Stuck(_))), "{slow:?}");
        let panicked = within(Duration::from_secs(5), || -> Result<(), StoreError> {
            panic!("sled panicked")
        })
        .await;
        assert!(
            matches!(panicked, Err(ProjectorError::Stuck(_))),
            "{panicked:?}"
        );
    }
}
