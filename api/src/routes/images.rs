//! `GET /images/{id}`, `DELETE /images/{id}`, `POST /images/{id}/reprocess`,
//! `POST /images/{id}/complete` (the upload link, `POST /images/`, is in `create_image.rs`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use gallery_nats::{AppendError, Guard};
use gallery_schema::{Event, EventBody, ImageId, ImageState, ProjectId};
use serde::Serialize;
use utoipa::ToSchema;

use super::{links, parse_image_id, wait_applied};
use crate::access::Access;
use crate::auth::Right;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::view::{ErrorBody, ImageView, image_view};
use gallery_lifecycle::watcher::{Inspection, inspect_upload};

/// One image.
#[utoipa::path(
    get,
    path = "/images/{id}",
    tag = "images",
    operation_id = "get_image",
    params(crate::openapi_schemas::ImagePath),
    responses(
        (status = 200, description = "The image", body = ImageView),
        (status = 404, description = "No such image, or not in the token's projects", body = ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn get_one(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> ApiResult<Json<ImageView>> {
    access.signed_in()?;
    let rec = access.image(&state, &parse_image_id(&id)?, Right::Read)?;
    Ok(Json(image_view(&rec, &links(&state))))
}

/// What a deletion recorded. The objects are removed shortly after, by the deleter.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deletion {
    /// Images deleted by this request.
    pub deleted: u64,
    /// The stream sequence of the last `deleted` event (0 when nothing was deleted): the read
    /// model has applied it, and the WebSocket announced it.
    pub seq: u64,
}

/// Delete an image.
///
/// Records `deleted`: the image leaves listings at once, its WebSocket subscribers get a
/// `deleted` message, its links stop working (local mode) or expire (S3), and the deleter
/// removes its original and every version shortly after. The log keeps the image's events.
#[utoipa::path(
    delete,
    path = "/images/{id}",
    tag = "images",
    operation_id = "delete_image",
    params(crate::openapi_schemas::ImagePath),
    responses(
        (status = 202, description = "Deleted; the objects go shortly after", body = Deletion),
        (status = 403, description = "The token doesn't grant `admin` on the image's project", body = ErrorBody),
        (status = 404, description = "No such image (or already deleted), or not in the token's projects", body = ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    access.signed_in()?;
    let rec = access.image(&state, &parse_image_id(&id)?, Right::Admin)?;
    let deletion = record_deletions(&state, &rec.project_id, &[rec.image_id], false).await?;
    Ok((StatusCode::ACCEPTED, Json(deletion)).into_response())
}

/// Appends `deleted` for each image (up to 64 appends in flight) and waits until the read
/// model has them. Unguarded: a deletion wins over whatever else is under way, which then
/// meets it at its own next append. A retry after a partial failure is safe (one message id
/// per image's deletion).
pub(crate) async fn record_deletions(
    state: &AppState,
    project: &ProjectId,
    images: &[ImageId],
    whole_project: bool,
) -> ApiResult<Deletion> {
    let events: Vec<Event> = images
        .iter()
        .map(|image| {
            Event::new(
                project.clone(),
                *image,
                EventBody::Deleted { whole_project },
            )
        })
        .collect();
    let appends = events.into_iter().map(|event| {
        let log = state.log.clone();
        async move { log.append(&event, Guard::None).await }
    });
    let results: Vec<_> = futures::stream::iter(appends)
        .buffer_unordered(64)
        .collect()
        .await;
    let (mut deleted, mut seq, mut failure) = (0, 0, None);
    for result in results {
        match result {
            Ok(appended) => {
                deleted += 1;
                seq = seq.max(appended.seq);
            }
            Err(err) => failure = Some(err),
        }
    }
    if let Some(err) = failure {
        return Err(ApiError::unavailable(
            &format!(
                "recording the deletion ({deleted} of {} images recorded; retry for the rest)",
                images.len()
            ),
            err,
        ));
    }
    if seq > 0 {
        wait_applied(state, seq).await;
    }
    Ok(Deletion { deleted, seq })
}

/// Render every version again.
///
/// For an image in `done` or `error` whose original was uploaded: records a new generation,
/// and the image goes back to `uploaded`.
#[utoipa::path(
    post,
    path = "/images/{id}/reprocess",
    tag = "images",
    operation_id = "reprocess_image",
    params(crate::openapi_schemas::ImagePath),
    responses(
        (status = 202, description = "Accepted: the image as it is now", body = ImageView),
        (status = 404, description = "No such image, or not in the token's projects", body = ErrorBody),
        (status = 409, description = "Not finished, never uploaded, or changed meanwhile", body = ErrorBody),
        (status = 429, description = "Too many reprocess requests (`rate_limited`)", body = ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn reprocess(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    access.signed_in()?;
    let rec = access.image(&state, &parse_image_id(&id)?, Right::Upload)?;
    if !rec.state.is_terminal() {
        return Err(ApiError::conflict(format!(
            "the image is {}; only done or error images can be reprocessed",
            rec.state.as_str()
        )));
    }
    if rec.etag.is_none() {
        return Err(ApiError::conflict("the image was never uploaded"));
    }
    let generation = rec.generation + 1;
    let event = Event::new(
        rec.project_id.clone(),
        rec.image_id,
        EventBody::ReprocessRequested { generation },
    );
    let appended = match state
        .log
        .append(&event, Guard::LastImageSeq(rec.last_seq))
        .await
    {
        Ok(a) => a,
        Err(AppendError::Conflict) => {
            return Err(ApiError::conflict(
                "the image changed meanwhile; read it and retry",
            ));
        }
        Err(e) => return Err(ApiError::unavailable("recording the reprocess request", e)),
    };
    wait_applied(&state, appended.seq).await;
    let rec = state.load_record(&rec.image_id)?;
    Ok((StatusCode::ACCEPTED, Json(image_view(&rec, &links(&state)))).into_response())
}

/// The fast path after an upload: records it now if the object is in storage and the image is
/// still `init`, without waiting for the watcher's next look (which does the same later). An
/// object that is too large or not an image ends the image in `error` instead.
#[utoipa::path(
    post,
    path = "/images/{id}/complete",
    tag = "images",
    operation_id = "complete_upload",
    params(crate::openapi_schemas::ImagePath),
    responses(
        (status = 200, description = "The image: `uploaded` (or later), or `error` if the file was refused", body = ImageView),
        (status = 404, description = "No such image, or not in the token's projects", body = ErrorBody),
        (status = 409, description = "No upload has arrived yet", body = ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn complete(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> ApiResult<Json<ImageView>> {
    access.signed_in()?;
    let mut rec = access.image(&state, &parse_image_id(&id)?, Right::Upload)?;
    if rec.state == ImageState::Init {
        let found = inspect_upload(
            state.store.as_ref(),
            &rec.original_key,
            rec.max_bytes,
            "complete",
        )
        .await
        .map_err(|e| ApiError::unavailable("checking the upload", e))?;
        match found {
            Inspection::Missing => {
                return Err(ApiError::conflict(
                    "no upload has been received for this image",
                ));
            }
            Inspection::Ready { size, etag } => {
                super::uploads::record_upload(&state, &rec, size, &etag).await?;
            }
            Inspection::Reject { code, message } => {
                let failed = Event::new(
                    rec.project_id.clone(),
                    rec.image_id,
                    EventBody::Failed(gallery_schema::Failure {
                        code,
                        message,
                        retryable: false,
                        generation: 0,
                    }),
                );
                match state
                    .log
                    .append(&failed, Guard::LastImageSeq(rec.last_seq))
                    .await
                {
                    Ok(appended) => wait_applied(&state, appended.seq).await,
                    Err(AppendError::Conflict) => {}
                    Err(e) => return Err(ApiError::unavailable("recording the refusal", e)),
                }
            }
        }
        rec = state.load_record(&rec.image_id)?;
    }
    Ok(Json(image_view(&rec, &links(&state))))
}
