//! The store's side of a snapshot (`snapshot.rs` holds the format): every record as stored, for
//! writing one; and bulk writes of records with their index entries, for building a store
//! aside from one.

use std::collections::HashMap;

use gallery_schema::{ImageState, ProjectId};

use super::{LAST_SEQ, Store, StoreError, hash_key, holds_hash, index_key, is_pending};
use crate::record::Record;

impl Store {
    /// Every record as stored (postcard), in image id order: what a snapshot holds.
    pub(crate) fn raw_records(&self) -> impl Iterator<Item = Result<sled::IVec, StoreError>> + '_ {
        self.records
            .iter()
            .map(|entry| entry.map(|(_, v)| v).map_err(StoreError::from))
    }

    /// Writes records of a snapshot with their index entries, outside any transaction: the
    /// store is being built aside and nobody reads it until [`Self::finish_import`].
    pub(crate) fn import_records(&self, records: &[(Record, Vec<u8>)]) -> Result<(), StoreError> {
        let (mut recs, mut by_project, mut pending, mut awaiting, mut by_hash) = (
            sled::Batch::default(),
            sled::Batch::default(),
            sled::Batch::default(),
            sled::Batch::default(),
            sled::Batch::default(),
        );
        for (rec, bytes) in records {
            let (image, state) = (&rec.image_id, rec.state);
            recs.insert(image.as_bytes(), bytes.as_slice());
            let key = index_key(&rec.project_id, image);
            if is_pending(state) {
                pending.insert(image.as_bytes(), &[]);
            }
            if state == ImageState::Init {
                awaiting.insert(key.as_slice(), &[]);
            }
            if state != ImageState::Deleted {
                by_project.insert(key, &[]);
            }
            if let Some(sha256) = &rec.sha256
                && holds_hash(rec)
            {
                by_hash.insert(
                    hash_key(&rec.project_id, sha256),
                    image.as_bytes().as_slice(),
                );
            }
        }
        self.records.apply_batch(recs)?;
        self.by_project.apply_batch(by_project)?;
        self.pending.apply_batch(pending)?;
        self.awaiting.apply_batch(awaiting)?;
        self.by_hash.apply_batch(by_hash)?;
        Ok(())
    }

    /// Ends an import: the per-project counts of images awaiting their upload, the sequence
    /// the snapshot covers, and everything on disk.
    pub(crate) fn finish_import(
        &self,
        last_seq: u64,
        awaiting: &HashMap<ProjectId, u64>,
    ) -> Result<(), StoreError> {
        for (project, n) in awaiting {
            self.awaiting_count
                .insert(project.as_str().as_bytes(), &n.to_be_bytes())?;
        }
        self.meta.insert(LAST_SEQ, &last_seq.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }
}
