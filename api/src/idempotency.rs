//! `Idempotency-Key` on `POST /images/`: a client that retries a request (a timeout, a 503
//! during a NATS election) with the same key and body within 24 hours gets the first answer
//! again, the same image and the same upload link, instead of a second image. The answers live
//! in a JetStream key-value bucket (`gallery-idempotency`, 24 h), so every api replica sees
//! them and a restart keeps them.
//!
//! The key is reserved, with the image id, before the image is recorded: a first attempt that
//! recorded the image but lost its answer (a NATS leader election, a timeout) is finished by
//! the retry for that same image, never a second one. The same key with a different body is a
//! 409: the client mixed up two requests.

use async_nats::jetstream::kv;
use axum::http::HeaderMap;
use gallery_schema::ProjectId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

pub const HEADER: &str = "idempotency-key";
const MAX_KEY: usize = 255;

/// What is kept per key: the request body's hash, the image it is for, and the answer once
/// given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub body_sha256: String,
    pub image_id: String,
    pub response: Option<Value>,
}

/// What a request with a key does.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The first answer, again.
    Replay(Value),
    /// Go on with this image (reserved by this request or an earlier attempt of it).
    Proceed(String),
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

/// Pure: what to do for a key already used (409 for another body).
pub fn decide(stored: &Stored, body_sha256: &str) -> ApiResult<Decision> {
    if stored.body_sha256 != body_sha256 {
        return Err(ApiError::conflict(
            "this Idempotency-Key was used with a different request body",
        ));
    }
    Ok(match &stored.response {
        Some(first) => Decision::Replay(first.clone()),
        None => Decision::Proceed(stored.image_id.clone()),
    })
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

/// Reserves the key for `image_id` (or finds what an earlier request of it reserved).
pub async fn reserve(
    store: &kv::Store,
    bucket_key: &str,
    body_sha256: &str,
    image_id: &str,
) -> ApiResult<Decision> {
    let reservation = Stored {
        body_sha256: body_sha256.to_owned(),
        image_id: image_id.to_owned(),
        response: None,
    };
    let bytes = serde_json::to_vec(&reservation).expect("plain JSON");
    match store.create(bucket_key, bytes.into()).await {
        Ok(_) => Ok(Decision::Proceed(image_id.to_owned())),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            match lookup(store, bucket_key).await? {
                Some(first) => decide(&first, body_sha256),
                None => Err(ApiError::unavailable(
                    "reserving the Idempotency-Key",
                    "it vanished while being reserved",
                )),
            }
        }
        Err(e) => Err(ApiError::unavailable("reserving the Idempotency-Key", e)),
    }
}

/// Keeps the answer under the key.
pub async fn answer(store: &kv::Store, bucket_key: &str, stored: &Stored) -> ApiResult<()> {
    let bytes = serde_json::to_vec(stored).expect("plain JSON");
    store
        .put(bucket_key, bytes.into())
        .await
        .map_err(|e| ApiError::unavailable("storing the Idempotency-Key answer", e))?;
    Ok(())
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
    fn a_replay_needs_the_same_body_and_a_reservation_names_its_image() {
        let mut stored = Stored {
            body_sha256: body_hash(b"{\"a\":1}"),
            image_id: "x".into(),
            response: None,
        };
        let same = body_hash(b"{\"a\":1}");
        assert_eq!(
            decide(&stored, &same).unwrap(),
            Decision::Proceed("x".into())
        );
        stored.response = Some(serde_json::json!({"image_id": "x"}));
        assert_eq!(
            decide(&stored, &same).unwrap(),
            Decision::Replay(serde_json::json!({"image_id": "x"}))
        );
        let err = decide(&stored, &body_hash(b"{\"a\":2}")).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::CONFLICT);
    }
}
