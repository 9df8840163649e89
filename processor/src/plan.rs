//! Pure decisions of the processor: what an image's history says is left to do for a
//! generation ([`ImageHistory`]), and how to acknowledge a job's outcome ([`decide`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
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
    /// When each generation's first attempt started (the failure budget counts from it).
    started: BTreeMap<u32, DateTime<Utc>>,
    /// The highest attempt recorded per generation.
    attempts: BTreeMap<u32, u32>,
    rendered: BTreeSet<(u32, VersionName)>,
    outcome: BTreeSet<u32>,
    /// Render worker crashes recorded per generation.
    crashes: BTreeMap<u32, u32>,
    /// The image was deleted: nothing is left to do for any generation.
    deleted: bool,
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
                EventBody::ReprocessRequested { generation }
                | EventBody::RedriveRequested { generation, .. } => {
                    h.generation = h.generation.max(*generation);
                }
                EventBody::ProcessingStarted {
                    generation,
                    attempt,
                } => {
                    h.started.entry(*generation).or_insert(stored.event.at);
                    let last = h.attempts.entry(*generation).or_insert(0);
                    *last = (*last).max(*attempt);
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
                EventBody::RenderCrashed { generation, .. } => {
                    *h.crashes.entry(*generation).or_insert(0) += 1;
                }
                EventBody::Deleted { .. } => h.deleted = true,
            }
        }
        h
    }

    /// The attempt a delivery of `generation` is: every delivery is one, so the later of its
    /// delivery count (a redelivery of the same trigger) and one past the highest recorded (a
    /// new trigger, such as a re-drive, for a generation started before).
    pub fn attempt_of(&self, generation: u32, delivered: u32) -> u32 {
        let next = self.attempts.get(&generation).map_or(1, |a| a + 1);
        delivered.max(next)
    }

    /// Whether `attempt` gets its own `processing_started` (which its WebSocket then sees):
    /// the first [`RECORDED_ATTEMPTS`], then every power of two, so a day-long outage adds a
    /// few dozen events per image, not thousands.
    pub fn records_attempt(attempt: u32) -> bool {
        attempt <= RECORDED_ATTEMPTS || attempt.is_power_of_two()
    }

    /// Render worker crashes recorded for the generation.
    pub fn crashes(&self, generation: u32) -> u32 {
        self.crashes.get(&generation).copied().unwrap_or(0)
    }

    /// When the generation's first attempt started, if one did.
    pub fn started_at(&self, generation: u32) -> Option<DateTime<Utc>> {
        self.started.get(&generation).copied()
    }

    pub fn rendered(&self, generation: u32, version: VersionName) -> bool {
        self.rendered.contains(&(generation, version))
    }

    /// Work for `generation` is over: it has an outcome, a newer generation replaced it, or
    /// the image was deleted.
    pub fn settled(&self, generation: u32) -> bool {
        self.deleted || self.outcome.contains(&generation) || generation < self.generation
    }
}

/// Attempts up to this one each get a `processing_started`; later ones at powers of two
/// ([`ImageHistory::records_attempt`]).
pub const RECORDED_ATTEMPTS: u32 = 10;

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
    /// Storage contradicts the log: the original the log says was uploaded is missing (404) or
    /// not the recorded one (412). A lagging replica or a storage hiccup answers so for a
    /// while, so it is retried like a transient failure for [`RetryPolicy::storage_lag`], then
    /// ends with `code` (retryable: a re-drive may find it).
    Lagging { code: ErrorCode, message: String },
    /// Another writer appended to the image since we read it: re-read soon.
    Conflict,
}

impl JobOutcome {
    /// A [`JobOutcome::Permanent`] failure with `code`.
    pub fn permanent(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Permanent {
            code,
            message: message.into(),
        }
    }

    /// A [`JobOutcome::Transient`] failure.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckDecision {
    Ack,
    /// Redeliver after the delay.
    Nak(Duration),
    /// Append `failed` with this code, then stop redelivery (`Term`). `retryable` says whether
    /// an operator's re-drive may succeed (an outage that outlasted the budget) or not (the
    /// image itself is the problem).
    FailAndTerm {
        code: ErrorCode,
        message: String,
        retryable: bool,
    },
}

/// The failure policy's settings (docs/ARCHITECTURE.md §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How long transient failures of one generation are retried, from its first attempt
    /// (`GALLERY_RETRY_BUDGET`, default 24 h). Never counted in attempts: a storage client gives
    /// up on a refused connection within seconds, so attempts run out inside any real outage.
    pub budget: Duration,
    /// The first retry's delay; each later one doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// How long storage may contradict the log ([`JobOutcome::Lagging`]) before the job ends
    /// with the contradiction's code; within `budget`.
    pub storage_lag: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            budget: Duration::from_secs(24 * 60 * 60),
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            storage_lag: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// 1 s, 2 s, 4 s, ... capped at `max_delay`; `delivered` counts this delivery (1 on the first).
    pub fn backoff(&self, delivered: i64) -> Duration {
        let exp = delivered.clamp(1, 31) as u32 - 1;
        self.first_delay
            .saturating_mul(1u32 << exp.min(20))
            .min(self.max_delay)
    }
}

/// When the failure budget of a delivery began: the later of the generation's first attempt
/// and the trigger's arrival in the log. A backlog that waited for processors, or an image
/// re-driven long after its first attempt, gets a whole budget from now on; `None` (the log
/// was unreadable, so nothing is known) means it hasn't begun.
pub fn budget_start(
    first_started: Option<DateTime<Utc>>,
    trigger_published: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let first = first_started?;
    Some(trigger_published.map_or(first, |t| t.max(first)))
}

/// How much of the failure budget is spent at `now`, this processor's clock ([`budget_start`]);
/// zero when it hasn't begun. A trigger time later than `now` is left out: the server's clock
/// stamped it, and a processor whose clock is behind the server's would otherwise see a
/// negative time, counted as zero, and retry forever. The first attempt's time is a
/// processor's own stamp (this one's, unless another replica started the generation), so a
/// clock that is off by a constant still measures the budget right.
pub fn budget_elapsed(
    first_started: Option<DateTime<Utc>>,
    trigger_published: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Duration {
    let published = trigger_published.filter(|t| *t <= now);
    budget_start(first_started, published)
        .and_then(|at| (now - at).to_std().ok())
        .unwrap_or_default()
}

/// The one place that decides a delivery's acknowledgement. `delivered` counts this delivery
/// (1 on the first); `elapsed` is how long ago this generation's first attempt started.
///
/// - done, or nothing left to do: ack;
/// - a problem with the image itself: `failed`, not retryable;
/// - transient (storage or NATS unavailable, timeouts) or a concurrent writer: retry with
///   capped exponential backoff while the budget lasts, then `failed: retries_exhausted`,
///   retryable, so an operator's `gallery redrive` can take it up again.
pub fn decide(
    outcome: &JobOutcome,
    delivered: i64,
    elapsed: Duration,
    policy: &RetryPolicy,
) -> AckDecision {
    match outcome {
        JobOutcome::Completed | JobOutcome::AlreadySettled => AckDecision::Ack,
        JobOutcome::Permanent { code, message } => AckDecision::FailAndTerm {
            code: *code,
            message: message.clone(),
            retryable: false,
        },
        JobOutcome::Transient { .. } | JobOutcome::Conflict if elapsed >= policy.budget => {
            let reason = match outcome {
                JobOutcome::Transient { message } => message.as_str(),
                _ => "the image kept changing while being processed",
            };
            AckDecision::FailAndTerm {
                code: ErrorCode::RetriesExhausted,
                message: format!(
                    "gave up after {delivered} attempts in {}s: {reason}",
                    elapsed.as_secs()
                ),
                retryable: true,
            }
        }
        JobOutcome::Lagging { code, message }
            if elapsed >= policy.storage_lag.min(policy.budget) =>
        {
            AckDecision::FailAndTerm {
                code: *code,
                message: format!(
                    "{message} (still after {delivered} attempts in {}s)",
                    elapsed.as_secs()
                ),
                retryable: true,
            }
        }
        JobOutcome::Transient { .. } | JobOutcome::Lagging { .. } => {
            AckDecision::Nak(policy.backoff(delivered))
        }
        JobOutcome::Conflict => AckDecision::Nak(Duration::from_millis(100)),
    }
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
        assert!(h.started_at(1).is_some() && h.started_at(2).is_none());
        // A deleted image has nothing left to render, whatever generation asks.
        let mut deleted = events.clone();
        deleted.push(stored(
            13,
            EventBody::Deleted {
                whole_project: false,
            },
        ));
        let h = ImageHistory::from_events(&deleted);
        assert!(h.settled(2) && h.settled(3));
        assert_eq!(h.last_seq, 13);
    }

    #[test]
    fn acks_follow_the_outcome() {
        let policy = RetryPolicy::default();
        let hour = Duration::from_secs(3600);
        let transient = JobOutcome::Transient {
            message: "s3 down".into(),
        };
        assert_eq!(
            decide(&JobOutcome::Completed, 1, hour, &policy),
            AckDecision::Ack
        );
        assert_eq!(
            decide(&JobOutcome::AlreadySettled, 3, hour, &policy),
            AckDecision::Ack
        );
        assert_eq!(
            decide(&transient, 1, Duration::ZERO, &policy),
            AckDecision::Nak(Duration::from_secs(1))
        );
        assert_eq!(
            decide(&transient, 3, hour, &policy),
            AckDecision::Nak(Duration::from_secs(4))
        );
        assert_eq!(
            decide(&JobOutcome::Conflict, 1, hour, &policy),
            AckDecision::Nak(Duration::from_millis(100))
        );
        let corrupt = JobOutcome::Permanent {
            code: ErrorCode::CorruptImage,
            message: "x".into(),
        };
        // Permanent failures never retry, whatever the attempt.
        assert_eq!(
            decide(&corrupt, 1, Duration::ZERO, &policy),
            AckDecision::FailAndTerm {
                code: ErrorCode::CorruptImage,
                message: "x".into(),
                retryable: false,
            }
        );
        assert_eq!(policy.backoff(100), Duration::from_secs(60));
    }

    #[test]
    fn transient_failures_are_budgeted_in_time_not_attempts() {
        let policy = RetryPolicy {
            budget: Duration::from_secs(600),
            ..RetryPolicy::default()
        };
        let down = JobOutcome::Transient {
            message: "connection refused".into(),
        };
        // Many quick attempts inside the budget (a client that gives up in 2 s) still retry.
        for delivered in 1..=1000 {
            assert!(matches!(
                decide(&down, delivered, Duration::from_secs(599), &policy),
                AckDecision::Nak(_)
            ));
        }
        // Past the budget: retries_exhausted, and retryable so it can be re-driven.
        match decide(&down, 2, Duration::from_secs(600), &policy) {
            AckDecision::FailAndTerm {
                code, retryable, ..
            } => {
                assert_eq!(code, ErrorCode::RetriesExhausted);
                assert!(retryable);
            }
            other => panic!("{other:?}"),
        }
        // A writer that keeps conflicting is bounded by the same budget.
        assert!(matches!(
            decide(&JobOutcome::Conflict, 9, Duration::from_secs(601), &policy),
            AckDecision::FailAndTerm {
                code: ErrorCode::RetriesExhausted,
                retryable: true,
                ..
            }
        ));
    }

    #[test]
    fn the_budget_starts_at_the_later_of_first_attempt_and_trigger() {
        let t0 = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap();
        let day = chrono::TimeDelta::days(1);
        assert_eq!(budget_start(None, Some(t0)), None, "nothing known");
        assert_eq!(budget_start(Some(t0), None), Some(t0));
        // A re-drive a day after the first attempt: a fresh budget from the re-drive.
        assert_eq!(budget_start(Some(t0), Some(t0 + day)), Some(t0 + day));
        // An upload that waited a day for processors: the budget starts at the first attempt.
        assert_eq!(budget_start(Some(t0 + day), Some(t0)), Some(t0 + day));
    }

    #[test]
    fn storage_that_contradicts_the_log_is_waited_for_then_named() {
        let policy = RetryPolicy::default();
        let missing = JobOutcome::Lagging {
            code: ErrorCode::Internal,
            message: "the original is missing from storage".into(),
        };
        // A replica behind the write answers 404 for a while: retried, not failed.
        assert_eq!(
            decide(&missing, 1, Duration::ZERO, &policy),
            AckDecision::Nak(Duration::from_secs(1))
        );
        assert!(matches!(
            decide(
                &missing,
                6,
                policy.storage_lag - Duration::from_secs(1),
                &policy
            ),
            AckDecision::Nak(_)
        ));
        // Still so after the window: the job ends with the contradiction's own code.
        match decide(&missing, 7, policy.storage_lag, &policy) {
            AckDecision::FailAndTerm {
                code,
                message,
                retryable,
            } => {
                assert_eq!(code, ErrorCode::Internal);
                assert!(message.contains("missing"), "{message}");
                assert!(retryable);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn redeliveries_get_their_own_processing_started_boundedly() {
        let started = |seq, attempt| {
            stored(
                seq,
                EventBody::ProcessingStarted {
                    attempt,
                    generation: 1,
                },
            )
        };
        let h = ImageHistory::from_events(&[]);
        assert_eq!(h.attempt_of(1, 1), 1, "the first attempt");
        let h = ImageHistory::from_events(&[started(4, 1)]);
        assert_eq!(h.attempt_of(1, 2), 2, "a redelivery");
        assert_eq!(
            h.attempt_of(1, 1),
            2,
            "a new trigger (a re-drive) of a started generation"
        );
        assert_eq!(h.attempt_of(2, 1), 1, "another generation");
        let events = [started(4, 1), started(5, 10)];
        let h = ImageHistory::from_events(&events);
        assert_eq!(h.attempt_of(1, 13), 13, "unrecorded attempts still count");
        // Past the first ten: only powers of two are recorded.
        let recorded: Vec<u32> = (1..=1500)
            .filter(|a| ImageHistory::records_attempt(*a))
            .collect();
        assert_eq!(
            recorded,
            [
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 32, 64, 128, 256, 512, 1024
            ]
        );
        // The first attempt's time stays the budget's start.
        assert_eq!(h.started_at(1), Some(events[0].event.at));
    }

    #[test]
    fn the_budget_is_measured_right_by_a_skewed_clock() {
        let budget = Duration::from_secs(60);
        let hours = |h: i64| chrono::TimeDelta::hours(h);
        let secs = |s: i64| chrono::TimeDelta::seconds(s);
        // The server's clock stamps the trigger; the processor's own clock, off by `skew`,
        // stamps the first attempt a second later and reads `now` a budget after that.
        let server = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        // `late`: how much later than the budget it may end (a clock behind by less than the
        // time since the trigger can't be told from a re-drive, which restarts the budget).
        for (skew, late) in [
            (hours(-25), 0),
            (secs(-61), 61),
            (secs(0), 0),
            (secs(61), 0),
            (hours(25), 0),
        ] {
            let first = server + secs(1) + skew;
            let published = Some(server);
            let spent = |after: i64| budget_elapsed(Some(first), published, first + secs(after));
            // Neither at once...
            assert_eq!(spent(0), Duration::ZERO, "skew {skew}");
            assert!(spent(59) < budget, "skew {skew}");
            // ...nor never: about a budget later it is spent, whatever the skew.
            assert!(
                spent(60 + late) >= budget,
                "skew {skew}: {:?}",
                spent(60 + late)
            );
            assert!(
                spent(60 + late) < budget + Duration::from_secs(2),
                "skew {skew}"
            );
        }
        // Nothing known yet: nothing spent.
        assert_eq!(
            budget_elapsed(None, Some(server), server + hours(30)),
            Duration::ZERO
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let policy = RetryPolicy::default();
        let delays: Vec<u64> = (1..=8).map(|d| policy.backoff(d).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy.backoff(i64::MAX), Duration::from_secs(60));
        assert_eq!(policy.backoff(0), Duration::from_secs(1));
    }
}
