//! A Garage cluster of several nodes on loopback, for measurements of what a node loss does to
//! the service (`cargo bench -p gallery-e2e --bench garage_cluster`). Every node is its own
//! process with its own directory and ports, in its own zone (`dc1`, `dc2`, ...); objects are
//! kept on three nodes (`replication_factor = 3`, writes and metadata reads need two), and
//! every write is fsynced (`data_fsync`, `metadata_fsync`), as we would run it. The service talks to the
//! first node's S3 endpoint (in production a load balancer spreads clients over all of them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gallery::app::S3Config;

use crate::garage::{find_garage, garage_config, key_and_bucket, spawn_garage};
use crate::procs::free_port;

struct Node {
    conf: PathBuf,
    rpc: u16,
    child: Option<Child>,
}

pub struct GarageCluster {
    /// Points at the first node's S3 endpoint.
    pub config: S3Config,
    binary: PathBuf,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl GarageCluster {
    /// `n` nodes (at least 3), connected, with a layout of one zone per node, a key and a
    /// bucket.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(move || Self::start_blocking(n)).await?
    }

    fn start_blocking(n: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(n >= 3, "replication factor 3 needs 3 nodes");
        let binary = find_garage()?;
        let dir = tempfile::Builder::new()
            .prefix("gallery-garage-cluster-")
            .tempdir()?;
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + std::process::id() as usize) % 256))
            .collect();
        let mut nodes = Vec::new();
        let mut first_s3 = 0;
        for i in 0..n {
            let home = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&home)?;
            let (rpc, s3) = (free_port()?, free_port()?);
            if i == 0 {
                first_s3 = s3;
            }
            let conf = home.join("garage.toml");
            std::fs::write(
                &conf,
                format!(
                    "metadata_dir = {meta:?}\ndata_dir = {data:?}\ndb_engine = \"sqlite\"\n\
                     replication_factor = 3\ndata_fsync = true\nmetadata_fsync = true\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_secret = \"{secret}\"\n\n\
                     [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n",
                    meta = home.join("meta"),
                    data = home.join("data"),
                ),
            )?;
            let child = spawn_garage(&binary, &conf)?;
            nodes.push(Node {
                conf,
                rpc,
                child: Some(child),
            });
        }
        let mut cluster = Self {
            config: garage_config(first_s3),
            binary,
            nodes,
            _dir: dir,
        };
        let mut ids = Vec::new();
        for i in 0..n {
            let started = Instant::now();
            while cluster.cli(i, &["status"]).is_err() {
                if started.elapsed() > Duration::from_secs(20) {
                    bail!("garage node {i} did not start");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let id = cluster.cli(i, &["node", "id", "-q"])?;
            ids.push(id.trim().to_owned());
        }
        // The first node connects to every other one; the others learn of each other from it.
        for id in &ids[1..] {
            cluster.cli(0, &["node", "connect", id])?;
        }
        for (i, id) in ids.iter().enumerate() {
            let short = id.get(..16).context("node id")?;
            let zone = format!("dc{}", i + 1);
            cluster.cli(0, &["layout", "assign", "-z", &zone, "-c", "1G", short])?;
        }
        cluster.cli(0, &["layout", "apply", "--version", "1"])?;
        let (id, secret) = key_and_bucket(|args| cluster.cli(0, args), "gallery-bench", "gallery")?;
        cluster.config.access_key_id = id;
        cluster.config.secret_access_key = secret;
        Ok(cluster)
    }

    fn cli(&self, node: usize, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.nodes[node].conf)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "garage (node {node}) {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kill -9` of one node: no goodbye to the others, whatever it had in flight is lost.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed node again on its ports and data; waits until it answers its CLI.
    pub async fn start_again(&mut self, node: usize) -> anyhow::Result<()> {
        let child = spawn_garage(&self.binary, &self.nodes[node].conf)?;
        self.nodes[node].child = Some(child);
        let started = Instant::now();
        while self.cli(node, &["status"]).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("garage node {node} did not come back");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Runs a `garage` admin command through the first node (`worker set -a ...`, `repair`).
    pub fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        self.cli(0, args)
    }

    /// The cluster's own view (`garage status` from the first node).
    pub fn status(&self) -> String {
        self.cli(0, &["status"]).unwrap_or_else(|e| e.to_string())
    }

    /// Bytes of object data on each node's disk.
    pub fn data_bytes(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| dir_bytes(&n.conf.with_file_name("data")))
            .collect()
    }

    pub fn rpc_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.rpc).collect()
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
