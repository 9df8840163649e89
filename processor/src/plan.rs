//! Pure decisions of the processor: what an image's history says is left to do for a
//! generation ([`ImageHistory`]), and how to acknowledge a job's outcome ([`decide`]).

use std::collections::BTreeSet;
use std::time::Duration;

use gallery_nats::StoredEvent;
use gallery_schema::{ErrorCode, EventBody, VersionName};

/// What the log says about one image, as far as processing goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageHistory {
    /// Sequence of the image's last event: the ordering guard for our next append.
    pub last_seq: u64,
    /// The newest generation anyone asked for.
    pub generation: u32,
    pub original_key: Option<String>,
    pub content_type: Option<String>,
    /// ETag of the original as uploaded: we read exactly that object.
    pub etag: Option<String>,
    pub size: Option<u64>,
    started: BTreeSet<u32>,
    rendered: BTreeSet<(u32, VersionName)>,
    outcome: BTreeSet<u32>,
}

impl ImageHistory {
    pub fn from_events(events: &[StoredEvent]) -> Self {
        let mut h = Self::default();
        for stored in events {
            h.last_seq = h.last_seq.max(stored.seq);
            match &stored.event.body {
                EventBody::UploadRequested(r) => {
                    h.original_key = Some(r.object_key.clone());
                    h.content_type = Some(r.content_type.clone());
                }
                EventBody::Uploaded(u) => {
                    h.etag = Some(u.etag.clone());
                    h.size = Some(u.size);
                    h.generation = h.generation.max(u.generation);
                }
                EventBody::ReprocessRequested { generation } => {
                    h.generation = h.generation.max(*generation);
                }
                EventBody::ProcessingStarted { generation, .. } => {
                    h.started.insert(*generation);
                }
                EventBody::VersionRendered(v) => {
                    h.rendered.insert((v.generation, v.version));
                }
                EventBody::Processed { generation, .. } => {
                    h.outcome.insert(*generation);
                }
                EventBody::Failed(f) => {
                    h.outcome.insert(f.generation);
                }
            }
        }
        h
    }

    pub fn started(&self, generation: u32) -> bool {
        self.started.contains(&generation)
    }

    pub fn rendered(&self, generation: u32, version: VersionName) -> bool {
        self.rendered.contains(&(generation, version))
    }

    /// Work for `generation` is over: it has an outcome, or a newer generation replaced it.
    pub fn settled(&self, generation: u32) -> bool {
        self.outcome.contains(&generation) || generation < self.generation
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Versions stored and `processed` appended (or found already there).
    Completed,
    /// Nothing to do: the generation was settled before we started.
    AlreadySettled,
    /// The input can never be processed (corrupt, too large, unsupported): no retry.
    Permanent { code: ErrorCode, message: String },
    /// Worth another try later (storage or NATS unavailable).
    Transient { message: String },
    /// Another writer appended to the image since we read it: re-read soon.
    Conflict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckDecision {
    Ack,
    /// Redeliver after the delay.
    Nak(Duration),
    /// Append `failed` with this code, then stop redelivery (`Term`).
    FailAndTerm {
        code: ErrorCode,
        message: String,
    },
}

/// The one place that decides a delivery's acknowledgement. `delivered` counts this delivery
/// (1 on the first), `max_deliver` is the consumer's limit.
pub fn decide(outcome: &JobOutcome, delivered: i64, max_deliver: i64) -> AckDecision {
    let last_attempt = max_deliver > 0 && delivered >= max_deliver;
    match outcome {
        JobOutcome::Completed | JobOutcome::AlreadySettled => AckDecision::Ack,
        JobOutcome::Permanent { code, message } => AckDecision::FailAndTerm {
            code: *code,
            message: message.clone(),
        },
        JobOutcome::Transient { .. } | JobOutcome::Conflict if last_attempt => {
            let reason = match outcome {
                JobOutcome::Transient { message } => message.as_str(),
                _ => "the image kept changing while being processed",
            };
            AckDecision::FailAndTerm {
                code: ErrorCode::RetriesExhausted,
                message: format!("gave up after {delivered} attempts: {reason}"),
            }
        }
        JobOutcome::Transient { .. } => AckDecision::Nak(backoff(delivered)),
        JobOutcome::Conflict => AckDecision::Nak(Duration::from_millis(100)),
    }
}

/// 1 s, 2 s, 4 s, ... capped at one minute.
pub fn backoff(delivered: i64) -> Duration {
    let exp = delivered.clamp(1, 7) as u32 - 1;
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gallery_schema::{Event, ImageId, ProjectId, Uploaded, event::Failure};

    fn stored(seq: u64, body: EventBody) -> StoredEvent {
        StoredEvent {
            seq,
            event: Event::new(
                ProjectId::parse("p").unwrap(),
                ImageId::parse("019a0000-0000-7000-8000-000000000001").unwrap(),
                body,
            ),
        }
    }

    #[test]
    fn history_tells_what_is_left() {
        let events = vec![
            stored(
                3,
                EventBody::Uploaded(Uploaded {
                    size: 9,
                    etag: "e1".into(),
                    generation: 1,
                }),
            ),
            stored(
                7,
                EventBody::ProcessingStarted {
                    attempt: 1,
                    generation: 1,
                },
            ),
            stored(
                9,
                EventBody::Failed(Failure {
                    code: ErrorCode::CorruptImage,
                    message: String::new(),
                    retryable: false,
                    generation: 1,
                }),
            ),
            stored(12, EventBody::ReprocessRequested { generation: 2 }),
        ];
        let h = ImageHistory::from_events(&events);
        assert_eq!((h.last_seq, h.generation), (12, 2));
        assert_eq!(h.etag.as_deref(), Some("e1"));
        assert!(h.settled(1) && !h.settled(2));
        assert!(h.started(1) && !h.started(2));
    }

    #[test]
    fn acks_follow_the_outcome() {
        let transient = JobOutcome::Transient {
            message: "s3 down".into(),
        };
        assert_eq!(decide(&JobOutcome::Completed, 1, 5), AckDecision::Ack);
        assert_eq!(decide(&JobOutcome::AlreadySettled, 3, 5), AckDecision::Ack);
        assert_eq!(
            decide(&transient, 1, 5),
            AckDecision::Nak(Duration::from_secs(1))
        );
        assert_eq!(
            decide(&transient, 3, 5),
            AckDecision::Nak(Duration::from_secs(4))
        );
        assert!(matches!(
            decide(&transient, 5, 5),
            AckDecision::FailAndTerm {
                code: ErrorCode::RetriesExhausted,
                ..
            }
        ));
        assert_eq!(
            decide(&JobOutcome::Conflict, 1, 5),
            AckDecision::Nak(Duration::from_millis(100))
        );
        let corrupt = JobOutcome::Permanent {
            code: ErrorCode::CorruptImage,
            message: "x".into(),
        };
        // Permanent failures never retry, whatever the attempt.
        assert_eq!(
            decide(&corrupt, 1, 5),
            AckDecision::FailAndTerm {
                code: ErrorCode::CorruptImage,
                message: "x".into()
            }
        );
        assert_eq!(backoff(100), Duration::from_secs(60));
    }
}
