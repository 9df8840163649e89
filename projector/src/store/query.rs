//! The read model's queries: a project's listing page by page, the images the reconciler and
//! an operator's re-drive look at, which image holds a project's copy of some bytes, and how
//! many upload links are still waiting.

use gallery_schema::{ErrorCode, ImageId, ImageState, ProjectId};

use super::{Store, StoreError, count_of, hash_key, index_key};
use crate::record::Record;

/// One page of a project's listing, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub records: Vec<Record>,
    /// Pass back as `cursor` for the next page; `None` at the end.
    pub next_cursor: Option<ImageId>,
}

impl Store {
    /// The image of `project` that holds these bytes (see the `by_hash` tree), if any.
    pub fn hash_holder(
        &self,
        project: &ProjectId,
        sha256: &[u8; 32],
    ) -> Result<Option<ImageId>, StoreError> {
        Ok(self
            .by_hash
            .get(hash_key(project, sha256))?
            .and_then(|id| <[u8; 16]>::try_from(id.as_ref()).ok())
            .map(ImageId::from_bytes))
    }

    /// How many of the project's images are still waiting for their upload (links handed out
    /// and neither used nor expired).
    pub fn awaiting_upload(&self, project: &ProjectId) -> Result<u64, StoreError> {
        Ok(count_of(
            self.awaiting_count.get(project.as_str().as_bytes())?,
        ))
    }

    /// A project's images, newest first, starting after `cursor`, keeping only `state` if given.
    pub fn list(
        &self,
        project: &ProjectId,
        state: Option<ImageState>,
        limit: usize,
        cursor: Option<&ImageId>,
    ) -> Result<Page, StoreError> {
        let mut prefix = project.as_str().as_bytes().to_vec();
        prefix.push(b'/');
        let upper = match cursor {
            Some(c) => index_key(project, c),
            None => {
                let mut end = prefix.clone();
                *end.last_mut().expect("non-empty") += 1; // '/' + 1 = '0': just past the prefix
                end
            }
        };
        let mut records = Vec::new();
        let mut next_cursor = None;
        for entry in self.by_project.range(prefix.clone()..upper).rev() {
            let (key, _) = entry?;
            let id: [u8; 16] = key[prefix.len()..].try_into().unwrap_or([0; 16]);
            let image = ImageId::from_bytes(id);
            let Some(rec) = self.get(&image)? else {
                continue;
            };
            if state.is_some_and(|s| s != rec.state) {
                continue;
            }
            if records.len() == limit {
                next_cursor = records.last().map(|r: &Record| r.image_id);
                break;
            }
            records.push(rec);
        }
        Ok(Page {
            records,
            next_cursor,
        })
    }

    /// Every image in `uploaded` or `processing`, oldest first.
    pub fn pending(&self) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        for entry in self.pending.iter() {
            let (key, _) = entry?;
            let id: [u8; 16] = key.as_ref().try_into().unwrap_or([0; 16]);
            match self.get(&ImageId::from_bytes(id)) {
                Ok(Some(rec)) => out.push(rec),
                Ok(None) => {}
                // Re-folded by the projector on its next event; one bad record must not stop
                // the reconciler for every other image.
                Err(StoreError::Corrupt(err)) => {
                    tracing::warn!(%err, "skipping an unreadable pending record");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }

    /// Images in `error` with `code`, of one project or of all (an operator's re-drive).
    pub fn errors(
        &self,
        project: Option<&ProjectId>,
        code: ErrorCode,
    ) -> Result<Vec<Record>, StoreError> {
        self.select(project, |r: &Record| {
            r.state == ImageState::Error && r.error.as_ref().is_some_and(|e| e.code == code)
        })
    }

    /// The records of `project` (or of every project, deleted ones included) that `keep`
    /// keeps, one record decoded at a time.
    pub fn select(
        &self,
        project: Option<&ProjectId>,
        keep: impl Fn(&Record) -> bool,
    ) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        match project {
            Some(p) => {
                let mut cursor = None;
                loop {
                    let page = self.list(p, None, 500, cursor.as_ref())?;
                    out.extend(page.records.into_iter().filter(|r| keep(r)));
                    match page.next_cursor {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
            }
            None => {
                for entry in self.records.iter() {
                    let rec = Record::decode(&entry?.1)?;
                    if keep(&rec) {
                        out.push(rec);
                    }
                }
            }
        }
        Ok(out)
    }
}
