//! The api role's read model on disk: one process per directory, guarded by a lock file that
//! `gallery rebuild` checks too, restored from the newest snapshot when the directory doesn't
//! exist yet, and rebuilt from the log at start when it can't be opened (damaged files, a
//! record format from another version). The model is disposable; the log is the source of
//! truth (docs/ARCHITECTURE.md §8).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use nix::fcntl::{Flock, FlockArg};
use object_store::ObjectStore;

use crate::rebuild::rebuild;
use crate::record::RECORD_VERSION;
use crate::snapshot::SnapshotInfo;
use crate::store::{Store, StoreError};

/// Held for as long as a process uses the read model under a data dir.
pub struct ReadModelLock {
    _lock: Flock<File>,
}

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("readmodel")
}

/// Takes the data dir's read-model lock, or says who holds it.
pub fn lock(data_dir: &Path) -> anyhow::Result<ReadModelLock> {
    let path = data_dir.join("readmodel.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(ReadModelLock { _lock: lock }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => anyhow::bail!(
            "the read model in {} is in use by a running gallery (api or up); stop it first",
            data_dir.display()
        ),
        Err((_, errno)) => Err(anyhow::anyhow!("locking {}: {errno}", path.display())),
    }
}

/// Where a process's read model came from at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The directory held one (or nothing yet: a new deployment).
    Opened,
    /// Restored from the newest snapshot; the projector folds the log from after its sequence.
    Restored(SnapshotInfo),
    /// Rebuilt from the whole log (the directory was damaged).
    Rebuilt { events: u64 },
}

/// Opens the read model. A directory that doesn't exist is first restored from the newest
/// snapshot in `snapshots` (if any); one that can't be opened is moved aside and rebuilt from
/// the log. The caller holds the lock.
pub async fn open_or_rebuild(
    js: &async_nats::jetstream::Context,
    data_dir: &Path,
    snapshots: &dyn ObjectStore,
) -> anyhow::Result<(Store, Origin)> {
    let dir = dir(data_dir);
    if !dir.exists()
        && let Some(info) = restore(js, snapshots, &dir).await
    {
        let store = Store::open(&dir).context("opening the restored read model")?;
        return Ok((store, Origin::Restored(info)));
    }
    let err = match open_catching_panics(&dir).await? {
        Ok(Ok(store)) => return Ok((store, Origin::Opened)),
        Ok(Err(StoreError::Version(old))) => {
            // An upgrade that changed the record format: expected, and the model is
            // disposable. A snapshot of this build's format (another replica's) saves folding
            // the whole log.
            tracing::warn!(
                dir = %dir.display(),
                old,
                new = RECORD_VERSION,
                "the read model has another record format; replacing it"
            );
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            if let Some(info) = restore(js, snapshots, &dir).await {
                let store = Store::open(&dir).context("opening the restored read model")?;
                return Ok((store, Origin::Restored(info)));
            }
            format!("record format {old}")
        }
        Ok(Err(err)) => err.to_string(),
        Err(panic) => panic,
    };
    if !dir.exists() {
        // Replaced above: nothing to keep aside.
        return rebuild_from_log(js, &dir).await;
    }
    let aside = data_dir.join(format!(
        "readmodel.damaged-{}",
        chrono_like_stamp(std::time::SystemTime::now())
    ));
    tracing::error!(
        dir = %dir.display(),
        error = %err,
        moved_to = %aside.display(),
        "the read model can't be opened; rebuilding it from the log"
    );
    std::fs::rename(&dir, &aside).with_context(|| format!("moving {} aside", dir.display()))?;
    rebuild_from_log(js, &dir).await
}

/// Opens the model in `dir` off the runtime's threads; a panic (sled panics on some damaged
/// files rather than return an error) is the outer `Err`, with its message.
async fn open_catching_panics(
    dir: &Path,
) -> anyhow::Result<Result<Result<Store, StoreError>, String>> {
    let dir = dir.to_path_buf();
    Ok(tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(|| Store::open(&dir)).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "sled panicked".to_owned())
        })
    })
    .await?)
}

/// Folds the whole log into a new model in `dir` (which must not exist).
async fn rebuild_from_log(
    js: &async_nats::jetstream::Context,
    dir: &Path,
) -> anyhow::Result<(Store, Origin)> {
    let started = std::time::Instant::now();
    let applied = rebuild(js, dir)
        .await
        .context("rebuilding the read model from the log")?;
    tracing::warn!(
        events = applied,
        took = ?started.elapsed(),
        "read model rebuilt from the log"
    );
    let store = Store::open(dir).context("opening the rebuilt read model")?;
    Ok((store, Origin::Rebuilt { events: applied }))
}

/// The newest snapshot restored into `dir`, or `None` (none there, the stream doesn't hold its
/// tail, or it failed: then the projector folds the log from the start, as without one).
async fn restore(
    js: &async_nats::jetstream::Context,
    snapshots: &dyn ObjectStore,
    dir: &Path,
) -> Option<SnapshotInfo> {
    let (first_seq, last_seq) = match gallery_nats::stream_bounds(js).await {
        Ok(bounds) => bounds,
        Err(err) => {
            tracing::warn!(%err, "no snapshot restore");
            return None;
        }
    };
    match crate::snapshots::restore(snapshots, dir, first_seq, last_seq).await {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(
                err = format!("{err:#}"),
                "the newest read-model snapshot can't be restored; folding the log from the start"
            );
            None
        }
    }
}

fn chrono_like_stamp(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
