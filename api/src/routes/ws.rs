//! `GET /projects/{id}/ws[?since=<seq>]`: one JSON message per event of the project.
//!
//! Events come from the projector after they are committed to the read model (never from a
//! core-NATS subscription, which also sees rejected and duplicate publishes). With `since`, the
//! socket first replays the project's events after `since` from JetStream, then goes live; it
//! subscribes to live events *before* reading the replay and drops anything at or below the
//! last sequence sent, so there is no gap and no duplicate. A client that falls behind the
//! shared fan-out buffer is closed with 1013 and may resume with `since`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use futures::stream::BoxStream;
use futures::{Sink, SinkExt, Stream, StreamExt};
use gallery_nats::{ReadError, StoredEvent, read};
use gallery_schema::{ProjectId, subjects};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::links;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::view::ws_message;

/// Close codes (RFC 6455 and the IANA registry).
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_INTERNAL: u16 = 1011;
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

const PING_EVERY: Duration = Duration::from_secs(20);

#[derive(Deserialize)]
pub struct WsQuery {
    since: Option<String>,
}

pub async fn subscribe(
    State(state): State<AppState>,
    Path(project): Path<String>,
    Query(q): Query<WsQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let project = ProjectId::parse(&project)?;
    let upgrade = upgrade
        .map_err(|e| ApiError::invalid(format!("this endpoint speaks WebSocket only: {e}")))?;
    let since =
        match q.since.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(raw.parse::<u64>().map_err(|_| {
                ApiError::invalid("since must be a stream sequence (a whole number)")
            })?),
        };
    // Subscribe first, then read the replay: whatever is committed in between is in one or both.
    let live = state.projector.subscribe();
    let replay = match since {
        Some(since) => {
            let filter = subjects::project_filter(&project);
            let from = since
                .checked_add(1)
                .ok_or_else(|| ApiError::invalid("since is out of range"))?;
            let events = read::until_now(&state.js, filter, from)
                .await
                .map_err(|e| ApiError::unavailable("replaying the project", e))?;
            Some(events.boxed())
        }
        None => None,
    };
    Ok(upgrade
        .on_upgrade(move |socket| serve(state, socket, project, since.unwrap_or(0), replay, live)))
}

async fn serve(
    state: AppState,
    socket: WebSocket,
    project: ProjectId,
    since: u64,
    replay: Option<BoxStream<'static, Result<StoredEvent, ReadError>>>,
    live: broadcast::Receiver<Arc<StoredEvent>>,
) {
    let (tx, rx) = socket.split();
    let render = move |e: &StoredEvent| {
        serde_json::to_string(&ws_message(e, &links(&state))).expect("plain JSON")
    };
    pump(tx, rx, &project, since, replay, live, render).await;
}

/// The socket's logic, over any sink and stream of messages (unit-tested with channels).
pub async fn pump<Tx, Rx, E>(
    mut tx: Tx,
    mut rx: Rx,
    project: &ProjectId,
    since: u64,
    replay: Option<BoxStream<'static, Result<StoredEvent, ReadError>>>,
    mut live: broadcast::Receiver<Arc<StoredEvent>>,
    render: impl Fn(&StoredEvent) -> String,
) where
    Tx: Sink<Message> + Unpin,
    Rx: Stream<Item = Result<Message, E>> + Unpin,
{
    let mut last_sent = since;
    if let Some(mut replay) = replay {
        while let Some(item) = replay.next().await {
            match item {
                Ok(e) if e.seq > last_sent => {
                    if tx.send(Message::Text(render(&e).into())).await.is_err() {
                        return;
                    }
                    last_sent = e.seq;
                }
                Ok(_) | Err(ReadError::Decode { .. } | ReadError::UnknownKind { .. }) => {}
                Err(err) => {
                    tracing::warn!(%err, "websocket replay failed");
                    close(
                        &mut tx,
                        CLOSE_INTERNAL,
                        "replay failed; reconnect with ?since",
                    )
                    .await;
                    return;
                }
            }
        }
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            incoming = rx.next() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {} // pings are answered by the protocol layer; text is ignored
            },
            event = live.recv() => match event {
                Ok(e) => {
                    if &e.event.project_id != project || e.seq <= last_sent {
                        continue;
                    }
                    if tx.send(Message::Text(render(&e).into())).await.is_err() {
                        return;
                    }
                    last_sent = e.seq;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let reason = format!("too slow; reconnect with ?since={last_sent}");
                    close(&mut tx, CLOSE_TRY_AGAIN_LATER, &reason).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    close(&mut tx, CLOSE_GOING_AWAY, "server shutting down").await;
                    return;
                }
            },
            _ = ping.tick() => {
                if tx.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn close<Tx: Sink<Message> + Unpin>(tx: &mut Tx, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_owned().into(),
    };
    let _ = tx.send(Message::Close(Some(frame))).await;
}
