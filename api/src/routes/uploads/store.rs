//! Storing an upload's bytes: streamed into a private temporary object with a hard size cap and
//! a deadline, then linked into place at the link's key only if nothing is there, so two racing
//! uploads through one link can't replace each other's bytes.

use axum::extract::multipart::Field;
use gallery_schema::sniff::{SNIFF_LEN, known_unsupported, sniff_image, unsupported_message};
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
    let mut head = Head::default();
    let streaming = async {
        while let Some(chunk) = file.chunk().await.map_err(multipart_error)? {
            size += chunk.len() as u64;
            if size > max_bytes {
                return Err(ApiError::new(
                    ErrorCode::UploadTooLarge,
                    format!("the upload is over the limit of {max_bytes} bytes"),
                ));
            }
            head.take(&chunk)?;
            writer
                .put(chunk)
                .await
                .map_err(|e| ApiError::internal("writing an upload", e))?;
        }
        if size == 0 {
            return Err(ApiError::new(ErrorCode::CorruptImage, "the file is empty"));
        }
        head.finish()?;
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

/// The first bytes of an upload, judged by what they start with (as the upload watcher judges
/// an S3 upload): refused as soon as [`SNIFF_LEN`] bytes are in, or at the end of a shorter
/// file, unless they begin an accepted image format.
#[derive(Default)]
struct Head {
    bytes: Vec<u8>,
    judged: bool,
}

impl Head {
    fn take(&mut self, chunk: &[u8]) -> ApiResult<()> {
        if self.judged {
            return Ok(());
        }
        let want = SNIFF_LEN as usize - self.bytes.len();
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(want)]);
        if self.bytes.len() == SNIFF_LEN as usize {
            self.finish()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> ApiResult<()> {
        if self.judged || self.bytes.is_empty() {
            return Ok(());
        }
        self.judged = true;
        judge_head(&self.bytes)
    }
}

/// Pure: whether an upload starting with `head` may be stored.
fn judge_head(head: &[u8]) -> ApiResult<()> {
    if sniff_image(head).is_some() {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::UnsupportedFormat,
        unsupported_message(known_unsupported(head)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_is_judged_by_its_first_bytes_however_they_arrive() {
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1,
        ];
        // Byte by byte, or all at once: accepted either way.
        let mut head = Head::default();
        for b in jpeg {
            head.take(&[b]).unwrap();
        }
        head.finish().unwrap();
        let mut head = Head::default();
        head.take(&jpeg).unwrap();
        head.finish().unwrap();
        // Text is refused once the sniff length is in, before the rest arrives...
        let mut head = Head::default();
        let err = head.take(b"plain text, not a photo").unwrap_err();
        assert_eq!(err.code, ErrorCode::UnsupportedFormat);
        // ...and a short file at its end; an SVG is told what to send instead.
        let mut head = Head::default();
        head.take(b"<svg/>").unwrap();
        let err = head.finish().unwrap_err();
        assert_eq!(err.code, ErrorCode::UnsupportedFormat);
        assert!(err.message.contains("SVG"), "{}", err.message);
        // Nothing at all is not judged here (the empty file has its own refusal).
        Head::default().finish().unwrap();
    }
}
