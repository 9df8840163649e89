//! `GET /files/{key}`: signed downloads of originals and versions (local mode). Served with the
//! stored type, `nosniff` and `Content-Security-Policy: sandbox`, so a file can't be
//! reinterpreted as HTML or script, nor run as a page of the api's origin.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use gallery_schema::ErrorCode;
use object_store::path::Path as ObjectPath;
use serde::Deserialize;

use super::{local_mode_only, now_secs};
use crate::content_type;
use crate::error::{ApiError, ApiResult};
use crate::signing::LinkError;
use crate::state::AppState;
use crate::view::ErrorBody;

/// A download link's query: both fields are required, checked by the handler (403
/// `bad_signature` when one is missing).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Signed {
    /// The link's end (Unix seconds); read as text so that a damaged one gets a JSON answer
    #[param(required = true, value_type = i64)]
    expires: Option<String>,
    /// The link's signature
    #[param(required = true)]
    signature: Option<String>,
}

/// Download a file (local mode).
///
/// The URLs in `versions` point here in local mode; in S3 mode they are presigned S3 URLs and
/// this endpoint answers 404. The route is `/files/{*key}`: the key spans the rest of the path.
#[utoipa::path(
    get,
    path = "/files/{key}",
    tag = "files",
    operation_id = "download_file",
    params(
        ("key" = String, Path, description = "The object key, slashes included (`originals/...` or `versions/...`)"),
        Signed,
    ),
    responses(
        (status = 200, description = "The file's bytes, cacheable for an hour", content_type = "image/*", body = Vec<u8>),
        (status = 403, description = "The link is not signed or the signature is wrong (`bad_signature`)", body = ErrorBody),
        (status = 404, description = "No such file, or the deployment is in S3 mode", body = ErrorBody),
        (status = 410, description = "The link has expired (`link_expired`): list the image again", body = ErrorBody),
    ),
)]
pub async fn download(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<Signed>,
) -> ApiResult<Response> {
    local_mode_only(&state)?;
    let (Some(expires), Some(signature)) =
        (q.expires.and_then(|e| e.parse::<i64>().ok()), q.signature)
    else {
        return Err(ApiError::new(
            ErrorCode::BadSignature,
            "the link is not signed (or its expiry is not a number)",
        ));
    };
    state
        .signer
        .verify_download(&key, expires, &signature, now_secs())
        .map_err(|e| match e {
            LinkError::BadSignature => ApiError::new(ErrorCode::BadSignature, e.to_string()),
            LinkError::Expired => ApiError::new(
                ErrorCode::LinkExpired,
                "the link has expired; list the image again for a fresh one",
            ),
        })?;
    // The image the file belongs to: a deleted image's links stop working at once, not when
    // the deleter gets to its files.
    let image = if key.starts_with("versions/") {
        gallery_schema::keys::version_image(&key).map(|(_, id, _)| id)
    } else {
        gallery_schema::keys::original_image(&key)
    };
    let rec = image.and_then(|id| state.projector.store.get(&id).ok().flatten());
    if rec
        .as_ref()
        .is_some_and(|r| r.state == gallery_schema::ImageState::Deleted)
    {
        return Err(ApiError::not_found("file"));
    }
    let content_type = if key.starts_with("versions/") {
        content_type::for_version_key(&key).to_owned()
    } else {
        // An original: the type its upload link pinned.
        rec.map(|r| r.content_type)
            .unwrap_or_else(|| "application/octet-stream".into())
    };
    let result = match state.store.get(&ObjectPath::from(key.as_str())).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Err(ApiError::not_found("file")),
        Err(e) => return Err(ApiError::unavailable("reading a file", e)),
    };
    let size = result.meta.size;
    let body = Body::from_stream(result.into_stream());
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            // Never active content on the api's origin, whatever the bytes are: a sandboxed
            // document runs no script and has an opaque origin.
            (header::CONTENT_SECURITY_POLICY, "sandbox".to_owned()),
            // Keys are immutable (versions carry their generation), so the bytes behind a URL
            // never change.
            (
                header::CACHE_CONTROL,
                "private, max-age=3600, immutable".to_owned(),
            ),
        ],
        body,
    )
        .into_response())
}
