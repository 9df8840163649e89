//! The read-model record of one image: everything the listing, the single-image view and the
//! processor-facing guard need, copied from events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use gallery_schema::{ErrorCode, ImageId, ImageState, ProjectId, VersionName};
use serde::{Deserialize, Serialize};

/// Bumped when the stored shape changes incompatibly; a store holding another version is
/// rebuilt from the log (the read model is disposable). 2: postcard instead of JSON, times as
/// nanoseconds. 3: the `deleted` state, `thumbhash`, `sha256` and `duplicate_of`. 4: `refused`.
/// 5: a version's `generation`; a reprocess keeps the previous generation's versions until
/// the new one replaces them.
pub const RECORD_VERSION: u32 = 5;

/// The most refused sequences a record keeps (the oldest go first): refusals are rare (late
/// events of an old generation or of a deleted image, a foreign publisher's mistakes).
pub const MAX_REFUSED: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    #[serde(rename = "v")]
    pub version: u32,
    pub image_id: ImageId,
    #[serde(with = "project_text")]
    pub project_id: ProjectId,
    pub filename: String,
    pub state: ImageState,
    #[serde(with = "nanos")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "nanos")]
    pub updated_at: DateTime<Utc>,
    pub original_key: String,
    pub content_type: String,
    #[serde(with = "nanos")]
    pub link_expires_at: DateTime<Utc>,
    pub max_bytes: u64,
    pub declared_size: Option<u64>,
    /// Set by `Uploaded`.
    pub size: Option<u64>,
    pub etag: Option<String>,
    /// 0 until uploaded, 1 for the first processing, +1 per reprocess.
    pub generation: u32,
    pub attempt: u32,
    /// The versions served, by name. During a reprocess a name keeps the previous generation's
    /// version until the new generation renders it; `processed` drops the names the new
    /// generation didn't render.
    pub versions: BTreeMap<VersionName, RenderedVersion>,
    /// Upright size of the original, known once processed (kept through a reprocess: the same
    /// original).
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub error: Option<RecordError>,
    /// The ThumbHash placeholder of the last render (empty until processed).
    pub thumbhash: Vec<u8>,
    /// SHA-256 of the original, as the last render read it.
    pub sha256: Option<[u8; 32]>,
    /// The renditions description the current versions were rendered with (0: before it was
    /// recorded, or not rendered).
    pub renditions_version: u32,
    /// The project's image that already had these bytes when this one was processed (the
    /// earliest in log order still there then); set by the batch fold, not by `apply`.
    pub duplicate_of: Option<ImageId>,
    /// Stream sequence of the last event of this image: the ordering guard for the next append.
    pub last_seq: u64,
    /// Stream sequences of this image's events the fold refused (at most [`MAX_REFUSED`], in
    /// log order): the WebSocket leaves them out of a replay, as the live feed does.
    pub refused: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedVersion {
    /// The generation that rendered it (older than the record's during a reprocess).
    pub generation: u32,
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

impl Record {
    /// The stored form (postcard: compact, and no text to parse on every listing).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a record always encodes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// Times as nanoseconds since the epoch (years 1677 to 2262), so reading a record parses no
/// text.
mod nanos {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.timestamp_nanos_opt().unwrap_or(i64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        Ok(DateTime::from_timestamp_nanos(i64::deserialize(d)?))
    }
}

/// A project id as its text. (`ProjectId`'s own `Deserialize` also takes integers, which needs
/// a self-describing format; postcard is not one.)
mod project_text {
    use gallery_schema::ProjectId;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(p: &ProjectId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ProjectId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ProjectId::parse(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_its_stored_form() {
        let at = DateTime::from_timestamp_nanos(1_800_000_000_123_456_789);
        let mut versions = BTreeMap::new();
        versions.insert(
            VersionName::Thumb,
            RenderedVersion {
                generation: 1,
                key: "versions/p-1/x/1/thumb.jpg".into(),
                width: 150,
                height: 100,
                bytes: 4_000,
                content_type: "image/jpeg".into(),
            },
        );
        let rec = Record {
            version: RECORD_VERSION,
            image_id: ImageId::new_v7(),
            project_id: ProjectId::parse("p-1").unwrap(),
            filename: "Été 2026.jpg".into(),
            state: ImageState::Error,
            created_at: at,
            updated_at: at + chrono::TimeDelta::seconds(3),
            original_key: "originals/x/p-1".into(),
            content_type: "image/jpeg".into(),
            link_expires_at: at + chrono::TimeDelta::minutes(15),
            max_bytes: 50_000_000,
            declared_size: Some(12),
            size: Some(11),
            etag: Some("\"e\"".into()),
            generation: 2,
            attempt: 3,
            versions,
            width: Some(4000),
            height: None,
            error: Some(RecordError {
                code: ErrorCode::CorruptImage,
                message: "m".into(),
            }),
            thumbhash: vec![0x2c, 0x18, 0x0a, 0x05],
            sha256: Some([0xab; 32]),
            renditions_version: 1,
            duplicate_of: Some(ImageId::new_v7()),
            last_seq: 42,
            refused: vec![40, 41],
        };
        let bytes = rec.encode();
        assert_eq!(Record::decode(&bytes).unwrap(), rec);
        assert!(bytes.len() < serde_json::to_vec(&rec).unwrap().len() / 2);
        // A project id that isn't one is refused, not stored.
        let mut bad = rec.clone();
        bad.project_id = ProjectId::parse("ok").unwrap();
        let mut bytes = bad.encode();
        let at = bytes.windows(3).position(|w| w == b"\x02ok").unwrap();
        bytes[at + 1] = b'*';
        assert!(Record::decode(&bytes).is_err());
        assert!(Record::decode(&[1, 2, 3]).is_err());
    }
}
