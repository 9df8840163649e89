//! The upload watcher: notices uploads without any client call and expires unused links.
//!
//! A durable consumer delivers every `upload_requested` event. For each, the watcher reads the
//! image's history and looks at the object in storage: an image already uploaded or failed is
//! done; an object that is there gets `uploaded` (with its ETag); a link past its expiry plus a
//! grace period (for uploads that started in time) gets `failed: upload_expired`; otherwise the
//! delivery is nak'ed with a delay and comes back later. In local mode the upload endpoint
//! records uploads itself, so the watcher only wakes at the deadline; with S3 (later) it polls.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use gallery_nats::{AppendError, EventLog, Guard, topology};
use gallery_schema::event::Failure;
use gallery_schema::sniff::{SNIFF_LEN, known_unsupported, sniff_image, unsupported_message};
use gallery_schema::{ErrorCode, Event, EventBody, Uploaded, subjects};
use object_store::{ObjectStore, path::Path as ObjectPath};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// How long after a link's expiry an upload may still arrive.
    pub grace: Duration,
    /// How often to look for the object before the deadline; `None`: only at the deadline.
    pub poll: Option<Duration>,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(10 * 60),
            poll: None,
        }
    }
}

/// What storage holds at an upload's key.
#[derive(Debug, Clone, PartialEq)]
pub enum Inspection {
    Missing,
    /// An acceptable object: record it.
    Ready {
        size: u64,
        etag: String,
    },
    /// An object that must not be processed.
    Reject {
        code: ErrorCode,
        message: String,
    },
}

/// Looks at the object behind an upload link: its size against the link's limit and its first
/// bytes against the accepted formats (one small ranged read).
pub async fn inspect_upload(
    store: &dyn ObjectStore,
    key: &str,
    max_bytes: u64,
) -> Result<Inspection, object_store::Error> {
    let path = ObjectPath::from(key);
    let meta = match store.head(&path).await {
        Ok(meta) => meta,
        Err(object_store::Error::NotFound { .. }) => return Ok(Inspection::Missing),
        Err(e) => return Err(e),
    };
    if meta.size > max_bytes {
        return Ok(Inspection::Reject {
            code: ErrorCode::UploadTooLarge,
            message: format!("{} bytes is over the limit of {max_bytes}", meta.size),
        });
    }
    if meta.size == 0 {
        return Ok(Inspection::Reject {
            code: ErrorCode::CorruptImage,
            message: "the file is empty".into(),
        });
    }
    let head = store.get_range(&path, 0..meta.size.min(SNIFF_LEN)).await?;
    if sniff_image(&head).is_none() {
        return Ok(Inspection::Reject {
            code: ErrorCode::UnsupportedFormat,
            message: unsupported_message(known_unsupported(&head)).into(),
        });
    }
    Ok(Inspection::Ready {
        size: meta.size,
        etag: meta.e_tag.unwrap_or_default(),
    })
}

#[derive(Debug, Clone, PartialEq)]
pub enum WatchDecision {
    Done,
    RecordUpload { size: u64, etag: String },
    Fail { code: ErrorCode, message: String },
    CheckAgainIn(Duration),
}

/// The pure decision for one delivery: `settled` says the log has `uploaded` or `failed`
/// already; `delivered` counts deliveries (the poll interval doubles with it, up to 30 s).
pub fn decide(
    settled: bool,
    found: &Inspection,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
    delivered: i64,
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
        Some(wait) => WatchDecision::CheckAgainIn(match cfg.poll {
            Some(poll) => {
                let backoff = poll * (1u32 << delivered.clamp(1, 6).saturating_sub(1) as u32);
                backoff.min(Duration::from_secs(30)).min(wait)
            }
            None => wait,
        }),
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
                Some(Ok(msg)) => handle(&log, store.as_ref(), &cfg, msg).await,
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
    msg: jetstream::Message,
) {
    let ack = match check(log, store, cfg, &msg).await {
        Ok(None) => msg.ack().await,
        Ok(Some(delay)) => msg.ack_with(AckKind::Nak(Some(delay))).await,
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

/// `Ok(None)`: finished with this request; `Ok(Some(d))`: look again after `d`.
async fn check(
    log: &EventLog,
    store: &dyn ObjectStore,
    cfg: &WatcherConfig,
    msg: &jetstream::Message,
) -> Result<Option<Duration>, String> {
    let Ok(event) = Event::decode_checked(&msg.subject, &msg.payload) else {
        return Ok(None);
    };
    let EventBody::UploadRequested(req) = &event.body else {
        return Ok(None);
    };
    // Without polling (local mode: the upload endpoint records uploads itself) there is nothing
    // to look at before the deadline; looking early would only race the endpoint.
    if cfg.poll.is_none()
        && let Some(wait) = until_deadline(req.link_expires_at, Utc::now(), cfg)
    {
        return Ok(Some(wait));
    }
    let history = log
        .image_history(&event.project_id, &event.image_id)
        .await
        .map_err(|e| e.to_string())?;
    let last_seq = history.iter().map(|s| s.seq).max().unwrap_or(0);
    let settled = history
        .iter()
        .any(|s| matches!(s.event.body, EventBody::Uploaded(_) | EventBody::Failed(_)));
    let found = if settled {
        Inspection::Missing
    } else {
        inspect_upload(store, &req.object_key, req.max_bytes)
            .await
            .map_err(|e| e.to_string())?
    };
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
    let body = match decide(
        settled,
        &found,
        req.link_expires_at,
        Utc::now(),
        delivered,
        cfg,
    ) {
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
            poll: None,
        };
        let ready = Inspection::Ready {
            size: 10,
            etag: "e".into(),
        };
        let missing = Inspection::Missing;
        assert_eq!(
            decide(true, &missing, at(0), at(999), 1, &cfg),
            WatchDecision::Done
        );
        assert_eq!(
            decide(false, &ready, at(0), at(-5), 1, &cfg),
            WatchDecision::RecordUpload {
                size: 10,
                etag: "e".into()
            }
        );
        // An upload that arrived within the grace period still counts.
        assert!(matches!(
            decide(false, &ready, at(0), at(30), 1, &cfg),
            WatchDecision::RecordUpload { .. }
        ));
        let too_big = Inspection::Reject {
            code: ErrorCode::UploadTooLarge,
            message: "m".into(),
        };
        assert!(matches!(
            decide(false, &too_big, at(0), at(0), 1, &cfg),
            WatchDecision::Fail {
                code: ErrorCode::UploadTooLarge,
                ..
            }
        ));
        assert_eq!(
            decide(false, &missing, at(0), at(-60), 1, &cfg),
            WatchDecision::CheckAgainIn(Duration::from_millis(120_050))
        );
        assert!(matches!(
            decide(false, &missing, at(0), at(60), 1, &cfg),
            WatchDecision::Fail {
                code: ErrorCode::UploadExpired,
                ..
            }
        ));
        // Polling (S3 mode) backs off with each delivery, up to 30 s and never past the deadline.
        let polling = WatcherConfig {
            poll: Some(Duration::from_secs(1)),
            ..cfg
        };
        let waits: Vec<_> = [1, 2, 3, 7, 50]
            .map(|n| decide(false, &missing, at(600), at(0), n, &polling))
            .to_vec();
        let secs = |d: &WatchDecision| match d {
            WatchDecision::CheckAgainIn(d) => d.as_secs(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            waits.iter().map(secs).collect::<Vec<_>>(),
            [1, 2, 4, 30, 30]
        );
        assert_eq!(
            decide(false, &missing, at(0), at(55), 9, &polling),
            WatchDecision::CheckAgainIn(Duration::from_millis(5_050))
        );
    }
}
