//! The read-model record of one image: everything the listing, the single-image view and the
//! processor-facing guard need, copied from events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use gallery_schema::{ErrorCode, ImageId, ImageState, ProjectId, VersionName};
use serde::{Deserialize, Serialize};

/// Bumped when the stored shape changes incompatibly; a store holding another version is
/// rebuilt from the log (the read model is disposable).
pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    #[serde(rename = "v")]
    pub version: u32,
    pub image_id: ImageId,
    pub project_id: ProjectId,
    pub filename: String,
    pub state: ImageState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub original_key: String,
    pub content_type: String,
    pub link_expires_at: DateTime<Utc>,
    pub max_bytes: u64,
    pub declared_size: Option<u64>,
    /// Set by `Uploaded`.
    pub size: Option<u64>,
    pub etag: Option<String>,
    /// 0 until uploaded, 1 for the first processing, +1 per reprocess.
    pub generation: u32,
    pub attempt: u32,
    pub versions: BTreeMap<VersionName, RenderedVersion>,
    /// Upright size of the original, known once processed.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub error: Option<RecordError>,
    /// Stream sequence of the last event of this image: the ordering guard for the next append.
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedVersion {
    pub key: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub content_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordError {
    pub code: ErrorCode,
    pub message: String,
}
