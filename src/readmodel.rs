//! The api role's read model on disk: one process per directory, guarded by a lock file that
//! `gallery rebuild` checks too, and rebuilt from the log at start when it can't be opened
//! (damaged files, a record format from another version). The model is disposable; the log is
//! the source of truth (docs/ARCHITECTURE.md §8).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use gallery_projector::Store;
use nix::fcntl::{Flock, FlockArg};

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

/// Opens the read model; when that fails, moves the damaged directory aside and rebuilds it
/// from the log. The caller holds the lock.
pub async fn open_or_rebuild(
    js: &async_nats::jetstream::Context,
    data_dir: &Path,
) -> anyhow::Result<Store> {
    let dir = dir(data_dir);
    let opened = {
        let dir = dir.clone();
        // sled can panic on some damaged files rather than return an error.
        tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(|| Store::open(&dir)).map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "sled panicked".to_owned())
            })
        })
        .await?
    };
    let err = match opened {
        Ok(Ok(store)) => return Ok(store),
        Ok(Err(err)) => err.to_string(),
        Err(panic) => panic,
    };
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
    let started = std::time::Instant::now();
    let applied = gallery_projector::rebuild(js, &dir)
        .await
        .context("rebuilding the read model from the log")?;
    tracing::warn!(
        events = applied,
        took = ?started.elapsed(),
        "read model rebuilt from the log"
    );
    Store::open(&dir).context("opening the rebuilt read model")
}

fn chrono_like_stamp(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
