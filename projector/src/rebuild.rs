//! `gallery rebuild` (and the api's repair of a damaged model): the whole log folded into a
//! fresh store beside the model's directory, the same way the live runner folds it, then
//! swapped in.

use std::path::{Path, PathBuf};

use async_nats::jetstream;
use futures::StreamExt;
use gallery_nats::read;
use gallery_schema::subjects::STREAM_SUBJECTS;

use crate::batch::MAX_BATCH;
use crate::chunk::{ProjectorError, fold_chunk};
use crate::store::Store;

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
