//! Folding many events at once: the live projector and `rebuild` take every event that is
//! already waiting (up to [`MAX_BATCH`]), fold them against the records in memory, and commit
//! the batch in one sled transaction with its last sequence. An image's record is read from the
//! store once per batch and written once, however many of its events the batch holds; that,
//! and one transaction instead of one per event, is what makes catch-up fast. When events
//! trickle in, a batch is one event and nothing waits for a batch to fill.

use std::collections::HashMap;

use gallery_nats::StoredEvent;
use gallery_schema::ImageId;

use crate::fold::apply;
use crate::record::Record;
use crate::store::StoreError;

/// The most events one transaction commits.
pub const MAX_BATCH: usize = 2048;

/// Records changed by the batch so far, in first-touched order, and its last sequence.
#[derive(Debug, Default)]
pub struct Batch {
    records: HashMap<ImageId, Record>,
    order: Vec<ImageId>,
    last_seq: u64,
}

impl Batch {
    /// The last sequence this batch covers (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Folds `stored` onto its image's record: the batch's own if it touched the image, else
    /// the one `stored_record` reads (the store's). An event the fold refuses changes nothing
    /// but the sequence (it is recorded as seen).
    pub fn fold(
        &mut self,
        stored: &StoredEvent,
        stored_record: impl FnOnce(&ImageId) -> Result<Option<Record>, StoreError>,
    ) -> Result<(), StoreError> {
        let image = stored.event.image_id;
        let prev = match self.records.get(&image) {
            Some(rec) => Some(rec.clone()),
            None => stored_record(&image)?,
        };
        if let Some(prev) = &prev
            && stored.seq <= prev.last_seq
        {
            // Already in the record: a snapshot written while the projector ran holds some
            // records newer than its sequence, and replaying the tail over it must not apply
            // their events twice.
            self.seen(stored.seq);
            return Ok(());
        }
        match apply(prev, stored.seq, &stored.event) {
            Ok(rec) => self.set(rec),
            Err(err) => tracing::warn!(
                seq = stored.seq,
                image_id = %image,
                %err,
                "event refused by the fold; recorded as seen"
            ),
        }
        self.seen(stored.seq);
        Ok(())
    }

    /// Sets an image's record outright (one re-folded from its history).
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
                batch.fold(e, |id| store.get(id)).unwrap();
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
        let mut batch = Batch::default();
        let mut reads = 0;
        for e in &events {
            batch
                .fold(e, |id| {
                    reads += 1;
                    store.get(id)
                })
                .unwrap();
        }
        assert_eq!(reads, 3);
        assert_eq!(batch.last_seq(), 7);
        assert_eq!(batch.into_records().len(), 3);
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
