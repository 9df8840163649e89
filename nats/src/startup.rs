//! A gallery process's first steps on NATS: connect to the servers it is given, or start the
//! embedded `nats-server` under the data dir when it is given none ([`connect_or_start`]); and,
//! for the roles that manage the topology (the api role, `gallery rebuild`, `gallery restore`),
//! declare it once JetStream answers ([`declare_topology`]: a server still starting, or a
//! cluster still forming or electing a leader, is waited for rather than refused).

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use tokio::time::Instant;

use crate::connect::{NatsAuth, connect_with, redact};
use crate::server::{NatsServer, ServerError};
use crate::topology::{self, ProcessorConsumerConfig, Replicas, TopologyError};

/// The step that failed, with its cause as the error's source.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("starting the local nats-server")]
    Start(#[source] ServerError),
    #[error("connecting to NATS at {url}")]
    Connect {
        /// The URL list, credentials removed.
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("declaring the JetStream stream and consumers")]
    Topology(#[source] TopologyError),
}

/// Connects to the servers of `url` (one URL or a comma-separated list) or, when there is none,
/// starts the embedded nats-server with its store in `data_dir/nats` (on loopback
/// `embedded_port`, or a free port) and connects to that.
/// Returns the URL connected to (the embedded server's carries its credential), the embedded
/// server (stopped when dropped: keep it until the end), and the client.
pub async fn connect_or_start(
    data_dir: &Path,
    url: Option<&str>,
    auth: &NatsAuth,
    embedded_port: Option<u16>,
) -> Result<(String, Option<NatsServer>, async_nats::Client), StartupError> {
    let (url, child) = match url {
        Some(url) => (url.to_owned(), None),
        None => {
            let server = NatsServer::start_in_on(&data_dir.join("nats"), embedded_port)
                .await
                .map_err(StartupError::Start)?;
            tracing::info!(address = %server.address(), "started local nats-server (loopback, with a generated credential)");
            (server.url(), Some(server))
        }
    };
    let client = connect_with(&url, auth, Duration::from_secs(10))
        .await
        .map_err(|source| StartupError::Connect {
            url: redact(&url),
            source,
        })?;
    Ok((url, child, client))
}

/// The stream and consumers, as the api role declares them ([`topology::ensure_topology`]),
/// with `replicas` resolved against the cluster. JetStream may still be starting (or electing
/// a leader in a cluster): retried for up to 30 s.
pub async fn declare_topology(
    client: &async_nats::Client,
    js: &jetstream::Context,
    replicas: Replicas,
    processor: &ProcessorConsumerConfig,
) -> Result<(), StartupError> {
    let cluster = settled_cluster_size(client, replicas).await;
    let replicas = replicas.resolve(cluster);
    tracing::info!(cluster, replicas, "stream replicas");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match topology::ensure_topology(js, replicas, processor).await {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() >= deadline => return Err(StartupError::Topology(err)),
            Err(err) => tracing::debug!(%err, "topology not declared yet; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The number of servers the cluster advertises. A cluster that is still forming advertises
/// fewer than it has: with `auto` replicas, its routes get up to 10 s to reach 3, so `auto`
/// settles on a replica count that a restart won't change.
async fn settled_cluster_size(client: &async_nats::Client, replicas: Replicas) -> usize {
    let mut cluster = topology::cluster_size(&client.server_info());
    let forming_until = Instant::now() + Duration::from_secs(10);
    while client.server_info().cluster.is_some()
        && cluster < 3
        && replicas == Replicas::Auto
        && Instant::now() < forming_until
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster = topology::cluster_size(&client.server_info());
    }
    cluster
}
