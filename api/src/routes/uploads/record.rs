//! Recording an upload: `uploaded` appended against the image's last event, and what a
//! conflict means (the upload watcher recorded these very bytes first, the read model was
//! behind, or the image really changed).

use gallery_nats::{AppendError, Guard};
use gallery_schema::{ErrorCode, Event, EventBody, Failure, Uploaded};

use crate::error::{ApiError, ApiResult};
use crate::routes::wait_applied;
use crate::state::AppState;

/// Whether a refusal of an upload's bytes ends its image: over the link's size, not an image
/// by its first bytes, empty (the codes the upload watcher gives the same objects in S3 mode).
/// A body cut short is not one: the client may retry on the same link.
pub(crate) fn ends_the_image(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::UploadTooLarge | ErrorCode::UnsupportedFormat | ErrorCode::CorruptImage
    )
}

/// An upload refused at the door for good (over the link's size, not an image, empty, or a
/// signed form without its file): the image ends in `error`
/// with the refusal's code at once (`failed`, guarded by its last event), so its WebSocket
/// and listings learn it now rather than at the link's expiry; a new attempt asks for a new
/// link. Answers the refusal itself; when recording fails, the link's expiry settles the image
/// as before (the upload watcher), and the client still gets the refusal.
pub(crate) async fn refuse_upload(
    state: &AppState,
    rec: &gallery_projector::Record,
    refusal: ApiError,
) -> ApiError {
    let event = Event::new(
        rec.project_id.clone(),
        rec.image_id,
        EventBody::Failed(Failure {
            code: refusal.code,
            message: format!(
                "{}; this link is spent: a new attempt needs a new upload link",
                refusal.message
            ),
            retryable: false,
            generation: 0,
        }),
    );
    match state
        .log
        .append(&event, Guard::LastImageSeq(rec.last_seq))
        .await
    {
        Ok(a) => wait_applied(state, a.seq).await,
        Err(e) => tracing::warn!(image = %rec.image_id, %e, "recording a refused upload"),
    }
    refusal
}

/// Appends `uploaded` for an image in `init` (guarded by its last event) and waits until the
/// read model shows it.
pub(crate) async fn record_upload(
    state: &AppState,
    rec: &gallery_projector::Record,
    size: u64,
    etag: &str,
) -> ApiResult<()> {
    let event = Event::new(
        rec.project_id.clone(),
        rec.image_id,
        EventBody::Uploaded(Uploaded {
            size,
            etag: etag.to_owned(),
            generation: 1,
        }),
    );
    let appended = match state
        .log
        .append(&event, Guard::LastImageSeq(rec.last_seq))
        .await
    {
        Ok(a) => {
            metrics::counter!("gallery_uploads_detected_total", "via" => "api").increment(1);
            a
        }
        Err(AppendError::Conflict) => {
            // Someone wrote first. If it was the upload watcher recording these very bytes,
            // the upload succeeded; anything else is a real conflict.
            let history = state
                .log
                .image_history(&rec.project_id, &rec.image_id)
                .await
                .map_err(|e| ApiError::unavailable("re-reading the image", e))?;
            let recorded = history.iter().find_map(|s| match &s.event.body {
                EventBody::Uploaded(u) => Some((s.seq, u.etag.clone())),
                _ => None,
            });
            if history
                .iter()
                .any(|s| matches!(s.event.body, EventBody::Deleted { .. }))
            {
                // Deleted meanwhile: nothing may follow its `deleted` event.
                return Err(ApiError::not_found("image"));
            }
            let settled = history
                .iter()
                .any(|s| matches!(s.event.body, EventBody::Failed(_)));
            match recorded {
                Some((seq, recorded_etag)) if recorded_etag == etag => {
                    wait_applied(state, seq).await;
                    return Ok(());
                }
                // Our read model was only behind: the image is still waiting for its upload,
                // so append once more against what the log says now.
                None if !settled => {
                    let last = history.iter().map(|s| s.seq).max().unwrap_or(0);
                    match state.log.append(&event, Guard::LastImageSeq(last)).await {
                        Ok(a) => a,
                        Err(AppendError::Conflict) => {
                            return Err(ApiError::conflict("the image changed during the upload"));
                        }
                        Err(e) => return Err(ApiError::unavailable("recording the upload", e)),
                    }
                }
                _ => return Err(ApiError::conflict("the image changed during the upload")),
            }
        }
        Err(e) => return Err(ApiError::unavailable("recording the upload", e)),
    };
    wait_applied(state, appended.seq).await;
    Ok(())
}
