//! The upload watcher: notices uploads without any client call and expires unused links.
//!
//! A durable consumer delivers every `upload_requested` event. An image already uploaded or
//! failed is done; an object that is there gets `uploaded` (with its ETag); a link past its
//! expiry plus a grace period (for uploads that started in time) gets `failed:
//! upload_expired`, after one last look at the object (HEAD).
//!
//! Before the deadline, local mode waits (the upload endpoint records uploads itself): the
//! delivery is nak'ed until the deadline. With S3 nobody tells us, so [`scan`] looks in
//! batches: the delivery is held (not acknowledged) in a pending index, and a scanner LISTs the
//! originals' key range around the due links a few times a second. Original keys start with
//! the image's UUIDv7, so the links of the last seconds sit in one contiguous range whatever
//! their projects: one LIST page (1,000 keys) answers for all of them, and the S3 request rate
//! follows the upload rate, not the number of links waiting. A held delivery comes back after
//! the consumer's ack wait (30 s), so a replica that dies loses nothing: another one holds it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use gallery_nats::{AppendError, EventLog, Guard, topology};
use gallery_schema::event::Failure;
use gallery_schema::{ErrorCode, Event, EventBody, Uploaded, subjects};
use object_store::list::PaginatedListStore;
use object_store::{ObjectMeta, ObjectStore};
use tokio_util::sync::CancellationToken;

mod import;
mod inspect;
pub mod scan;

pub use import::ImportConfig;

pub use inspect::{Inspection, inspect_object, inspect_upload};

use scan::Pending;

#[derive(Clone)]
pub struct WatcherConfig {
    /// How long after a link's expiry an upload may still arrive.
    pub grace: Duration,
    /// Look for uploads before the deadline (S3 mode); `None`: only at the deadline.
    pub scan: Option<ScanConfig>,
    /// How imports by URL are fetched.
    pub import: ImportConfig,
}

/// Batch detection: LIST requests over the originals' key range (module docs).
#[derive(Clone)]
pub struct ScanConfig {
    pub lister: Arc<dyn PaginatedListStore>,
    /// How often the scanner looks for due links; a new link is due at once, then less often
    /// as it ages (an eighth of its age, at most every 30 s).
    pub every: Duration,
}

impl std::fmt::Debug for WatcherConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatcherConfig")
            .field("grace", &self.grace)
            .field("scan_every", &self.scan.as_ref().map(|s| s.every))
            .field("import", &self.import)
            .finish()
    }
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(10 * 60),
            scan: None,
            import: ImportConfig::default(),
        }
    }
}

/// Counts S3 requests made to notice and check uploads, by who made them (`watcher`, or
/// `complete` for the client's call) and operation (`list`, `head`, `get`):
/// `gallery_upload_check_s3_requests_total`.
pub(crate) fn count_request(by: &'static str, op: &'static str, n: u64) {
    metrics::counter!("gallery_upload_check_s3_requests_total", "by" => by, "op" => op)
        .increment(n);
}

#[derive(Debug, Clone, PartialEq)]
pub enum WatchDecision {
    Done,
    RecordUpload { size: u64, etag: String },
    Fail { code: ErrorCode, message: String },
    CheckAgainIn(Duration),
}

/// The pure decision for one look at an upload: `settled` says the log has `uploaded` or
/// `failed` already; a missing object before the deadline is looked at again at the deadline
/// (the scanner, in S3 mode, looks sooner).
pub fn decide(
    settled: bool,
    found: &Inspection,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
    cfg: &WatcherConfig,
) -> WatchDecision {
    if settled {
        return WatchDecision::Done;
    }
    match found {
        Inspection::Ready { size, etag } => {
            return WatchDecision::RecordUpload {
                size: *size,
                etag: etag.clone(),
            };
        }
        Inspection::Reject { code, message } => {
            return WatchDecision::Fail {
                code: *code,
                message: message.clone(),
            };
        }
        Inspection::Missing => {}
    }
    match until_deadline(expires_at, now, cfg) {
        None => WatchDecision::Fail {
            code: ErrorCode::UploadExpired,
            message: "the upload link expired without an upload".into(),
        },
        Some(wait) => WatchDecision::CheckAgainIn(wait),
    }
}

/// Time left until the link's expiry plus grace (`None`: it has passed).
pub fn until_deadline(
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
    cfg: &WatcherConfig,
) -> Option<Duration> {
    let deadline = expires_at + chrono::TimeDelta::from_std(cfg.grace).unwrap_or_default();
    (now < deadline)
        .then(|| (deadline - now).to_std().unwrap_or_default() + Duration::from_millis(50))
}

pub async fn run(
    js: jetstream::Context,
    store: Arc<dyn ObjectStore>,
    cfg: WatcherConfig,
    shutdown: CancellationToken,
    running: impl FnOnce(),
) -> Result<(), gallery_nats::TopologyError> {
    // Declared with the rest of the topology at start (docs/ARCHITECTURE.md §4).
    let consumer =
        topology::wait_for_consumer(&js, subjects::UPLOAD_WATCHER_CONSUMER, &shutdown).await?;
    running();
    let log = EventLog::new(js.clone());
    let pending = Arc::new(std::sync::Mutex::new(Pending::default()));
    let imports = import::Imports::default();
    // The scanner stops with the watcher (shutdown, or this function returning).
    let scanner_stop = shutdown.child_token();
    let _scanner_guard = scanner_stop.clone().drop_guard();
    if let Some(scan) = cfg.scan.clone() {
        tokio::spawn(scan::run(scan::Scanner {
            scan,
            store: store.clone(),
            log: log.clone(),
            cfg: cfg.clone(),
            pending: pending.clone(),
            shutdown: scanner_stop,
        }));
    }
    loop {
        let messages = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = consumer.messages() => m,
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!(%err, "upload watcher: pulling");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                n = messages.next() => n,
            };
            match next {
                Some(Ok(msg)) => {
                    if let Some((event, req, url)) = import_of(&msg) {
                        imports.spawn(&log, &store, &cfg.import, msg, event, req, url);
                        continue;
                    }
                    handle(&log, store.as_ref(), &cfg, &pending, msg).await
                }
                Some(Err(err)) => {
                    tracing::warn!(%err, "upload watcher: pulling");
                    break;
                }
                None => break,
            }
        }
    }
}

async fn handle(
    log: &EventLog,
    store: &dyn ObjectStore,
    cfg: &WatcherConfig,
    pending: &std::sync::Mutex<Pending>,
    msg: jetstream::Message,
) {
    let ack = match check(log, store, cfg, pending, &msg).await {
        Ok(Next::Finished) => msg.ack().await,
        Ok(Next::Later(delay)) => msg.ack_with(AckKind::Nak(Some(delay))).await,
        Ok(Next::Hold(held)) => {
            pending
                .lock()
                .expect("pending index")
                .hold(held, msg, Utc::now());
            return;
        }
        Err(err) => {
            tracing::warn!(%err, "upload watcher: will retry");
            msg.ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                .await
        }
    };
    if let Err(err) = ack {
        tracing::warn!(%err, "upload watcher: acknowledging");
    }
}

/// The import a delivery asks for: an `upload_requested` with a `source_url`.
fn import_of(msg: &jetstream::Message) -> Option<(Event, gallery_schema::UploadRequested, String)> {
    let event = Event::decode_checked(&msg.subject, &msg.payload).ok()?;
    let EventBody::UploadRequested(req) = &event.body else {
        return None;
    };
    let url = req.source_url.clone()?;
    let req = req.clone();
    Some((event, req, url))
}

/// What to do with a delivery.
enum Next {
    Finished,
    /// Deliver it again after this long.
    Later(Duration),
    /// Keep it unacknowledged in the pending index: the scanner settles it.
    Hold(scan::Held),
}

async fn check(
    log: &EventLog,
    store: &dyn ObjectStore,
    cfg: &WatcherConfig,
    pending: &std::sync::Mutex<Pending>,
    msg: &jetstream::Message,
) -> Result<Next, String> {
    let Ok(event) = Event::decode_checked(&msg.subject, &msg.payload) else {
        return Ok(Next::Finished);
    };
    let EventBody::UploadRequested(req) = &event.body else {
        return Ok(Next::Finished);
    };
    if let Some(wait) = until_deadline(req.link_expires_at, Utc::now(), cfg) {
        // Without a scanner (local mode: the upload endpoint records uploads itself) there is
        // nothing to look at before the deadline; looking early would only race the endpoint.
        return Ok(match cfg.scan {
            None => Next::Later(wait),
            Some(_) => Next::Hold(scan::Held::new(&event, req)),
        });
    }
    // The deadline: one last look, then the link's fate is written.
    pending
        .lock()
        .expect("pending index")
        .forget(&req.object_key);
    Ok(match conclude(log, store, cfg, &event, req, None).await? {
        None => Next::Finished,
        Some(wait) => Next::Later(wait),
    })
}

/// Looks at an upload and writes what happened to it, unless the log has it already.
/// `listed`: the object as a LIST page showed it (otherwise it is looked up with HEAD).
/// `Ok(None)`: finished with this request; `Ok(Some(d))`: look again after `d`.
async fn conclude(
    log: &EventLog,
    store: &dyn ObjectStore,
    cfg: &WatcherConfig,
    event: &Event,
    req: &gallery_schema::UploadRequested,
    listed: Option<&ObjectMeta>,
) -> Result<Option<Duration>, String> {
    let history = log
        .image_history(&event.project_id, &event.image_id)
        .await
        .map_err(|e| e.to_string())?;
    let last_seq = history.iter().map(|s| s.seq).max().unwrap_or(0);
    // Uploaded, refused, expired or deleted: nothing is left to watch for.
    let settled = history.iter().any(|s| {
        matches!(
            s.event.body,
            EventBody::Uploaded(_) | EventBody::Failed(_) | EventBody::Deleted { .. }
        )
    });
    let found = match (settled, listed) {
        (true, _) => Ok(Inspection::Missing),
        (false, Some(meta)) => inspect_object(store, meta, req.max_bytes, "watcher").await,
        (false, None) => inspect_upload(store, &req.object_key, req.max_bytes, "watcher").await,
    }
    .map_err(|e| e.to_string())?;
    let body = match decide(settled, &found, req.link_expires_at, Utc::now(), cfg) {
        WatchDecision::Done => return Ok(None),
        WatchDecision::CheckAgainIn(d) => return Ok(Some(d)),
        WatchDecision::RecordUpload { size, etag } => EventBody::Uploaded(Uploaded {
            size,
            etag,
            generation: 1,
        }),
        WatchDecision::Fail { code, message } => {
            tracing::info!(image_id = %event.image_id, %code, "upload request ends in error");
            EventBody::Failed(Failure {
                code,
                message,
                retryable: false,
                generation: 0,
            })
        }
    };
    let uploaded = matches!(body, EventBody::Uploaded(_));
    let next = Event::new(event.project_id.clone(), event.image_id, body);
    match log.append(&next, Guard::LastImageSeq(last_seq)).await {
        Ok(a) => {
            if uploaded && !a.duplicate {
                metrics::counter!("gallery_uploads_detected_total", "via" => "watcher")
                    .increment(1);
            }
            Ok(None)
        }
        // Someone else (the upload endpoint) wrote meanwhile: look again at once.
        Err(AppendError::Conflict) => Ok(Some(Duration::from_millis(10))),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn decisions() {
        let cfg = WatcherConfig {
            grace: Duration::from_secs(60),
            scan: None,
            import: ImportConfig::default(),
        };
        let ready = Inspection::Ready {
            size: 10,
            etag: "e".into(),
        };
        let missing = Inspection::Missing;
        assert_eq!(
            decide(true, &missing, at(0), at(999), &cfg),
            WatchDecision::Done
        );
        assert_eq!(
            decide(false, &ready, at(0), at(-5), &cfg),
            WatchDecision::RecordUpload {
                size: 10,
                etag: "e".into()
            }
        );
        // An upload that arrived within the grace period still counts.
        assert!(matches!(
            decide(false, &ready, at(0), at(30), &cfg),
            WatchDecision::RecordUpload { .. }
        ));
        let too_big = Inspection::Reject {
            code: ErrorCode::UploadTooLarge,
            message: "m".into(),
        };
        assert!(matches!(
            decide(false, &too_big, at(0), at(0), &cfg),
            WatchDecision::Fail {
                code: ErrorCode::UploadTooLarge,
                ..
            }
        ));
        // Missing before the deadline: again at the deadline (expiry + grace).
        assert_eq!(
            decide(false, &missing, at(0), at(-60), &cfg),
            WatchDecision::CheckAgainIn(Duration::from_millis(120_050))
        );
        assert_eq!(
            decide(false, &missing, at(0), at(55), &cfg),
            WatchDecision::CheckAgainIn(Duration::from_millis(5_050))
        );
        assert!(matches!(
            decide(false, &missing, at(0), at(60), &cfg),
            WatchDecision::Fail {
                code: ErrorCode::UploadExpired,
                ..
            }
        ));
    }
}
