//! `POST /images/` (and `/images`): an upload link. Validates the request (`request.rs`), records
//! `upload_requested` (once per `Idempotency-Key`: `idempotent.rs`), and answers with the link
//! and the form fields (`answer.rs`): the api's own `/uploads/{id}` in local mode, an S3 POST
//! policy in S3 mode.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, TimeDelta, Utc};
use gallery_nats::{AppendError, Guard};
use gallery_schema::{ErrorCode, Event, EventBody, ImageId, ProjectId, UploadRequested};

use super::wait_applied;
use crate::access::Access;
use crate::auth::Right;
use crate::error::{ApiError, ApiResult};
use crate::link_mode::LinkMode;
use crate::state::AppState;
use crate::view::ErrorBody;

mod answer;
mod idempotent;
mod request;
pub use answer::{DuplicateOf, ImportAccepted, UploadLink};
use idempotent::Claim;
pub use request::{CreateImage, CreateImageRequest, parse_create, parse_create_with};

/// Ask for an upload link, or import from a URL.
///
/// Records the upload request and answers with the link and the form fields to send with the
/// file. With `source_url` instead, the service fetches the image itself: 202, no link. The image then appears in listings in state `init`. With an `Idempotency-Key`, a retry
/// of the same request (same body, within 24 hours) gets the same image and link again. With
/// `sha256`, when the project already has an image with those bytes, the answer is 200
/// `{"duplicate_of": "<image_id>"}` and nothing is recorded.
#[utoipa::path(
    post,
    path = "/images/",
    tag = "images",
    operation_id = "create_image",
    request_body = CreateImageRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: 1-255 printable ASCII characters, unique per request")),
    responses(
        (status = 201, description = "The link; `Location` names the image", body = UploadLink,
            headers(("Location" = String, description = "`/images/{image_id}`"))),
        (status = 200, description = "The project already has these bytes (`sha256` matched): no link", body = DuplicateOf,
            headers(("Location" = String, description = "`/images/{duplicate_of}`"))),
        (status = 202, description = "An import by URL (`source_url`) recorded; the service fetches it", body = ImportAccepted,
            headers(("Location" = String, description = "`/images/{image_id}`"))),
        (status = 400, description = "`invalid_request` or `invalid_project_id`", body = ErrorBody),
        (status = 403, description = "The token doesn't grant `upload` on the project", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used with another body, or its image has been deleted since", body = ErrorBody),
        (status = 413, description = "`size` is over the limit (`upload_too_large`)", body = ErrorBody),
        (status = 415, description = "Not an accepted image type (`unsupported_format`)", body = ErrorBody),
        (status = 429, description = "Too many links asked, or waiting (`rate_limited`; see `Retry-After`)", body = ErrorBody),
        (status = 503, description = "The event log is unavailable; retry (see `Retry-After`)", body = ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    access: Access,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    access.signed_in()?;
    let local = matches!(state.config.links, LinkMode::Local);
    let req = parse_create_with(&body, state.config.max_upload_bytes, local)?;
    access.require(&req.project_id, Right::Upload)?;
    if let Some(image) = find_duplicate(&state, &req)? {
        metrics::counter!("gallery_duplicates_total", "at" => "link").increment(1);
        return Ok(answer::duplicate(&image));
    }
    let claim = idempotent::claim(&state, &req.project_id, &headers, &body).await?;
    let (image_id, kept) = match claim {
        Claim::Replay(first_answer) => return Ok(first_answer),
        Claim::Proceed(image_id, kept) => (image_id, kept),
    };
    // After the idempotency check: a retry is not a new link.
    refuse_over_pending_cap(&state, &req.project_id)?;
    crate::request_id::record(&req.project_id, Some(&image_id));
    let requested = upload_requested(&state, &req, &image_id);
    let recorded = record(&state, &req.project_id, image_id, requested).await?;
    let image = image_id.to_string();
    if let Some(source_url) = &recorded.source_url {
        metrics::counter!("gallery_imports_requested_total").increment(1);
        let import = ImportAccepted {
            image_id: image.clone(),
            project_id: req.project_id.as_str().to_owned(),
            source_url: source_url.clone(),
            state: "init",
        };
        idempotent::keep_answer(kept, &image_id, &import, "storing the import answer").await?;
        return Ok(answer::accepted(&image, Json(import)));
    }
    metrics::counter!("gallery_links_requested_total").increment(1);
    let link = answer::link_response(&state, &req.project_id, &image_id, &recorded);
    idempotent::keep_answer(kept, &image_id, &link, "storing the link answer").await?;
    Ok(answer::created(&image, Json(link)))
}

/// With `sha256`: the project's image that already holds those bytes, if any.
fn find_duplicate(state: &AppState, req: &CreateImage) -> ApiResult<Option<ImageId>> {
    let Some(sha256) = &req.sha256 else {
        return Ok(None);
    };
    state
        .projector
        .store
        .hash_holder(&req.project_id, sha256)
        .map_err(|e| ApiError::internal("looking up the content hash", e))
}

/// The cap on a project's links waiting for their upload (`max_pending_links`): 429 at it. A
/// soft cap: requests racing each other may pass it together by a few.
fn refuse_over_pending_cap(state: &AppState, project: &ProjectId) -> ApiResult<()> {
    let Some(cap) = state.config.max_pending_links else {
        return Ok(());
    };
    let waiting = state
        .projector
        .store
        .awaiting_upload(project)
        .map_err(|e| ApiError::internal("counting pending links", e))?;
    if waiting >= cap {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "project {project} has {waiting} upload links waiting for their upload (the cap \
                 is {cap}); use them or let them expire"
            ),
        )
        .retry_after(60));
    }
    Ok(())
}

/// The `upload_requested` event's body for this request: the original's key, and the link's
/// expiry and size cap.
fn upload_requested(state: &AppState, req: &CreateImage, image_id: &ImageId) -> UploadRequested {
    // An import has no link: its deadline is the fetch's time limit (after it and the grace,
    // an import that never happened ends in upload_expired like an unused link).
    let ttl = match req.source_url {
        Some(_) => state.config.import_timeout,
        None => state.config.upload_link_ttl,
    };
    UploadRequested {
        filename: req.filename.clone(),
        object_key: gallery_schema::keys::original_key(&req.project_id, image_id),
        content_type: req.content_type.to_owned(),
        declared_size: req.size,
        link_expires_at: expiry_after(ttl),
        max_bytes: req.size.unwrap_or(state.config.max_upload_bytes),
        source_url: req.source_url.clone(),
    }
}

/// Now plus `ttl`, in whole seconds (the link carries seconds and the event must agree),
/// rounded up so a link never lives shorter than the configured time.
fn expiry_after(ttl: std::time::Duration) -> DateTime<Utc> {
    let ttl = TimeDelta::from_std(ttl).unwrap_or(TimeDelta::minutes(15));
    let end = Utc::now() + ttl;
    let secs = end.timestamp() + i64::from(end.timestamp_subsec_nanos() > 0);
    DateTime::from_timestamp(secs, 0).expect("in range")
}

/// Appends `upload_requested` for a fresh image and waits until the read model has it. A
/// fresh id has no events; one that has them was recorded by an earlier attempt of this very
/// request (same Idempotency-Key): the answer is then what that attempt recorded.
async fn record(
    state: &AppState,
    project: &ProjectId,
    image_id: ImageId,
    requested: UploadRequested,
) -> ApiResult<UploadRequested> {
    let event = Event::new(
        project.clone(),
        image_id,
        EventBody::UploadRequested(requested.clone()),
    );
    match state.log.append(&event, Guard::LastImageSeq(0)).await {
        Ok(a) if !a.duplicate => {
            wait_applied(state, a.seq).await;
            Ok(requested)
        }
        Ok(_) | Err(AppendError::Conflict) => first_recorded(state, project, &image_id).await,
        Err(e) => Err(ApiError::unavailable("recording the upload request", e)),
    }
}

/// The `upload_requested` an earlier attempt recorded for this image, once the read model has
/// it (409 when the image has been deleted since, or was never this request's).
async fn first_recorded(
    state: &AppState,
    project: &ProjectId,
    image_id: &ImageId,
) -> ApiResult<UploadRequested> {
    let history = state
        .log
        .image_history(project, image_id)
        .await
        .map_err(|e| ApiError::unavailable("re-reading the image", e))?;
    idempotent::refuse_if_deleted_in(&history, image_id)?;
    let (seq, first) = history
        .iter()
        .find_map(|s| match &s.event.body {
            EventBody::UploadRequested(u) => Some((s.seq, u.clone())),
            _ => None,
        })
        .ok_or_else(|| ApiError::conflict("the image id is taken"))?;
    wait_applied(state, seq).await;
    Ok(first)
}

/// `POST /images` (no trailing slash): the same as `POST /images/`.
#[utoipa::path(
    post,
    path = "/images",
    tag = "images",
    operation_id = "create_image_unslashed",
    request_body = CreateImageRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: 1-255 printable ASCII characters, unique per request")),
    responses(
        (status = 201, description = "The link, as `POST /images/` answers", body = UploadLink),
    ),
    security((), ("token" = [])),
)]
pub async fn create_unslashed(
    state: State<AppState>,
    access: Access,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    create(state, access, headers, body).await
}
