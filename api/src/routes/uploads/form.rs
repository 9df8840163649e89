//! The form of a local-mode upload, read as a stream: the link's `params` fields before the
//! file (within [`FIELDS_DEADLINE`], at most [`MAX_FIELDS`] of them, each a few dozen bytes),
//! and their checks ([`Params::check`], pure, fuzzed).

use axum::extract::Multipart;
use axum::extract::multipart::{Field, MultipartError};
use axum::http::StatusCode;
use gallery_schema::ErrorCode;
use tokio::time::Instant;

use crate::error::{ApiError, ApiResult};

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

    /// Where the field named `name` (lowercase) goes; `None` for a field the link doesn't have.
    pub(super) fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        match name {
            "key" => Some(&mut self.key),
            "content-type" => Some(&mut self.content_type),
            "max_bytes" => Some(&mut self.max_bytes),
            "expires" => Some(&mut self.expires),
            "signature" => Some(&mut self.signature),
            _ => None,
        }
    }
}

/// How long the form's fields (before the file) may take to arrive.
pub(super) const FIELDS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// Fields before the file: the link's five, and room for what S3 clients add.
pub(super) const MAX_FIELDS: usize = 32;
/// The longest field before the file: a form field is a few dozen bytes, never megabytes.
const MAX_FIELD_BYTES: usize = 1024;

fn required(v: Option<String>, name: &str) -> ApiResult<String> {
    v.ok_or_else(|| {
        ApiError::invalid(format!(
            "form field {name:?} is missing; send every params field before the file"
        ))
    })
}

pub(super) fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::UploadTooLarge,
            "the upload is over the size limit",
        )
    } else {
        ApiError::invalid(format!("malformed multipart body: {}", e.body_text()))
    }
}

/// The form's next field, arriving before `fields_by`; `None` when the form ends.
pub(super) async fn next_field(
    form: &mut Multipart,
    fields_by: Instant,
) -> ApiResult<Option<Field<'_>>> {
    let next = tokio::time::timeout_at(fields_by, form.next_field())
        .await
        .map_err(|_| {
            ApiError::invalid(format!(
                "the form's fields did not arrive within {}s",
                FIELDS_DEADLINE.as_secs()
            ))
        })?;
    next.map_err(multipart_error)
}

/// The refusal of a form that ended without its file.
pub(super) fn no_file() -> ApiError {
    ApiError::invalid("no field named \"file\" in the form (send it last, after the params fields)")
}

/// A field's text, read in chunks before `fields_by` and refused early once over
/// [`MAX_FIELD_BYTES`].
pub(super) async fn field_text(
    mut field: Field<'_>,
    name: &str,
    fields_by: Instant,
) -> ApiResult<String> {
    let mut raw = Vec::new();
    while let Some(chunk) = tokio::time::timeout_at(fields_by, field.chunk())
        .await
        .map_err(|_| ApiError::invalid("a form field did not arrive in time"))?
        .map_err(multipart_error)?
    {
        raw.extend_from_slice(&chunk);
        if raw.len() > MAX_FIELD_BYTES {
            return Err(ApiError::invalid(format!(
                "form field {name:?} is too long"
            )));
        }
    }
    String::from_utf8(raw)
        .map_err(|_| ApiError::invalid(format!("form field {name:?} is not UTF-8")))
}
