//! Bulk re-renders (`gallery reprocess`): the images of a project, or of all projects, or only
//! those rendered with an older renditions description ([`gallery_schema::RENDITIONS_VERSION`]),
//! get `reprocess_requested` (a new generation) at a bounded rate, so the processors take them
//! through their normal consumer between new uploads instead of all at once. The selection is
//! pure ([`wants`]); the appends are guarded by each record's last sequence, so an image that
//! moved on meanwhile is left alone.

use std::time::Duration;

use gallery_nats::{AppendError, EventLog, Guard};
use gallery_projector::{Record, Store};
use gallery_schema::{Event, EventBody, ImageState, ProjectId, RENDITIONS_VERSION};
use serde::{Deserialize, Serialize};

/// An operator's `gallery reprocess` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReprocessRequest {
    /// One project's images; `None` with `all`: every project's.
    pub project: Option<String>,
    pub all: bool,
    /// Only images rendered with an older renditions description (or before it was recorded).
    pub outdated: bool,
    /// Re-renders requested per second (at least 1).
    pub rate: u32,
    /// Count only.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReprocessReply {
    /// Images selected.
    pub found: usize,
    /// Whether their `reprocess_requested` are being appended (not for a dry run).
    pub started: bool,
    pub rate: u32,
    pub renditions_version: u32,
    pub error: Option<String>,
}

/// Whether `rec` is re-rendered: settled (`done` or `error`) with an upload to render from,
/// and with `outdated`, serving versions rendered with an older description than this build's
/// (an image that never rendered, such as one in error for what it is, has none to renew).
pub fn wants(rec: &Record, outdated: bool) -> bool {
    matches!(rec.state, ImageState::Done | ImageState::Error)
        && rec.etag.is_some()
        && (!outdated || (!rec.versions.is_empty() && rec.renditions_version < RENDITIONS_VERSION))
}

/// Checks the request and selects its images.
pub fn select(store: &Store, req: &ReprocessRequest) -> Result<Vec<Record>, String> {
    let project = match (&req.project, req.all) {
        (Some(p), false) => Some(ProjectId::parse(p).map_err(|e| e.to_string())?),
        (None, true) => None,
        _ => return Err("name one project, or all of them (--project P or --all)".into()),
    };
    store
        .select(project.as_ref(), |r| wants(r, req.outdated))
        .map_err(|e| e.to_string())
}

/// Appends `reprocess_requested` (the next generation) for `rec`, guarded by its last
/// sequence. `Ok(false)`: the image moved on since `rec` was read (skipped). The operator's
/// re-drive (`reconciler::redrive_errors`) and bulk re-render share it.
pub async fn request(log: &EventLog, rec: &Record) -> Result<bool, AppendError> {
    let event = Event::new(
        rec.project_id.clone(),
        rec.image_id,
        EventBody::ReprocessRequested {
            generation: rec.generation + 1,
        },
    );
    match log.append(&event, Guard::LastImageSeq(rec.last_seq)).await {
        Ok(_) => Ok(true),
        Err(AppendError::Conflict) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Appends `reprocess_requested` for each record, `rate` a second. Returns how many were
/// appended (an image that moved on since it was selected is skipped).
pub async fn request_all(log: &EventLog, records: Vec<Record>, rate: u32) -> usize {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    let mut appended = 0;
    for rec in records {
        tick.tick().await;
        match request(log, &rec).await {
            Ok(true) => {
                appended += 1;
                metrics::counter!("gallery_reprocess_requested_total", "by" => "operator")
                    .increment(1);
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(image_id = %rec.image_id, %err, "bulk reprocess: an append failed; skipped");
            }
        }
    }
    tracing::info!(appended, "bulk reprocess finished");
    appended
}

/// Answers a `gallery reprocess` request (the api's admin loop in `reconciler.rs` calls it):
/// selects the images and, unless it is a dry run, starts appending their re-renders at the
/// asked rate in a task of its own (a bulk run can take hours; the loop goes on meanwhile).
pub fn answer(log: &EventLog, store: &Store, payload: &[u8]) -> ReprocessReply {
    let req = match serde_json::from_slice::<ReprocessRequest>(payload) {
        Ok(req) => req,
        Err(e) => {
            return ReprocessReply {
                error: Some(format!("not a reprocess request: {e}")),
                ..Default::default()
            };
        }
    };
    let rate = req.rate.max(1);
    let mut reply = ReprocessReply {
        rate,
        renditions_version: gallery_schema::RENDITIONS_VERSION,
        ..Default::default()
    };
    match select(store, &req) {
        Err(e) => reply.error = Some(e),
        Ok(records) => {
            reply.found = records.len();
            tracing::warn!(
                project = ?req.project,
                outdated = req.outdated,
                found = reply.found,
                rate,
                dry_run = req.dry_run,
                "operator bulk reprocess"
            );
            if !req.dry_run && !records.is_empty() {
                let log = log.clone();
                tokio::spawn(async move { request_all(&log, records, rate).await });
                reply.started = true;
            }
        }
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use gallery_schema::{ImageId, UploadRequested};

    fn record(state: ImageState, renditions_version: u32, uploaded: bool) -> Record {
        let event = Event::new(
            ProjectId::parse("p").unwrap(),
            ImageId::new_v7(),
            EventBody::UploadRequested(UploadRequested {
                filename: "a.jpg".into(),
                object_key: "k".into(),
                content_type: "image/jpeg".into(),
                declared_size: None,
                link_expires_at: chrono::Utc::now(),
                max_bytes: 10,
                source_url: None,
            }),
        );
        let mut rec = gallery_projector::fold::apply(None, 1, &event).unwrap();
        rec.state = state;
        rec.renditions_version = renditions_version;
        rec.etag = uploaded.then(|| "e".into());
        if state == ImageState::Done {
            let thumb = gallery_projector::RenderedVersion {
                generation: 1,
                key: "versions/p/x/1/thumb.jpg".into(),
                width: 1,
                height: 1,
                bytes: 1,
                content_type: "image/jpeg".into(),
            };
            rec.versions
                .insert(gallery_schema::VersionName::Thumb, thumb);
        }
        rec
    }

    #[test]
    fn settled_uploaded_images_are_rerendered_and_outdated_means_older() {
        let current = RENDITIONS_VERSION;
        assert!(wants(&record(ImageState::Done, current, true), false));
        assert!(wants(&record(ImageState::Error, 0, true), false));
        assert!(!wants(&record(ImageState::Done, current, true), true));
        assert!(wants(&record(ImageState::Done, current - 1, true), true));
        for state in [
            ImageState::Init,
            ImageState::Uploaded,
            ImageState::Processing,
            ImageState::Deleted,
        ] {
            assert!(!wants(&record(state, 0, true), false), "{state:?}");
        }
        // Never rendered (in error for what it is): not outdated, as nothing it serves is old.
        let never = record(ImageState::Error, 0, true);
        assert!(never.versions.is_empty());
        assert!(!wants(&never, true));
        // Refused before any upload: nothing to render from.
        assert!(!wants(&record(ImageState::Error, 0, false), false));
    }
}
