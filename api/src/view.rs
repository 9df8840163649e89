//! JSON shapes of docs/ARCHITECTURE.md §6: the image record as clients see it and the WebSocket message.
//! Version URLs are signed download links minted at read time.

use chrono::{DateTime, Utc};
use gallery_nats::StoredEvent;
use gallery_projector::Record;
use gallery_schema::{EventBody, ImageState, VersionName};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::signing::{Signer, download_expiry};
use crate::state::S3Links;

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
    pub fn download(&self, key: &str) -> String {
        if let Some(s3) = self.s3 {
            // Signed at the start of the hour, valid for the ttl plus that hour: the URL is
            // stable within the hour and always valid for at least the ttl.
            let window_start = self.now - self.now.rem_euclid(3600);
            let signed_at = DateTime::from_timestamp(window_start, 0).unwrap_or_else(Utc::now);
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
        let expires = download_expiry(self.now, self.ttl_secs);
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

pub fn record_json(rec: &Record, links: &Links<'_>) -> Value {
    let mut versions = Map::new();
    let original = (rec.state != ImageState::Init && rec.etag.is_some())
        .then(|| links.download(&rec.original_key));
    versions.insert(
        "original".into(),
        original.map_or(Value::Null, Value::String),
    );
    let mut version_meta = Map::new();
    for name in VersionName::CASCADE.iter().rev() {
        let url = rec.versions.get(name).map(|v| links.download(&v.key));
        versions.insert(name.as_str().into(), url.map_or(Value::Null, Value::String));
        if let Some(v) = rec.versions.get(name) {
            version_meta.insert(
                name.as_str().into(),
                json!({ "width": v.width, "height": v.height, "bytes": v.bytes, "content_type": v.content_type }),
            );
        }
    }
    let mut out = json!({
        "image_id": rec.image_id.to_string(),
        "state": rec.state.as_str(),
        "project_id": rec.project_id.as_str(),
        "filename": rec.filename,
        "versions": versions,
        "created_at": rfc3339(rec.created_at),
        "updated_at": rfc3339(rec.updated_at),
        "meta": {
            "content_type": rec.content_type,
            "size": rec.size,
            "width": rec.width,
            "height": rec.height,
            "generation": rec.generation,
            "versions": version_meta,
        },
    });
    if let Some(err) = &rec.error {
        out["error"] = json!({ "code": err.code.as_str(), "message": err.message });
    }
    out
}

/// One WebSocket message per event: `{type, image_id, project_id, state, version?, url?,
/// error?, seq, at}`. Built from the event alone, so live and replayed messages are identical.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WsMessage {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub image_id: String,
    pub project_id: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    pub seq: u64,
    pub at: String,
}

pub fn ws_message(stored: &StoredEvent, links: &Links<'_>) -> WsMessage {
    let e = &stored.event;
    let kind = e.kind();
    let (version, url, error) = match &e.body {
        EventBody::VersionRendered(v) => {
            (Some(v.version.as_str()), Some(links.download(&v.key)), None)
        }
        EventBody::Failed(f) => (
            None,
            None,
            Some(json!({ "code": f.code.as_str(), "message": f.message })),
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
        seq: stored.seq,
        at: rfc3339(e.at),
    }
}
