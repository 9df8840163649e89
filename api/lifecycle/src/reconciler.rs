//! The reconciler: nothing stays unfinished for good. Every api process runs one; one at a time
//! acts, by holding a lease in a JetStream key-value bucket (`gallery-leases`, key
//! `reconciler`, renewed every few seconds, gone 30 s after its holder stops renewing).
//!
//! The acting one looks at the read model's pending index (images in `uploaded` or
//! `processing`) every `every`; an image whose last event is older than `stuck_after` gets a
//! `redrive_requested` event, which the processor consumes like an upload: the same generation
//! is driven again through the normal path (a settled one is simply acknowledged). The event's
//! message id includes the image's last sequence, so two acting replicas can't re-drive one
//! stuck state twice, and its ordering guard makes it lose to any progress in between.
//!
//! It also answers operators' `gallery redrive` requests (core NATS request/reply on
//! `gallery.admin.redrive`, one api replica per request through a queue group): settled errors
//! with a retryable code (default `retries_exhausted`) get `reprocess_requested`, a new
//! generation. See docs/ARCHITECTURE.md §9.
//!
//! The acting one also sweeps the store every `Sweeping::every` (`sweeper.rs`), and any replica
//! answers operators' `gallery sweep` requests (`gallery.admin.sweep`).
//!
//! Here: what counts as stuck, one pass, and the loop ([`run`]). The lease is
//! `reconciler/lease.rs`, the operators' requests `reconciler/requests.rs`, and the sweeps
//! (requested and periodic) `reconciler/sweeps.rs`.

use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use gallery_nats::{AppendError, EventLog, Guard};
use gallery_projector::{Record, Store};
use gallery_schema::{Event, EventBody, ImageState};
use tokio_util::sync::CancellationToken;

mod lease;
mod requests;
mod sweeps;

use lease::Lease;
pub use requests::{RedriveReply, RedriveRequest, redrive_errors};
use requests::{Requests, answer_redrive, respond};
pub use sweeps::Sweeping;
use sweeps::Sweeps;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] gallery_projector::StoreError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error("{0}")]
    BadRequest(String),
    #[error("nats: {0}")]
    Nats(String),
}

#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// How often the acting reconciler looks.
    pub every: Duration,
    /// How long after its last event an image in `uploaded` counts as stuck.
    pub stuck_after: Duration,
    /// The same for an image in `processing`: its processor may be retrying through an outage
    /// (which appends nothing) for the whole retry budget, so this is the budget plus
    /// `stuck_after`; re-driving it sooner would only add deliveries.
    pub processing_after: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(60),
            stuck_after: Duration::from_secs(30 * 60),
            processing_after: Duration::from_secs(24 * 60 * 60 + 30 * 60),
        }
    }
}

/// Pure: the pending records that have waited long enough since their last event: `uploaded`
/// ones `stuck_after`, `processing` ones `processing_after`.
pub fn stuck<'a>(
    pending: &'a [Record],
    now: DateTime<Utc>,
    cfg: &ReconcilerConfig,
) -> Vec<&'a Record> {
    let delta = |d: Duration| chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX);
    pending
        .iter()
        .filter(|r| match r.state {
            ImageState::Uploaded => now - r.updated_at >= delta(cfg.stuck_after),
            ImageState::Processing => now - r.updated_at >= delta(cfg.processing_after),
            _ => false,
        })
        .collect()
}

/// One pass: re-drives every stuck image. Returns (found, re-driven).
pub async fn reconcile_once(
    log: &EventLog,
    store: &Store,
    cfg: &ReconcilerConfig,
) -> Result<(usize, usize), ReconcileError> {
    let pending = store.pending()?;
    let found = stuck(&pending, Utc::now(), cfg);
    let mut redriven = 0;
    for rec in &found {
        let waited = (Utc::now() - rec.updated_at).num_seconds();
        let event = Event::new(
            rec.project_id.clone(),
            rec.image_id,
            EventBody::RedriveRequested {
                generation: rec.generation,
                reason: format!(
                    "no outcome {waited}s after its last event (in {})",
                    rec.state.as_str()
                ),
                observed_seq: rec.last_seq,
            },
        );
        match log.append(&event, Guard::LastImageSeq(rec.last_seq)).await {
            Ok(a) if !a.duplicate => {
                redriven += 1;
                metrics::counter!("gallery_redrives_total", "by" => "reconciler").increment(1);
                tracing::warn!(
                    image_id = %rec.image_id,
                    project_id = %rec.project_id,
                    state = rec.state.as_str(),
                    waited_s = waited,
                    "re-driving a stuck image"
                );
            }
            Ok(_) | Err(AppendError::Conflict) => {} // already re-driven, or it moved on
            Err(e) => return Err(e.into()),
        }
    }
    Ok((found.len(), redriven))
}

/// Runs until `shutdown`: the lease loop and the operator requests.
pub async fn run(
    js: jetstream::Context,
    client: async_nats::Client,
    store: Store,
    cfg: ReconcilerConfig,
    sweeping: Sweeping,
    shutdown: CancellationToken,
    running: impl FnOnce(),
) -> Result<(), ReconcileError> {
    let log = EventLog::new(js.clone());
    let mut lease = Lease::open(&js).await.map_err(nats_error)?;
    let mut requests = Requests::subscribe(&client).await.map_err(nats_error)?;
    running();
    // Renew well within the lease's 30 s life; look every `every`.
    let mut renew = tokio::time::interval(Duration::from_secs(5));
    let mut last_pass: Option<tokio::time::Instant> = None;
    let mut sweeps = Sweeps::new(sweeping);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            msg = requests.reprocess.next() => {
                let Some(msg) = msg else { break };
                let reply = crate::reprocess::answer(&log, &store, &msg.payload);
                respond(&client, msg.reply, &reply).await;
            }
            msg = requests.sweep.next() => {
                let Some(msg) = msg else { break };
                sweeps.answer(msg, &store, &client);
            }
            Some(done) = sweeps.next_requested(), if sweeps.any_requested() => {
                sweeps::report_requested(done);
            }
            msg = requests.redrive.next() => {
                let Some(msg) = msg else { break };
                let reply = answer_redrive(&log, &store, &msg.payload).await;
                respond(&client, msg.reply, &reply).await;
            }
            _ = renew.tick() => {
                if !lease.hold().await {
                    sweeps.lease_lost();
                    continue;
                }
                sweeps.tick(&store).await;
                if last_pass.is_some_and(|t| t.elapsed() < cfg.every) {
                    continue;
                }
                last_pass = Some(tokio::time::Instant::now());
                pass(&log, &store, &cfg).await;
            }
        }
    }
    // Stopping: sweeps in progress are abandoned, and the lease goes with them.
    sweeps.abandon();
    lease.release().await;
    Ok(())
}

fn nats_error(e: impl std::fmt::Display) -> ReconcileError {
    ReconcileError::Nats(e.to_string())
}

/// The acting replica's look at the pending images, logged.
async fn pass(log: &EventLog, store: &Store, cfg: &ReconcilerConfig) {
    match reconcile_once(log, store, cfg).await {
        Ok((found, redriven)) if found > 0 => {
            tracing::warn!(found, redriven, "reconciler pass");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("reconciler pass failed: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gallery_schema::{ImageId, ProjectId, UploadRequested, Uploaded};

    fn record(state_events: &[EventBody], at: DateTime<Utc>) -> Record {
        let p = ProjectId::parse("p").unwrap();
        let id = ImageId::new_v7();
        let mut rec = None;
        let mut events = vec![EventBody::UploadRequested(UploadRequested {
            filename: "f.jpg".into(),
            object_key: "k".into(),
            content_type: "image/jpeg".into(),
            declared_size: None,
            link_expires_at: at,
            max_bytes: 1,
            source_url: None,
        })];
        events.extend_from_slice(state_events);
        for (seq, body) in events.into_iter().enumerate() {
            let mut e = Event::new(p.clone(), id, body);
            e.at = at;
            rec = Some(gallery_projector::apply(rec, seq as u64 + 1, &e).unwrap());
        }
        rec.unwrap()
    }

    #[test]
    fn only_unfinished_images_past_the_deadline_are_stuck() {
        let now = Utc::now();
        let old = now - chrono::TimeDelta::hours(2);
        let uploaded = EventBody::Uploaded(Uploaded {
            size: 1,
            etag: "e".into(),
            generation: 1,
        });
        let records = vec![
            record(std::slice::from_ref(&uploaded), old),
            record(std::slice::from_ref(&uploaded), now),
            record(&[], old), // init: the upload watcher's business
        ];
        let cfg = ReconcilerConfig::default();
        let found = stuck(&records, now, &cfg);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].image_id, records[0].image_id);
        // Processing through a long outage is not stuck until the retry budget has passed too.
        let started = EventBody::ProcessingStarted {
            attempt: 1,
            generation: 1,
        };
        let busy = vec![
            record(&[uploaded.clone(), started.clone()], old),
            record(&[uploaded, started], now - chrono::TimeDelta::hours(25)),
        ];
        let found = stuck(&busy, now, &cfg);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].image_id, busy[1].image_id);
    }
}
