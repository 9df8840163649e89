//! `POST /images/`'s side of an `Idempotency-Key` (the bucket itself is [`crate::idempotency`]):
//! claiming the key before anything is recorded (the first answer replayed, or the reserved
//! image to go on with), refusing a retry whose image has been deleted since, and keeping the
//! answer under the key.

use async_nats::jetstream::kv;
use axum::Json;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::Response;
use gallery_nats::StoredEvent;
use gallery_schema::{EventBody, ImageId, ProjectId};
use serde::Serialize;

use super::answer::{accepted, created};
use crate::error::{ApiError, ApiResult};
use crate::idempotency::{self, Decision};
use crate::state::AppState;

/// Where a request's answer is kept: its key in the bucket, with the body's hash.
pub(super) struct KeptUnder {
    store: kv::Store,
    bucket_key: String,
    body_sha256: String,
}

/// What the `Idempotency-Key` (if any) says of this request.
pub(super) enum Claim {
    /// A retry of a request already answered: that answer, again.
    Replay(Response),
    /// Go on with this image; with a key, its answer is kept under it.
    Proceed(ImageId, Option<Box<KeptUnder>>),
}

/// Claims the request's `Idempotency-Key` for a fresh image: the key is reserved for it before
/// anything is recorded, so a retry finds the reservation (or the answer) and goes on with the
/// same image. Without a key, a fresh image and nothing to keep.
pub(super) async fn claim(
    state: &AppState,
    project: &ProjectId,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Claim> {
    let image_id = ImageId::new_v7();
    let Some(key) = idempotency::key_from(headers)? else {
        return Ok(Claim::Proceed(image_id, None));
    };
    let store = state.idempotency().await?;
    let bucket_key = idempotency::bucket_key(project, &key);
    let body_sha256 = idempotency::body_hash(body);
    let decision = match idempotency::lookup(&store, &bucket_key).await? {
        Some(stored) => idempotency::decide(&stored, &body_sha256)?,
        None => {
            idempotency::reserve(&store, &bucket_key, &body_sha256, &image_id.to_string()).await?
        }
    };
    match decision {
        Decision::Replay(first) => Ok(Claim::Replay(replay(state, project, first).await?)),
        Decision::Proceed(reserved) => {
            let image_id = ImageId::parse(&reserved)
                .map_err(|e| ApiError::internal("a reserved image id", e))?;
            let kept = KeptUnder {
                store,
                bucket_key,
                body_sha256,
            };
            Ok(Claim::Proceed(image_id, Some(Box::new(kept))))
        }
    }
}

/// The first answer again (202 for an import, 201 for a link), unless its image was deleted.
async fn replay(
    state: &AppState,
    project: &ProjectId,
    first: serde_json::Value,
) -> ApiResult<Response> {
    let id = first["image_id"].as_str().unwrap_or_default().to_owned();
    if let Ok(first_image) = ImageId::parse(&id) {
        refuse_if_deleted(state, project, &first_image).await?;
    }
    if first.get("source_url").is_some() {
        return Ok(accepted(&id, Json(first)));
    }
    Ok(created(&id, Json(first)))
}

/// Keeps `answer` under the key (when the request has one), for its retries to get it again.
/// `context` names the answer in the log should encoding it fail.
pub(super) async fn keep_answer(
    kept: Option<Box<KeptUnder>>,
    image_id: &ImageId,
    answer: &impl Serialize,
    context: &str,
) -> ApiResult<()> {
    let Some(kept) = kept else {
        return Ok(());
    };
    let KeptUnder {
        store,
        bucket_key,
        body_sha256,
    } = *kept;
    let response = serde_json::to_value(answer).map_err(|e| ApiError::internal(context, e))?;
    let stored = idempotency::Stored {
        body_sha256,
        image_id: image_id.to_string(),
        response: Some(response),
    };
    idempotency::answer(&store, &bucket_key, &stored).await
}

/// A retry (same Idempotency-Key) of a request whose image was deleted since gets no link:
/// the link would lead nowhere (local mode) or replace a deleted original (S3). The read model
/// answers first; when it doesn't know of a deletion, the image's history in the log does (a
/// deletion this replica hasn't applied yet, or one another replica recorded a moment ago).
async fn refuse_if_deleted(
    state: &AppState,
    project: &ProjectId,
    image: &ImageId,
) -> ApiResult<()> {
    let rec = state
        .projector
        .store
        .get(image)
        .map_err(|e| ApiError::internal("reading the read model", e))?;
    if rec.is_some_and(|r| r.state == gallery_schema::ImageState::Deleted) {
        return Err(deleted_since(image));
    }
    let history = state
        .log
        .image_history(project, image)
        .await
        .map_err(|e| ApiError::unavailable("re-reading the image", e))?;
    refuse_if_deleted_in(&history, image)
}

/// The 409 of [`refuse_if_deleted`], from a history already read.
pub(super) fn refuse_if_deleted_in(history: &[StoredEvent], image: &ImageId) -> ApiResult<()> {
    if history
        .iter()
        .any(|s| matches!(s.event.body, EventBody::Deleted { .. }))
    {
        return Err(deleted_since(image));
    }
    Ok(())
}

fn deleted_since(image: &ImageId) -> ApiError {
    ApiError::conflict(format!(
        "this Idempotency-Key made image {image}, which has been deleted since; send the \
         request with a new key for a new image"
    ))
}
