//! Every NATS name in one place: the stream, the consumers, the subjects and the headers.
//!
//! Subjects are `images.<project_id>.<image_id>.<kind>`. Builders take validated ids only, so a
//! caller cannot put a wildcard or a separator into a subject.

use crate::ids::{ImageId, ProjectId};
use crate::kind::EventKind;

pub const STREAM: &str = "IMAGES";
pub const STREAM_SUBJECTS: &str = "images.>";
/// The processor's durable pull consumer, shared by every processor replica.
pub const PROCESSOR_CONSUMER: &str = "processor";
/// The upload watcher's durable pull consumer, shared by every api replica.
pub const UPLOAD_WATCHER_CONSUMER: &str = "upload-watcher";
/// The deleter's durable pull consumer (every `deleted` event), shared by every api replica.
pub const DELETER_CONSUMER: &str = "deleter";

/// The key-value bucket of `Idempotency-Key` answers of `POST /images/` (kept 24 h).
pub const IDEMPOTENCY_BUCKET: &str = "gallery-idempotency";

/// The key-value bucket of leases (one acting reconciler).
pub const LEASE_BUCKET: &str = "gallery-leases";
/// Operators' re-drive requests (`gallery redrive`), answered by one api replica.
pub const ADMIN_REDRIVE: &str = "gallery.admin.redrive";
/// Operators' sweep requests (`gallery sweep`), answered by one api replica.
pub const ADMIN_SWEEP: &str = "gallery.admin.sweep";
/// Operators' bulk re-renders (`gallery reprocess`): a request the api answers.
pub const ADMIN_REPROCESS: &str = "gallery.admin.reprocess";

pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// The id of the HTTP request that caused an event (logs follow it from the api to the
/// processor); absent on events no request caused.
pub const HEADER_REQUEST_ID: &str = "Gallery-Request-Id";
pub const HEADER_EXPECTED_LAST_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
pub const HEADER_EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: &str =
    "Nats-Expected-Last-Subject-Sequence-Subject";

pub fn event_subject(project: &ProjectId, image: &ImageId, kind: EventKind) -> String {
    format!("images.{project}.{image}.{}", kind.as_str())
}

/// Every event of one image (the ordering guard's subject).
pub fn image_filter(project: &ProjectId, image: &ImageId) -> String {
    format!("images.{project}.{image}.*")
}

/// Every event of one project (WebSocket replay).
pub fn project_filter(project: &ProjectId) -> String {
    format!("images.{project}.>")
}

/// Events of one kind across all projects (consumer filters).
pub fn kind_filter(kind: EventKind) -> String {
    format!("images.*.*.{}", kind.as_str())
}

/// The raw tokens `(project, image, kind)` of `images.<p>.<i>.<kind>`, unchecked; `None` for
/// a subject of another shape.
pub fn subject_tokens(subject: &str) -> Option<(&str, &str, &str)> {
    let mut parts = subject.split('.');
    let (Some("images"), Some(p), Some(i), Some(k), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    Some((p, i, k))
}

/// Splits a subject back into its parts; `None` for anything that isn't ours.
pub fn parse_subject(subject: &str) -> Option<(ProjectId, ImageId, EventKind)> {
    let (p, i, k) = subject_tokens(subject)?;
    Some((
        ProjectId::parse(p).ok()?,
        ImageId::parse(i).ok()?,
        EventKind::parse(k)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        let p = ProjectId::parse("42").unwrap();
        let i = ImageId::new_v7();
        let s = event_subject(&p, &i, EventKind::VersionRendered);
        assert_eq!(s, format!("images.42.{i}.version_rendered"));
        assert_eq!(
            parse_subject(&s),
            Some((p.clone(), i, EventKind::VersionRendered))
        );
        assert_eq!(image_filter(&p, &i), format!("images.42.{i}.*"));
        assert_eq!(project_filter(&p), "images.42.>");
        assert_eq!(parse_subject("images.42.x"), None);
        assert_eq!(parse_subject(&format!("images.*.{i}.uploaded")), None);
    }
}
