//! Runs the fold against the live log: catch up from the stored sequence with an ordered
//! consumer, fold and commit the events in batches (`batch.rs`: every event already waiting,
//! one transaction per batch), then publish them to subscribers in order. Also `rebuild`, which
//! replays the whole log into a fresh store the same way and swaps it in.
//!
//! Two things are never skipped: an event of a kind this version doesn't know (a newer
//! replica wrote it) halts the projector, with a log line and a red `/ready`, until a build
//! that knows it takes over; and a record that can't be read back is re-folded from its
//! image's history rather than stopping the projector for everyone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use gallery_nats::{ReadError, StoredEvent, read};
use gallery_schema::subjects::STREAM_SUBJECTS;
use std::collections::HashMap;

use gallery_schema::ProjectId;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, MAX_BATCH};
use crate::store::{Store, StoreError};

/// Events of one project buffered for its subscribers after they are committed. Subscribers that
/// fall this far behind see `Lagged` and are expected to resume from the log (the WebSocket
/// closes with 1013).
const FANOUT_CAPACITY: usize = 1024;

/// Per-project fan-out: a socket wakes only for its own project's events, so the cost of an
/// event is its project's subscribers, not every socket of the process.
#[derive(Default)]
pub struct Fanout {
    channels: std::sync::Mutex<HashMap<ProjectId, broadcast::Sender<Arc<StoredEvent>>>>,
}

impl Fanout {
    pub fn subscribe(&self, project: &ProjectId) -> broadcast::Receiver<Arc<StoredEvent>> {
        let mut channels = self.channels.lock().expect("fanout lock");
        // Channels whose sockets are all gone (projects that got no event since): without this,
        // subscribing to ever new projects would grow the map for good.
        channels.retain(|_, tx| tx.receiver_count() > 0);
        channels
            .entry(project.clone())
            .or_insert_with(|| broadcast::channel(FANOUT_CAPACITY).0)
            .subscribe()
    }

    fn publish(&self, event: Arc<StoredEvent>) {
        let mut channels = self.channels.lock().expect("fanout lock");
        let project = &event.event.project_id;
        // A send with no receivers left fails: the project's last socket is gone.
        if let Some(tx) = channels.get(project)
            && tx.send(event.clone()).is_err()
        {
            channels.remove(project);
        }
    }

    /// Drops every channel: subscribers see `Closed` (the server is stopping).
    fn close_all(&self) {
        self.channels.lock().expect("fanout lock").clear();
    }

    /// Projects with at least one channel (tests).
    pub fn projects(&self) -> usize {
        self.channels.lock().expect("fanout lock").len()
    }
}

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
        loop {
            let chunk = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                chunk = chunks.next() => chunk,
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

/// Folds a chunk of the log into a batch, reading records from `store` (events at or below
/// `after` are re-deliveries and skipped). Returns the batch, the events folded (to publish in
/// order once committed), and what ended the chunk early: an event of a newer version or a
/// read error, after which nothing of the chunk is folded. A record that can't be read back is
/// re-folded from its image's history when `js` is given.
async fn fold_chunk(
    store: &Store,
    js: Option<&jetstream::Context>,
    chunk: Vec<Result<StoredEvent, ReadError>>,
    after: u64,
) -> Result<(Batch, Vec<StoredEvent>, Option<ProjectorError>), ProjectorError> {
    let mut batch = Batch::default();
    let mut folded = Vec::with_capacity(chunk.len());
    for next in chunk {
        match next {
            Ok(stored) if stored.seq <= after.max(batch.last_seq()) => {}
            Ok(stored) => {
                // Only what the fold takes goes to the live feed (a WebSocket replay leaves
                // out the same events, by the records' `refused`).
                let accepted = match batch.fold(&stored, store) {
                    Ok(accepted) => accepted,
                    Err(StoreError::Corrupt(err)) if js.is_some() => {
                        tracing::error!(
                            image_id = %stored.event.image_id,
                            %err,
                            "a stored record can't be read; re-folding it from the image's history"
                        );
                        let rec = refold(js.expect("checked"), &stored).await?;
                        let accepted = rec
                            .as_ref()
                            .is_some_and(|r| !r.refused.contains(&stored.seq));
                        if let Some(rec) = rec {
                            batch.set(rec);
                        }
                        batch.seen(stored.seq);
                        accepted
                    }
                    Err(err) => return Err(err.into()),
                };
                if accepted {
                    folded.push(stored);
                }
            }
            Err(ReadError::Decode { seq, .. }) if seq <= after.max(batch.last_seq()) => {}
            Err(ReadError::Decode { seq, source }) => {
                tracing::error!(seq, %source, "skipping an undecodable event");
                batch.seen(seq);
            }
            Err(ReadError::UnknownKind { seq, kind, .. }) => {
                return Ok((
                    batch,
                    folded,
                    Some(ProjectorError::NewerEvent { seq, kind }),
                ));
            }
            Err(err) => return Ok((batch, folded, Some(err.into()))),
        }
    }
    Ok((batch, folded, None))
}

/// The image's record as its whole history up to and including `upto` folds it, read from the
/// log (a handful of events).
async fn refold(
    js: &jetstream::Context,
    upto: &StoredEvent,
) -> Result<Option<crate::Record>, ProjectorError> {
    let filter =
        gallery_schema::subjects::image_filter(&upto.event.project_id, &upto.event.image_id);
    let history = read::read_until_now(js, filter, 1, Duration::from_secs(30)).await?;
    Ok(fold_history(history.iter().filter(|e| e.seq <= upto.seq)))
}

/// Folds one image's events in order, skipping those the fold refuses (as the live runner does).
pub fn fold_history<'a>(
    events: impl IntoIterator<Item = &'a StoredEvent>,
) -> Option<crate::Record> {
    let mut record = None;
    for e in events {
        record = crate::fold::fold_event(record, e.seq, &e.event).0;
    }
    record
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the ordered consumer ended")]
    Ended,
    #[error("event at seq {seq} is of kind {kind:?}, which this version doesn't know")]
    NewerEvent { seq: u64, kind: String },
    #[error("stream info: {0}")]
    Info(String),
    #[error("the read model's store is stuck: {0}")]
    Stuck(String),
    #[error("swapping directories: {0}")]
    Io(#[from] std::io::Error),
}

/// Replays the whole log into a fresh store next to `dir` and swaps it in. The service must be
/// stopped (sled allows one process per directory). Returns the number of events applied.
pub async fn rebuild(js: &jetstream::Context, dir: &Path) -> Result<u64, ProjectorError> {
    let last = gallery_nats::last_seq(js)
        .await
        .map_err(|e| ProjectorError::Info(e.0))?;
    let fresh_dir = sibling(dir, "rebuild");
    if fresh_dir.exists() {
        std::fs::remove_dir_all(&fresh_dir)?;
    }
    let fresh = Store::open(&fresh_dir)?;
    let mut applied = 0;
    if last > 0 {
        let mut chunks = read::follow(js, STREAM_SUBJECTS.to_owned(), 1)
            .await?
            .ready_chunks(MAX_BATCH);
        while let Some(chunk) = chunks.next().await {
            let (batch, folded, stop) = fold_chunk(&fresh, None, chunk, 0).await?;
            let seq = batch.last_seq();
            if !batch.is_empty() {
                fresh.commit_batch(seq, batch.into_records().iter())?;
            }
            applied += folded.len() as u64;
            if let Some(err) = stop {
                return Err(err);
            }
            if seq >= last {
                break;
            }
        }
    }
    fresh.flush().await?;
    drop(fresh);
    let old_dir = sibling(dir, "old");
    if dir.exists() {
        if old_dir.exists() {
            std::fs::remove_dir_all(&old_dir)?;
        }
        std::fs::rename(dir, &old_dir)?;
    }
    std::fs::rename(&fresh_dir, dir)?;
    if old_dir.exists() {
        std::fs::remove_dir_all(&old_dir)?;
    }
    Ok(applied)
}

/// `<dir>.<suffix>` next to `dir`: where a store is built aside before it is moved into place.
pub fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
