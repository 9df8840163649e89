//! LITE Gallery on NATS JetStream: the topology (declared once, idempotently), idempotent and
//! ordered appends of events, reads of an image's or a project's history, and a real
//! `nats-server` child process (used by `gallery up` and by every test harness).
//!
//! Subject, stream and header names come from `gallery_schema::subjects`; nothing here invents
//! its own.

pub mod append;
pub mod read;
pub mod server;
pub mod topology;

pub use append::{AppendError, Appended, EventLog, Guard};
pub use read::{ReadError, StoredEvent};
pub use server::{NatsServer, ServerError, find_nats_server};
pub use topology::{ProcessorConsumerConfig, TopologyError};

use std::time::Duration;

/// Connects to NATS with retries, for up to `wait`: a freshly started server (or one that is
/// restarting) is not refused as down.
pub async fn connect(
    url: &str,
    wait: Duration,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let attempt = async_nats::ConnectOptions::new()
            .name("lite-gallery")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .max_reconnects(None)
            .connect(url);
        // retry_on_initial_connect returns at once and connects in the background; we want to
        // know the server is up, so wait for the first flush.
        match attempt.await {
            Ok(client) => {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                if tokio::time::timeout(remaining.max(Duration::from_millis(100)), client.flush())
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    return Ok(client);
                }
                if tokio::time::Instant::now() >= deadline {
                    // Still unreachable: return the client anyway; it keeps reconnecting and
                    // /ready reports the state.
                    return Ok(client);
                }
            }
            Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
