//! `Idempotency-Key` on `POST /images/`: a client that retries a request (a timeout, a 503
//! during a NATS election) with the same key and body within 24 hours gets the first answer
//! again, the same image and the same upload link, instead of a second image. The answers live
//! in a JetStream key-value bucket (`gallery-idempotency`, 24 h), so every api replica sees
//! them and a restart keeps them.
//!
//! The same key with a different body is a 409: the client mixed up two requests. Two requests
//! with one new key racing on two replicas both create an image; the first answer stored wins
//! and is returned to both, and the loser's image expires unused (`upload_expired`).

use async_nats::jetstream::kv;
use axum::http::HeaderMap;
use gallery_schema::ProjectId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

pub const HEADER: &str = "idempotency-key";
const MAX_KEY: usize = 255;

/// What is kept per key: the request body's hash and the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub body_sha256: String,
    pub response: Value,
}

/// The header's value, if any: 1-255 printable ASCII characters.
pub fn key_from(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(raw) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "Idempotency-Key must be 1-{MAX_KEY} printable ASCII characters"
            ))
        })?;
    Ok(Some(key.to_owned()))
}

/// The bucket key of (project, client key): a hash, so any client key fits KV's key rules.
pub fn bucket_key(project: &ProjectId, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(project.as_str().as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    hex::encode(h.finalize())
}

pub fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// What to answer for a key already used: the stored answer, or 409 for another body.
pub fn replay(stored: &Stored, body_sha256: &str) -> ApiResult<Value> {
    if stored.body_sha256 != body_sha256 {
        return Err(ApiError::conflict(
            "this Idempotency-Key was used with a different request body",
        ));
    }
    Ok(stored.response.clone())
}

pub async fn lookup(store: &kv::Store, bucket_key: &str) -> ApiResult<Option<Stored>> {
    let found = store
        .get(bucket_key)
        .await
        .map_err(|e| ApiError::unavailable("reading the Idempotency-Key", e))?;
    found
        .map(|bytes| {
            serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::internal("decoding a stored Idempotency-Key answer", e))
        })
        .transpose()
}

/// Keeps `stored` under the key; when another request stored one first, returns theirs.
pub async fn remember(store: &kv::Store, bucket_key: &str, stored: &Stored) -> ApiResult<Stored> {
    let bytes = serde_json::to_vec(stored).expect("plain JSON");
    match store.create(bucket_key, bytes.into()).await {
        Ok(_) => Ok(stored.clone()),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            match lookup(store, bucket_key).await? {
                Some(first) => Ok(first),
                None => Ok(stored.clone()),
            }
        }
        Err(e) => Err(ApiError::unavailable("storing the Idempotency-Key", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_scoped_by_project() {
        let mut h = HeaderMap::new();
        assert_eq!(key_from(&h).unwrap(), None);
        h.insert(HEADER, "retry-1".parse().unwrap());
        assert_eq!(key_from(&h).unwrap().as_deref(), Some("retry-1"));
        h.insert(HEADER, "has space".parse().unwrap());
        assert!(key_from(&h).is_err());
        h.insert(HEADER, "x".repeat(256).parse().unwrap());
        assert!(key_from(&h).is_err());
        let (a, b) = (
            ProjectId::parse("a").unwrap(),
            ProjectId::parse("b").unwrap(),
        );
        assert_ne!(bucket_key(&a, "k"), bucket_key(&b, "k"));
        assert_eq!(bucket_key(&a, "k").len(), 64);
    }

    #[test]
    fn a_replay_needs_the_same_body() {
        let stored = Stored {
            body_sha256: body_hash(b"{\"a\":1}"),
            response: serde_json::json!({"image_id": "x"}),
        };
        assert_eq!(
            replay(&stored, &body_hash(b"{\"a\":1}")).unwrap(),
            stored.response
        );
        let err = replay(&stored, &body_hash(b"{\"a\":2}")).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::CONFLICT);
    }
}
