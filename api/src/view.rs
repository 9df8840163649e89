//! JSON shapes of docs/ARCHITECTURE.md §6: the image record as clients see it and the WebSocket message.
//! Version URLs are signed download links minted at read time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use gallery_nats::StoredEvent;
use gallery_projector::Record;
use gallery_schema::{EventBody, ImageState, VersionName};
use serde::Serialize;
use utoipa::ToSchema;

use crate::link_mode::S3Links;
use crate::signing::{Signer, download_expiry};

/// Mints download URLs: `{base}/files/{key}?expires=..&signature=..` in local mode, presigned
/// GETs on the public S3 endpoint in S3 mode. Both stay the same for an hour-aligned window, so
/// browsers can cache versions.
pub struct Links<'a> {
    pub base: &'a str,
    pub signer: &'a Signer,
    pub ttl_secs: i64,
    pub now: i64,
    pub s3: Option<&'a S3Links>,
}

impl Links<'_> {
    /// What every URL these links mint depends on besides its key: the hour-aligned window
    /// (local mode: the expiry; S3: the signing time). URLs change only when this does.
    pub fn window(&self) -> i64 {
        if self.s3.is_some() {
            self.now - self.now.rem_euclid(3600)
        } else {
            download_expiry(self.now, self.ttl_secs)
        }
    }

    pub fn download(&self, key: &str) -> String {
        if let Some(s3) = self.s3 {
            // Signed at the start of the hour, valid for the ttl plus that hour: the URL is
            // stable within the hour and always valid for at least the ttl.
            let signed_at = DateTime::from_timestamp(self.window(), 0).unwrap_or_else(Utc::now);
            let expires = (self.ttl_secs + 3600).clamp(1, 7 * 24 * 3600) as u64;
            let path = format!("/{}/{key}", s3.bucket);
            return crate::sigv4::presign_get(
                &s3.public_endpoint,
                &path,
                &s3.credentials,
                signed_at,
                expires,
            );
        }
        let expires = self.window();
        let signature = self.signer.sign_download(key, expires);
        format!(
            "{}/files/{key}?expires={expires}&signature={signature}",
            self.base
        )
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An image as `GET /images/{id}` and the listing show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Image)]
pub struct ImageView {
    #[schema(format = Uuid)]
    pub image_id: String,
    #[schema(schema_with = crate::openapi_schemas::image_state)]
    pub state: &'static str,
    #[schema(schema_with = crate::openapi_schemas::project_id)]
    pub project_id: String,
    /// The name the client gave (display only).
    pub filename: String,
    pub versions: VersionUrls,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    pub meta: ImageMeta,
    /// A ThumbHash of the image (standard base64, about 25 bytes): decode it to paint a
    /// blurred placeholder before the thumb loads. `null` until processed.
    #[schema(required = true)]
    pub thumbhash: Option<String>,
    /// Another image of the project that had the same bytes when this one was processed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub duplicate_of: Option<String>,
    /// Present in state `error` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// Standard base64 with padding (what browsers' `atob` reads).
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Signed download URLs, `null` until the file exists. They stay the same within an hour, so
/// browsers can cache them, and are valid for at least the configured download TTL.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionUrls {
    /// The uploaded file, once uploaded.
    #[schema(required = true)]
    pub original: Option<String>,
    /// Fits in 2500x2500.
    #[schema(required = true)]
    pub d2500: Option<String>,
    /// Fits in 1920x1080.
    #[schema(required = true)]
    pub big_1920: Option<String>,
    /// Fits in 700x700.
    #[schema(required = true)]
    pub big_thumb: Option<String>,
    /// Fits in 150x120.
    #[schema(required = true)]
    pub thumb: Option<String>,
}

impl VersionUrls {
    pub fn slot(&mut self, name: VersionName) -> &mut Option<String> {
        match name {
            VersionName::D2500 => &mut self.d2500,
            VersionName::Big1920 => &mut self.big_1920,
            VersionName::BigThumb => &mut self.big_thumb,
            VersionName::Thumb => &mut self.thumb,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageMeta {
    /// The accepted type of the original.
    pub content_type: String,
    /// Bytes of the original, once uploaded.
    #[schema(required = true)]
    pub size: Option<u64>,
    /// Upright size of the original, once processed.
    #[schema(required = true)]
    pub width: Option<u32>,
    #[schema(required = true)]
    pub height: Option<u32>,
    /// 0 until uploaded, 1 for the first processing, +1 per reprocess.
    pub generation: u32,
    /// SHA-256 of the original (lowercase hex), once processed.
    #[schema(required = true)]
    pub sha256: Option<String>,
    /// The renditions description the versions were rendered with (0: before it was
    /// recorded, or not rendered yet).
    pub renditions_version: u32,
    /// Each served version's size and generation, keyed by version name.
    #[schema(schema_with = crate::openapi_schemas::version_meta_map)]
    pub versions: BTreeMap<&'static str, VersionMeta>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionMeta {
    /// The generation that rendered it: during a reprocess, the previous generation's version
    /// is served until the new one replaces it (then it is `meta.generation`).
    pub generation: u32,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub content_type: String,
}

/// Why an image or a request failed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    #[schema(schema_with = crate::openapi_schemas::error_code)]
    pub code: &'static str,
    /// For people; may change between releases (the code doesn't).
    pub message: String,
}

/// The body of every 4xx and 5xx answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

pub fn image_view(rec: &Record, links: &Links<'_>) -> ImageView {
    let mut versions = VersionUrls {
        original: (rec.state != ImageState::Init && rec.etag.is_some())
            .then(|| links.download(&rec.original_key)),
        ..VersionUrls::default()
    };
    let mut version_meta = BTreeMap::new();
    for (name, v) in &rec.versions {
        *versions.slot(*name) = Some(links.download(&v.key));
        version_meta.insert(
            name.as_str(),
            VersionMeta {
                generation: v.generation,
                width: v.width,
                height: v.height,
                bytes: v.bytes,
                content_type: v.content_type.clone(),
            },
        );
    }
    ImageView {
        image_id: rec.image_id.to_string(),
        state: rec.state.as_str(),
        project_id: rec.project_id.as_str().to_owned(),
        filename: rec.filename.clone(),
        versions,
        created_at: rfc3339(rec.created_at),
        updated_at: rfc3339(rec.updated_at),
        meta: ImageMeta {
            content_type: rec.content_type.clone(),
            size: rec.size,
            width: rec.width,
            height: rec.height,
            generation: rec.generation,
            sha256: rec.sha256.map(hex::encode),
            renditions_version: rec.renditions_version,
            versions: version_meta,
        },
        thumbhash: (!rec.thumbhash.is_empty()).then(|| base64(&rec.thumbhash)),
        duplicate_of: rec.duplicate_of.map(|id| id.to_string()),
        error: rec.error.as_ref().map(|e| ErrorDetail {
            code: e.code.as_str(),
            message: e.message.clone(),
        }),
    }
}

/// One WebSocket text frame per event of the project. Built from the event alone, so live and
/// replayed messages are identical.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WsMessage {
    /// The event's kind.
    #[serde(rename = "type")]
    #[schema(schema_with = crate::openapi_schemas::event_kind)]
    pub kind: &'static str,
    #[schema(format = Uuid)]
    pub image_id: String,
    #[schema(schema_with = crate::openapi_schemas::project_id)]
    pub project_id: String,
    /// The image's state after this event.
    #[schema(schema_with = crate::openapi_schemas::image_state)]
    pub state: &'static str,
    /// `version_rendered` only: which version.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::openapi_schemas::version_name)]
    pub version: Option<&'static str>,
    /// `version_rendered` only: the version's signed download URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `failed` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// `processed` only: the image's ThumbHash placeholder (standard base64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbhash: Option<String>,
    /// `processed` only: SHA-256 of the original (lowercase hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The event's stream sequence: reconnect with `?since=<seq>` to miss nothing.
    pub seq: u64,
    #[schema(format = DateTime)]
    pub at: String,
}

pub fn ws_message(stored: &StoredEvent, links: &Links<'_>) -> WsMessage {
    let e = &stored.event;
    let kind = e.kind();
    let (thumbhash, sha256) = match &e.body {
        EventBody::Processed {
            thumbhash, sha256, ..
        } => (
            (!thumbhash.is_empty()).then(|| base64(thumbhash)),
            sha256.map(hex::encode),
        ),
        _ => (None, None),
    };
    let (version, url, error) = match &e.body {
        EventBody::VersionRendered(v) => {
            (Some(v.version.as_str()), Some(links.download(&v.key)), None)
        }
        EventBody::Failed(f) => (
            None,
            None,
            Some(ErrorDetail {
                code: f.code.as_str(),
                message: f.message.clone(),
            }),
        ),
        _ => (None, None, None),
    };
    WsMessage {
        kind: kind.as_str(),
        image_id: e.image_id.to_string(),
        project_id: e.project_id.to_string(),
        state: kind.state_after().as_str(),
        version,
        url,
        error,
        thumbhash,
        sha256,
        seq: stored.seq,
        at: rfc3339(e.at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_has_a_url_field() {
        let mut urls = VersionUrls::default();
        for name in VersionName::CASCADE {
            *urls.slot(name) = Some(name.as_str().to_owned());
        }
        let json = serde_json::to_value(&urls).unwrap();
        for name in VersionName::CASCADE {
            assert_eq!(json[name.as_str()], name.as_str(), "{name:?}");
        }
        assert_eq!(
            json.as_object().unwrap().len(),
            VersionName::CASCADE.len() + 1
        );
    }
}
