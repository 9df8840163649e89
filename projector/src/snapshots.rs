//! Read-model snapshots in the object store (docs/ARCHITECTURE.md §8; the file format is
//! `snapshot.rs`). The api writes one
//! every `GALLERY_SNAPSHOT_INTERVAL` when the model has moved on since the newest one there; an
//! api replica that starts on an empty data dir restores the newest and then follows the log
//! from the sequence it covers, so its start-up time depends on the number of images, not on
//! the length of the log. `gallery rebuild` (from the first event) stays available.
//!
//! Keys: `snapshots/readmodel/<last_seq, 20 digits>.lgsnap.zst`, so the newest sorts last.
//! The three newest are kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::rebuild::sibling;
use crate::snapshot::SnapshotInfo;
use crate::store::Store;

pub const PREFIX: &str = "snapshots/readmodel/";
const SUFFIX: &str = ".lgsnap.zst";
/// Snapshots kept in the object store; older ones are deleted after a new one is written.
pub const KEEP: usize = 3;
/// zstd level: fast enough to write a million records in seconds, about 8x smaller than JSON.
const LEVEL: i32 = 3;

pub fn key(last_seq: u64) -> String {
    format!("{PREFIX}{last_seq:020}{SUFFIX}")
}

/// The sequence a snapshot key covers (`None`: not a snapshot key).
pub fn seq_of(key: &str) -> Option<u64> {
    let digits = key.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The snapshots in the store, oldest first.
pub async fn list(objects: &dyn ObjectStore) -> anyhow::Result<Vec<(u64, ObjectMeta)>> {
    let mut found = Vec::new();
    let mut listing = objects.list(Some(&ObjectPath::from(PREFIX)));
    while let Some(meta) = listing.next().await {
        let meta = meta.context("listing snapshots")?;
        if let Some(seq) = seq_of(meta.location.as_ref()) {
            found.push((seq, meta));
        }
    }
    found.sort_by_key(|(seq, _)| *seq);
    Ok(found)
}

/// Writes a snapshot of `store` through a scratch file in `scratch_dir`, uploads it, and
/// deletes all but the [`KEEP`] newest.
pub async fn write(
    store: &Store,
    objects: &Arc<dyn ObjectStore>,
    scratch_dir: &Path,
) -> anyhow::Result<SnapshotInfo> {
    let started = Instant::now();
    let scratch = scratch_dir.join("readmodel.snapshot.tmp");
    let (st, path) = (store.clone(), scratch.clone());
    let info = tokio::task::spawn_blocking(move || -> anyhow::Result<SnapshotInfo> {
        let file = std::fs::File::create(&path)?;
        let mut encoder = zstd::Encoder::new(file, LEVEL)?;
        let info = st.write_snapshot(&mut encoder)?;
        encoder.finish()?.sync_all()?;
        Ok(info)
    })
    .await??;
    let target = ObjectPath::from(key(info.last_seq));
    let mut upload = object_store::buffered::BufWriter::new(objects.clone(), target.clone());
    let mut file = tokio::fs::File::open(&scratch).await?;
    tokio::io::copy(&mut file, &mut upload)
        .await
        .with_context(|| format!("uploading {target}"))?;
    upload
        .shutdown()
        .await
        .with_context(|| format!("uploading {target}"))?;
    let bytes = tokio::fs::metadata(&scratch).await?.len();
    tokio::fs::remove_file(&scratch).await.ok();
    let all = list(objects.as_ref()).await?;
    for (_, old) in all.iter().rev().skip(KEEP) {
        if let Err(err) = objects.delete(&old.location).await {
            tracing::warn!(%err, key = %old.location, "deleting an old snapshot");
        }
    }
    tracing::info!(
        last_seq = info.last_seq,
        records = info.records,
        bytes,
        took = ?started.elapsed(),
        "read-model snapshot written"
    );
    metrics::counter!("gallery_readmodel_snapshots_written_total").increment(1);
    metrics::gauge!("gallery_readmodel_snapshot_seq").set(info.last_seq as f64);
    Ok(info)
}

/// Builds the read model in `dir` (which must not exist) from the newest snapshot, if there is
/// one that fits the log: the log must still hold the events after it, and must have reached
/// it (`first_seq`, `last_seq`: the stream's). `Ok(None)`: nothing to restore from.
pub async fn restore(
    objects: &dyn ObjectStore,
    dir: &Path,
    first_seq: u64,
    last_seq: u64,
) -> anyhow::Result<Option<SnapshotInfo>> {
    let Some((seq, meta)) = list(objects).await?.pop() else {
        return Ok(None);
    };
    if seq > last_seq {
        // Another log (a new server, a restored backup that ends earlier): the snapshot holds
        // events this log doesn't, and the sequences after them would mean something else.
        tracing::warn!(
            snapshot_seq = seq,
            last_seq,
            "the newest snapshot is ahead of the log; not restoring it"
        );
        return Ok(None);
    }
    if seq + 1 < first_seq {
        tracing::warn!(
            snapshot_seq = seq,
            first_seq,
            "the log no longer holds the events after the newest snapshot; not restoring it"
        );
        return Ok(None);
    }
    let started = Instant::now();
    let scratch = sibling(dir, "snapshot.download");
    let mut file = tokio::fs::File::create(&scratch).await?;
    let mut body = objects
        .get(&meta.location)
        .await
        .with_context(|| format!("downloading {}", meta.location))?
        .into_stream();
    while let Some(chunk) = body.next().await {
        file.write_all(&chunk.with_context(|| format!("downloading {}", meta.location))?)
            .await?;
    }
    file.sync_all().await?;
    drop(file);
    let downloaded = started.elapsed();
    let aside = sibling(dir, "restore");
    let (from, into, target) = (scratch.clone(), aside.clone(), dir.to_owned());
    let info = tokio::task::spawn_blocking(move || -> anyhow::Result<SnapshotInfo> {
        if into.exists() {
            std::fs::remove_dir_all(&into)?;
        }
        let decoder = zstd::Decoder::new(std::fs::File::open(&from)?)?;
        let (store, info) = Store::import_snapshot(&into, decoder)?;
        drop(store);
        std::fs::rename(&into, &target)?;
        Ok(info)
    })
    .await?;
    tokio::fs::remove_file(&scratch).await.ok();
    let info = info.with_context(|| format!("restoring {}", meta.location))?;
    tracing::info!(
        key = %meta.location,
        last_seq = info.last_seq,
        records = info.records,
        bytes = meta.size,
        download = ?downloaded,
        took = ?started.elapsed(),
        "read model restored from a snapshot; following the log from there"
    );
    Ok(Some(info))
}

/// The api's snapshot writer: every `every`, a snapshot when the model has moved past the
/// newest one in the store and that one is older than `every` (so replicas don't all write).
pub async fn run(
    store: Store,
    objects: Arc<dyn ObjectStore>,
    scratch_dir: PathBuf,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let last_seq = match store.last_seq() {
            Ok(seq) => seq,
            Err(err) => {
                tracing::warn!(%err, "snapshot: reading the model's sequence");
                continue;
            }
        };
        match list(objects.as_ref()).await {
            Ok(all) => {
                if let Some((seq, meta)) = all.last() {
                    let age = chrono::Utc::now() - meta.last_modified;
                    let recent = age.to_std().is_ok_and(|age| age < every);
                    if *seq >= last_seq || recent {
                        continue;
                    }
                }
            }
            Err(err) => {
                tracing::warn!(%err, "snapshot: listing the snapshots; will try again");
                continue;
            }
        }
        if last_seq == 0 {
            continue;
        }
        // Shutdown doesn't wait for a snapshot: the next process writes one.
        let written = tokio::select! {
            _ = shutdown.cancelled() => return,
            w = write(&store, &objects, &scratch_dir) => w,
        };
        if let Err(err) = written {
            tracing::warn!(
                err = format!("{err:#}"),
                "snapshot: writing; will try again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_sequence_and_read_back() {
        assert_eq!(
            key(42),
            "snapshots/readmodel/00000000000000000042.lgsnap.zst"
        );
        assert!(key(9) < key(10) && key(10) < key(1_000_000_000));
        for seq in [0, 1, 42, u64::MAX] {
            assert_eq!(seq_of(&key(seq)), Some(seq));
        }
        for other in [
            "snapshots/readmodel/42.lgsnap.zst",
            "snapshots/readmodel/0000000000000000004x.lgsnap.zst",
            "snapshots/readmodel/00000000000000000042.lgsnap",
            "snapshots/other/00000000000000000042.lgsnap.zst",
        ] {
            assert_eq!(seq_of(other), None, "{other}");
        }
    }
}
