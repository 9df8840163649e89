//! The answers of `POST /images/`: the upload link with its form fields (local mode's signed
//! grant, or S3's POST policy), the accepted import, the duplicate, and their status lines
//! with `Location`.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use gallery_schema::{ImageId, ProjectId, UploadRequested};
use serde::Serialize;
use utoipa::ToSchema;

use super::request::UNKNOWN_TYPE;
use crate::content_type;
use crate::link_mode::LinkMode;
use crate::signing::UploadGrant;
use crate::sigv4::{PostPolicy, post_form};
use crate::state::AppState;

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
pub(super) fn link_response(
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

/// 200 with `Location: /images/{id}`: the project's image with the same bytes.
pub(super) fn duplicate(image: &ImageId) -> Response {
    let image = image.to_string();
    let location = format!("/images/{image}");
    let body = Json(DuplicateOf {
        duplicate_of: image,
    });
    (StatusCode::OK, [(header::LOCATION, location)], body).into_response()
}

/// 202 with `Location: /images/{id}`: an import recorded (or its stored answer replayed).
pub(super) fn accepted(image_id: &str, body: impl IntoResponse) -> Response {
    let location = format!("/images/{image_id}");
    (StatusCode::ACCEPTED, [(header::LOCATION, location)], body).into_response()
}

/// 201 with `Location: /images/{id}`: a fresh link answer, or a stored one replayed.
pub(super) fn created(image_id: &str, body: impl IntoResponse) -> Response {
    let location = format!("/images/{image_id}");
    (StatusCode::CREATED, [(header::LOCATION, location)], body).into_response()
}
