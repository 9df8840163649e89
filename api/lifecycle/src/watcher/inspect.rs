//! What storage holds at an upload's key: a HEAD (or a LIST entry) for its size, and one small
//! ranged read of its first bytes against the accepted formats.

use gallery_schema::ErrorCode;
use gallery_schema::sniff::{SNIFF_LEN, known_unsupported, sniff_image, unsupported_message};
use object_store::{ObjectMeta, ObjectStore, path::Path as ObjectPath};

use super::count_request;

/// What storage holds at an upload's key.
#[derive(Debug, Clone, PartialEq)]
pub enum Inspection {
    Missing,
    /// An acceptable object: record it.
    Ready {
        size: u64,
        etag: String,
    },
    /// An object that must not be processed.
    Reject {
        code: ErrorCode,
        message: String,
    },
}

/// Looks at the object behind an upload link: its size against the link's limit and its first
/// bytes against the accepted formats (a HEAD and one small ranged read).
/// `by` names the caller in the request counter ([`count_request`]).
pub async fn inspect_upload(
    store: &dyn ObjectStore,
    key: &str,
    max_bytes: u64,
    by: &'static str,
) -> Result<Inspection, object_store::Error> {
    let path = ObjectPath::from(key);
    count_request(by, "head", 1);
    let meta = match store.head(&path).await {
        Ok(meta) => meta,
        Err(object_store::Error::NotFound { .. }) => return Ok(Inspection::Missing),
        Err(e) => return Err(e),
    };
    inspect_object(store, &meta, max_bytes, by).await
}

/// [`inspect_upload`] for an object already found (by HEAD or in a LIST page).
pub async fn inspect_object(
    store: &dyn ObjectStore,
    meta: &ObjectMeta,
    max_bytes: u64,
    by: &'static str,
) -> Result<Inspection, object_store::Error> {
    if meta.size > max_bytes {
        return Ok(Inspection::Reject {
            code: ErrorCode::UploadTooLarge,
            message: format!("{} bytes is over the limit of {max_bytes}", meta.size),
        });
    }
    if meta.size == 0 {
        return Ok(Inspection::Reject {
            code: ErrorCode::CorruptImage,
            message: "the file is empty".into(),
        });
    }
    count_request(by, "get", 1);
    let head = match store
        .get_range(&meta.location, 0..meta.size.min(SNIFF_LEN))
        .await
    {
        Ok(head) => head,
        Err(object_store::Error::NotFound { .. }) => return Ok(Inspection::Missing),
        Err(e) => return Err(e),
    };
    if sniff_image(&head).is_none() {
        return Ok(Inspection::Reject {
            code: ErrorCode::UnsupportedFormat,
            message: unsupported_message(known_unsupported(&head)).into(),
        });
    }
    Ok(Inspection::Ready {
        size: meta.size,
        etag: meta.e_tag.clone().unwrap_or_default(),
    })
}
