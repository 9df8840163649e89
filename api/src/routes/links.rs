//! `POST /images/` (and `/images`): an upload link. Validates the request (`request.rs`), records
//! `upload_requested` (once per `Idempotency-Key`), and answers with the link and the form
//! fields: the api's own `/uploads/{id}` in local mode, an S3 POST policy in S3 mode.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{TimeDelta, Utc};
use gallery_nats::{AppendError, Guard};
use gallery_schema::{ErrorCode, Event, EventBody, ImageId, ProjectId, UploadRequested};
use serde::Serialize;
use utoipa::ToSchema;

use super::wait_applied;
use crate::access::Access;
use crate::auth::Right;
use crate::content_type;
use crate::error::{ApiError, ApiResult};
use crate::idempotency;
use crate::link_mode::LinkMode;
use crate::signing::UploadGrant;
use crate::sigv4::{PostPolicy, post_form};
use crate::state::AppState;
use crate::view::ErrorBody;

mod request;
use request::UNKNOWN_TYPE;
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
    if let Some(sha256) = &req.sha256 {
        let holder = state
            .projector
            .store
            .hash_holder(&req.project_id, sha256)
            .map_err(|e| ApiError::internal("looking up the content hash", e))?;
        if let Some(image) = holder {
            metrics::counter!("gallery_duplicates_total", "at" => "link").increment(1);
            let image = image.to_string();
            let location = format!("/images/{image}");
            return Ok((
                StatusCode::OK,
                [(header::LOCATION, location)],
                Json(DuplicateOf {
                    duplicate_of: image,
                }),
            )
                .into_response());
        }
    }
    let mut image_id = ImageId::new_v7();
    // With an Idempotency-Key the key is reserved for this image first; a retry finds the
    // reservation (or the answer) and goes on with the same image.
    let idempotent = match idempotency::key_from(&headers)? {
        Some(key) => {
            let store = state.idempotency().await?;
            let bucket_key = idempotency::bucket_key(&req.project_id, &key);
            let body_sha256 = idempotency::body_hash(&body);
            let decision = match idempotency::lookup(&store, &bucket_key).await? {
                Some(stored) => idempotency::decide(&stored, &body_sha256)?,
                None => {
                    idempotency::reserve(&store, &bucket_key, &body_sha256, &image_id.to_string())
                        .await?
                }
            };
            match decision {
                idempotency::Decision::Replay(first) => {
                    let id = first["image_id"].as_str().unwrap_or_default().to_owned();
                    if let Ok(first_image) = ImageId::parse(&id) {
                        refuse_if_deleted(&state, &req.project_id, &first_image).await?;
                    }
                    if first.get("source_url").is_some() {
                        return Ok(accepted(&id, Json(first)));
                    }
                    return Ok(created(&id, Json(first)));
                }
                idempotency::Decision::Proceed(reserved) => {
                    image_id = ImageId::parse(&reserved)
                        .map_err(|e| ApiError::internal("a reserved image id", e))?;
                }
            }
            Some((store, bucket_key, body_sha256))
        }
        None => None,
    };
    // The cap on waiting links (after the idempotency check: a retry is not a new link). A
    // soft cap: requests racing each other may pass it together by a few.
    if let Some(cap) = state.config.max_pending_links {
        let waiting = state
            .projector
            .store
            .awaiting_upload(&req.project_id)
            .map_err(|e| ApiError::internal("counting pending links", e))?;
        if waiting >= cap {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "project {} has {waiting} upload links waiting for their upload (the cap is \
                     {cap}); use them or let them expire",
                    req.project_id
                ),
            )
            .retry_after(60));
        }
    }
    crate::request_id::record(&req.project_id, Some(&image_id));
    let key = gallery_schema::keys::original_key(&req.project_id, &image_id);
    // An import has no link: its deadline is the fetch's time limit (after it and the grace,
    // an import that never happened ends in upload_expired like an unused link).
    let ttl = match req.source_url {
        Some(_) => state.config.import_timeout,
        None => state.config.upload_link_ttl,
    };
    let ttl = TimeDelta::from_std(ttl).unwrap_or(TimeDelta::minutes(15));
    // Whole seconds (the link carries seconds and the event must agree), rounded up so a link
    // never lives shorter than the configured time.
    let end = Utc::now() + ttl;
    let secs = end.timestamp() + i64::from(end.timestamp_subsec_nanos() > 0);
    let expires_at = chrono::DateTime::from_timestamp(secs, 0).expect("in range");
    let max_bytes = req.size.unwrap_or(state.config.max_upload_bytes);
    let requested = UploadRequested {
        filename: req.filename,
        object_key: key.clone(),
        content_type: req.content_type.to_owned(),
        declared_size: req.size,
        link_expires_at: expires_at,
        max_bytes,
        source_url: req.source_url.clone(),
    };
    let event = Event::new(
        req.project_id.clone(),
        image_id,
        EventBody::UploadRequested(requested.clone()),
    );
    // A fresh id has no events; one that has them was recorded by an earlier attempt of this
    // very request (same Idempotency-Key): answer with what that attempt recorded.
    let recorded = match state.log.append(&event, Guard::LastImageSeq(0)).await {
        Ok(a) if !a.duplicate => {
            wait_applied(&state, a.seq).await;
            requested
        }
        Ok(_) | Err(AppendError::Conflict) => {
            let history = state
                .log
                .image_history(&req.project_id, &image_id)
                .await
                .map_err(|e| ApiError::unavailable("re-reading the image", e))?;
            if has_deletion(&history) {
                return Err(deleted_since(&image_id));
            }
            let (seq, first) = history
                .iter()
                .find_map(|s| match &s.event.body {
                    EventBody::UploadRequested(u) => Some((s.seq, u.clone())),
                    _ => None,
                })
                .ok_or_else(|| ApiError::conflict("the image id is taken"))?;
            wait_applied(&state, seq).await;
            first
        }
        Err(e) => return Err(ApiError::unavailable("recording the upload request", e)),
    };
    if let Some(source_url) = &recorded.source_url {
        metrics::counter!("gallery_imports_requested_total").increment(1);
        let answer = ImportAccepted {
            image_id: image_id.to_string(),
            project_id: req.project_id.as_str().to_owned(),
            source_url: source_url.clone(),
            state: "init",
        };
        if let Some((store, bucket_key, body_sha256)) = idempotent {
            let response = serde_json::to_value(&answer)
                .map_err(|e| ApiError::internal("storing the import answer", e))?;
            let stored = idempotency::Stored {
                body_sha256,
                image_id: image_id.to_string(),
                response: Some(response),
            };
            idempotency::answer(&store, &bucket_key, &stored).await?;
        }
        return Ok(accepted(&image_id.to_string(), Json(answer)));
    }
    metrics::counter!("gallery_links_requested_total").increment(1);
    let link = link_response(&state, &req.project_id, &image_id, &recorded);
    if let Some((store, bucket_key, body_sha256)) = idempotent {
        let response = serde_json::to_value(&link)
            .map_err(|e| ApiError::internal("storing the link answer", e))?;
        let stored = idempotency::Stored {
            body_sha256,
            image_id: image_id.to_string(),
            response: Some(response),
        };
        idempotency::answer(&store, &bucket_key, &stored).await?;
    }
    Ok(created(&image_id.to_string(), Json(link)))
}

/// A retry (same Idempotency-Key) of a request whose image was deleted since gets no link:
/// the link would lead nowhere (local mode) or replace a deleted original (S3). The read model
/// answers first; when it doesn't know of a deletion, the image's history in the log does (a
/// deletion this replica hasn't applied yet, or one another replica recorded a moment ago).
async fn refuse_if_deleted(
    state: &AppState,
    project: &ProjectId,
    image: &ImageId,
) -> ApiResult<()> {
    let rec = state
        .projector
        .store
        .get(image)
        .map_err(|e| ApiError::internal("reading the read model", e))?;
    if rec.is_some_and(|r| r.state == gallery_schema::ImageState::Deleted) {
        return Err(deleted_since(image));
    }
    let history = state
        .log
        .image_history(project, image)
        .await
        .map_err(|e| ApiError::unavailable("re-reading the image", e))?;
    if has_deletion(&history) {
        return Err(deleted_since(image));
    }
    Ok(())
}

fn has_deletion(history: &[gallery_nats::StoredEvent]) -> bool {
    history
        .iter()
        .any(|s| matches!(s.event.body, EventBody::Deleted { .. }))
}

fn deleted_since(image: &ImageId) -> ApiError {
    ApiError::conflict(format!(
        "this Idempotency-Key made image {image}, which has been deleted since; send the \
         request with a new key for a new image"
    ))
}

/// The answer to `POST /images/`: where and how to upload the file.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadLink {
    #[schema(format = Uuid)]
    pub image_id: String,
    #[schema(schema_with = crate::openapi_schemas::project_id)]
    pub project_id: String,
    /// Where to send the file: the api's `/uploads/{id}` in local mode, the bucket's URL on
    /// the S3 endpoint in S3 mode.
    #[schema(format = Uri)]
    pub upload_link: String,
    /// Always `POST`: a `multipart/form-data` form with every `params` field, then the file
    /// as the field `file` (the S3 POST-policy contract, in both modes).
    #[schema(schema_with = crate::openapi_schemas::post_only)]
    pub method: &'static str,
    /// The form fields to send before the file, verbatim.
    pub params: BTreeMap<String, String>,
    /// The link's end (whole seconds).
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// The answer to `POST /images/` with a `source_url`: the import is recorded; the image goes
/// through the usual states (`uploaded` once fetched, or `error` with `fetch_refused`,
/// `fetch_failed`, ...), announced on the project's WebSocket.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportAccepted {
    #[schema(format = Uuid)]
    pub image_id: String,
    #[schema(schema_with = crate::openapi_schemas::project_id)]
    pub project_id: String,
    #[schema(format = Uri)]
    pub source_url: String,
    /// Always `init`: the fetch has not happened yet.
    pub state: &'static str,
}

/// The answer to `POST /images/` with a `sha256` the project already holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DuplicateOf {
    /// The project's image with these bytes.
    #[schema(format = Uuid)]
    pub duplicate_of: String,
}

/// The answer to `POST /images/` for a recorded upload request: the link and its form fields.
fn link_response(
    state: &AppState,
    project: &ProjectId,
    image_id: &ImageId,
    recorded: &UploadRequested,
) -> UploadLink {
    let image = image_id.to_string();
    let key = recorded.object_key.clone();
    let content_type = content_type::accept(&recorded.content_type)
        .or((recorded.content_type == UNKNOWN_TYPE).then_some(UNKNOWN_TYPE))
        .unwrap_or("image/jpeg");
    let max_bytes = recorded.max_bytes;
    let expires_at = recorded.link_expires_at;
    let (upload_link, params) = match &state.config.links {
        LinkMode::Local => {
            let grant = UploadGrant {
                image_id: &image,
                key: &key,
                content_type,
                max_bytes,
                expires: expires_at.timestamp(),
            };
            let params = BTreeMap::from([
                ("key".to_owned(), key.clone()),
                ("Content-Type".to_owned(), content_type.to_owned()),
                ("max_bytes".to_owned(), max_bytes.to_string()),
                ("expires".to_owned(), grant.expires.to_string()),
                ("signature".to_owned(), state.signer.sign_upload(&grant)),
            ]);
            (
                format!("{}/uploads/{image}", state.config.public_url),
                params,
            )
        }
        LinkMode::S3(s3) => {
            let policy = PostPolicy {
                key: &key,
                content_type,
                max_bytes,
                expires_at,
            };
            let params = post_form(&policy, &s3.credentials, Utc::now())
                .into_iter()
                .collect();
            (
                format!("{}/{}", s3.public_endpoint.trim_end_matches('/'), s3.bucket),
                params,
            )
        }
    };
    UploadLink {
        image_id: image,
        project_id: project.as_str().to_owned(),
        upload_link,
        method: "POST",
        params,
        expires_at: expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
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

/// 202 with `Location: /images/{id}`: an import recorded (or its stored answer replayed).
fn accepted(image_id: &str, body: impl IntoResponse) -> Response {
    let location = format!("/images/{image_id}");
    (StatusCode::ACCEPTED, [(header::LOCATION, location)], body).into_response()
}

/// 201 with `Location: /images/{id}`: a fresh link answer, or a stored one replayed.
fn created(image_id: &str, body: impl IntoResponse) -> Response {
    let location = format!("/images/{image_id}");
    (StatusCode::CREATED, [(header::LOCATION, location)], body).into_response()
}
