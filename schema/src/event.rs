//! Domain events: plain Rust types the services work with. The protobuf envelope is only the
//! wire form (see `wire.rs`), converted once on the way in and out.

use chrono::{DateTime, Utc};

use crate::error_code::ErrorCode;
use crate::ids::{ImageId, ProjectId};
use crate::kind::EventKind;
use crate::version::VersionName;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub image_id: ImageId,
    pub project_id: ProjectId,
    pub at: DateTime<Utc>,
    pub body: EventBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    UploadRequested(UploadRequested),
    Uploaded(Uploaded),
    ProcessingStarted {
        attempt: u32,
        generation: u32,
    },
    VersionRendered(VersionRendered),
    Processed {
        generation: u32,
        width: u32,
        height: u32,
        /// The ThumbHash of the rendered image (empty in events older than placeholders).
        thumbhash: Vec<u8>,
        /// SHA-256 of the original's bytes as read for this render (`None` in older events).
        sha256: Option<[u8; 32]>,
        /// The [`crate::RENDITIONS_VERSION`] rendered with (0 in older events).
        renditions_version: u32,
    },
    Failed(Failure),
    ReprocessRequested {
        generation: u32,
    },
    /// The reconciler drives an unfinished generation through the processor again.
    RedriveRequested {
        generation: u32,
        reason: String,
        /// The image's last sequence when it was found stuck (part of the message id).
        observed_seq: u64,
    },
    /// A render worker died rendering this generation (`crash` counts from 1).
    RenderCrashed {
        generation: u32,
        crash: u32,
        message: String,
    },
    /// The image was deleted: its last event. The fold keeps a tombstone (so a replay agrees),
    /// listings drop it, the deleter removes its objects.
    Deleted {
        /// Deleted with its whole project (`DELETE /projects/{id}`).
        whole_project: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct UploadRequested {
    pub filename: String,
    pub object_key: String,
    pub content_type: String,
    pub declared_size: Option<u64>,
    pub link_expires_at: DateTime<Utc>,
    pub max_bytes: u64,
    /// Import by URL: the service fetches the image from here instead of waiting for an
    /// upload (`link_expires_at` then bounds the import).
    pub source_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Uploaded {
    pub size: u64,
    pub etag: String,
    pub generation: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VersionRendered {
    pub version: VersionName,
    pub key: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub content_type: String,
    pub generation: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
    pub generation: u32,
}

impl EventBody {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::UploadRequested(_) => EventKind::UploadRequested,
            Self::Uploaded(_) => EventKind::Uploaded,
            Self::ProcessingStarted { .. } => EventKind::ProcessingStarted,
            Self::VersionRendered(_) => EventKind::VersionRendered,
            Self::Processed { .. } => EventKind::Processed,
            Self::Failed(_) => EventKind::Failed,
            Self::ReprocessRequested { .. } => EventKind::ReprocessRequested,
            Self::RenderCrashed { .. } => EventKind::RenderCrashed,
            Self::RedriveRequested { .. } => EventKind::RedriveRequested,
            Self::Deleted { .. } => EventKind::Deleted,
        }
    }

    /// The processing generation the event belongs to: 1 for the first upload, +1 for every
    /// reprocess. An upload request precedes all generations (0); a deletion ends them all
    /// (also 0: it belongs to none).
    pub fn generation(&self) -> u32 {
        match self {
            Self::UploadRequested(_) | Self::Deleted { .. } => 0,
            Self::Uploaded(u) => u.generation,
            Self::ProcessingStarted { generation, .. }
            | Self::Processed { generation, .. }
            | Self::ReprocessRequested { generation }
            | Self::RenderCrashed { generation, .. }
            | Self::RedriveRequested { generation, .. } => *generation,
            Self::VersionRendered(v) => v.generation,
            Self::Failed(f) => f.generation,
        }
    }
}

impl Event {
    pub fn new(project_id: ProjectId, image_id: ImageId, body: EventBody) -> Self {
        Self {
            image_id,
            project_id,
            at: Utc::now(),
            body,
        }
    }

    pub fn kind(&self) -> EventKind {
        self.body.kind()
    }

    /// The `Nats-Msg-Id` of this event: derived from (image, generation, kind, version), so a
    /// retried append is dropped by JetStream's dedup window. `Processed` and `Failed` share
    /// one id per generation: one generation can never get two different outcomes.
    pub fn msg_id(&self) -> String {
        let (image, generation) = (self.image_id, self.body.generation());
        match &self.body {
            EventBody::VersionRendered(v) => format!("{image}:{generation}:version:{}", v.version),
            EventBody::Processed { .. } | EventBody::Failed(_) => {
                format!("{image}:{generation}:outcome")
            }
            // One per attempt: a redelivery records its own start.
            EventBody::ProcessingStarted { attempt, .. } => {
                format!("{image}:{generation}:processing_started:{attempt}")
            }
            EventBody::RenderCrashed { crash, .. } => {
                format!("{image}:{generation}:render_crashed:{crash}")
            }
            EventBody::RedriveRequested { observed_seq, .. } => {
                format!("{image}:{generation}:redrive_requested:{observed_seq}")
            }
            // One deletion per image, however many requests asked for it.
            EventBody::Deleted { .. } => format!("{image}:deleted"),
            other => format!("{image}:{generation}:{}", other.kind().as_str()),
        }
    }

    pub fn subject(&self) -> String {
        crate::subjects::event_subject(&self.project_id, &self.image_id, self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: EventBody) -> Event {
        Event::new(ProjectId::parse("p").unwrap(), ImageId::new_v7(), body)
    }

    #[test]
    fn each_attempt_of_a_generation_has_its_own_start() {
        let id = ImageId::new_v7();
        let started = |attempt| Event {
            image_id: id,
            ..event(EventBody::ProcessingStarted {
                attempt,
                generation: 1,
            })
        };
        assert_ne!(started(1).msg_id(), started(2).msg_id());
        assert_eq!(
            started(2).msg_id(),
            started(2).msg_id(),
            "a retried append dedups"
        );
    }

    #[test]
    fn outcomes_of_one_generation_share_a_msg_id() {
        let done = event(EventBody::Processed {
            generation: 2,
            width: 1,
            height: 1,
            thumbhash: Vec::new(),
            sha256: None,
            renditions_version: 1,
        });
        let mut failed = event(EventBody::Failed(Failure {
            code: ErrorCode::CorruptImage,
            message: "x".into(),
            retryable: false,
            generation: 2,
        }));
        failed.image_id = done.image_id;
        assert_eq!(done.msg_id(), failed.msg_id());
        let next = Event {
            body: EventBody::Processed {
                generation: 3,
                width: 1,
                height: 1,
                thumbhash: Vec::new(),
                sha256: None,
                renditions_version: 1,
            },
            ..done.clone()
        };
        assert_ne!(done.msg_id(), next.msg_id());
    }
}
