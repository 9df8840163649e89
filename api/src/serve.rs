//! The HTTP server loop. `axum::serve` has no timers at all (a client that sends half a request
//! holds its connection forever: measured 90 s and counting), so connections are served here
//! with hyper directly:
//!
//! - a header-read timeout per request ([`ServeConfig::header_timeout`]), which also closes a
//!   keep-alive connection that starts no new request;
//! - an idle timeout on the socket ([`IdleTimeout`]): a connection whose reads and writes have
//!   all been waiting for [`ServeConfig::idle_timeout`] is cut. A body that is still flowing
//!   and a WebSocket that answers pings (every 20 s by default) are never idle;
//! - a cap on concurrent connections: past it, new connections wait in the listen backlog;
//! - optionally a cap per client address: past it, a connection gets a canned 429 and is
//!   closed (off behind a load balancer, where every connection comes from the balancer);
//! - each request carries the peer address (`ConnectInfo<SocketAddr>`) for per-address limits.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::Service;

#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    /// How long a client may take to send a request's headers (and to start the next request
    /// on a kept-alive connection).
    pub header_timeout: Duration,
    /// How long a connection may have no byte moving in either direction.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long open requests may finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Connections one client address may hold at once; `None`: no cap.
    pub max_per_address: Option<usize>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 16_000,
            shutdown_grace: Duration::from_secs(5),
            max_per_address: None,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` fires, then lets open requests finish for
/// the shutdown grace.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: ServeConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    // HTTP/1.1 only: without TLS there is no ALPN, browsers speak HTTP/1.1 here, and h2c
    // would let one connection hold many slow streams past the header timeout.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let per_address = Arc::new(PerAddress::default());
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Forget connections that ended (the set would otherwise keep their results).
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    // Out of file descriptors, most likely: back off rather than spin.
                    tracing::warn!(%err, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let address_slot = match cfg.max_per_address {
            Some(cap) => match per_address.enter(crate::rate_limits::address_key(peer.ip()), cap) {
                Some(slot) => Some(slot),
                None => {
                    tokio::spawn(refuse(stream));
                    continue;
                }
            },
            None => None,
        };
        // Held by the connection, and by a WebSocket that outlives it (see ConnectionSlot).
        let slot = ConnectionSlot(Arc::new((permit, address_slot)));
        let io = TokioIo::new(IdleTimeout::new(stream, cfg.idle_timeout));
        let router = router.clone();
        let request_slot = slot.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(request_slot.clone());
            let mut router = router.clone();
            async move { router.call(req).await }
        });
        let conn = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%peer, err = %err, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(cfg.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("cutting the connections still open after the shutdown grace");
        connections.abort_all();
    }
    Ok(())
}

/// A connection's place under the server's caps (the global one and its address's). Every
/// request carries it as an extension; a WebSocket handler keeps it for the socket's life,
/// because the HTTP connection ends when it is upgraded and would otherwise free the place.
#[derive(Clone)]
pub struct ConnectionSlot(
    #[allow(dead_code)] Arc<(tokio::sync::OwnedSemaphorePermit, Option<AddressSlot>)>,
);

/// Open connections per client address.
#[derive(Default)]
struct PerAddress(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

pub struct AddressSlot {
    table: Arc<PerAddress>,
    ip: std::net::IpAddr,
}

impl PerAddress {
    fn enter(self: &Arc<Self>, ip: std::net::IpAddr, cap: usize) -> Option<AddressSlot> {
        let mut table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = table.entry(ip).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut table = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = table.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                table.remove(&self.ip);
            }
        }
    }
}

/// Answers a connection over its address's cap with a 429 and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    const BODY: &str =
        r#"{"error":{"code":"rate_limited","message":"too many connections from this address"}}"#;
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A socket that fails with `TimedOut` once reads and writes have waited `timeout` without a
/// byte moving. Only a pending operation can time out: a connection nobody polls (a handler
/// still working) is not cut.
pub struct IdleTimeout<T> {
    inner: T,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    pub fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn progressed(&mut self) {
        self.sleep.as_mut().reset(Instant::now() + self.timeout);
    }

    fn idle<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle past the timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.idle(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.idle(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.idle(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.idle(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The peer address of a request served by [`serve`] (absent in in-process tests that call
/// the router directly).
pub fn peer(req_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    req_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out_and_a_talking_one_does_not() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = IdleTimeout::new(server, Duration::from_secs(10));
        let mut client = client;
        let talker = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(6)).await;
                client.write_all(b"x").await.unwrap();
            }
            // Then silence, with the socket still open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(client);
        });
        let started = Instant::now();
        let mut buf = [0u8; 1];
        for _ in 0..5 {
            server.read_exact(&mut buf).await.unwrap();
        }
        // 30 s of a peer that talks every 6 s: never idle for 10.
        assert!(started.elapsed() >= Duration::from_secs(30));
        let err = server.read_exact(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(45));
        talker.abort();
    }
}
