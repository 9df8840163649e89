//! Folding many events at once: the live projector and `rebuild` take every event that is
//! already waiting (up to [`MAX_BATCH`]), fold them against the records in memory, and commit
//! the batch in one sled transaction with its last sequence. An image's record is read from the
//! store once per batch and written once, however many of its events the batch holds; that,
//! and one transaction instead of one per event, is what makes catch-up fast. When events
//! trickle in, a batch is one event and nothing waits for a batch to fill.

use std::collections::HashMap;

use gallery_nats::StoredEvent;
use gallery_schema::{EventBody, ImageId, ProjectId};

use crate::fold::fold_event;
use crate::record::Record;
use crate::store::{Store, StoreError};

/// The most events one transaction commits.
pub const MAX_BATCH: usize = 2048;

/// Records changed by the batch so far, in first-touched order, and its last sequence.
#[derive(Debug, Default)]
pub struct Batch {
    records: HashMap<ImageId, Record>,
    order: Vec<ImageId>,
    /// Content-hash holders this batch changed (`None`: its holder was deleted), over the
    /// store's `by_hash` index.
    holders: HashMap<(ProjectId, [u8; 32]), Option<ImageId>>,
    last_seq: u64,
}

/// What the batch fold reads from the store: an image's record, and which image of a project
/// holds some bytes.
pub trait Lookup {
    fn record(&self, image: &ImageId) -> Result<Option<Record>, StoreError>;
    fn hash_holder(
        &self,
        project: &ProjectId,
        sha256: &[u8; 32],
    ) -> Result<Option<ImageId>, StoreError>;
}

impl Lookup for Store {
    fn record(&self, image: &ImageId) -> Result<Option<Record>, StoreError> {
        self.get(image)
    }

    fn hash_holder(
        &self,
        project: &ProjectId,
        sha256: &[u8; 32],
    ) -> Result<Option<ImageId>, StoreError> {
        Store::hash_holder(self, project, sha256)
    }
}

impl Batch {
    /// The last sequence this batch covers (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Folds `stored` onto its image's record: the batch's own if it touched the image, else
    /// the store's. An event the fold refuses is noted in the record's `refused` and changes
    /// nothing else (it is recorded as seen). A `processed` event's bytes are looked up among
    /// the project's: the record gets `duplicate_of` the image holding them, or becomes their
    /// holder. `Ok(true)` when the event was folded in: what the live feed publishes.
    pub fn fold(&mut self, stored: &StoredEvent, store: &impl Lookup) -> Result<bool, StoreError> {
        let image = stored.event.image_id;
        // The batch's own record is taken out (not cloned) and put back below.
        let (prev, in_batch) = match self.records.remove(&image) {
            Some(rec) => (Some(rec), true),
            None => (store.record(&image)?, false),
        };
        if let Some(known) = prev.as_ref()
            && stored.seq <= known.last_seq
        {
            // Already in the record: a snapshot written while the projector ran holds some
            // records newer than its sequence, and replaying the tail over it must not apply
            // their events twice.
            let taken = !known.refused.contains(&stored.seq);
            if in_batch && let Some(rec) = prev {
                self.records.insert(image, rec);
            }
            self.seen(stored.seq);
            return Ok(taken);
        }
        let accepted = match fold_event(prev, stored.seq, &stored.event) {
            (Some(mut rec), None) => {
                let tracked = self.track_hash(&mut rec, &stored.event.body, store);
                // Back in the batch before any error goes up: nothing taken out is lost.
                self.keep(rec, in_batch);
                tracked?;
                true
            }
            (noted, refusal) => {
                if let Some(err) = refusal {
                    tracing::warn!(
                        seq = stored.seq,
                        image_id = %image,
                        %err,
                        "event refused by the fold; recorded as seen"
                    );
                }
                if let Some(rec) = noted {
                    self.keep(rec, in_batch);
                }
                false
            }
        };
        self.seen(stored.seq);
        Ok(accepted)
    }

    /// Keeps content hashes per project: a processed image whose bytes another image holds is
    /// its duplicate, else it holds them; a deleted holder lets go (the next one processed
    /// with those bytes holds them).
    fn track_hash(
        &mut self,
        rec: &mut Record,
        body: &EventBody,
        store: &impl Lookup,
    ) -> Result<(), StoreError> {
        let Some(sha256) = rec.sha256 else {
            return Ok(());
        };
        let key = (rec.project_id.clone(), sha256);
        let holder = match self.holders.get(&key) {
            Some(h) => *h,
            None => store.hash_holder(&rec.project_id, &sha256)?,
        };
        match body {
            EventBody::Processed { .. } => match holder {
                Some(other) if other != rec.image_id => rec.duplicate_of = Some(other),
                _ => {
                    rec.duplicate_of = None;
                    self.holders.insert(key, Some(rec.image_id));
                }
            },
            EventBody::Deleted { .. } if holder == Some(rec.image_id) => {
                self.holders.insert(key, None);
            }
            _ => {}
        }
        Ok(())
    }

    /// Sets an image's record outright (one re-folded from its history).
    /// Puts a record back that [`Batch::fold`] took out of the batch, or adds a new one.
    fn keep(&mut self, rec: Record, in_batch: bool) {
        if in_batch {
            self.records.insert(rec.image_id, rec);
        } else {
            self.set(rec);
        }
    }

    pub fn set(&mut self, rec: Record) {
        let id = rec.image_id;
        if self.records.insert(id, rec).is_none() {
            self.order.push(id);
        }
    }

    /// Marks `seq` as covered (an event that changes no record).
    pub fn seen(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// The records to write, each image once, in the order the batch first touched them.
    pub fn into_records(mut self) -> Vec<Record> {
        self.order
            .iter()
            .filter_map(|id| self.records.remove(id))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.last_seq == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use gallery_schema::{Event, EventBody, ImageState, ProjectId, UploadRequested, Uploaded};

    fn stored(seq: u64, event: Event) -> StoredEvent {
        StoredEvent { seq, event }
    }

    /// Three images over two projects: requested, two uploaded, one processing started, one
    /// event the fold refuses (a second upload_requested), interleaved.
    fn log() -> Vec<StoredEvent> {
        let (a, b) = (
            ProjectId::parse("a").unwrap(),
            ProjectId::parse("b").unwrap(),
        );
        let ids = [ImageId::new_v7(), ImageId::new_v7(), ImageId::new_v7()];
        let request = |p: &ProjectId, id| {
            Event::new(
                p.clone(),
                id,
                EventBody::UploadRequested(UploadRequested {
                    filename: "f.jpg".into(),
                    object_key: "k".into(),
                    content_type: "image/jpeg".into(),
                    declared_size: None,
                    link_expires_at: chrono::Utc::now(),
                    max_bytes: 10,
                    source_url: None,
                }),
            )
        };
        let uploaded = |p: &ProjectId, id| {
            Event::new(
                p.clone(),
                id,
                EventBody::Uploaded(Uploaded {
                    size: 5,
                    etag: "e".into(),
                    generation: 1,
                }),
            )
        };
        let events = vec![
            request(&a, ids[0]),
            request(&a, ids[1]),
            uploaded(&a, ids[0]),
            request(&b, ids[2]),
            request(&a, ids[0]), // refused: the image exists
            Event::new(
                a.clone(),
                ids[0],
                EventBody::ProcessingStarted {
                    attempt: 1,
                    generation: 1,
                },
            ),
            uploaded(&b, ids[2]),
        ];
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| stored(i as u64 + 1, e))
            .collect()
    }

    fn fold_in_batches(store: &Store, events: &[StoredEvent], size: usize) {
        for chunk in events.chunks(size) {
            let mut batch = Batch::default();
            for e in chunk {
                batch.fold(e, store).unwrap();
            }
            store
                .commit_batch(batch.last_seq(), batch.into_records().iter())
                .unwrap();
        }
    }

    #[test]
    fn batches_of_any_size_give_the_model_one_by_one_gives() {
        let events = log();
        let dir = tempfile::tempdir().unwrap();
        // What the live feed publishes: every event but the refused fifth.
        let mut batch = Batch::default();
        let fresh = Store::open(&dir.path().join("fresh")).unwrap();
        for e in &events {
            assert_eq!(
                batch.fold(e, &fresh).unwrap(),
                e.seq != 5,
                "event {}",
                e.seq
            );
        }
        let one = Store::open(&dir.path().join("one")).unwrap();
        fold_in_batches(&one, &events, 1);
        for size in [2, 3, events.len()] {
            let other = Store::open(&dir.path().join(format!("b{size}"))).unwrap();
            fold_in_batches(&other, &events, size);
            assert_eq!(
                other.all().unwrap(),
                one.all().unwrap(),
                "batch size {size}"
            );
            assert_eq!(other.last_seq().unwrap(), 7);
            for p in ["a", "b"] {
                let p = ProjectId::parse(p).unwrap();
                assert_eq!(
                    other.awaiting_upload(&p).unwrap(),
                    one.awaiting_upload(&p).unwrap()
                );
            }
            assert_eq!(other.pending().unwrap().len(), one.pending().unwrap().len());
        }
        let states: Vec<ImageState> = one.all().unwrap().iter().map(|r| r.state).collect();
        assert_eq!(states.len(), 3);
        // The refusal is noted in the record it was refused by, in every batching.
        let refused: Vec<Vec<u64>> = one
            .all()
            .unwrap()
            .into_iter()
            .map(|r| r.refused)
            .filter(|r| !r.is_empty())
            .collect();
        assert_eq!(refused, [[5]]);
        assert_eq!(
            one.awaiting_upload(&ProjectId::parse("a").unwrap())
                .unwrap(),
            1
        );
        assert_eq!(one.pending().unwrap().len(), 2);
    }

    #[test]
    fn a_batch_reads_each_image_from_the_store_once_and_writes_it_once() {
        let events = log();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        /// The store, counting record reads.
        struct Counting<'a>(&'a Store, std::cell::Cell<usize>);
        impl Lookup for Counting<'_> {
            fn record(&self, image: &ImageId) -> Result<Option<Record>, StoreError> {
                self.1.set(self.1.get() + 1);
                self.0.get(image)
            }
            fn hash_holder(
                &self,
                project: &ProjectId,
                sha256: &[u8; 32],
            ) -> Result<Option<ImageId>, StoreError> {
                self.0.hash_holder(project, sha256)
            }
        }
        let counting = Counting(&store, Default::default());
        let mut batch = Batch::default();
        for e in &events {
            batch.fold(e, &counting).unwrap();
        }
        assert_eq!(counting.1.get(), 3);
        assert_eq!(batch.last_seq(), 7);
        assert_eq!(batch.into_records().len(), 3);
    }

    /// Project `a`: images 0, 1 and 2 with the same bytes, 3 with other bytes; project `b`:
    /// image 4 with the bytes of 0. Image 1 is processed first, then 0; 1 is deleted, then 2
    /// is processed. Then 0 is reprocessed.
    fn duplicates_log() -> (Vec<StoredEvent>, Vec<ImageId>) {
        let (a, b) = (
            ProjectId::parse("a").unwrap(),
            ProjectId::parse("b").unwrap(),
        );
        let ids: Vec<ImageId> = (0..5).map(|_| ImageId::new_v7()).collect();
        let project = |i: usize| if i == 4 { b.clone() } else { a.clone() };
        let event = |i: usize, body| Event::new(project(i), ids[i], body);
        let mut events = Vec::new();
        for i in 0..5 {
            events.push(event(
                i,
                EventBody::UploadRequested(UploadRequested {
                    filename: "f.jpg".into(),
                    object_key: "k".into(),
                    content_type: "image/jpeg".into(),
                    declared_size: None,
                    link_expires_at: chrono::Utc::now(),
                    max_bytes: 10,
                    source_url: None,
                }),
            ));
            events.push(event(
                i,
                EventBody::Uploaded(Uploaded {
                    size: 5,
                    etag: "e".into(),
                    generation: 1,
                }),
            ));
        }
        let process = |events: &mut Vec<Event>, i: usize, generation: u32| {
            events.push(event(
                i,
                EventBody::ProcessingStarted {
                    attempt: 1,
                    generation,
                },
            ));
            events.push(event(
                i,
                EventBody::Processed {
                    generation,
                    width: 1,
                    height: 1,
                    thumbhash: vec![1],
                    sha256: Some(if i == 3 { [3; 32] } else { [7; 32] }),
                    renditions_version: 1,
                },
            ));
        };
        for i in [1, 0, 3, 4] {
            process(&mut events, i, 1);
        }
        events.push(event(
            1,
            EventBody::Deleted {
                whole_project: false,
            },
        ));
        process(&mut events, 2, 1);
        events.push(event(0, EventBody::ReprocessRequested { generation: 2 }));
        process(&mut events, 0, 2);
        let stored = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| stored(i as u64 + 1, e))
            .collect();
        (stored, ids)
    }

    #[test]
    fn duplicates_are_found_per_project_in_log_order_whatever_the_batches() {
        let (events, ids) = duplicates_log();
        let dir = tempfile::tempdir().unwrap();
        let mut models = Vec::new();
        for size in [1, 2, 3, 5, 7, events.len()] {
            let store = Store::open(&dir.path().join(format!("b{size}"))).unwrap();
            fold_in_batches(&store, &events, size);
            let dup = |i: usize| store.get(&ids[i]).unwrap().unwrap().duplicate_of;
            // 1 came first with these bytes and 0 became its duplicate; 1 was deleted, so 2,
            // processed next, holds them; 0, reprocessed last, names the holder of then.
            assert_eq!(dup(1), None, "batch size {size}");
            assert_eq!(dup(2), None, "batch size {size}");
            assert_eq!(dup(0), Some(ids[2]), "batch size {size}");
            assert_eq!(dup(3), None, "other bytes");
            assert_eq!(dup(4), None, "another project");
            let a = ProjectId::parse("a").unwrap();
            assert_eq!(store.hash_holder(&a, &[7; 32]).unwrap(), Some(ids[2]));
            assert_eq!(store.hash_holder(&a, &[3; 32]).unwrap(), Some(ids[3]));
            models.push(store.all().unwrap());
        }
        assert!(models.windows(2).all(|w| w[0] == w[1]));
    }

    /// A snapshot taken while the projector ran covers sequence 2 but holds records newer than
    /// that: replaying the tail over it must give the model the whole log gives.
    #[test]
    fn replaying_events_a_record_already_holds_changes_nothing() {
        let events = log();
        let dir = tempfile::tempdir().unwrap();
        let whole = Store::open(&dir.path().join("whole")).unwrap();
        fold_in_batches(&whole, &events, 3);
        let fuzzy = Store::open(&dir.path().join("fuzzy")).unwrap();
        fold_in_batches(&fuzzy, &events, events.len());
        // Its checkpoint says 2: the tail from 3 comes again, some of it already applied.
        fold_in_batches(&fuzzy, &events[2..], 2);
        assert_eq!(fuzzy.all().unwrap(), whole.all().unwrap());
        assert_eq!(
            fuzzy.pending().unwrap().len(),
            whole.pending().unwrap().len()
        );
    }
}
