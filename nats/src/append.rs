//! Appending events: idempotent (`Nats-Msg-Id` from the event) and optionally guarded per image
//! (`Nats-Expected-Last-Subject-Sequence` over `images.<p>.<i>.*`), so two writers racing on
//! one image can't interleave: the loser gets [`AppendError::Conflict`] and re-reads.

tokio::task_local! {
    /// The id of the HTTP request being served (set by the api's request-id layer, or by the
    /// processor for the request that caused its job); appended events carry it in
    /// [`gallery_schema::subjects::HEADER_REQUEST_ID`].
    pub static REQUEST_ID: String;
}

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind};
use gallery_schema::subjects::{
    HEADER_EXPECTED_LAST_SUBJECT_SEQ, HEADER_EXPECTED_LAST_SUBJECT_SEQ_SUBJECT, HEADER_MSG_ID,
    image_filter,
};
use gallery_schema::{Event, ImageId, ProjectId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// No ordering condition (the first event of an image, whose id is fresh).
    None,
    /// The image's last event must be at this stream sequence (0: the image has no events).
    LastImageSeq(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// JetStream had this `Nats-Msg-Id` already; `seq` is the earlier append's.
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another event of the image was appended since the caller read it.
    #[error("image changed concurrently (ordering guard)")]
    Conflict,
    #[error("append failed: {0}")]
    Nats(#[from] jetstream::context::PublishError),
}

impl AppendError {
    /// Transient: worth retrying later (NATS down, timeout). A conflict is not transient: the
    /// caller must re-read the image first.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict)
    }
}

#[derive(Clone)]
pub struct EventLog {
    js: jetstream::Context,
}

impl EventLog {
    pub fn new(js: jetstream::Context) -> Self {
        Self { js }
    }

    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// Every event of one image, in order, as the log holds them now (a handful of events: the
    /// source of truth for the ordering guard's next sequence).
    pub async fn image_history(
        &self,
        project: &ProjectId,
        image: &ImageId,
    ) -> Result<Vec<crate::StoredEvent>, crate::ReadError> {
        let filter = image_filter(project, image);
        crate::read::read_until_now(&self.js, filter, 1, std::time::Duration::from_secs(10)).await
    }

    pub async fn append(&self, event: &Event, guard: Guard) -> Result<Appended, AppendError> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_MSG_ID, event.msg_id().as_str());
        if let Ok(id) = REQUEST_ID.try_with(Clone::clone)
            && !id.is_empty()
        {
            headers.insert(gallery_schema::subjects::HEADER_REQUEST_ID, id.as_str());
        }
        if let Guard::LastImageSeq(seq) = guard {
            headers.insert(HEADER_EXPECTED_LAST_SUBJECT_SEQ, seq.to_string().as_str());
            headers.insert(
                HEADER_EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
                image_filter(&event.project_id, &event.image_id).as_str(),
            );
        }
        let ack = self
            .js
            .publish_with_headers(event.subject(), headers, event.encode().into())
            .await?
            .await
            .map_err(|err| match err.kind() {
                PublishErrorKind::WrongLastSequence => AppendError::Conflict,
                _ => AppendError::Nats(err),
            })?;
        Ok(Appended {
            seq: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}
