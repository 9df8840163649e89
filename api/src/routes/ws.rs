//! `GET /projects/{id}/ws[?since=<seq>]`: one JSON message per event of the project.
//!
//! Events come from the projector after they are committed to the read model (never from a
//! core-NATS subscription, which also sees rejected and duplicate publishes), and only those
//! the fold took in; a replay leaves out the same ones (the records note what was refused). With `since`, the
//! socket first replays the project's events after `since` from JetStream, then goes live; it
//! subscribes to live events *before* reading the replay and drops anything at or below the
//! last sequence sent, so there is no gap and no duplicate. A socket subscribes to its own
//! project's events only (the projector's per-project fan-out). A client that falls behind its
//! project's fan-out buffer is closed with 1013; one whose send doesn't complete within
//! [`SEND_TIMEOUT`] (it stopped reading) is dropped; one that answers no ping for three ping
//! intervals is closed as dead. Each may resume with `since`. Incoming messages are limited to
//! [`MAX_INCOMING`] bytes: clients have nothing to say beyond pongs and a close. This file checks
//! and upgrades the request; the socket's life after that is `socket.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use futures::StreamExt;
use gallery_nats::{StoredEvent, read};
use gallery_schema::{ErrorCode, ProjectId, subjects};
use serde::Deserialize;
use tokio::sync::broadcast;
use tracing::Instrument;

use super::links;
use crate::access::Access;
use crate::auth::Right;
use crate::error::{ApiError, ApiResult};
use crate::headers::{WS_PROTOCOL, origin_allowed};
use crate::state::AppState;
use crate::view::{ErrorBody, WsMessage, ws_message};

mod socket;
pub use socket::{
    CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_TRY_AGAIN_LATER, Keepalive, Replay,
    SEND_TIMEOUT, pump,
};

/// The largest message or frame a client may send.
pub const MAX_INCOMING: usize = 4 * 1024;

/// `?since`, read as text so that a bad value gets `invalid_request` ([`parse_since`]).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsQuery {
    /// Replay the project's events after this stream sequence first (a listing's `seq`, or the
    /// last message's `seq` when reconnecting), then go live
    #[param(value_type = Option<u64>, minimum = 0)]
    since: Option<String>,
}

/// Follow a project's events live.
///
/// A WebSocket (`GET` with `Upgrade: websocket`). After the upgrade the server sends one text
/// frame per event of the project's images, each a `WsMessage`: every state change and every
/// rendered version, in stream order. Offer the subprotocol `gallery.v1`, and with tokens also
/// `gallery.bearer.<token>` (or send `Authorization`). The socket closes with 1013 when the
/// client falls behind and 1008 when its token expires: reconnect with `?since=<last seq>`.
#[utoipa::path(
    get,
    path = "/projects/{id}/ws",
    tag = "projects",
    operation_id = "subscribe",
    params(crate::openapi::ProjectPath, WsQuery),
    responses(
        (status = 101, description = "Switching to WebSocket; then one text frame per event, each this JSON", body = WsMessage),
        (status = 400, description = "Not a WebSocket request, or a bad project id or `since`", body = ErrorBody),
        (status = 403, description = "The token doesn't grant `subscribe`, or the page's origin is not allowed", body = ErrorBody),
        (status = 429, description = "Too many connects (`rate_limited`)", body = ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn subscribe(
    State(state): State<AppState>,
    access: Access,
    slot: Option<axum::Extension<crate::serve::ConnectionSlot>>,
    headers: axum::http::HeaderMap,
    Path(project): Path<String>,
    Query(q): Query<WsQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    refuse_foreign_origin(&state, &headers)?;
    access.signed_in()?;
    let project = ProjectId::parse(&project)?;
    access.require(&project, Right::Subscribe)?;
    let token_until = token_end(&access);
    let upgrade = websocket_only(upgrade)?;
    let since = parse_since(q.since.as_deref())?;
    // Subscribe first, then read the replay: whatever is committed in between is in one or both.
    let live = state.projector.subscribe(&project);
    let replay = match since {
        Some(since) => Some(replay_after(&state, &project, since).await?),
        None => None,
    };
    Ok(upgrade.on_upgrade(move |socket| async move {
        // Holds the connection's slot (the server's caps) for as long as the socket lives:
        // the HTTP connection itself ended with the upgrade.
        let _slot = slot;
        serve(
            state,
            socket,
            project,
            since.unwrap_or(0),
            replay,
            live,
            token_until,
        )
        .await
    }))
}

/// Another site's page, running in a visitor's browser, may not read this deployment: 403
/// unless the `Origin` is allowed.
fn refuse_foreign_origin(state: &AppState, headers: &axum::http::HeaderMap) -> ApiResult<()> {
    let origin = headers
        .get(axum::http::header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    if !origin_allowed(origin, &state.config.allowed_origins) {
        tracing::info!(
            origin = origin.unwrap_or_default(),
            "websocket from an origin not allowed"
        );
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this origin may not open WebSockets here (GALLERY_ALLOWED_ORIGINS)",
        ));
    }
    Ok(())
}

/// When the socket must end: when its token does (never without tokens).
fn token_end(access: &Access) -> Option<tokio::time::Instant> {
    access.grant().map(|g| {
        let left = (g.valid_until() - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        tokio::time::Instant::now() + left
    })
}

/// The upgrade (400 for a plain HTTP request), with the incoming size caps and our subprotocol.
fn websocket_only(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<WebSocketUpgrade> {
    Ok(upgrade
        .map_err(|e| ApiError::invalid(format!("this endpoint speaks WebSocket only: {e}")))?
        .max_message_size(MAX_INCOMING)
        .max_frame_size(MAX_INCOMING)
        // A browser offers the token as a subprotocol next to this one; the server answers with
        // this one, never echoing the token.
        .protocols([WS_PROTOCOL]))
}

/// The project's events after `since`, from JetStream up to now.
async fn replay_after(state: &AppState, project: &ProjectId, since: u64) -> ApiResult<Replay> {
    let filter = subjects::project_filter(project);
    let from = since
        .checked_add(1)
        .ok_or_else(|| ApiError::invalid("since is out of range"))?;
    let events = read::until_now(&state.js, filter, from)
        .await
        .map_err(|e| ApiError::unavailable("replaying the project", e))?;
    // The live feed carries only what the read model took in; the replay leaves out
    // the same events (those the fold refused, noted in their records).
    // One wait for the whole replay: once the model hasn't caught up within it (a
    // lagging or halted projector), the rest is sent without waiting.
    let projector = state.projector.clone();
    let deadline = tokio::time::Instant::now() + REPLAY_CATCH_UP;
    let events = events.filter_map(move |item| {
        let projector = projector.clone();
        async move {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match item {
                Ok(e) if !projector.accepted(&e, left).await => None,
                other => Some(other),
            }
        }
    });
    Ok(events.boxed())
}

/// `?since=`: absent or empty for live only, else a stream sequence (pure, fuzzed).
pub fn parse_since(raw: Option<&str>) -> ApiResult<Option<u64>> {
    match raw {
        None | Some("") => Ok(None),
        Some(raw) => raw
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::invalid("since must be a stream sequence (a whole number)")),
    }
}

async fn serve(
    state: AppState,
    socket: WebSocket,
    project: ProjectId,
    since: u64,
    replay: Option<Replay>,
    live: broadcast::Receiver<Arc<StoredEvent>>,
    token_until: Option<tokio::time::Instant>,
) {
    static SOCKETS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let socket_id = SOCKETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let span = tracing::info_span!("websocket", socket_id, %project, since);
    /// Counts the socket in `gallery_websocket_connections` while it lives.
    struct Open;
    impl Drop for Open {
        fn drop(&mut self) {
            metrics::gauge!("gallery_websocket_connections").decrement(1.0);
        }
    }
    metrics::gauge!("gallery_websocket_connections").increment(1.0);
    let _open = Open;
    let (tx, rx) = socket.split();
    let mut keepalive = Keepalive::every(state.config.ws_ping_every);
    keepalive.token_until = token_until;
    let render = move |e: &StoredEvent| {
        serde_json::to_string(&ws_message(e, &links(&state))).expect("plain JSON")
    };
    pump(tx, rx, &project, since, replay, live, keepalive, render)
        .instrument(span)
        .await;
}

/// How long a replay waits in all for the read model to reach its events (to know whether
/// the fold took them in); past that they are sent.
const REPLAY_CATCH_UP: Duration = Duration::from_secs(5);
