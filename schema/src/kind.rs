//! The kind of an event, the last token of its subject: a leaf, so that the event types and
//! the subject scheme can both name it without depending on each other.

use crate::state::ImageState;

/// The kind of an event: the last token of its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    UploadRequested,
    Uploaded,
    ProcessingStarted,
    VersionRendered,
    Processed,
    Failed,
    ReprocessRequested,
    RenderCrashed,
    RedriveRequested,
    Deleted,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        Self::UploadRequested,
        Self::Uploaded,
        Self::ProcessingStarted,
        Self::VersionRendered,
        Self::Processed,
        Self::Failed,
        Self::ReprocessRequested,
        Self::RenderCrashed,
        Self::RedriveRequested,
        Self::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UploadRequested => "upload_requested",
            Self::Uploaded => "uploaded",
            Self::ProcessingStarted => "processing_started",
            Self::VersionRendered => "version_rendered",
            Self::Processed => "processed",
            Self::Failed => "failed",
            Self::ReprocessRequested => "reprocess_requested",
            Self::RenderCrashed => "render_crashed",
            Self::RedriveRequested => "redrive_requested",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// The state an image is in right after a (legal) event of this kind. WebSocket messages
    /// replayed from the log use it, so they carry the same `state` as live ones.
    pub fn state_after(self) -> ImageState {
        match self {
            Self::UploadRequested => ImageState::Init,
            Self::Uploaded | Self::ReprocessRequested => ImageState::Uploaded,
            Self::ProcessingStarted
            | Self::VersionRendered
            | Self::RenderCrashed
            | Self::RedriveRequested => ImageState::Processing,
            Self::Processed => ImageState::Done,
            Self::Failed => ImageState::Error,
            Self::Deleted => ImageState::Deleted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_name_that_round_trips() {
        let names: std::collections::HashSet<_> =
            EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), EventKind::ALL.len());
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
    }
}
