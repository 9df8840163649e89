//! Imports by URL, the watcher's part (the rules and the fetch are in [`crate::import`]). An
//! `upload_requested` that carries a `source_url` has no upload link to wait for: the watcher
//! fetches it at once, stores it at the image's original key, and records `uploaded`
//! (generation 1) as for any upload, or `failed` (generation 0) with `fetch_refused`,
//! `fetch_failed`, `upload_too_large`, `unsupported_format` or `corrupt_image`. A storage or
//! log error leaves the delivery to come again; so does a replica dying mid-fetch (the fetch's
//! time limit is below the consumer's 30 s ack wait).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};

use gallery_nats::{AppendError, EventLog, Guard};
use gallery_schema::event::Failure;
use gallery_schema::sniff::{known_unsupported, sniff_image, unsupported_message};
use gallery_schema::{ErrorCode, Event, EventBody, UploadRequested, Uploaded};
use object_store::{ObjectStore, PutPayload, path::Path as ObjectPath};

use crate::import::{AllowList, FetchLimits, fetch, parse_source_url};

/// How imports are fetched.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    /// Hosts fetched whatever their address (`--import-allow-hosts`).
    pub allow: AllowList,
    /// The whole fetch, redirects included (`GALLERY_IMPORT_TIMEOUT`).
    pub timeout: Duration,
}

impl Default for ImportConfig {
    fn default() -> Self {
        Self {
            allow: AllowList::default(),
            timeout: Duration::from_secs(20),
        }
    }
}

/// Imports at once (each one a task, so a slow source holds up neither the watcher's other
/// deliveries nor other imports).
pub(super) struct Imports {
    slots: Arc<tokio::sync::Semaphore>,
}

/// Imports fetched at once by one api process; more wait for their delivery to come again.
const MAX_IMPORTS: usize = 16;

impl Default for Imports {
    fn default() -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_IMPORTS)),
        }
    }
}

impl Imports {
    /// Runs the import of `msg` in a task, acknowledging the delivery when its outcome is
    /// recorded (or asking for it again when storage or the log failed, or every slot is busy).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn spawn(
        &self,
        log: &EventLog,
        store: &Arc<dyn ObjectStore>,
        cfg: &ImportConfig,
        msg: jetstream::Message,
        event: Event,
        req: UploadRequested,
        source_url: String,
    ) {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
            });
            return;
        };
        let (log, store, cfg) = (log.clone(), store.clone(), cfg.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let ack = match import(&log, store.as_ref(), &cfg, &event, &req, &source_url).await {
                Ok(()) => msg.ack().await,
                Err(err) => {
                    tracing::warn!(image_id = %event.image_id, %err, "import: will retry");
                    msg.ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                        .await
                }
            };
            if let Err(err) = ack {
                tracing::warn!(%err, "import: acknowledging");
            }
        });
    }
}

/// What a fetch came to.
enum Fetched {
    Stored { size: u64, etag: String },
    Refused { code: ErrorCode, message: String },
}

/// Imports the image of `event` unless its history is settled, and records the outcome.
/// `Err`: try again later (storage or the log failed).
async fn import(
    log: &EventLog,
    store: &dyn ObjectStore,
    cfg: &ImportConfig,
    event: &Event,
    req: &UploadRequested,
    source_url: &str,
) -> Result<(), String> {
    let history = log
        .image_history(&event.project_id, &event.image_id)
        .await
        .map_err(|e| e.to_string())?;
    let last_seq = history.iter().map(|s| s.seq).max().unwrap_or(0);
    if history.iter().any(|s| {
        matches!(
            s.event.body,
            EventBody::Uploaded(_) | EventBody::Failed(_) | EventBody::Deleted { .. }
        )
    }) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let body = match fetch_and_store(store, cfg, req, source_url).await? {
        Fetched::Stored { size, etag } => EventBody::Uploaded(Uploaded {
            size,
            etag,
            generation: 1,
        }),
        Fetched::Refused { code, message } => {
            tracing::info!(image_id = %event.image_id, %code, %message, "import ends in error");
            EventBody::Failed(Failure {
                code,
                message,
                retryable: false,
                generation: 0,
            })
        }
    };
    let outcome = match &body {
        EventBody::Failed(f) => f.code.as_str(),
        _ => "imported",
    };
    metrics::counter!("gallery_imports_total", "outcome" => outcome).increment(1);
    metrics::histogram!("gallery_import_duration_seconds").record(started.elapsed().as_secs_f64());
    let next = Event::new(event.project_id.clone(), event.image_id, body);
    match log.append(&next, Guard::LastImageSeq(last_seq)).await {
        // Someone else wrote meanwhile (a deletion): their word stands.
        Ok(_) | Err(AppendError::Conflict) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

async fn fetch_and_store(
    store: &dyn ObjectStore,
    cfg: &ImportConfig,
    req: &UploadRequested,
    source_url: &str,
) -> Result<Fetched, String> {
    let refused = |code, message: String| Ok(Fetched::Refused { code, message });
    let url = match parse_source_url(source_url) {
        Ok(url) => url,
        Err(why) => return refused(ErrorCode::FetchRefused, why),
    };
    let limits = FetchLimits {
        max_bytes: req.max_bytes,
        timeout: cfg.timeout,
    };
    let bytes = match fetch(url, &limits, &cfg.allow).await {
        Ok(bytes) => bytes,
        Err(e) => return refused(e.code(), e.to_string()),
    };
    if bytes.is_empty() {
        return refused(ErrorCode::CorruptImage, "the source sent no bytes".into());
    }
    if sniff_image(&bytes).is_none() {
        return refused(
            ErrorCode::UnsupportedFormat,
            unsupported_message(known_unsupported(&bytes)).into(),
        );
    }
    let size = bytes.len() as u64;
    let put = store
        .put(
            &ObjectPath::from(req.object_key.as_str()),
            PutPayload::from(bytes),
        )
        .await
        .map_err(|e| format!("storing the import: {e}"))?;
    Ok(Fetched::Stored {
        size,
        etag: put.e_tag.unwrap_or_default(),
    })
}
