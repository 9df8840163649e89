//! Storing an upload's bytes: streamed into a private temporary object with a hard size cap and
//! a deadline, then linked into place at the link's key only if nothing is there, so two racing
//! uploads through one link can't replace each other's bytes.

use axum::extract::multipart::Field;
use gallery_schema::{ErrorCode, ImageId};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use tokio::io::AsyncWriteExt;

use super::form::multipart_error;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The bytes at the link's key once the upload is over.
pub(super) enum Placed {
    /// This upload's bytes.
    Fresh { size: u64, etag: String },
    /// An earlier upload's bytes, there first (kept rather than these).
    Earlier { size: u64, etag: String },
}

/// Streams `file` (at most `max_bytes`, within `deadline`) to a temporary key, then links it
/// into place at `key` unless an earlier upload is there already.
pub(super) async fn place(
    state: &AppState,
    image: &ImageId,
    key: &str,
    file: Field<'_>,
    max_bytes: u64,
    deadline: std::time::Duration,
) -> ApiResult<Placed> {
    let tmp = ObjectPath::from(format!("tmp/uploads/{image}-{}", uuid::Uuid::new_v4()));
    let size = stream_to(state, &tmp, file, max_bytes, deadline).await?;
    let final_path = ObjectPath::from(key);
    let linked = state.store.copy_if_not_exists(&tmp, &final_path).await;
    let _ = state.store.delete(&tmp).await;
    match linked {
        Ok(()) => {
            let meta = state
                .store
                .head(&final_path)
                .await
                .map_err(|e| ApiError::internal("reading back an upload", e))?;
            let etag = meta.e_tag.unwrap_or_default();
            Ok(Placed::Fresh { size, etag })
        }
        Err(object_store::Error::AlreadyExists { .. }) => {
            let meta = state
                .store
                .head(&final_path)
                .await
                .map_err(|e| ApiError::internal("reading back an earlier upload", e))?;
            let etag = meta.e_tag.unwrap_or_default();
            Ok(Placed::Earlier {
                size: meta.size,
                etag,
            })
        }
        Err(e) => Err(ApiError::internal("storing an upload", e)),
    }
}

/// Writes the file to `tmp`: its size, or the error with `tmp` removed (over `max_bytes`,
/// empty, or still arriving at `deadline`).
async fn stream_to(
    state: &AppState,
    tmp: &ObjectPath,
    mut file: Field<'_>,
    max_bytes: u64,
    deadline: std::time::Duration,
) -> ApiResult<u64> {
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
        let _ = state.store.delete(tmp).await;
        return Err(err);
    }
    Ok(size)
}
