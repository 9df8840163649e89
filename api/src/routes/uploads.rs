//! `POST /uploads/{image_id}`: the local-mode stand-in for S3's POST policy upload. The client
//! sends the link's `params` as form fields, then the file as the field `file`, exactly as it
//! would to S3. We check the signature and expiry, stream the bytes into storage with a hard
//! size cap, refuse a second upload, and append `uploaded` with the stored object's ETag: the
//! form's fields in `form.rs`, the bytes in `store.rs`, the event in `record.rs`.

use axum::Json;
use axum::extract::{Multipart, Path, State, multipart::Field};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gallery_schema::{ErrorCode, ImageId, ImageState};
use serde::Serialize;
use utoipa::ToSchema;

use super::{now_secs, parse_image_id};
use crate::error::{ApiError, ApiResult};
use crate::signing::{LinkError, UploadGrant};
use crate::state::AppState;
use crate::view::ErrorBody;

mod form;
mod record;
mod store;
pub use form::{CheckedParams, Params};
use form::{FIELDS_DEADLINE, MAX_FIELDS};
pub(crate) use record::record_upload;
use store::Placed;

/// The answer to a local-mode upload.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadReceipt {
    #[schema(format = Uuid)]
    pub image_id: String,
    /// Always `uploaded`: processing starts next.
    #[schema(schema_with = crate::openapi_schemas::image_state)]
    pub state: &'static str,
    /// Bytes stored.
    pub size: u64,
    /// The stored object's ETag.
    pub etag: String,
}

/// The form of an upload: the link's `params` fields in any order, then the file. Unknown
/// fields before the file are skipped, as S3 does (documentation: the handler reads the form
/// as a stream).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    key: String,
    #[schema(rename = "Content-Type")]
    content_type: String,
    max_bytes: String,
    expires: String,
    signature: String,
    /// The file, last.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Upload the file (local mode).
///
/// Where the link of `POST /images/` points in local mode; in S3 mode the link points at the
/// bucket and this endpoint answers 404. Send `multipart/form-data`: every `params` field, then
/// the file as `file`.
#[utoipa::path(
    post,
    path = "/uploads/{id}",
    tag = "files",
    operation_id = "upload_file",
    params(crate::openapi_schemas::ImagePath),
    request_body(content = inline(UploadForm), content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored; the image is `uploaded`", body = UploadReceipt),
        (status = 400, description = "A malformed form or a missing field; a signed form without its file also ends the image (`failed`)", body = ErrorBody),
        (status = 403, description = "The fields don't match their signature (`bad_signature`)", body = ErrorBody),
        (status = 404, description = "No such image, or the deployment is in S3 mode", body = ErrorBody),
        (status = 409, description = "The image has been uploaded already", body = ErrorBody),
        (status = 410, description = "The link has expired (`link_expired`)", body = ErrorBody),
        (status = 413, description = "Over the link's size limit (`upload_too_large`); the image ends in `error`", body = ErrorBody),
        (status = 415, description = "The bytes are not an accepted image format (`unsupported_format`); the image ends in `error`", body = ErrorBody),
        (status = 422, description = "An empty file (`corrupt_image`); the image ends in `error`", body = ErrorBody),
        (status = 503, description = "Stored, but not recorded yet: `POST /images/{id}/complete` later", body = ErrorBody),
    ),
)]
pub async fn upload(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Response> {
    super::local_mode_only(&state)?;
    let image = parse_image_id(&id)?;
    let mut form = form.map_err(|e| {
        ApiError::invalid(format!(
            "send multipart/form-data: the params fields, then the file ({e})"
        ))
    })?;
    let mut params = Params::default();
    // Before the file, the form is a few small fields: they must arrive within
    // FIELDS_DEADLINE, and at most MAX_FIELDS of them (unknown ones are skipped, as S3 does).
    let fields_by = tokio::time::Instant::now() + FIELDS_DEADLINE;
    let mut seen = 0;
    loop {
        let Some(field) = form::next_field(&mut form, fields_by).await? else {
            return Err(form_without_file(&state, image, params).await);
        };
        let name = field.name().unwrap_or_default().to_ascii_lowercase();
        if name == "file" {
            return receive_file(&state, image, params, field).await;
        }
        seen += 1;
        if seen > MAX_FIELDS {
            return Err(ApiError::invalid(format!(
                "more than {MAX_FIELDS} form fields before the file"
            )));
        }
        // S3 ignores unknown fields too (x-amz-meta-*, success_action_status).
        let Some(slot) = params.slot(&name) else {
            continue;
        };
        *slot = Some(form::field_text(field, &name, fields_by).await?);
    }
}

/// The file, after the fields: checks the link, stores the bytes and records `uploaded`.
async fn receive_file(
    state: &AppState,
    image: ImageId,
    params: Params,
    file: Field<'_>,
) -> ApiResult<Response> {
    let params = params.check()?;
    verify_link(state, &image, &params)?;
    let rec = awaiting_upload(state, &image, &params.key)?;
    let max_bytes = params.max_bytes.min(state.config.max_upload_bytes);
    // One upload per image at a time: a link can't be used to stream many copies at once.
    let Some(_one_at_a_time) = state.begin_upload(image) else {
        return Err(ApiError::conflict(
            "an upload for this image is already in progress",
        ));
    };
    let deadline = upload_deadline(state, params.expires);
    let placed = match store::place(state, &image, &params.key, file, max_bytes, deadline).await {
        Err(e) if record::ends_the_image(e.code) => {
            return Err(record::refuse_upload(state, &rec, e).await);
        }
        placed => placed?,
    };
    let (size, etag) = match placed {
        Placed::Fresh { size, etag } => (size, etag),
        Placed::Earlier { size, etag } => {
            // An earlier upload through this link stored its bytes, but its `uploaded` was not
            // recorded (NATS failed over under it, say, and the client retried): record those
            // bytes now, so the image goes on, and keep them rather than these.
            record_upload(state, &rec, size, &etag).await?;
            return Err(ApiError::conflict(
                "this image has been uploaded already (the first upload is kept)",
            ));
        }
    };
    let image_id = image.to_string();
    record_upload(state, &rec, size, &etag)
        .await
        .map_err(|e| complete_later(e, &image_id))?;
    let body = UploadReceipt {
        image_id,
        state: "uploaded",
        size,
        etag,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A form that ended without its file. Once its fields prove it comes from the link's holder
/// (complete, signed, unexpired), the image ends in error at once like any refusal at the door;
/// before that it is only a 400: a form nobody can attribute must not end someone's upload.
async fn form_without_file(state: &AppState, image: ImageId, params: Params) -> ApiError {
    let refusal = form::no_file();
    let Ok(params) = params.check() else {
        return refusal;
    };
    if verify_link(state, &image, &params).is_err() {
        return refusal;
    }
    match awaiting_upload(state, &image, &params.key) {
        Ok(rec) => record::refuse_upload(state, &rec, refusal).await,
        Err(e) => e,
    }
}

/// The form's fields match their signature, and the link has not expired.
fn verify_link(state: &AppState, image: &ImageId, params: &CheckedParams) -> ApiResult<()> {
    let image_id = image.to_string();
    let grant = UploadGrant {
        image_id: &image_id,
        key: &params.key,
        content_type: &params.content_type,
        max_bytes: params.max_bytes,
        expires: params.expires,
    };
    state
        .signer
        .verify_upload(&grant, &params.signature, now_secs())
        .map_err(|e| match e {
            LinkError::BadSignature => ApiError::new(ErrorCode::BadSignature, e.to_string()),
            LinkError::Expired => ApiError::new(
                ErrorCode::LinkExpired,
                "the upload link has expired; ask for a new one",
            ),
        })
}

/// The image's record, still waiting for its upload to the link's `key`.
fn awaiting_upload(
    state: &AppState,
    image: &ImageId,
    key: &str,
) -> ApiResult<gallery_projector::Record> {
    let rec = state.load_record(image)?;
    if rec.original_key != key {
        // A valid signature always names the record's own key; this is defence in depth.
        return Err(ApiError::new(
            ErrorCode::BadSignature,
            "the link is not for this image",
        ));
    }
    match rec.state {
        ImageState::Init => {}
        ImageState::Error => {
            let code = rec.error.as_ref().map_or("error", |e| e.code.as_str());
            return Err(ApiError::conflict(format!(
                "this image ended in error ({code}); ask for a new upload link"
            )));
        }
        _ => return Err(ApiError::conflict("this image has been uploaded already")),
    }
    Ok(rec)
}

/// How long the bytes may take: until the link's expiry plus the grace, so a trickle can't keep
/// a connection (and a temporary object) forever.
fn upload_deadline(state: &AppState, expires: i64) -> std::time::Duration {
    let grace = i64::try_from(state.config.upload_grace.as_secs()).unwrap_or(i64::MAX);
    let left = expires
        .saturating_add(grace)
        .saturating_sub(now_secs())
        .max(0);
    std::time::Duration::from_secs(left as u64)
}

/// A 503 while recording: the bytes are stored, so `POST /images/{id}/complete` records them
/// once NATS is back (the message says so).
fn complete_later(e: ApiError, image_id: &str) -> ApiError {
    if e.status == StatusCode::SERVICE_UNAVAILABLE {
        ApiError {
            message: format!("{} (then POST /images/{image_id}/complete)", e.message),
            ..e
        }
    } else {
        e
    }
}
