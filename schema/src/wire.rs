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
    /// The subject names another project, image or kind than the envelope: a forged or
    /// misrouted message (docs/ARCHITECTURE.md §2).
    #[error("subject {subject:?} does not match the envelope ({project}.{image}.{kind})")]
    SubjectMismatch {
        subject: String,
        project: String,
        image: String,
        kind: &'static str,
    },
    /// An object key that is not the one our layout gives for this image (`keys.rs`).
    #[error("foreign object key {0:?}")]
    ForeignKey(String),
    #[error("content type {0:?} is not one a version is stored with")]
    VersionType(String),
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn from_millis(ms: i64) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::from_timestamp_millis(ms).ok_or(DecodeError::Timestamp)
}

impl Event {
    pub fn encode(&self) -> Vec<u8> {
        pb::Envelope {
            image_id: self.image_id.to_string(),
            project_id: self.project_id.to_string(),
            at_ms: millis(self.at),
            kind: Some(kind_of(&self.body)),
        }
        .encode_to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let env = pb::Envelope::decode(bytes)?;
        let body = body_of(env.kind.ok_or(DecodeError::MissingKind)?)?;
        Ok(Event {
            image_id: ImageId::parse(&env.image_id)?,
            project_id: ProjectId::parse(&env.project_id)?,
            at: from_millis(env.at_ms)?,
            body,
        })
    }

    /// The one decode step for a message read from NATS (the fold, the WebSocket's live and
    /// replayed messages, the processor and the upload watcher all go through it): decodes, then
    /// refuses an event whose subject doesn't name its own project, image and kind, and one that
    /// names an object other than the keys our layout gives for its image. Whoever can publish
    /// to the stream can't make the api sign a link to another image's file.
    pub fn decode_checked(subject: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let event = Self::decode(bytes)?;
        event.check_subject(subject)?;
        event.check_keys()?;
        Ok(event)
    }

    fn check_subject(&self, subject: &str) -> Result<(), DecodeError> {
        let kind = self.kind().as_str();
        let matches = crate::subjects::subject_tokens(subject).is_some_and(|(p, i, k)| {
            p == self.project_id.as_str() && i == self.image_id.to_string() && k == kind
        });
        if matches {
            Ok(())
        } else {
            Err(DecodeError::SubjectMismatch {
                subject: subject.chars().take(300).collect(),
                project: self.project_id.to_string(),
                image: self.image_id.to_string(),
                kind,
            })
        }
    }

    fn check_keys(&self) -> Result<(), DecodeError> {
        let (p, i) = (&self.project_id, &self.image_id);
        match &self.body {
            EventBody::UploadRequested(u) if !crate::keys::is_original_key(&u.object_key, p, i) => {
                Err(DecodeError::ForeignKey(
                    u.object_key.chars().take(300).collect(),
                ))
            }
            EventBody::VersionRendered(v) => {
                if !crate::keys::is_version_key(&v.key, p, i, v.generation, v.version) {
                    return Err(DecodeError::ForeignKey(v.key.chars().take(300).collect()));
                }
                if !matches!(v.content_type.as_str(), "image/jpeg" | "image/png") {
                    return Err(DecodeError::VersionType(
                        v.content_type.chars().take(100).collect(),
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A body as the envelope's kind, field for field (an absent optional as the proto3 default).
fn kind_of(body: &EventBody) -> Kind {
    match body {
        EventBody::UploadRequested(u) => Kind::UploadRequested(upload_requested_to_pb(u)),
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
        EventBody::VersionRendered(v) => Kind::VersionRendered(version_rendered_to_pb(v)),
        EventBody::Processed {
            generation,
            width,
            height,
            thumbhash,
            sha256,
            renditions_version,
        } => Kind::Processed(pb::Processed {
            generation: *generation,
            width: *width,
            height: *height,
            thumbhash: thumbhash.clone(),
            sha256: sha256.map(|h| h.to_vec()).unwrap_or_default(),
            renditions_version: *renditions_version,
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
        EventBody::Deleted { whole_project } => Kind::Deleted(pb::Deleted {
            whole_project: *whole_project,
        }),
    }
}

fn upload_requested_to_pb(u: &UploadRequested) -> pb::UploadRequested {
    pb::UploadRequested {
        filename: u.filename.clone(),
        object_key: u.object_key.clone(),
        content_type: u.content_type.clone(),
        declared_size: u.declared_size.unwrap_or(0),
        link_expires_at_ms: millis(u.link_expires_at),
        max_bytes: u.max_bytes,
        source_url: u.source_url.clone().unwrap_or_default(),
    }
}

fn version_rendered_to_pb(v: &VersionRendered) -> pb::VersionRendered {
    pb::VersionRendered {
        version: v.version.as_str().to_owned(),
        key: v.key.clone(),
        width: v.width,
        height: v.height,
        bytes: v.bytes,
        content_type: v.content_type.clone(),
        generation: v.generation,
    }
}

/// The envelope's kind as a body: the inverse of [`kind_of`] (a default as an absent optional).
fn body_of(kind: Kind) -> Result<EventBody, DecodeError> {
    Ok(match kind {
        Kind::UploadRequested(u) => EventBody::UploadRequested(upload_requested_from_pb(u)?),
        Kind::Uploaded(u) => EventBody::Uploaded(Uploaded {
            size: u.size,
            etag: u.etag,
            generation: u.generation,
        }),
        Kind::ProcessingStarted(p) => EventBody::ProcessingStarted {
            attempt: p.attempt,
            generation: p.generation,
        },
        Kind::VersionRendered(v) => EventBody::VersionRendered(version_rendered_from_pb(v)?),
        Kind::Processed(p) => EventBody::Processed {
            generation: p.generation,
            width: p.width,
            height: p.height,
            thumbhash: p.thumbhash,
            // Anything but 32 bytes is no hash we wrote.
            sha256: <[u8; 32]>::try_from(p.sha256.as_slice()).ok(),
            renditions_version: p.renditions_version,
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
        Kind::Deleted(d) => EventBody::Deleted {
            whole_project: d.whole_project,
        },
    })
}

fn upload_requested_from_pb(u: pb::UploadRequested) -> Result<UploadRequested, DecodeError> {
    Ok(UploadRequested {
        filename: u.filename,
        object_key: u.object_key,
        content_type: u.content_type,
        declared_size: (u.declared_size > 0).then_some(u.declared_size),
        link_expires_at: from_millis(u.link_expires_at_ms)?,
        max_bytes: u.max_bytes,
        source_url: (!u.source_url.is_empty()).then_some(u.source_url),
    })
}

fn version_rendered_from_pb(v: pb::VersionRendered) -> Result<VersionRendered, DecodeError> {
    Ok(VersionRendered {
        version: VersionName::parse(&v.version)
            .ok_or(DecodeError::UnknownVersion(v.version.clone()))?,
        key: v.key,
        width: v.width,
        height: v.height,
        bytes: v.bytes,
        content_type: v.content_type,
        generation: v.generation,
    })
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
                source_url: Some("https://example.com/a.jpg".into()),
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
                thumbhash: vec![1, 2, 3],
                sha256: Some([7; 32]),
                renditions_version: 1,
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

    fn version_event(p: &ProjectId, i: ImageId, key: String, content_type: &str) -> Event {
        Event::new(
            p.clone(),
            i,
            EventBody::VersionRendered(VersionRendered {
                version: VersionName::Thumb,
                key,
                width: 150,
                height: 100,
                bytes: 9,
                content_type: content_type.into(),
                generation: 1,
            }),
        )
    }

    #[test]
    fn checked_decode_refuses_forged_subjects_and_foreign_keys() {
        let p = ProjectId::parse("p1").unwrap();
        let i = ImageId::new_v7();
        let other = ImageId::new_v7();
        let own = crate::keys::version_key(&p, &i, 1, VersionName::Thumb, "jpg");
        let e = version_event(&p, i, own, "image/jpeg");
        let subject = crate::subjects::event_subject(&p, &i, e.kind());
        // (The wire keeps milliseconds: compare with the unchecked decode.)
        let plain = Event::decode(&e.encode()).unwrap();
        assert_eq!(Event::decode_checked(&subject, &e.encode()).unwrap(), plain);

        // The right event on another image's, project's or kind's subject.
        let q = ProjectId::parse("p2").unwrap();
        for wrong in [
            crate::subjects::event_subject(&p, &other, e.kind()),
            crate::subjects::event_subject(&q, &i, e.kind()),
            crate::subjects::event_subject(&p, &i, crate::EventKind::Processed),
            format!("images.p1.{i}.version_rendered.extra"),
            "elsewhere".to_owned(),
        ] {
            assert!(
                matches!(
                    Event::decode_checked(&wrong, &e.encode()),
                    Err(DecodeError::SubjectMismatch { .. })
                ),
                "{wrong}"
            );
        }
        // Keys of another image or another generation, originals and odd extensions.
        for key in [
            crate::keys::version_key(&p, &other, 1, VersionName::Thumb, "jpg"),
            crate::keys::version_key(&p, &i, 2, VersionName::Thumb, "jpg"),
            crate::keys::version_key(&p, &i, 1, VersionName::D2500, "jpg"),
            crate::keys::original_key(&p, &i),
            format!("versions/p1/{i}/1/thumb.svg"),
        ] {
            let forged = version_event(&p, i, key.clone(), "image/jpeg");
            assert!(
                matches!(
                    Event::decode_checked(&subject, &forged.encode()),
                    Err(DecodeError::ForeignKey(_))
                ),
                "{key}"
            );
        }
        let own = crate::keys::version_key(&p, &i, 1, VersionName::Thumb, "jpg");
        let html = version_event(&p, i, own, "text/html");
        assert!(matches!(
            Event::decode_checked(&subject, &html.encode()),
            Err(DecodeError::VersionType(_))
        ));
        // Upload requests for somebody else's original (another image's, or another
        // project's, in either layout), and for the image's own in both layouts.
        let q = ProjectId::parse("q1").unwrap();
        let request = |key: String| {
            Event::new(
                p.clone(),
                i,
                EventBody::UploadRequested(UploadRequested {
                    filename: "a.jpg".into(),
                    object_key: key,
                    content_type: "image/jpeg".into(),
                    declared_size: None,
                    link_expires_at: from_millis(1_700_000_000_000).unwrap(),
                    max_bytes: 5,
                    source_url: None,
                }),
            )
        };
        let subject = crate::subjects::event_subject(&p, &i, crate::EventKind::UploadRequested);
        for key in [
            crate::keys::original_key(&p, &other),
            crate::keys::original_key(&q, &i),
            crate::keys::legacy_original_key(&q, &i),
            crate::keys::legacy_original_key(&p, &other),
        ] {
            assert!(
                matches!(
                    Event::decode_checked(&subject, &request(key.clone()).encode()),
                    Err(DecodeError::ForeignKey(_))
                ),
                "{key}"
            );
        }
        for key in [
            crate::keys::original_key(&p, &i),
            crate::keys::legacy_original_key(&p, &i),
        ] {
            assert!(Event::decode_checked(&subject, &request(key).encode()).is_ok());
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

    /// Bounded, reproducible fuzzing of the checked decode (fixed seed; `fuzz/` has the
    /// open-ended target): any subject and payload, and real envelopes with bytes changed,
    /// decode to an event of their own subject with keys of their own image, or are refused.
    mod fuzz {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngSeed};

        use super::*;

        fn real() -> (String, Vec<u8>) {
            let p = ProjectId::parse("p1").unwrap();
            let i = ImageId::parse("01a23591-30ae-7151-a2b1-b64e86343e46").unwrap();
            let key = crate::keys::version_key(&p, &i, 1, VersionName::BigThumb, "png");
            let e = version_event(&p, i, key, "image/png");
            (crate::subjects::event_subject(&p, &i, e.kind()), e.encode())
        }

        fn accepted_is_consistent(subject: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
            if let Ok(e) = Event::decode_checked(subject, bytes) {
                let own = crate::subjects::event_subject(&e.project_id, &e.image_id, e.kind());
                prop_assert_eq!(own, subject);
                if let EventBody::VersionRendered(v) = &e.body {
                    let prefix = format!("versions/{}/{}/", e.project_id, e.image_id);
                    prop_assert!(v.key.starts_with(&prefix));
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(Config {
                cases: 512,
                rng_seed: RngSeed::Fixed(0x6a11_e7a5),
                failure_persistence: None,
                ..Config::default()
            })]

            #[test]
            fn any_subject_and_payload(subject in ".{0,120}", bytes in prop::collection::vec(any::<u8>(), 0..400)) {
                accepted_is_consistent(&subject, &bytes)?;
            }

            #[test]
            fn damaged_real_envelopes(
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
                subject_edit in prop::option::of((any::<prop::sample::Index>(), any::<char>())),
            ) {
                let (mut subject, mut bytes) = real();
                for (at, value) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = value;
                }
                if let Some((at, c)) = subject_edit {
                    let mut chars: Vec<char> = subject.chars().collect();
                    let i = at.index(chars.len());
                    chars[i] = c;
                    subject = chars.into_iter().collect();
                }
                accepted_is_consistent(&subject, &bytes)?;
            }
        }
    }
}
