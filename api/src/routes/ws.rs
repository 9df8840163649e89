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
//! [`MAX_INCOMING`] bytes: clients have nothing to say beyond pongs and a close.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use futures::stream::BoxStream;
use futures::{Sink, SinkExt, Stream, StreamExt};
use gallery_nats::{ReadError, StoredEvent, read};
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

/// Close codes (RFC 6455 and the IANA registry).
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_INTERNAL: u16 = 1011;
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// How long one send may wait for a client that stopped reading.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message or frame a client may send.
pub const MAX_INCOMING: usize = 4 * 1024;

/// Timing of a socket's keep-alive.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    pub ping_every: Duration,
    /// Closed when nothing (no pong, no message) came for this long.
    pub dead_after: Duration,
    pub send_timeout: Duration,
    /// When the token the socket was opened with stops being valid: the socket is closed then
    /// (1008), and the client reconnects with a fresh token and `?since`.
    pub token_until: Option<tokio::time::Instant>,
}

impl Keepalive {
    pub fn every(ping_every: Duration) -> Self {
        Self {
            ping_every,
            dead_after: ping_every * 3,
            send_timeout: SEND_TIMEOUT,
            token_until: None,
        }
    }
}

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
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    // Another site's page, running in a visitor's browser, may not read this deployment.
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
    access.signed_in()?;
    let project = ProjectId::parse(&project)?;
    access.require(&project, Right::Subscribe)?;
    // The socket ends when its token does.
    let token_until = access.grant().map(|g| {
        let left = (g.valid_until() - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        tokio::time::Instant::now() + left
    });
    let upgrade = upgrade
        .map_err(|e| ApiError::invalid(format!("this endpoint speaks WebSocket only: {e}")))?
        .max_message_size(MAX_INCOMING)
        .max_frame_size(MAX_INCOMING)
        // A browser offers the token as a subprotocol next to this one; the server answers with
        // this one, never echoing the token.
        .protocols([WS_PROTOCOL]);
    let since = parse_since(q.since.as_deref())?;
    // Subscribe first, then read the replay: whatever is committed in between is in one or both.
    let live = state.projector.subscribe(&project);
    let replay = match since {
        Some(since) => {
            let filter = subjects::project_filter(&project);
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
            Some(events.boxed())
        }
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
    replay: Option<BoxStream<'static, Result<StoredEvent, ReadError>>>,
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

/// The socket's logic, over any sink and stream of messages (unit-tested with channels).
#[allow(clippy::too_many_arguments)]
pub async fn pump<Tx, Rx, E>(
    mut tx: Tx,
    mut rx: Rx,
    project: &ProjectId,
    since: u64,
    replay: Option<BoxStream<'static, Result<StoredEvent, ReadError>>>,
    mut live: broadcast::Receiver<Arc<StoredEvent>>,
    keepalive: Keepalive,
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
                    if !send(&mut tx, Message::Text(render(&e).into()), &keepalive).await {
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
    let mut ping = tokio::time::interval(keepalive.ping_every);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let token_ends = async {
        match keepalive.token_until {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(token_ends);
    loop {
        tokio::select! {
            () = &mut token_ends => {
                let reason = format!("the token expired; reconnect with a fresh one and ?since={last_sent}");
                close(&mut tx, CLOSE_POLICY, &reason).await;
                return;
            }
            incoming = rx.next() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                // Pongs (and pings, answered by the protocol layer) show the peer is alive;
                // text is ignored.
                Some(Ok(m)) => {
                    tracing::debug!(kind = ?std::mem::discriminant(&m), "websocket message from a client");
                    last_heard = tokio::time::Instant::now();
                }
            },
            event = live.recv() => match event {
                Ok(e) => {
                    // The channel is the project's own; the check keeps a mix-up harmless.
                    if &e.event.project_id != project || e.seq <= last_sent {
                        continue;
                    }
                    if !send(&mut tx, Message::Text(render(&e).into()), &keepalive).await {
                        return;
                    }
                    last_sent = e.seq;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    metrics::counter!("gallery_websocket_dropped_total", "reason" => "behind").increment(1);
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
                if last_heard.elapsed() >= keepalive.dead_after {
                    let reason = format!("no pong; reconnect with ?since={last_sent}");
                    tracing::info!(%project, "closing a websocket whose peer stopped answering");
                    metrics::counter!("gallery_websocket_dropped_total", "reason" => "no_pong").increment(1);
                    close(&mut tx, CLOSE_GOING_AWAY, &reason).await;
                    return;
                }
                if !send(&mut tx, Message::Ping(Default::default()), &keepalive).await {
                    return;
                }
            }
        }
    }
}

/// Sends one message within the send timeout; `false` when the socket must be dropped (gone,
/// or a client that stopped reading).
async fn send<Tx: Sink<Message> + Unpin>(tx: &mut Tx, msg: Message, keepalive: &Keepalive) -> bool {
    match tokio::time::timeout(keepalive.send_timeout, tx.send(msg)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::info!("dropping a websocket whose client stopped reading");
            metrics::counter!("gallery_websocket_dropped_total", "reason" => "not_reading")
                .increment(1);
            false
        }
    }
}

/// Sends a close frame, waiting at most [`SEND_TIMEOUT`] for a peer that stopped reading.
async fn close<Tx: Sink<Message> + Unpin>(tx: &mut Tx, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_owned().into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::Close(Some(frame)))).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;

    /// A client whose socket never takes another byte.
    struct Stuck;
    impl Sink<Message> for Stuck {
        type Error = std::io::Error;
        fn poll_ready(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Pending
        }
        fn start_send(self: std::pin::Pin<&mut Self>, _: Message) -> Result<(), Self::Error> {
            Ok(())
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Pending
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stopped_reading_is_dropped_after_the_send_timeout() {
        let (events, live) = broadcast::channel(8);
        let project = ProjectId::parse("p").unwrap();
        let event = StoredEvent {
            seq: 7,
            event: gallery_schema::Event::new(
                project.clone(),
                gallery_schema::ImageId::new_v7(),
                gallery_schema::EventBody::ReprocessRequested { generation: 2 },
            ),
        };
        events.send(Arc::new(event)).unwrap();
        // Pings far apart: only the send timeout can end this socket.
        let keepalive = Keepalive::every(Duration::from_secs(3600));
        let rx = futures::stream::pending::<Result<Message, std::io::Error>>();
        let started = tokio::time::Instant::now();
        pump(Stuck, rx, &project, 0, None, live, keepalive, |_| {
            "x".into()
        })
        .await;
        let took = started.elapsed();
        assert!(took >= SEND_TIMEOUT && took < SEND_TIMEOUT * 2, "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_answers_no_ping_is_closed() {
        let (tx, mut out) = mpsc::unbounded::<Message>();
        // A client that sends nothing, ever.
        let rx = futures::stream::pending::<Result<Message, std::io::Error>>();
        let (_events, live) = broadcast::channel(8);
        let project = ProjectId::parse("p").unwrap();
        let keepalive = Keepalive::every(Duration::from_secs(1));
        let started = tokio::time::Instant::now();
        pump(tx, rx, &project, 0, None, live, keepalive, |_| {
            String::new()
        })
        .await;
        assert!(started.elapsed() <= Duration::from_secs(5));
        let mut last = None;
        while let Ok(m) = out.try_recv() {
            last = Some(m);
        }
        match last {
            Some(Message::Close(Some(frame))) => assert!(frame.reason.contains("no pong")),
            other => panic!("{other:?}"),
        }
    }
}
