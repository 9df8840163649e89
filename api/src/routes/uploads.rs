//! `POST /uploads/{image_id}`: the local-mode stand-in for S3's POST policy upload. The client
//! sends the link's `params` as form fields, then the file as the field `file`, exactly as it
//! would to S3. We check the signature and expiry, stream the bytes into storage with a hard
//! size cap, refuse a second upload, and append `uploaded` with the stored object's ETag.

use axum::Json;
use axum::extract::{Multipart, Path, State, multipart::Field};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gallery_nats::{AppendError, Guard};
use gallery_schema::{ErrorCode, Event, EventBody, ImageState, Uploaded};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;

use super::{now_secs, parse_image_id, wait_applied};
use crate::error::{ApiError, ApiResult};
use crate::signing::{LinkError, UploadGrant};
use crate::state::AppState;
use crate::view::ErrorBody;

/// The form fields of an upload, as received (every one optional until checked).
#[derive(Default, Debug, Clone)]
pub struct Params {
    pub key: Option<String>,
    pub content_type: Option<String>,
    pub max_bytes: Option<String>,
    pub expires: Option<String>,
    pub signature: Option<String>,
}

/// The checked fields: key, content type, max bytes, expiry, signature.
#[derive(Debug, PartialEq, Eq)]
pub struct CheckedParams {
    pub key: String,
    pub content_type: String,
    pub max_bytes: u64,
    pub expires: i64,
    pub signature: String,
}

impl Params {
    /// Every field present and well-formed (pure, fuzzed); the signature is checked after.
    pub fn check(self) -> ApiResult<CheckedParams> {
        Ok(CheckedParams {
            key: required(self.key, "key")?,
            content_type: required(self.content_type, "Content-Type")?,
            max_bytes: required(self.max_bytes, "max_bytes")?
                .parse()
                .map_err(|_| ApiError::invalid("max_bytes must be a number"))?,
            expires: required(self.expires, "expires")?
                .parse()
                .map_err(|_| ApiError::invalid("expires must be a number"))?,
            signature: required(self.signature, "signature")?,
        })
    }
}

/// How long the form's fields (before the file) may take to arrive.
const FIELDS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// Fields before the file: the link's five, and room for what S3 clients add.
const MAX_FIELDS: usize = 32;

fn required(v: Option<String>, name: &str) -> ApiResult<String> {
    v.ok_or_else(|| {
        ApiError::invalid(format!(
            "form field {name:?} is missing; send every params field before the file"
        ))
    })
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::UploadTooLarge,
            "the upload is over the size limit",
        )
    } else {
        ApiError::invalid(format!("malformed multipart body: {}", e.body_text()))
    }
}

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
        (status = 400, description = "A malformed form, a missing field or an empty file", body = ErrorBody),
        (status = 403, description = "The fields don't match their signature (`bad_signature`)", body = ErrorBody),
        (status = 404, description = "No such image, or the deployment is in S3 mode", body = ErrorBody),
        (status = 409, description = "The image has been uploaded already", body = ErrorBody),
        (status = 410, description = "The link has expired (`link_expired`)", body = ErrorBody),
        (status = 413, description = "Over the link's size limit (`upload_too_large`)", body = ErrorBody),
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
        let next = tokio::time::timeout_at(fields_by, form.next_field())
            .await
            .map_err(|_| {
                ApiError::invalid(format!(
                    "the form's fields did not arrive within {}s",
                    FIELDS_DEADLINE.as_secs()
                ))
            })?;
        let Some(field) = next.map_err(multipart_error)? else {
            return Err(ApiError::invalid("no field named \"file\" in the form"));
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
        let slot = match name.as_str() {
            "key" => &mut params.key,
            "content-type" => &mut params.content_type,
            "max_bytes" => &mut params.max_bytes,
            "expires" => &mut params.expires,
            "signature" => &mut params.signature,
            _ => continue, // S3 ignores unknown fields too (x-amz-meta-*, success_action_status)
        };
        // Read in chunks and stop early: a form field is a few dozen bytes, never megabytes.
        let mut field = field;
        let mut raw = Vec::new();
        while let Some(chunk) = tokio::time::timeout_at(fields_by, field.chunk())
            .await
            .map_err(|_| ApiError::invalid("a form field did not arrive in time"))?
            .map_err(multipart_error)?
        {
            raw.extend_from_slice(&chunk);
            if raw.len() > 1024 {
                return Err(ApiError::invalid(format!(
                    "form field {name:?} is too long"
                )));
            }
        }
        let text = String::from_utf8(raw)
            .map_err(|_| ApiError::invalid(format!("form field {name:?} is not UTF-8")))?;
        *slot = Some(text);
    }
}

async fn receive_file(
    state: &AppState,
    image: gallery_schema::ImageId,
    params: Params,
    mut file: Field<'_>,
) -> ApiResult<Response> {
    let image_str = image.to_string();
    let CheckedParams {
        key,
        content_type,
        max_bytes,
        expires,
        signature,
    } = params.check()?;
    let grant = UploadGrant {
        image_id: &image_str,
        key: &key,
        content_type: &content_type,
        max_bytes,
        expires,
    };
    state
        .signer
        .verify_upload(&grant, &signature, now_secs())
        .map_err(|e| match e {
            LinkError::BadSignature => ApiError::new(ErrorCode::BadSignature, e.to_string()),
            LinkError::Expired => ApiError::new(
                ErrorCode::LinkExpired,
                "the upload link has expired; ask for a new one",
            ),
        })?;
    let rec = state.load_record(&image)?;
    if rec.original_key != key {
        // A valid signature always names the record's own key; this is defence in depth.
        return Err(ApiError::new(
            ErrorCode::BadSignature,
            "the link is not for this image",
        ));
    }
    if rec.state != ImageState::Init {
        return Err(ApiError::conflict("this image has been uploaded already"));
    }
    let max_bytes = max_bytes.min(state.config.max_upload_bytes);
    // One upload per image at a time: a link can't be used to stream many copies at once.
    let Some(_one_at_a_time) = state.begin_upload(image) else {
        return Err(ApiError::conflict(
            "an upload for this image is already in progress",
        ));
    };
    // The bytes must be in before the link's expiry plus the grace: a trickle can't keep a
    // connection (and a temporary object) forever.
    let grace = i64::try_from(state.config.upload_grace.as_secs()).unwrap_or(i64::MAX);
    let left = expires
        .saturating_add(grace)
        .saturating_sub(now_secs())
        .max(0);
    let deadline = std::time::Duration::from_secs(left as u64);

    // Write to a private temporary key, then link it into place only if nothing is there: two
    // racing uploads through one link can't replace each other's bytes.
    let tmp = ObjectPath::from(format!("tmp/uploads/{image}-{}", uuid::Uuid::new_v4()));
    let mut writer = BufWriter::new(state.store.clone(), tmp.clone());
    let mut size: u64 = 0;
    let streaming = async {
        while let Some(chunk) = file.chunk().await.map_err(multipart_error)? {
            size += chunk.len() as u64;
            if size > max_bytes {
                return Err(ApiError::new(
                    ErrorCode::UploadTooLarge,
                    format!("the upload is over the limit of {max_bytes} bytes"),
                ));
            }
            writer
                .put(chunk)
                .await
                .map_err(|e| ApiError::internal("writing an upload", e))?;
        }
        if size == 0 {
            return Err(ApiError::invalid("the file is empty"));
        }
        writer
            .shutdown()
            .await
            .map_err(|e| ApiError::internal("finishing an upload", e))?;
        Ok(())
    };
    let streamed: ApiResult<()> = match tokio::time::timeout(deadline, streaming).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::new(
            ErrorCode::LinkExpired,
            "the upload link expired while the upload was still arriving; ask for a new one",
        )),
    };
    if let Err(err) = streamed {
        let _ = writer.abort().await;
        let _ = state.store.delete(&tmp).await;
        return Err(err);
    }
    let final_path = ObjectPath::from(key.as_str());
    let linked = state.store.copy_if_not_exists(&tmp, &final_path).await;
    let _ = state.store.delete(&tmp).await;
    match linked {
        Ok(()) => {}
        Err(object_store::Error::AlreadyExists { .. }) => {
            // An earlier upload through this link stored its bytes, but its `uploaded` was not
            // recorded (NATS failed over under it, say, and the client retried): record those
            // bytes now, so the image goes on, and keep them rather than these.
            let meta = state
                .store
                .head(&final_path)
                .await
                .map_err(|e| ApiError::internal("reading back an earlier upload", e))?;
            record_upload(state, &rec, meta.size, &meta.e_tag.unwrap_or_default()).await?;
            return Err(ApiError::conflict(
                "this image has been uploaded already (the first upload is kept)",
            ));
        }
        Err(e) => return Err(ApiError::internal("storing an upload", e)),
    }
    let meta = state
        .store
        .head(&final_path)
        .await
        .map_err(|e| ApiError::internal("reading back an upload", e))?;
    let etag = meta.e_tag.unwrap_or_default();
    record_upload(state, &rec, size, &etag).await.map_err(|e| {
        if e.status == StatusCode::SERVICE_UNAVAILABLE {
            // The bytes are stored: POST /images/{id}/complete records them once NATS is back.
            ApiError {
                message: format!("{} (then POST /images/{image_str}/complete)", e.message),
                ..e
            }
        } else {
            e
        }
    })?;
    let body = UploadReceipt {
        image_id: image_str,
        state: "uploaded",
        size,
        etag,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
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
