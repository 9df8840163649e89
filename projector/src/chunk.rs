//! One chunk of the log (every event already waiting, up to a batch) folded into a [`Batch`],
//! as the live runner and `rebuild` both do: re-deliveries are skipped, a record that can't be
//! read back is re-folded from its image's history, and an event of a kind this version
//! doesn't know ends the chunk. Also [`ProjectorError`], what stops either of them.

use std::time::Duration;

use async_nats::jetstream;
use gallery_nats::{ReadError, StoredEvent, read};

use crate::batch::Batch;
use crate::fold::fold_event;
use crate::record::Record;
use crate::store::{Store, StoreError};

/// Folds a chunk of the log into a batch, reading records from `store` (events at or below
/// `after` are re-deliveries and skipped). Returns the batch, the events folded (to publish in
/// order once committed), and what ended the chunk early: an event of a newer version or a
/// read error, after which nothing of the chunk is folded. A record that can't be read back is
/// re-folded from its image's history when `js` is given.
pub(crate) async fn fold_chunk(
    store: &Store,
    js: Option<&jetstream::Context>,
    chunk: Vec<Result<StoredEvent, ReadError>>,
    after: u64,
) -> Result<(Batch, Vec<StoredEvent>, Option<ProjectorError>), ProjectorError> {
    let mut batch = Batch::default();
    let mut folded = Vec::with_capacity(chunk.len());
    for next in chunk {
        match next {
            Ok(stored) if stored.seq <= after.max(batch.last_seq()) => {}
            Ok(stored) => {
                // Only what the fold takes goes to the live feed (a WebSocket replay leaves
                // out the same events, by the records' `refused`).
                let accepted = match batch.fold(&stored, store) {
                    Ok(accepted) => accepted,
                    Err(StoreError::Corrupt(err)) if js.is_some() => {
                        tracing::error!(
                            image_id = %stored.event.image_id,
                            %err,
                            "a stored record can't be read; re-folding it from the image's history"
                        );
                        let rec = refold(js.expect("checked"), &stored).await?;
                        let accepted = rec
                            .as_ref()
                            .is_some_and(|r| !r.refused.contains(&stored.seq));
                        if let Some(rec) = rec {
                            batch.set(rec);
                        }
                        batch.seen(stored.seq);
                        accepted
                    }
                    Err(err) => return Err(err.into()),
                };
                if accepted {
                    folded.push(stored);
                }
            }
            Err(ReadError::Decode { seq, .. }) if seq <= after.max(batch.last_seq()) => {}
            Err(ReadError::Decode { seq, source }) => {
                tracing::error!(seq, %source, "skipping an undecodable event");
                batch.seen(seq);
            }
            Err(ReadError::UnknownKind { seq, kind, .. }) => {
                return Ok((
                    batch,
                    folded,
                    Some(ProjectorError::NewerEvent { seq, kind }),
                ));
            }
            Err(err) => return Ok((batch, folded, Some(err.into()))),
        }
    }
    Ok((batch, folded, None))
}

/// The image's record as its whole history up to and including `upto` folds it, read from the
/// log (a handful of events).
async fn refold(
    js: &jetstream::Context,
    upto: &StoredEvent,
) -> Result<Option<Record>, ProjectorError> {
    let filter =
        gallery_schema::subjects::image_filter(&upto.event.project_id, &upto.event.image_id);
    let history = read::read_until_now(js, filter, 1, Duration::from_secs(30)).await?;
    Ok(fold_history(history.iter().filter(|e| e.seq <= upto.seq)))
}

/// Folds one image's events in order, skipping those the fold refuses (as the live runner does).
pub fn fold_history<'a>(events: impl IntoIterator<Item = &'a StoredEvent>) -> Option<Record> {
    let mut record = None;
    for e in events {
        record = fold_event(record, e.seq, &e.event).0;
    }
    record
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the ordered consumer ended")]
    Ended,
    #[error("the log has events up to seq {last} and none arrived since seq {applied}")]
    Stalled { applied: u64, last: u64 },
    #[error("event at seq {seq} is of kind {kind:?}, which this version doesn't know")]
    NewerEvent { seq: u64, kind: String },
    #[error("stream info: {0}")]
    Info(String),
    #[error("the read model's store is stuck: {0}")]
    Stuck(String),
    #[error("swapping directories: {0}")]
    Io(#[from] std::io::Error),
}
