//! A JetStream cluster of real nats-servers on loopback, for the failover tests: each node is a
//! [`NatsServer`] child with its own store, client, route and monitoring ports.

use std::time::Duration;

use crate::server::{NatsServer, ServerError, find_nats_server, free_port};

/// A JetStream cluster of nats-servers on loopback, each with its own store (tests of
/// failover). Every node has a client port, a cluster (route) port and a monitoring port whose
/// `/jsz` tells the stream's leader.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
    pub monitor_ports: Vec<u16>,
    _temp: tempfile::TempDir,
}

impl NatsCluster {
    pub async fn start(size: usize) -> Result<Self, ServerError> {
        let binary = find_nats_server()?;
        let temp = tempfile::Builder::new()
            .prefix("gallery-nats-cluster-")
            .tempdir()?;
        let mut ports = Vec::new();
        for _ in 0..size {
            ports.push((free_port()?, free_port()?, free_port()?));
        }
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route, _)| format!("\"nats://127.0.0.1:{route}\""))
            .collect();
        let mut nodes = Vec::new();
        for (i, (client, route, http)) in ports.iter().enumerate() {
            let dir = temp.path().join(format!("n{}", i + 1));
            std::fs::create_dir_all(&dir)?;
            let store = dir.join("jetstream");
            let config = format!(
                "listen: \"127.0.0.1:{client}\"\n\
                 http: \"127.0.0.1:{http}\"\n\
                 server_name: \"n{n}\"\n\
                 jetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n}}\n\
                 cluster {{\n  name: gallery\n  listen: \"127.0.0.1:{route}\"\n  routes: [{routes}]\n}}\n",
                n = i + 1,
                routes = routes.join(", "),
            );
            let mut node = NatsServer::with_config(&dir, *client, config);
            node.launch(&binary)?;
            nodes.push(node);
        }
        for node in &mut nodes {
            node.wait_ready(Duration::from_secs(30)).await?;
        }
        wait_formed(&nodes, size).await;
        Ok(Self {
            nodes,
            monitor_ports: ports.iter().map(|p| p.2).collect(),
            _temp: temp,
        })
    }

    /// Every node's client URL, comma-separated (the form `GALLERY_NATS_URL` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Waits (up to 30 s) until every node advertises the whole cluster to a new client (its
/// `connect_urls` list every server once its routes are up), as `--stream-replicas auto` reads
/// it: a client connecting earlier sees a smaller cluster.
async fn wait_formed(nodes: &[NatsServer], size: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for node in nodes {
        while std::time::Instant::now() < deadline {
            let formed = match async_nats::connect(node.url()).await {
                Ok(client) => crate::topology::cluster_size(&client.server_info()) >= size,
                Err(_) => false,
            };
            if formed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
