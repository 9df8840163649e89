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
use gallery_nats::{AppendError, EventLog, Guard, read, topology};
use gallery_schema::event::Failure;
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

/// What the watcher knows about one upload request.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    /// `uploaded` or `failed` already in the log.
    pub settled: bool,
    /// The object in storage: (size, etag).
    pub object: Option<(u64, String)>,
    pub max_bytes: u64,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WatchDecision {
    Done,
    RecordUpload { size: u64, etag: String },
    Fail { code: ErrorCode, message: String },
    CheckAgainIn(Duration),
}

/// The pure decision for one delivery.
pub fn decide(w: &Watched, now: DateTime<Utc>, cfg: &WatcherConfig) -> WatchDecision {
    if w.settled {
        return WatchDecision::Done;
    }
    if let Some((size, etag)) = &w.object {
        if *size > w.max_bytes {
            return WatchDecision::Fail {
                code: ErrorCode::UploadTooLarge,
                message: format!("{size} bytes is over the limit of {}", w.max_bytes),
            };
        }
        return WatchDecision::RecordUpload {
            size: *size,
            etag: etag.clone(),
        };
    }
    match until_deadline(w.expires_at, now, cfg) {
        None => WatchDecision::Fail {
            code: ErrorCode::UploadExpired,
            message: "the upload link expired without an upload".into(),
        },
        Some(wait) => WatchDecision::CheckAgainIn(match cfg.poll {
            Some(poll) => poll.min(wait),
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
) -> Result<(), gallery_nats::TopologyError> {
    let stream = topology::ensure_stream(&js).await?;
    let consumer = topology::ensure_upload_watcher_consumer(&stream).await?;
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
    let Ok(event) = Event::decode(&msg.payload) else {
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
    let filter = subjects::image_filter(&event.project_id, &event.image_id);
    let history = read::read_until_now(log.context(), filter, 1, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    let last_seq = history.iter().map(|s| s.seq).max().unwrap_or(0);
    let settled = history
        .iter()
        .any(|s| matches!(s.event.body, EventBody::Uploaded(_) | EventBody::Failed(_)));
    let object = if settled {
        None
    } else {
        match store.head(&ObjectPath::from(req.object_key.as_str())).await {
            Ok(meta) => Some((meta.size, meta.e_tag.unwrap_or_default())),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.to_string()),
        }
    };
    let watched = Watched {
        settled,
        object,
        max_bytes: req.max_bytes,
        expires_at: req.link_expires_at,
    };
    let body = match decide(&watched, Utc::now(), cfg) {
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
    let next = Event::new(event.project_id.clone(), event.image_id, body);
    match log.append(&next, Guard::LastImageSeq(last_seq)).await {
        Ok(_) => Ok(None),
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

    fn watched(object: Option<(u64, &str)>) -> Watched {
        Watched {
            settled: false,
            object: object.map(|(s, e)| (s, e.to_owned())),
            max_bytes: 100,
            expires_at: at(0),
        }
    }

    #[test]
    fn decisions() {
        let cfg = WatcherConfig {
            grace: Duration::from_secs(60),
            poll: None,
        };
        assert_eq!(
            decide(
                &Watched {
                    settled: true,
                    ..watched(None)
                },
                at(999),
                &cfg
            ),
            WatchDecision::Done
        );
        assert_eq!(
            decide(&watched(Some((10, "e"))), at(-5), &cfg),
            WatchDecision::RecordUpload {
                size: 10,
                etag: "e".into()
            }
        );
        // An upload that arrived within the grace period still counts.
        assert!(matches!(
            decide(&watched(Some((10, "e"))), at(30), &cfg),
            WatchDecision::RecordUpload { .. }
        ));
        assert!(matches!(
            decide(&watched(Some((101, "e"))), at(0), &cfg),
            WatchDecision::Fail {
                code: ErrorCode::UploadTooLarge,
                ..
            }
        ));
        assert_eq!(
            decide(&watched(None), at(-60), &cfg),
            WatchDecision::CheckAgainIn(Duration::from_millis(120_050))
        );
        assert!(matches!(
            decide(&watched(None), at(60), &cfg),
            WatchDecision::Fail {
                code: ErrorCode::UploadExpired,
                ..
            }
        ));
        let polling = WatcherConfig {
            poll: Some(Duration::from_secs(2)),
            ..cfg
        };
        assert_eq!(
            decide(&watched(None), at(-60), &polling),
            WatchDecision::CheckAgainIn(Duration::from_secs(2))
        );
    }
}
