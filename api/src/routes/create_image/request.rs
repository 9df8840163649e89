//! The request body of `POST /images/`: parsing and validating it (pure, fuzzed), and its
//! OpenAPI description.

use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;
use utoipa::ToSchema;

use gallery_schema::sniff::unsupported_message;
use gallery_schema::{ErrorCode, ProjectId};

use crate::content_type;
use crate::error::{ApiError, ApiResult};

/// The longest file name we keep (display only; never part of a key).
const MAX_FILENAME: usize = 255;

#[derive(Debug, PartialEq)]
pub struct CreateImage {
    pub filename: String,
    pub project_id: ProjectId,
    pub content_type: &'static str,
    pub size: Option<u64>,
    /// SHA-256 of the file the client is about to upload, when it sent one.
    pub sha256: Option<[u8; 32]>,
    /// Import by URL: the service fetches the image from here (no upload link).
    pub source_url: Option<String>,
}

/// Parses and validates the body of `POST /images/` (pure, unit-tested), refusing names that
/// tell no accepted type when no `content_type` is given.
pub fn parse_create(body: &[u8], max_bytes: u64) -> ApiResult<CreateImage> {
    parse_create_with(body, max_bytes, false)
}

/// [`parse_create`]; with `sniff_unknown` (local mode: the bytes pass through the api, and the
/// processor sniffs them anyway), a name that tells no type is accepted as
/// [`UNKNOWN_TYPE`] instead of refused.
pub fn parse_create_with(
    body: &[u8],
    max_bytes: u64,
    sniff_unknown: bool,
) -> ApiResult<CreateImage> {
    let obj = json_object(body)?;
    refuse_unknown_fields(&obj)?;
    let project_id = project_id_of(&obj)?;
    let source_url = source_url_of(&obj)?;
    let filename = filename_of(&obj, source_url.as_ref())?;
    let content_type = content_type_of(&obj, &filename, source_url.is_some(), sniff_unknown)?;
    let size = size_of(&obj, max_bytes)?;
    let sha256 = sha256_of(&obj)?;
    Ok(CreateImage {
        filename,
        project_id,
        content_type,
        size,
        sha256,
        source_url: source_url.map(String::from),
    })
}

fn json_object(body: &[u8]) -> ApiResult<Map<String, Value>> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body must be a JSON object: {e}")))?;
    match value {
        Value::Object(obj) => Ok(obj),
        _ => Err(ApiError::invalid("the body must be a JSON object")),
    }
}

/// The fields of the body, as [`CreateImageRequest`] documents them.
const FIELDS: [&str; 6] = [
    "filename",
    "project_id",
    "content_type",
    "size",
    "sha256",
    "source_url",
];

/// A field we don't know is refused by name (a misspelt `projectId` would otherwise be
/// answered "project_id is required", and a misspelt `size` silently ignored).
fn refuse_unknown_fields(obj: &Map<String, Value>) -> ApiResult<()> {
    let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) else {
        return Ok(());
    };
    let hint = FIELDS
        .iter()
        .find(|f| normalized(f) == normalized(unknown))
        .map(|f| format!(" (did you mean `{f}`?)"))
        .unwrap_or_default();
    Err(ApiError::invalid(format!(
        "unknown field `{unknown}`{hint}; the fields are {}",
        FIELDS.join(", ")
    )))
}

/// A field name without case and separators: `projectId`, `project-id` and `ProjectID` all
/// read `projectid`.
fn normalized(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// `project_id`: an id, or a whole number (written as the id).
fn project_id_of(obj: &Map<String, Value>) -> ApiResult<ProjectId> {
    match obj.get("project_id") {
        Some(Value::String(s)) => Ok(ProjectId::parse(s)?),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Ok(ProjectId::from_integer(i)),
            (None, Some(u)) => Ok(ProjectId::parse(&u.to_string())?),
            _ => Err(gallery_schema::IdError::InvalidProjectId.into()),
        },
        Some(_) => Err(gallery_schema::IdError::InvalidProjectId.into()),
        None => Err(ApiError::invalid("project_id is required")),
    }
}

/// `source_url`, for an import by URL.
fn source_url_of(obj: &Map<String, Value>) -> ApiResult<Option<Url>> {
    match obj.get("source_url") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(u)) => Ok(Some(
            gallery_lifecycle::import::parse_source_url(u).map_err(ApiError::invalid)?,
        )),
        Some(_) => Err(ApiError::invalid("source_url must be a string")),
    }
}

/// `filename`, or an import's URL's last segment; at most [`MAX_FILENAME`] bytes, no control
/// characters.
fn filename_of(obj: &Map<String, Value>, source_url: Option<&Url>) -> ApiResult<String> {
    let filename = match (obj.get("filename"), source_url) {
        (Some(Value::String(s)), _) if !s.trim().is_empty() => s.clone(),
        (None | Some(Value::Null), Some(url)) => gallery_lifecycle::import::name_from_url(url),
        (Some(_), _) => return Err(ApiError::invalid("filename must be a non-empty string")),
        (None, None) => {
            return Err(ApiError::invalid(
                "filename is required (or source_url, to import from a URL)",
            ));
        }
    };
    if filename.len() > MAX_FILENAME || filename.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "filename must be at most {MAX_FILENAME} bytes with no control characters"
        )));
    }
    Ok(filename)
}

/// `content_type`, or the one the file name tells. When neither tells an accepted type, an
/// import is [`UNKNOWN_TYPE`], and so is a name of no known format with `sniff_unknown`;
/// anything else is refused.
fn content_type_of(
    obj: &Map<String, Value>,
    filename: &str,
    import: bool,
    sniff_unknown: bool,
) -> ApiResult<&'static str> {
    match obj.get("content_type") {
        // An import's type is sniffed from the bytes it fetches; the name is only a hint.
        None | Some(Value::Null)
            if import || (sniff_unknown && content_type::known_unsupported(filename).is_none()) =>
        {
            Ok(content_type::from_filename(filename).unwrap_or(UNKNOWN_TYPE))
        }
        None | Some(Value::Null) => content_type::from_filename(filename).ok_or_else(|| {
            unsupported(filename, || {
                format!(
                    "can't tell the type from the file name; send content_type, one of {}",
                    content_type::ACCEPTED.join(", ")
                )
            })
        }),
        Some(Value::String(s)) => content_type::accept(s).ok_or_else(|| {
            unsupported(s, || {
                format!(
                    "{s:?} is not accepted; use one of {}",
                    content_type::ACCEPTED.join(", ")
                )
            })
        }),
        Some(_) => Err(ApiError::invalid("content_type must be a string")),
    }
}

/// 415 for a name or type that tells no accepted type: a known refused format says which,
/// anything else gets `otherwise`.
fn unsupported(name_or_type: &str, otherwise: impl FnOnce() -> String) -> ApiError {
    let message = match content_type::known_unsupported(name_or_type) {
        Some(format) => unsupported_message(Some(format)).to_owned(),
        None => otherwise(),
    };
    ApiError::new(ErrorCode::UnsupportedFormat, message)
}

/// `size`: at least 1 byte, at most `max_bytes`.
fn size_of(obj: &Map<String, Value>, max_bytes: u64) -> ApiResult<Option<u64>> {
    let size = match obj.get("size") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| ApiError::invalid("size must be a whole number of bytes"))?,
    };
    if size > max_bytes {
        return Err(ApiError::new(
            ErrorCode::UploadTooLarge,
            format!("{size} bytes is over the limit of {max_bytes}"),
        ));
    }
    if size == 0 {
        return Err(ApiError::invalid("size must be at least 1 byte"));
    }
    Ok(Some(size))
}

/// `sha256`: the file's SHA-256, 64 hexadecimal characters.
fn sha256_of(obj: &Map<String, Value>) -> ApiResult<Option<[u8; 32]>> {
    match obj.get("sha256") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(h)) => Ok(Some(parse_sha256(h).ok_or_else(|| {
            ApiError::invalid("sha256 must be 64 hexadecimal characters (the file's SHA-256)")
        })?)),
        Some(_) => Err(ApiError::invalid("sha256 must be a string")),
    }
}

/// The type recorded for an import, or a local upload, whose name tells none: the bytes decide
/// (the processor sniffs them, as it does every file).
pub const UNKNOWN_TYPE: &str = "application/octet-stream";

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// The request body of `POST /images/` (documentation only: [`parse_create`] reads it).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateImageRequest {
    /// The file's name: shown back, and tells the type when `content_type` is absent.
    /// Optional with `source_url` (the URL's last path segment then).
    #[schema(min_length = 1, max_length = 255, example = "IMG_0042.jpg")]
    pub filename: Option<String>,
    /// Import by URL instead of an upload: an http(s) URL the service fetches itself (only
    /// public addresses, or hosts on `--import-allow-hosts`). The answer is 202 without a link.
    #[schema(format = Uri, max_length = 2048)]
    pub source_url: Option<String>,
    #[schema(schema_with = crate::openapi_schemas::project_id_or_number)]
    pub project_id: Value,
    /// One of the accepted image types; derived from the file name when absent.
    #[schema(schema_with = crate::openapi_schemas::accepted_content_type)]
    pub content_type: Option<String>,
    /// The file's size, when known: the link then accepts exactly up to this many bytes.
    #[schema(minimum = 1)]
    pub size: Option<u64>,
    /// The file's SHA-256 (64 hex characters), when known: if the project already has an
    /// image with these bytes, the answer is 200 `{"duplicate_of"}` instead of a link.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub sha256: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> ErrorCode {
        parse_create(body.as_bytes(), 1000).unwrap_err().code
    }

    #[test]
    fn an_unknown_field_is_named_with_the_one_meant() {
        let err = parse_create(br#"{"filename":"a.jpg","projectId":"p1"}"#, 1000).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(
            err.message
                .starts_with("unknown field `projectId` (did you mean `project_id`?); the fields are filename, project_id,"),
            "{}",
            err.message
        );
        let err = parse_create(
            br#"{"filename":"a.jpg","project_id":"p1","colour":"red"}"#,
            1000,
        )
        .unwrap_err();
        assert!(
            err.message
                .starts_with("unknown field `colour`; the fields are"),
            "{}",
            err.message
        );
    }

    #[test]
    fn create_requests_are_validated() {
        let ok = parse_create(br#"{"filename":"a.JPG","project_id":42}"#, 1000).unwrap();
        assert_eq!(ok.project_id.as_str(), "42");
        assert_eq!(ok.content_type, "image/jpeg");
        let s = parse_create(
            br#"{"filename":"x","project_id":"p_1","content_type":"image/png","size":10}"#,
            1000,
        )
        .unwrap();
        assert_eq!((s.content_type, s.size), ("image/png", Some(10)));
        assert_eq!(s.sha256, None);
        assert_eq!(s.source_url, None);
        // A name that tells no type: refused in S3 mode, sniffed later in local mode; a known
        // refused format stays refused.
        let body = br#"{"filename":"scan_0001","project_id":1}"#;
        assert_eq!(
            parse_create(body, 1000).unwrap_err().code,
            ErrorCode::UnsupportedFormat
        );
        assert_eq!(
            parse_create_with(body, 1000, true).unwrap().content_type,
            UNKNOWN_TYPE
        );
        assert_eq!(
            parse_create_with(br#"{"filename":"a.svg","project_id":1}"#, 1000, true)
                .unwrap_err()
                .code,
            ErrorCode::UnsupportedFormat
        );
        // Imports: the name and type come from the URL when not given.
        let i = parse_create(
            br#"{"project_id":1,"source_url":"https://example.com/p/cat%201.PNG?w=2"}"#,
            1000,
        )
        .unwrap();
        assert_eq!(
            (i.filename.as_str(), i.content_type),
            ("cat 1.PNG", "image/png")
        );
        assert_eq!(
            i.source_url.as_deref(),
            Some("https://example.com/p/cat%201.PNG?w=2")
        );
        let i = parse_create(
            br#"{"project_id":1,"source_url":"https://example.com/"}"#,
            1000,
        )
        .unwrap();
        assert_eq!(
            (i.filename.as_str(), i.content_type),
            ("import", UNKNOWN_TYPE)
        );
        for bad in [
            r#""ftp://example.com/a.jpg""#,
            r#""http://u:p@example.com/a.jpg""#,
            "42",
            r#""""#,
        ] {
            assert_eq!(
                code(&format!(r#"{{"project_id":1,"source_url":{bad}}}"#)),
                ErrorCode::InvalidRequest,
                "{bad}"
            );
        }
        let hash = "00ff".repeat(16);
        let h = parse_create(
            format!(r#"{{"filename":"a.jpg","project_id":1,"sha256":"{hash}"}}"#).as_bytes(),
            1000,
        )
        .unwrap();
        assert_eq!(h.sha256.unwrap()[..2], [0x00, 0xff]);
        for bad in [r#""abc""#, "12", r#""zz""#, &format!(r#""{hash}00""#)] {
            assert_eq!(
                code(&format!(
                    r#"{{"filename":"a.jpg","project_id":1,"sha256":{bad}}}"#
                )),
                ErrorCode::InvalidRequest,
                "{bad}"
            );
        }

        assert_eq!(code("not json"), ErrorCode::InvalidRequest);
        assert_eq!(code("[]"), ErrorCode::InvalidRequest);
        assert_eq!(code(r#"{"filename":"a.jpg"}"#), ErrorCode::InvalidRequest);
        assert_eq!(code(r#"{"project_id":1}"#), ErrorCode::InvalidRequest);
        assert_eq!(
            code(r#"{"filename":"","project_id":1}"#),
            ErrorCode::InvalidRequest
        );
        for hostile in [
            r#""*""#, r#"">""#, r#""a.b""#, r#""""#, "1.5", "true", "[1]", r#""a b""#,
        ] {
            let body = format!(r#"{{"filename":"a.jpg","project_id":{hostile}}}"#);
            assert_eq!(code(&body), ErrorCode::InvalidProjectId, "{hostile}");
        }
        assert_eq!(
            code(r#"{"filename":"a.svg","project_id":1}"#),
            ErrorCode::UnsupportedFormat
        );
        assert_eq!(
            code(r#"{"filename":"a.jpg","project_id":1,"content_type":"image/svg+xml"}"#),
            ErrorCode::UnsupportedFormat
        );
        assert_eq!(
            code(r#"{"filename":"a.jpg","project_id":1,"size":1001}"#),
            ErrorCode::UploadTooLarge
        );
        assert_eq!(
            code(r#"{"filename":"a.jpg","project_id":1,"size":-1}"#),
            ErrorCode::InvalidRequest
        );
    }
}
