//! A socket's life after the upgrade, over any sink and stream of messages (unit-tested with
//! channels): the replay, then the project's live events, pings, and the close that tells the
//! client why and where to resume (`?since`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures::stream::BoxStream;
use futures::{Sink, SinkExt, Stream, StreamExt};
use gallery_nats::{ReadError, StoredEvent};
use gallery_schema::ProjectId;
use tokio::sync::broadcast;

/// A replay of the project's events (from JetStream), sent before the live ones.
pub type Replay = BoxStream<'static, Result<StoredEvent, ReadError>>;

/// Close codes (RFC 6455 and the IANA registry).
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_INTERNAL: u16 = 1011;
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// How long one send may wait for a client that stopped reading.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The socket's logic: the replay (events after `since`), then live events until the client
/// leaves, falls behind, stops answering pings or its token ends.
#[allow(clippy::too_many_arguments)]
pub async fn pump<Tx, Rx, E>(
    mut tx: Tx,
    rx: Rx,
    project: &ProjectId,
    since: u64,
    replay: Option<Replay>,
    live: broadcast::Receiver<Arc<StoredEvent>>,
    keepalive: Keepalive,
    render: impl Fn(&StoredEvent) -> String,
) where
    Tx: Sink<Message> + Unpin,
    Rx: Stream<Item = Result<Message, E>> + Unpin,
{
    let mut last_sent = since;
    if let Some(replay) = replay {
        match send_replay(&mut tx, replay, since, &keepalive, &render).await {
            Some(last) => last_sent = last,
            None => return,
        }
    }
    follow_live(tx, rx, project, last_sent, live, keepalive, render).await;
}

/// Sends the replay's events after `since`: the last sequence sent, or `None` when the socket
/// is done (gone, or closed because the replay failed).
async fn send_replay<Tx: Sink<Message> + Unpin>(
    tx: &mut Tx,
    mut replay: Replay,
    since: u64,
    keepalive: &Keepalive,
    render: &impl Fn(&StoredEvent) -> String,
) -> Option<u64> {
    let mut last_sent = since;
    while let Some(item) = replay.next().await {
        match item {
            Ok(e) if e.seq > last_sent => {
                if !send(tx, Message::Text(render(&e).into()), keepalive).await {
                    return None;
                }
                last_sent = e.seq;
            }
            Ok(_) | Err(ReadError::Decode { .. } | ReadError::UnknownKind { .. }) => {}
            Err(err) => {
                tracing::warn!(%err, "websocket replay failed");
                close(tx, CLOSE_INTERNAL, "replay failed; reconnect with ?since").await;
                return None;
            }
        }
    }
    Some(last_sent)
}

/// Live events after `last_sent`, pings, and the client's messages, until the socket ends.
async fn follow_live<Tx, Rx, E>(
    mut tx: Tx,
    mut rx: Rx,
    project: &ProjectId,
    mut last_sent: u64,
    mut live: broadcast::Receiver<Arc<StoredEvent>>,
    keepalive: Keepalive,
    render: impl Fn(&StoredEvent) -> String,
) where
    Tx: Sink<Message> + Unpin,
    Rx: Stream<Item = Result<Message, E>> + Unpin,
{
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
            event = live.recv() => {
                if !forward_live(&mut tx, project, event, &mut last_sent, &keepalive, &render).await {
                    return;
                }
            }
            _ = ping.tick() => {
                if !ping_or_close(&mut tx, project, last_heard, last_sent, &keepalive).await {
                    return;
                }
            }
        }
    }
}

/// Sends a live event the client hasn't had; `false` when the socket is done (gone, closed
/// for falling behind, or the server shutting down).
async fn forward_live<Tx: Sink<Message> + Unpin>(
    tx: &mut Tx,
    project: &ProjectId,
    event: Result<Arc<StoredEvent>, broadcast::error::RecvError>,
    last_sent: &mut u64,
    keepalive: &Keepalive,
    render: &impl Fn(&StoredEvent) -> String,
) -> bool {
    match event {
        Ok(e) => {
            // The channel is the project's own; the check keeps a mix-up harmless.
            if &e.event.project_id != project || e.seq <= *last_sent {
                return true;
            }
            if !send(tx, Message::Text(render(&e).into()), keepalive).await {
                return false;
            }
            *last_sent = e.seq;
            true
        }
        Err(broadcast::error::RecvError::Lagged(_)) => {
            metrics::counter!("gallery_websocket_dropped_total", "reason" => "behind").increment(1);
            let reason = format!("too slow; reconnect with ?since={last_sent}");
            close(tx, CLOSE_TRY_AGAIN_LATER, &reason).await;
            false
        }
        Err(broadcast::error::RecvError::Closed) => {
            close(tx, CLOSE_GOING_AWAY, "server shutting down").await;
            false
        }
    }
}

/// A ping, or the close of a peer that answered none for `dead_after`; `false` when the
/// socket is done.
async fn ping_or_close<Tx: Sink<Message> + Unpin>(
    tx: &mut Tx,
    project: &ProjectId,
    last_heard: tokio::time::Instant,
    last_sent: u64,
    keepalive: &Keepalive,
) -> bool {
    if last_heard.elapsed() >= keepalive.dead_after {
        let reason = format!("no pong; reconnect with ?since={last_sent}");
        tracing::info!(%project, "closing a websocket whose peer stopped answering");
        metrics::counter!("gallery_websocket_dropped_total", "reason" => "no_pong").increment(1);
        close(tx, CLOSE_GOING_AWAY, &reason).await;
        return false;
    }
    send(tx, Message::Ping(Default::default()), keepalive).await
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
