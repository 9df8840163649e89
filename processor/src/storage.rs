//! A job's object-store I/O: reading the original by the ETag its upload recorded (hashed as it
//! streams in, never past the upload limit) and writing versions under their deterministic keys.

use futures::StreamExt;
use gallery_schema::{ErrorCode, ImageId, ProjectId};
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, PutOptions, path::Path as ObjectPath,
};
use sha2::{Digest, Sha256};

use crate::plan::JobOutcome;
use crate::render::RenderedVersion;

pub fn version_key(
    project: &ProjectId,
    image: &ImageId,
    generation: u32,
    rendered: &RenderedVersion,
) -> String {
    gallery_schema::keys::version_key(
        project,
        image,
        generation,
        rendered.version,
        rendered.extension,
    )
}

/// The original's bytes and their SHA-256, hashed chunk by chunk as they arrive (no second
/// pass over a 50 MB file). `etag` is the one its upload recorded; `max_bytes` the upload limit.
pub async fn fetch_original(
    store: &dyn ObjectStore,
    key: &str,
    etag: &str,
    max_bytes: u64,
) -> Result<(bytes::Bytes, [u8; 32]), JobOutcome> {
    let path = ObjectPath::from(key);
    // A store that gave no ETag at upload can't be asked for one now.
    let if_match = (!etag.is_empty()).then(|| etag.to_owned());
    let options = GetOptions {
        if_match,
        ..Default::default()
    };
    let result = match store.get_opts(&path, options).await {
        Ok(result) => result,
        // The log says the upload is there: a store that says otherwise may be lagging.
        Err(object_store::Error::NotFound { .. }) => {
            return Err(JobOutcome::Lagging {
                code: ErrorCode::Internal,
                message: "the original is missing from storage".into(),
            });
        }
        Err(object_store::Error::Precondition { .. }) => {
            return Err(JobOutcome::Lagging {
                code: ErrorCode::Conflict,
                message: "the original was replaced after its upload was recorded".into(),
            });
        }
        Err(e) => return Err(JobOutcome::transient(format!("reading original: {e}"))),
    };
    if result.meta.size > max_bytes {
        return Err(JobOutcome::permanent(
            ErrorCode::UploadTooLarge,
            format!(
                "{} bytes is over the limit of {max_bytes}",
                result.meta.size
            ),
        ));
    }
    let mut body = bytes::BytesMut::with_capacity(result.meta.size as usize);
    let mut hasher = Sha256::new();
    let mut chunks = result.into_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| JobOutcome::transient(format!("reading original: {e}")))?;
        if (body.len() + chunk.len()) as u64 > max_bytes {
            // Longer than its listed size said: never past the limit.
            return Err(JobOutcome::permanent(
                ErrorCode::UploadTooLarge,
                format!("more than the limit of {max_bytes} bytes"),
            ));
        }
        hasher.update(&chunk);
        body.extend_from_slice(&chunk);
    }
    Ok((body.freeze(), hasher.finalize().into()))
}

/// Stores one version under `key`, with its content type when `typed` (S3 serves it on
/// presigned GETs; the local filesystem store can't keep attributes). Deterministic keys: a
/// retry overwrites with the same content.
pub async fn put_version(
    store: &dyn ObjectStore,
    key: &str,
    version: &RenderedVersion,
    typed: bool,
) -> Result<(), JobOutcome> {
    let mut options = PutOptions::default();
    if typed {
        options.attributes =
            Attributes::from_iter([(Attribute::ContentType, version.content_type)]);
    }
    store
        .put_opts(&ObjectPath::from(key), version.data.clone().into(), options)
        .await
        .map_err(|e| JobOutcome::transient(format!("storing {key}: {e}")))?;
    Ok(())
}
