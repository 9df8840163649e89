//! The read model on sled, behind a small interface (sled 0.34 is old; the model is disposable
//! and rebuilt from the log, which is what makes it acceptable).
//!
//! Trees: `records` (image id → record, postcard; a deleted image's record stays as a
//! tombstone), `by_project` (`<project>/<image id bytes>` → empty, ordered by creation because
//! image ids are UUIDv7; deleted images are not in it), `pending` (image id → empty, for
//! every image in `uploaded` or `processing`: what the reconciler looks at), `awaiting`
//! (`<project>/<image id bytes>` for every image still waiting for its upload) with its count per
//! project in `awaiting_count` (the cap on pending upload links), `by_hash` (`<project>/<sha256>`
//! → the image id that holds those bytes in the project: the first processed with them and not
//! deleted), `meta` (`last_seq`). One transaction writes a record, its index entries, the counts
//! and the sequence together.
//!
//! Here: opening the store and committing to it. Reads are in `store/query.rs`; the bulk writes
//! of a snapshot's import in `store/import.rs`.

use std::path::Path;

use gallery_schema::{ImageId, ImageState, ProjectId};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use crate::record::{RECORD_VERSION, Record};

mod import;
mod query;

pub use query::Page;

const LAST_SEQ: &[u8] = b"last_seq";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record: {0}")]
    Corrupt(#[from] postcard::Error),
    #[error("the read model was written by another version ({0}); run `gallery rebuild`")]
    Version(u32),
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    records: sled::Tree,
    by_project: sled::Tree,
    pending: sled::Tree,
    awaiting: sled::Tree,
    awaiting_count: sled::Tree,
    by_hash: sled::Tree,
    meta: sled::Tree,
}

/// An image the processor still owes an outcome.
fn is_pending(state: ImageState) -> bool {
    matches!(state, ImageState::Uploaded | ImageState::Processing)
}

const PENDING_INDEX: &[u8] = b"pending_index";
const AWAITING_INDEX: &[u8] = b"awaiting_index";

fn count_of(bytes: Option<sled::IVec>) -> u64 {
    bytes
        .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
        .unwrap_or(0)
}

fn hash_key(project: &ProjectId, sha256: &[u8; 32]) -> Vec<u8> {
    let mut key = Vec::with_capacity(project.as_str().len() + 33);
    key.extend_from_slice(project.as_str().as_bytes());
    key.push(b'/');
    key.extend_from_slice(sha256);
    key
}

/// Whether `rec` is the image its bytes' index entry should name: processed with a hash, not
/// itself a duplicate, not deleted.
fn holds_hash(rec: &Record) -> bool {
    rec.sha256.is_some() && rec.duplicate_of.is_none() && rec.state != ImageState::Deleted
}

fn index_key(project: &ProjectId, image: &ImageId) -> Vec<u8> {
    let mut key = Vec::with_capacity(project.as_str().len() + 17);
    key.extend_from_slice(project.as_str().as_bytes());
    key.push(b'/');
    key.extend_from_slice(image.as_bytes());
    key
}

/// Opens the sled database. A store dropped a moment ago can still hold its file lock (sled's
/// background threads let go of it shortly after the last handle): that is waited out, up to
/// 5 s, rather than failed (a rebuild reopens the directory it just wrote).
fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(200))
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = open_db(dir)?;
        let store = Self {
            records: db.open_tree("records")?,
            by_project: db.open_tree("by_project")?,
            pending: db.open_tree("pending")?,
            awaiting: db.open_tree("awaiting")?,
            awaiting_count: db.open_tree("awaiting_count")?,
            by_hash: db.open_tree("by_hash")?,
            meta: db.open_tree("meta")?,
            db,
        };
        let version = match store.meta.get("version")? {
            Some(v) => u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 4])),
            None => {
                store
                    .meta
                    .insert("version", &RECORD_VERSION.to_be_bytes())?;
                RECORD_VERSION
            }
        };
        if version != RECORD_VERSION {
            return Err(StoreError::Version(version));
        }
        if store.meta.get(PENDING_INDEX)?.is_none() {
            // A store from before the pending index: build it once.
            for rec in store.all()? {
                if is_pending(rec.state) {
                    store.pending.insert(rec.image_id.as_bytes(), &[])?;
                }
            }
            store.meta.insert(PENDING_INDEX, &[1])?;
        }
        if store.meta.get(AWAITING_INDEX)?.is_none() {
            // A store from before the awaiting index: build it once.
            let mut counts = std::collections::HashMap::<ProjectId, u64>::new();
            for rec in store.all()? {
                if rec.state == ImageState::Init {
                    store
                        .awaiting
                        .insert(index_key(&rec.project_id, &rec.image_id), &[])?;
                    *counts.entry(rec.project_id.clone()).or_default() += 1;
                }
            }
            for (project, n) in counts {
                store
                    .awaiting_count
                    .insert(project.as_str().as_bytes(), &n.to_be_bytes())?;
            }
            store.meta.insert(AWAITING_INDEX, &[1])?;
        }
        Ok(store)
    }

    /// The last stream sequence folded into this model (0: none).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get(LAST_SEQ)?
            .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
            .unwrap_or(0))
    }

    pub fn get(&self, image: &ImageId) -> Result<Option<Record>, StoreError> {
        match self.records.get(image.as_bytes())? {
            Some(bytes) => Ok(Some(Record::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Writes `record` (if any) and advances the sequence to `seq`, atomically. `None` only
    /// advances the sequence (an event the fold refused, or one that isn't ours).
    pub fn commit(&self, seq: u64, record: Option<&Record>) -> Result<(), StoreError> {
        self.commit_batch(seq, record.into_iter())
    }

    /// Writes the records of a batch of events and advances the sequence to `seq` (the
    /// batch's last event), in one transaction: the model is at a batch boundary or the
    /// previous one, never in between. Pass each image once, with its record after the batch.
    pub fn commit_batch<'a>(
        &self,
        seq: u64,
        records: impl Iterator<Item = &'a Record> + Clone,
    ) -> Result<(), StoreError> {
        let encoded = records
            .clone()
            .map(|rec| (rec, rec.encode()))
            .collect::<Vec<_>>();
        (
            &self.records,
            &self.by_project,
            &self.pending,
            &self.awaiting,
            &self.awaiting_count,
            &self.by_hash,
            &self.meta,
        )
            .transaction(
                |(records, by_project, pending, awaiting, awaiting_count, by_hash, meta)| {
                    for (rec, bytes) in &encoded {
                        records.insert(rec.image_id.as_bytes(), bytes.as_slice())?;
                        if let Some(sha256) = &rec.sha256 {
                            let key = hash_key(&rec.project_id, sha256);
                            let id = rec.image_id.as_bytes().as_slice();
                            if holds_hash(rec) {
                                // The batch fold made it the holder (replacing one this batch
                                // deleted, whichever of the two comes first here).
                                by_hash.insert(key.as_slice(), id)?;
                            } else if by_hash.get(key.as_slice())?.as_deref() == Some(id) {
                                // Deleted: the next image processed with these bytes holds them.
                                by_hash.remove(key.as_slice())?;
                            }
                        }
                        let key = index_key(&rec.project_id, &rec.image_id);
                        if rec.state == ImageState::Deleted {
                            // A tombstone: kept by id, gone from its project's listing.
                            by_project.remove(key.as_slice())?;
                        } else {
                            by_project.insert(key.as_slice(), &[])?;
                        }
                        if is_pending(rec.state) {
                            pending.insert(rec.image_id.as_bytes(), &[])?;
                        } else {
                            pending.remove(rec.image_id.as_bytes())?;
                        }
                        // (Reads in a transaction see its own writes, so an image twice in
                        // one batch would still count right.)
                        let was = awaiting.get(key.as_slice())?.is_some();
                        let is = rec.state == ImageState::Init;
                        if was != is {
                            let project = rec.project_id.as_str().as_bytes();
                            let n = count_of(awaiting_count.get(project)?);
                            let n = if is { n + 1 } else { n.saturating_sub(1) };
                            if is {
                                awaiting.insert(key.as_slice(), &[])?;
                            } else {
                                awaiting.remove(key.as_slice())?;
                            }
                            awaiting_count.insert(project, &n.to_be_bytes())?;
                        }
                    }
                    // Never backwards: a re-delivered event must not un-apply later ones.
                    let stored = count_of(meta.get(LAST_SEQ)?);
                    meta.insert(LAST_SEQ, &seq.max(stored).to_be_bytes())?;
                    Ok::<_, ConflictableTransactionError<()>>(())
                },
            )
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Sled(sled::Error::Unsupported("aborted".into()))
                }
            })?;
        Ok(())
    }

    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Every record, in image id order (rebuild comparisons and tests).
    pub fn all(&self) -> Result<Vec<Record>, StoreError> {
        self.records
            .iter()
            .map(|entry| Ok(Record::decode(&entry?.1)?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::apply;
    use gallery_schema::{Event, EventBody, UploadRequested};

    fn request(project: &ProjectId) -> Event {
        Event::new(
            project.clone(),
            ImageId::new_v7(),
            EventBody::UploadRequested(UploadRequested {
                filename: "f.png".into(),
                object_key: "k".into(),
                content_type: "image/png".into(),
                declared_size: None,
                link_expires_at: chrono::Utc::now(),
                max_bytes: 10,
                source_url: None,
            }),
        )
    }

    #[test]
    fn pages_newest_first_per_project_and_keeps_the_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (
            ProjectId::parse("a").unwrap(),
            ProjectId::parse("a-b").unwrap(),
        );
        let mut ids = Vec::new();
        for seq in 1..=5u64 {
            let project = if seq == 3 { &b } else { &a };
            let event = request(project);
            let rec = apply(None, seq, &event).unwrap();
            store.commit(seq, Some(&rec)).unwrap();
            if seq != 3 {
                ids.push(event.image_id);
            }
        }
        assert_eq!(store.last_seq().unwrap(), 5);
        ids.reverse();
        let first = store.list(&a, None, 3, None).unwrap();
        assert_eq!(
            first.records.iter().map(|r| r.image_id).collect::<Vec<_>>(),
            ids[..3]
        );
        let cursor = first.next_cursor.expect("more pages");
        let second = store.list(&a, None, 3, Some(&cursor)).unwrap();
        assert_eq!(
            second
                .records
                .iter()
                .map(|r| r.image_id)
                .collect::<Vec<_>>(),
            ids[3..]
        );
        assert!(second.next_cursor.is_none());
        // "a-b" is a different project even though it starts with "a".
        assert_eq!(store.list(&b, None, 10, None).unwrap().records.len(), 1);
        assert!(
            store
                .list(&a, Some(ImageState::Done), 10, None)
                .unwrap()
                .records
                .is_empty()
        );

        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.last_seq().unwrap(), 5);
    }

    #[test]
    fn the_sequence_never_goes_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.commit(10, None).unwrap();
        // A re-delivered event (an undecodable one, say) commits an older sequence.
        store.commit_batch(5, std::iter::empty()).unwrap();
        assert_eq!(store.last_seq().unwrap(), 10);
        store.commit(11, None).unwrap();
        assert_eq!(store.last_seq().unwrap(), 11);
    }

    #[test]
    fn images_awaiting_their_upload_are_counted_per_project() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (
            ProjectId::parse("a").unwrap(),
            ProjectId::parse("b").unwrap(),
        );
        let mut seq = 0;
        let mut recs = Vec::new();
        for project in [&a, &a, &a, &b] {
            seq += 1;
            let rec = apply(None, seq, &request(project)).unwrap();
            store.commit(seq, Some(&rec)).unwrap();
            recs.push(rec);
        }
        assert_eq!(store.awaiting_upload(&a).unwrap(), 3);
        assert_eq!(store.awaiting_upload(&b).unwrap(), 1);
        // An upload (or an expiry) ends the wait; committing the same state again changes nothing.
        let mut uploaded = recs[0].clone();
        uploaded.state = ImageState::Uploaded;
        seq += 1;
        store.commit(seq, Some(&uploaded)).unwrap();
        seq += 1;
        store.commit(seq, Some(&recs[1])).unwrap();
        assert_eq!(store.awaiting_upload(&a).unwrap(), 2);
        let mut expired = recs[1].clone();
        expired.state = ImageState::Error;
        seq += 1;
        store.commit(seq, Some(&expired)).unwrap();
        assert_eq!(store.awaiting_upload(&a).unwrap(), 1);
        // A store from before the index builds it on open.
        store.meta.remove(AWAITING_INDEX).unwrap();
        store.awaiting_count.clear().unwrap();
        store.awaiting.clear().unwrap();
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.awaiting_upload(&a).unwrap(), 1);
        assert_eq!(reopened.awaiting_upload(&b).unwrap(), 1);
    }

    #[test]
    fn a_deleted_image_leaves_its_listing_and_counts_but_keeps_a_tombstone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let p = ProjectId::parse("p").unwrap();
        let (keep, gone) = (request(&p), request(&p));
        let keep_rec = apply(None, 1, &keep).unwrap();
        let gone_rec = apply(None, 2, &gone).unwrap();
        store.commit(1, Some(&keep_rec)).unwrap();
        store.commit(2, Some(&gone_rec)).unwrap();
        assert_eq!(store.awaiting_upload(&p).unwrap(), 2);
        let deletion = Event::new(
            p.clone(),
            gone.image_id,
            EventBody::Deleted {
                whole_project: false,
            },
        );
        let tombstone = apply(Some(gone_rec), 3, &deletion).unwrap();
        store.commit(3, Some(&tombstone)).unwrap();
        let listed = store.list(&p, None, 10, None).unwrap().records;
        assert_eq!(
            listed.iter().map(|r| r.image_id).collect::<Vec<_>>(),
            [keep.image_id]
        );
        assert_eq!(store.awaiting_upload(&p).unwrap(), 1);
        assert_eq!(
            store.get(&gone.image_id).unwrap().unwrap().state,
            ImageState::Deleted
        );
    }
}
