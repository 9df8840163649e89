//! Operators' requests to the reconcilers (core NATS request/reply, one api replica per request
//! through a queue group): `gallery redrive` (here: settled errors with a retryable code get a
//! new generation), `gallery reprocess` (`reprocess.rs`) and `gallery sweep` (`sweeps.rs`).

use async_nats::Subscriber;
use gallery_nats::EventLog;
use gallery_projector::Store;
use gallery_schema::subjects::{ADMIN_REDRIVE, ADMIN_REPROCESS, ADMIN_SWEEP};
use gallery_schema::{ErrorCode, ProjectId};
use serde::{Deserialize, Serialize};

use super::ReconcileError;

/// The queue group every api replica's reconciler joins.
const QUEUE_GROUP: &str = "gallery-api";

/// The subscriptions to the three request subjects.
pub(super) struct Requests {
    pub(super) redrive: Subscriber,
    pub(super) sweep: Subscriber,
    pub(super) reprocess: Subscriber,
}

impl Requests {
    pub(super) async fn subscribe(
        client: &async_nats::Client,
    ) -> Result<Self, async_nats::SubscribeError> {
        let join = |subject: &'static str| client.queue_subscribe(subject, QUEUE_GROUP.into());
        Ok(Self {
            redrive: join(ADMIN_REDRIVE).await?,
            sweep: join(ADMIN_SWEEP).await?,
            reprocess: join(ADMIN_REPROCESS).await?,
        })
    }
}

/// Sends `reply` (JSON) to the requester, if it asked for one.
pub(super) async fn respond(
    client: &async_nats::Client,
    to: Option<async_nats::Subject>,
    reply: &impl Serialize,
) {
    if let Some(to) = to {
        let body = serde_json::to_vec(reply).expect("plain JSON");
        let _ = client.publish(to, body.into()).await;
    }
}

/// An operator's `gallery redrive` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RedriveRequest {
    pub project: Option<String>,
    /// Errors with this code (default `retries_exhausted`).
    pub code: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RedriveReply {
    pub found: usize,
    pub redriven: usize,
    pub image_ids: Vec<String>,
    pub error: Option<String>,
}

/// The reply to a `gallery redrive` request's payload. A request that doesn't parse is
/// refused, never read as "everything".
pub(super) async fn answer_redrive(log: &EventLog, store: &Store, payload: &[u8]) -> RedriveReply {
    match serde_json::from_slice::<RedriveRequest>(payload) {
        Err(e) => RedriveReply {
            error: Some(format!("not a re-drive request: {e}")),
            ..Default::default()
        },
        Ok(req) => match redrive_errors(log, store, &req).await {
            Ok(r) => r,
            Err(e) => RedriveReply {
                error: Some(format!("{e:#}")),
                ..Default::default()
            },
        },
    }
}

/// Appends `reprocess_requested` (a new generation) for every settled error matching `req`.
pub async fn redrive_errors(
    log: &EventLog,
    store: &Store,
    req: &RedriveRequest,
) -> Result<RedriveReply, ReconcileError> {
    let code = match req.code.as_deref() {
        None => ErrorCode::RetriesExhausted,
        Some(raw) => ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == raw)
            .ok_or_else(|| ReconcileError::BadRequest(format!("unknown error code {raw:?}")))?,
    };
    let project = req
        .project
        .as_deref()
        .map(ProjectId::parse)
        .transpose()
        .map_err(|e| ReconcileError::BadRequest(e.to_string()))?;
    let mut reply = RedriveReply::default();
    for rec in store.errors(project.as_ref(), code)? {
        reply.found += 1;
        if crate::reprocess::request(log, &rec).await? {
            reply.redriven += 1;
            reply.image_ids.push(rec.image_id.to_string());
        }
    }
    tracing::warn!(
        code = code.as_str(),
        project = ?req.project,
        found = reply.found,
        redriven = reply.redriven,
        "operator re-drive"
    );
    Ok(reply)
}
