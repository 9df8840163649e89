//! Conversion between domain events and the protobuf envelope: the only place that touches
//! prost types.

use chrono::{DateTime, Utc};
use prost::Message;

use crate::error_code::ErrorCode;
use crate::event::{Event, EventBody, Failure, UploadRequested, Uploaded, VersionRendered};
use crate::ids::{ImageId, ProjectId};
use crate::pb;
use crate::pb::envelope::Kind;
use crate::version::VersionName;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("envelope without a kind")]
    MissingKind,
    #[error("bad id: {0}")]
    Id(#[from] crate::ids::IdError),
    #[error("unknown version name {0:?}")]
    UnknownVersion(String),
    #[error("timestamp out of range")]
    Timestamp,
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn from_millis(ms: i64) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::from_timestamp_millis(ms).ok_or(DecodeError::Timestamp)
}

impl Event {
    pub fn encode(&self) -> Vec<u8> {
        let kind = match &self.body {
            EventBody::UploadRequested(u) => Kind::UploadRequested(pb::UploadRequested {
                filename: u.filename.clone(),
                object_key: u.object_key.clone(),
                content_type: u.content_type.clone(),
                declared_size: u.declared_size.unwrap_or(0),
                link_expires_at_ms: millis(u.link_expires_at),
                max_bytes: u.max_bytes,
            }),
            EventBody::Uploaded(u) => Kind::Uploaded(pb::Uploaded {
                size: u.size,
                etag: u.etag.clone(),
                generation: u.generation,
            }),
            EventBody::ProcessingStarted {
                attempt,
                generation,
            } => Kind::ProcessingStarted(pb::ProcessingStarted {
                attempt: *attempt,
                generation: *generation,
            }),
            EventBody::VersionRendered(v) => Kind::VersionRendered(pb::VersionRendered {
                version: v.version.as_str().to_owned(),
                key: v.key.clone(),
                width: v.width,
                height: v.height,
                bytes: v.bytes,
                content_type: v.content_type.clone(),
                generation: v.generation,
            }),
            EventBody::Processed {
                generation,
                width,
                height,
            } => Kind::Processed(pb::Processed {
                generation: *generation,
                width: *width,
                height: *height,
            }),
            EventBody::Failed(f) => Kind::Failed(pb::Failed {
                code: f.code.as_str().to_owned(),
                message: f.message.clone(),
                retryable: f.retryable,
                generation: f.generation,
            }),
            EventBody::ReprocessRequested { generation } => {
                Kind::ReprocessRequested(pb::ReprocessRequested {
                    generation: *generation,
                })
            }
            EventBody::RenderCrashed {
                generation,
                crash,
                message,
            } => Kind::RenderCrashed(pb::RenderCrashed {
                generation: *generation,
                crash: *crash,
                message: message.clone(),
            }),
            EventBody::RedriveRequested {
                generation,
                reason,
                observed_seq,
            } => Kind::RedriveRequested(pb::RedriveRequested {
                generation: *generation,
                reason: reason.clone(),
                observed_seq: *observed_seq,
            }),
        };
        pb::Envelope {
            image_id: self.image_id.to_string(),
            project_id: self.project_id.to_string(),
            at_ms: millis(self.at),
            kind: Some(kind),
        }
        .encode_to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let env = pb::Envelope::decode(bytes)?;
        let body = match env.kind.ok_or(DecodeError::MissingKind)? {
            Kind::UploadRequested(u) => EventBody::UploadRequested(UploadRequested {
                filename: u.filename,
                object_key: u.object_key,
                content_type: u.content_type,
                declared_size: (u.declared_size > 0).then_some(u.declared_size),
                link_expires_at: from_millis(u.link_expires_at_ms)?,
                max_bytes: u.max_bytes,
            }),
            Kind::Uploaded(u) => EventBody::Uploaded(Uploaded {
                size: u.size,
                etag: u.etag,
                generation: u.generation,
            }),
            Kind::ProcessingStarted(p) => EventBody::ProcessingStarted {
                attempt: p.attempt,
                generation: p.generation,
            },
            Kind::VersionRendered(v) => EventBody::VersionRendered(VersionRendered {
                version: VersionName::parse(&v.version)
                    .ok_or(DecodeError::UnknownVersion(v.version.clone()))?,
                key: v.key,
                width: v.width,
                height: v.height,
                bytes: v.bytes,
                content_type: v.content_type,
                generation: v.generation,
            }),
            Kind::Processed(p) => EventBody::Processed {
                generation: p.generation,
                width: p.width,
                height: p.height,
            },
            Kind::Failed(f) => EventBody::Failed(Failure {
                code: ErrorCode::parse_lenient(&f.code),
                message: f.message,
                retryable: f.retryable,
                generation: f.generation,
            }),
            Kind::ReprocessRequested(r) => EventBody::ReprocessRequested {
                generation: r.generation,
            },
            Kind::RenderCrashed(c) => EventBody::RenderCrashed {
                generation: c.generation,
                crash: c.crash,
                message: c.message,
            },
            Kind::RedriveRequested(r) => EventBody::RedriveRequested {
                generation: r.generation,
                reason: r.reason,
                observed_seq: r.observed_seq,
            },
        };
        Ok(Event {
            image_id: ImageId::parse(&env.image_id)?,
            project_id: ProjectId::parse(&env.project_id)?,
            at: from_millis(env.at_ms)?,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_protobuf() {
        let p = ProjectId::parse("p1").unwrap();
        let i = ImageId::new_v7();
        let at = from_millis(1_700_000_000_123).unwrap();
        let bodies = vec![
            EventBody::UploadRequested(UploadRequested {
                filename: "a.jpg".into(),
                object_key: "originals/p1/x".into(),
                content_type: "image/jpeg".into(),
                declared_size: Some(12),
                link_expires_at: at,
                max_bytes: 50,
            }),
            EventBody::Uploaded(Uploaded {
                size: 3,
                etag: "e".into(),
                generation: 1,
            }),
            EventBody::ProcessingStarted {
                attempt: 2,
                generation: 1,
            },
            EventBody::VersionRendered(VersionRendered {
                version: VersionName::Thumb,
                key: "k".into(),
                width: 150,
                height: 100,
                bytes: 999,
                content_type: "image/jpeg".into(),
                generation: 1,
            }),
            EventBody::Processed {
                generation: 1,
                width: 10,
                height: 20,
            },
            EventBody::Failed(Failure {
                code: ErrorCode::CorruptImage,
                message: "bad".into(),
                retryable: false,
                generation: 1,
            }),
            EventBody::ReprocessRequested { generation: 2 },
        ];
        for body in bodies {
            let e = Event {
                image_id: i,
                project_id: p.clone(),
                at,
                body,
            };
            assert_eq!(Event::decode(&e.encode()).unwrap(), e);
        }
    }

    #[test]
    fn garbage_and_hostile_envelopes_are_refused() {
        assert!(Event::decode(b"\xff\xff\xff").is_err());
        let env = pb::Envelope {
            image_id: ImageId::new_v7().to_string(),
            project_id: "a.>".into(),
            at_ms: 0,
            kind: Some(Kind::Processed(pb::Processed::default())),
        };
        assert!(matches!(
            Event::decode(&env.encode_to_vec()),
            Err(DecodeError::Id(_))
        ));
    }
}
