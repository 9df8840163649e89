//! The fold: `apply(previous record, event) -> record`. Pure and total: an event that doesn't
//! fit the image's state is a [`FoldError`] value, never a panic. The caller decides what to do
//! with it (the runner logs it and moves on; the log stays the source of truth).
//!
//! Lifecycle: init -upload-> uploaded -start-> processing -version*-> processing -processed->
//! done; `failed` ends any non-terminal state in error; `reprocess_requested` takes done or
//! error back to uploaded in a new generation, whose versions replace the previous ones one by
//! one (a gallery keeps its thumbnails while they render); `deleted` ends any state for good
//! (the record stays as a tombstone, without the file name, so a replay agrees and later events
//! of the image are refused).

use gallery_schema::{Event, EventBody, EventKind, ImageState};

use crate::record::{RECORD_VERSION, Record, RecordError, RenderedVersion};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    #[error("{kind:?} for an image with no upload request")]
    UnknownImage { kind: EventKind },
    #[error("second upload request for one image")]
    AlreadyExists,
    #[error("{kind:?} is not allowed in state {state:?}")]
    IllegalTransition { state: ImageState, kind: EventKind },
    #[error("{kind:?} for a deleted image")]
    Deleted { kind: EventKind },
    #[error("{kind:?} of generation {event} while the image is at generation {current}")]
    StaleGeneration {
        kind: EventKind,
        event: u32,
        current: u32,
    },
}

/// Applies `event`, found at stream sequence `seq`, to the image's previous record.
pub fn apply(prev: Option<Record>, seq: u64, event: &Event) -> Result<Record, FoldError> {
    let kind = event.kind();
    let mut rec = match (prev, &event.body) {
        (None, EventBody::UploadRequested(req)) => Record {
            version: RECORD_VERSION,
            image_id: event.image_id,
            project_id: event.project_id.clone(),
            filename: req.filename.clone(),
            state: ImageState::Init,
            created_at: event.at,
            updated_at: event.at,
            original_key: req.object_key.clone(),
            content_type: req.content_type.clone(),
            link_expires_at: req.link_expires_at,
            max_bytes: req.max_bytes,
            declared_size: req.declared_size,
            size: None,
            etag: None,
            generation: 0,
            attempt: 0,
            versions: Default::default(),
            width: None,
            height: None,
            error: None,
            thumbhash: Vec::new(),
            sha256: None,
            renditions_version: 0,
            duplicate_of: None,
            last_seq: seq,
            refused: Vec::new(),
        },
        (None, _) => return Err(FoldError::UnknownImage { kind }),
        (Some(mut rec), _) => {
            step(&mut rec, seq, event)?;
            return Ok(rec);
        }
    };
    rec.updated_at = event.at;
    rec.last_seq = seq;
    Ok(rec)
}

/// `event` onto an existing record, in place; on an error the record is unchanged.
fn step(rec: &mut Record, seq: u64, event: &Event) -> Result<(), FoldError> {
    if let EventBody::UploadRequested(_) = event.body {
        return Err(FoldError::AlreadyExists);
    }
    transition(rec, &event.body)?;
    rec.updated_at = event.at;
    rec.last_seq = seq;
    Ok(())
}

/// The fold as the read model runs it: [`apply`], and for an event it refuses, the previous
/// record with the refusal noted in [`Record::refused`] (an image the model doesn't know has
/// no record to note it in: its events are all refused). Returns the record to keep and the
/// refusal, if any.
pub fn fold_event(
    prev: Option<Record>,
    seq: u64,
    event: &Event,
) -> (Option<Record>, Option<FoldError>) {
    let Some(mut rec) = prev else {
        return match apply(None, seq, event) {
            Ok(rec) => (Some(rec), None),
            Err(err) => (None, Some(err)),
        };
    };
    match step(&mut rec, seq, event) {
        Ok(()) => (Some(rec), None),
        Err(err) => {
            if !rec.refused.contains(&seq) {
                rec.refused.push(seq);
                if rec.refused.len() > crate::record::MAX_REFUSED {
                    rec.refused.remove(0);
                }
            }
            (Some(rec), Some(err))
        }
    }
}

/// `body` onto `rec`: [`check`] says whether it may apply, then [`change`] applies it. Every
/// check comes before the first change, so a refused event leaves `rec` as it was.
fn transition(rec: &mut Record, body: &EventBody) -> Result<(), FoldError> {
    check(rec, body)?;
    change(rec, body);
    Ok(())
}

/// Whether `body` may apply to `rec` in the image's state and generation; the refusal is the
/// first rule it breaks.
fn check(rec: &Record, body: &EventBody) -> Result<(), FoldError> {
    use ImageState::*;
    let kind = body.kind();
    let stale = |generation: u32| FoldError::StaleGeneration {
        kind,
        event: generation,
        current: rec.generation,
    };
    let same_generation = |generation: u32| {
        if generation == rec.generation {
            Ok(())
        } else {
            Err(stale(generation))
        }
    };
    if rec.state == Deleted {
        return Err(FoldError::Deleted { kind });
    }
    let allowed = match body {
        EventBody::UploadRequested(_) => return Err(FoldError::AlreadyExists),
        EventBody::Uploaded(_) => rec.state == Init,
        EventBody::ProcessingStarted { generation, .. } => {
            same_generation(*generation)?;
            matches!(rec.state, Uploaded | Processing)
        }
        EventBody::VersionRendered(v) => {
            same_generation(v.generation)?;
            rec.state == Processing
        }
        EventBody::Processed { generation, .. } => {
            same_generation(*generation)?;
            rec.state == Processing
        }
        EventBody::Failed(f) => {
            // Before the upload (generation 0) a failure is about the upload itself
            // (upload_expired, upload_too_large); after it, it must be the current generation.
            if rec.state != Init {
                same_generation(f.generation)?;
            }
            !rec.state.is_terminal()
        }
        EventBody::RedriveRequested { generation, .. } => {
            same_generation(*generation)?;
            matches!(rec.state, Uploaded | Processing)
        }
        EventBody::RenderCrashed { generation, .. } => {
            same_generation(*generation)?;
            rec.state == Processing
        }
        EventBody::Deleted { .. } => true,
        EventBody::ReprocessRequested { generation } => {
            // A settled image whose original arrived, into the next generation.
            let settled = rec.state.is_terminal() && rec.etag.is_some();
            if settled && *generation != rec.generation + 1 {
                return Err(stale(*generation));
            }
            settled
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(FoldError::IllegalTransition {
            state: rec.state,
            kind,
        })
    }
}

/// What an event that passed [`check`] changes in `rec`.
fn change(rec: &mut Record, body: &EventBody) {
    use ImageState::*;
    match body {
        // Always refused by `check`.
        EventBody::UploadRequested(_) => {}
        EventBody::Uploaded(up) => {
            rec.state = Uploaded;
            rec.size = Some(up.size);
            rec.etag = Some(up.etag.clone());
            rec.generation = up.generation;
        }
        EventBody::ProcessingStarted { attempt, .. } => {
            rec.state = Processing;
            rec.attempt = *attempt;
        }
        EventBody::VersionRendered(v) => {
            let version = RenderedVersion {
                generation: v.generation,
                key: v.key.clone(),
                width: v.width,
                height: v.height,
                bytes: v.bytes,
                content_type: v.content_type.clone(),
            };
            rec.versions.insert(v.version, version);
        }
        EventBody::Processed {
            width,
            height,
            thumbhash,
            sha256,
            renditions_version,
            ..
        } => {
            rec.state = Done;
            // A name the new generation didn't render (the renditions changed) goes with its
            // generation.
            let generation = rec.generation;
            rec.versions.retain(|_, v| v.generation == generation);
            rec.width = Some(*width);
            rec.height = Some(*height);
            rec.thumbhash = thumbhash.clone();
            rec.sha256 = *sha256;
            rec.renditions_version = *renditions_version;
        }
        EventBody::Failed(f) => {
            rec.state = Error;
            rec.error = Some(RecordError {
                code: f.code,
                message: f.message.clone(),
            });
        }
        // The same generation, driven again: back in the processor's hands.
        EventBody::RedriveRequested { .. } => rec.state = Processing,
        // Recorded while processing; the image stays there until its outcome.
        EventBody::RenderCrashed { .. } => {}
        EventBody::Deleted { .. } => {
            // The tombstone: enough to tell it was here; the file name goes (it is the one
            // field a user typed).
            rec.state = Deleted;
            rec.filename.clear();
        }
        EventBody::ReprocessRequested { generation } => {
            rec.state = Uploaded;
            rec.generation = *generation;
            rec.attempt = 0;
            rec.error = None;
            // The previous generation's versions, size, placeholder and renditions stay
            // until the new generation replaces them (`version_rendered`, `processed`): a
            // listing keeps its thumbnails while they render. A failed reprocess keeps
            // whatever is left of them.
        }
    }
}

#[cfg(test)]
mod tests;
