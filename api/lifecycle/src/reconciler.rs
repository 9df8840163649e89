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

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use gallery_nats::{AppendError, EventLog, Guard};
use gallery_projector::{Record, Store};
use gallery_schema::subjects::{ADMIN_REDRIVE, ADMIN_REPROCESS, ADMIN_SWEEP, LEASE_BUCKET};
use object_store::ObjectStore;
use std::sync::Arc;

use crate::sweeper::{SweepPolicy, SweepReport, SweepRequest};
use gallery_schema::{ErrorCode, Event, EventBody, ImageState, ProjectId};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

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

/// A lease held by renewing one key of a bucket whose values expire.
struct Lease {
    kv: kv::Store,
    holder: String,
    revision: Option<u64>,
}

const LEASE_KEY: &str = "reconciler";

impl Lease {
    /// Takes the lease if free, renews it if ours; `false` while another holds it.
    async fn hold(&mut self) -> bool {
        let held = match self.revision {
            Some(rev) => self
                .kv
                .update(LEASE_KEY, self.holder.clone().into(), rev)
                .await
                .ok(),
            None => self
                .kv
                .create(LEASE_KEY, self.holder.clone().into())
                .await
                .ok(),
        };
        if held.is_none() && self.revision.is_some() {
            tracing::warn!("reconciler lease lost");
        }
        if held.is_some() && self.revision.is_none() {
            tracing::info!(holder = %self.holder, "reconciler lease taken: this replica acts");
        }
        self.revision = held;
        held.is_some()
    }

    async fn release(&mut self) {
        if self.revision.take().is_some() {
            let _ = self.kv.delete(LEASE_KEY).await;
        }
    }
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

/// An operator's `gallery redrive` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RedriveRequest {
    pub project: Option<String>,
    /// Errors with this code (default `retries_exhausted`).
    pub code: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RedriveReply {
    pub found: usize,
    pub redriven: usize,
    pub image_ids: Vec<String>,
    pub error: Option<String>,
}

/// Appends `reprocess_requested` (a new generation) for every settled error matching `req`.
pub async fn redrive_errors(
    log: &EventLog,
    store: &Store,
    req: &RedriveRequest,
) -> Result<RedriveReply, ReconcileError> {
    let code = match req.code.as_deref() {
        None => ErrorCode::RetriesExhausted,
        Some(raw) => ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == raw)
            .ok_or_else(|| ReconcileError::BadRequest(format!("unknown error code {raw:?}")))?,
    };
    let project = req
        .project
        .as_deref()
        .map(ProjectId::parse)
        .transpose()
        .map_err(|e| ReconcileError::BadRequest(e.to_string()))?;
    let mut reply = RedriveReply::default();
    for rec in store.errors(project.as_ref(), code)? {
        reply.found += 1;
        if crate::reprocess::request(log, &rec).await? {
            reply.redriven += 1;
            reply.image_ids.push(rec.image_id.to_string());
        }
    }
    tracing::warn!(
        code = code.as_str(),
        project = ?req.project,
        found = reply.found,
        redriven = reply.redriven,
        "operator re-drive"
    );
    Ok(reply)
}

/// The store the sweeper cleans, its policy, and how often the acting replica sweeps
/// (`None`: only on request).
#[derive(Clone)]
pub struct Sweeping {
    pub objects: Arc<dyn ObjectStore>,
    pub policy: SweepPolicy,
    pub every: Option<Duration>,
}

async fn answer_sweep(sweeping: &Sweeping, store: &Store, payload: &[u8]) -> SweepReport {
    // A request that doesn't parse is refused, never read as "for real".
    let req = match serde_json::from_slice::<SweepRequest>(payload) {
        Ok(req) => req,
        Err(e) => {
            return SweepReport {
                error: Some(format!("not a sweep request: {e}")),
                ..Default::default()
            };
        }
    };
    crate::sweeper::sweep(
        sweeping.objects.as_ref(),
        store,
        &sweeping.policy,
        req.dry_run,
    )
    .await
    .unwrap_or_else(|e| SweepReport {
        dry_run: req.dry_run,
        error: Some(format!("listing the store: {e}")),
        ..Default::default()
    })
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
    let kv = js
        .get_key_value(LEASE_BUCKET)
        .await
        .map_err(|e| ReconcileError::Nats(e.to_string()))?;
    let mut lease = Lease {
        kv,
        holder: format!("{}-{}", std::process::id(), uuid_like()),
        revision: None,
    };
    let mut requests = client
        .queue_subscribe(ADMIN_REDRIVE, "gallery-api".into())
        .await
        .map_err(|e| ReconcileError::Nats(e.to_string()))?;
    let mut sweeps = client
        .queue_subscribe(ADMIN_SWEEP, "gallery-api".into())
        .await
        .map_err(|e| ReconcileError::Nats(e.to_string()))?;
    let mut reprocesses = client
        .queue_subscribe(ADMIN_REPROCESS, "gallery-api".into())
        .await
        .map_err(|e| ReconcileError::Nats(e.to_string()))?;
    running();
    // Renew well within the lease's 30 s life; look every `every`.
    let mut renew = tokio::time::interval(Duration::from_secs(5));
    let mut last_pass: Option<tokio::time::Instant> = None;
    // The first periodic sweep comes one interval after taking the lease, not at start.
    let mut last_sweep: Option<tokio::time::Instant> = None;
    // Sweeps run as tasks of their own (one periodic at a time, operators' as they come).
    let mut periodic_sweep: Option<tokio::task::JoinHandle<()>> = None;
    let mut requested_sweeps = tokio::task::JoinSet::new();
    let one_sweep = Arc::new(tokio::sync::Semaphore::new(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            msg = reprocesses.next() => {
                let Some(msg) = msg else { break };
                let reply = crate::reprocess::answer(&log, &store, &msg.payload);
                if let Some(to) = msg.reply {
                    let body = serde_json::to_vec(&reply).expect("plain JSON");
                    let _ = client.publish(to, body.into()).await;
                }
            }
            msg = sweeps.next() => {
                let Some(msg) = msg else { break };
                // A sweep lists the whole store (minutes for a big one, longer when the store
                // hangs): it runs beside this loop, which keeps renewing the lease and
                // answering the other requests.
                let (sweeping, store, client) = (sweeping.clone(), store.clone(), client.clone());
                let one_at_a_time = one_sweep.clone();
                requested_sweeps.spawn(async move {
                    // Sweeps take turns (each lists the whole store): a request waits for the
                    // one running.
                    let _turn = one_at_a_time.acquire_owned().await;
                    let reply = answer_sweep(&sweeping, &store, &msg.payload).await;
                    if let Some(to) = msg.reply {
                        let body = serde_json::to_vec(&reply).expect("plain JSON");
                        let _ = client.publish(to, body.into()).await;
                    }
                });
            }
            Some(done) = requested_sweeps.join_next(), if !requested_sweeps.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!("an operator's sweep panicked: {e}");
                }
            }
            msg = requests.next() => {
                let Some(msg) = msg else { break };
                // A request that doesn't parse is refused, never read as "everything".
                let reply = match serde_json::from_slice::<RedriveRequest>(&msg.payload) {
                    Err(e) => RedriveReply {
                        error: Some(format!("not a re-drive request: {e}")),
                        ..Default::default()
                    },
                    Ok(req) => match redrive_errors(&log, &store, &req).await {
                        Ok(r) => r,
                        Err(e) => RedriveReply {
                            error: Some(format!("{e:#}")),
                            ..Default::default()
                        },
                    },
                };
                if let Some(to) = msg.reply {
                    let body = serde_json::to_vec(&reply).expect("plain JSON");
                    let _ = client.publish(to, body.into()).await;
                }
            }
            _ = renew.tick() => {
                if !lease.hold().await {
                    last_sweep = None;
                    // Another replica acts now: its sweeps replace ours.
                    if let Some(sweep) = periodic_sweep.take() {
                        sweep.abort();
                    }
                    continue;
                }
                if let Some(done) = periodic_sweep.take_if(|h| h.is_finished())
                    && let Err(e) = done.await
                    && e.is_panic()
                {
                    tracing::error!("the periodic sweep panicked: {e}");
                }
                if let Some(every) = sweeping.every {
                    let running = periodic_sweep.is_some();
                    match last_sweep {
                        None => last_sweep = Some(tokio::time::Instant::now()),
                        Some(t) if t.elapsed() >= every && !running => {
                            last_sweep = Some(tokio::time::Instant::now());
                            let (sweeping, store) = (sweeping.clone(), store.clone());
                            let one_at_a_time = one_sweep.clone();
                            periodic_sweep = Some(tokio::spawn(async move {
                                let _turn = one_at_a_time.acquire_owned().await;
                                let report = crate::sweeper::sweep(
                                    sweeping.objects.as_ref(),
                                    &store,
                                    &sweeping.policy,
                                    false,
                                )
                                .await;
                                if let Err(e) = report {
                                    tracing::warn!("sweep failed: {e}");
                                }
                            }));
                        }
                        Some(_) => {}
                    }
                }
                if last_pass.is_some_and(|t| t.elapsed() < cfg.every) {
                    continue;
                }
                last_pass = Some(tokio::time::Instant::now());
                match reconcile_once(&log, &store, &cfg).await {
                    Ok((found, redriven)) if found > 0 => {
                        tracing::warn!(found, redriven, "reconciler pass");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("reconciler pass failed: {e:#}"),
                }
            }
        }
    }
    // Stopping: a sweep in progress is abandoned (what it removed stays removed; the next
    // one finds the rest), and the lease goes with it.
    if let Some(sweep) = periodic_sweep.take() {
        sweep.abort();
    }
    requested_sweeps.abort_all();
    lease.release().await;
    Ok(())
}

fn uuid_like() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gallery_schema::{ImageId, UploadRequested, Uploaded};

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
