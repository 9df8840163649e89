//! Runs the fold against the live log: catch up from the stored sequence with an ordered
//! consumer, commit each event, then publish it to subscribers. Also `rebuild`, which replays
//! the whole log into a fresh store and swaps it in.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use gallery_nats::{ReadError, StoredEvent, read};
use gallery_schema::subjects::{STREAM, STREAM_SUBJECTS};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::fold::apply;
use crate::store::{Store, StoreError};

/// Events fanned out to subscribers after they are committed. Subscribers that fall this far
/// behind see `Lagged` and are expected to resume from the log (the WebSocket closes with 1013).
const FANOUT_CAPACITY: usize = 4096;

/// What the api holds: the store for reads, the applied sequence to wait on, the fan-out.
#[derive(Clone)]
pub struct ProjectorHandle {
    pub store: Store,
    applied: watch::Receiver<u64>,
    events: broadcast::Sender<Arc<StoredEvent>>,
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

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.events.subscribe()
    }
}

pub struct Projector {
    store: Store,
    applied: watch::Sender<u64>,
    events: broadcast::Sender<Arc<StoredEvent>>,
}

impl Projector {
    pub fn new(store: Store) -> Result<Self, StoreError> {
        let (applied, _) = watch::channel(store.last_seq()?);
        let (events, _) = broadcast::channel(FANOUT_CAPACITY);
        Ok(Self {
            store,
            applied,
            events,
        })
    }

    pub fn handle(&self) -> ProjectorHandle {
        ProjectorHandle {
            store: self.store.clone(),
            applied: self.applied.subscribe(),
            events: self.events.clone(),
        }
    }

    /// Follows the log until `shutdown`; reconnects from the stored sequence after errors.
    pub async fn run(self, js: jetstream::Context, shutdown: CancellationToken) {
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.follow_once(&js, &shutdown) => r,
            };
            if let Err(err) = result {
                tracing::warn!(%err, "projector lost the log; resuming in 1 s");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
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
        let mut events = read::follow(js, STREAM_SUBJECTS.to_owned(), from).await?;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = events.next() => next,
            };
            match next {
                None => return Err(ProjectorError::Ended),
                Some(Ok(stored)) => self.apply_one(stored)?,
                Some(Err(ReadError::Decode { seq, source })) => {
                    tracing::error!(seq, %source, "skipping an undecodable event");
                    self.store.commit(seq, None)?;
                    self.applied.send_replace(seq);
                }
                Some(Err(err)) => return Err(err.into()),
            }
        }
    }

    fn apply_one(&self, stored: StoredEvent) -> Result<(), StoreError> {
        if stored.seq <= self.store.last_seq()? {
            return Ok(()); // already applied (a reconnect re-delivered it)
        }
        apply_to_store(&self.store, &stored)?;
        self.applied.send_replace(stored.seq);
        // No subscribers is normal.
        let _ = self.events.send(Arc::new(stored));
        Ok(())
    }
}

fn apply_to_store(store: &Store, stored: &StoredEvent) -> Result<(), StoreError> {
    let prev = store.get(&stored.event.image_id)?;
    match apply(prev, stored.seq, &stored.event) {
        Ok(rec) => store.commit(stored.seq, Some(&rec)),
        Err(err) => {
            tracing::warn!(
                seq = stored.seq,
                image_id = %stored.event.image_id,
                %err,
                "event refused by the fold; recorded as seen"
            );
            store.commit(stored.seq, None)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the ordered consumer ended")]
    Ended,
    #[error("stream info: {0}")]
    Info(String),
    #[error("swapping directories: {0}")]
    Io(#[from] std::io::Error),
}

/// Replays the whole log into a fresh store next to `dir` and swaps it in. The service must be
/// stopped (sled allows one process per directory). Returns the number of events applied.
pub async fn rebuild(js: &jetstream::Context, dir: &Path) -> Result<u64, ProjectorError> {
    let mut stream = js
        .get_stream(STREAM)
        .await
        .map_err(|e| ProjectorError::Info(e.to_string()))?;
    let last = stream
        .info()
        .await
        .map_err(|e| ProjectorError::Info(e.to_string()))?
        .state
        .last_sequence;
    let fresh_dir = sibling(dir, "rebuild");
    if fresh_dir.exists() {
        std::fs::remove_dir_all(&fresh_dir)?;
    }
    let fresh = Store::open(&fresh_dir)?;
    let mut applied = 0;
    if last > 0 {
        let mut events = read::follow(js, STREAM_SUBJECTS.to_owned(), 1).await?;
        while let Some(next) = events.next().await {
            let seq = match next {
                Ok(stored) => {
                    apply_to_store(&fresh, &stored)?;
                    applied += 1;
                    stored.seq
                }
                Err(ReadError::Decode { seq, .. }) => {
                    fresh.commit(seq, None)?;
                    seq
                }
                Err(err) => return Err(err.into()),
            };
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

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}.{suffix}"))
}
