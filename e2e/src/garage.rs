//! A real S3-compatible server for the S3-mode tests: Garage (a self-hosted, distributed S3
//! store), started on free loopback ports with a temporary directory, set up as a single node
//! with one key and one bucket, and stopped on drop. It enforces POST policies including
//! `content-length-range`.
//!
//! `GALLERY_GARAGE` names the binary (else `garage` on PATH or in ~/.cargo/bin;
//! `scripts/ensure-garage.sh` builds it). To run the S3 tests against another server instead
//! (MinIO elsewhere), set `GALLERY_TEST_S3_ENDPOINT`, `GALLERY_TEST_S3_BUCKET`,
//! `GALLERY_TEST_S3_REGION`, `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gallery::app::S3Config;

use crate::procs::free_port;

pub struct S3Server {
    pub config: S3Config,
    child: Option<Child>,
    /// The binary and config of a Garage we started, to start it again (outage tests).
    relaunch: Option<(PathBuf, PathBuf)>,
    _dir: Option<tempfile::TempDir>,
}

pub fn find_garage() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("GALLERY_GARAGE") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("garage"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME")
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo").into()))
    {
        candidates.push(Path::new(&home).join("bin/garage"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("garage not found: run scripts/ensure-garage.sh or set GALLERY_GARAGE")
}

impl S3Server {
    /// An external S3 endpoint from the environment, or a fresh Garage.
    pub async fn start() -> anyhow::Result<Self> {
        if let Ok(endpoint) = std::env::var("GALLERY_TEST_S3_ENDPOINT") {
            let env = |k: &str| {
                std::env::var(k)
                    .with_context(|| format!("{k} is needed with GALLERY_TEST_S3_ENDPOINT"))
            };
            return Ok(Self {
                config: S3Config {
                    bucket: env("GALLERY_TEST_S3_BUCKET")?,
                    endpoint: Some(endpoint.clone()),
                    public_endpoint: Some(endpoint.clone()),
                    region: std::env::var("GALLERY_TEST_S3_REGION")
                        .unwrap_or_else(|_| "us-east-1".into()),
                    access_key_id: env("AWS_ACCESS_KEY_ID")?,
                    secret_access_key: env("AWS_SECRET_ACCESS_KEY")?,
                    allow_http: endpoint.starts_with("http://"),
                    timeout: Duration::from_secs(30),
                    retry_timeout: Duration::from_secs(60),
                },
                child: None,
                relaunch: None,
                _dir: None,
            });
        }
        tokio::task::spawn_blocking(Self::start_garage).await?
    }

    fn start_garage() -> anyhow::Result<Self> {
        let binary = find_garage()?;
        let dir = tempfile::Builder::new()
            .prefix("gallery-garage-")
            .tempdir()?;
        let (rpc, s3) = (free_port()?, free_port()?);
        let conf = dir.path().join("garage.toml");
        let secret: String = (0..32).map(|_| format!("{:02x}", rand_byte())).collect();
        std::fs::write(
            &conf,
            format!(
                "metadata_dir = {meta:?}\ndata_dir = {data:?}\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n",
                meta = dir.path().join("meta"),
                data = dir.path().join("data"),
            ),
        )?;
        let child = spawn_garage(&binary, &conf)?;
        let mut server = Self {
            config: garage_config(s3),
            child: Some(child),
            relaunch: Some((binary.clone(), conf.clone())),
            _dir: None,
        };
        let cli = |args: &[&str]| -> anyhow::Result<String> {
            let out = Command::new(&binary)
                .arg("-c")
                .arg(&conf)
                .args(args)
                .output()?;
            if !out.status.success() {
                bail!("garage {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let started = Instant::now();
        while cli(&["status"]).is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                let log =
                    std::fs::read_to_string(dir.path().join("garage.log")).unwrap_or_default();
                bail!("garage did not start: {log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let node = cli(&["node", "id", "-q"])?;
        let node = node.trim().get(..16).context("node id")?.to_owned();
        cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        cli(&["layout", "apply", "--version", "1"])?;
        let (id, secret) = key_and_bucket(cli, "gallery-test", "gallery")?;
        server.config.access_key_id = id;
        server.config.secret_access_key = secret;
        server._dir = Some(dir);
        Ok(server)
    }
}

/// The config of the bucket `gallery` on a Garage we start, its S3 API on loopback `port`; the
/// key is filled in once [`key_and_bucket`] made it.
pub(crate) fn garage_config(port: u16) -> S3Config {
    S3Config {
        bucket: "gallery".into(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        public_endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: "garage".into(),
        access_key_id: String::new(),
        secret_access_key: String::new(),
        allow_http: true,
        timeout: Duration::from_secs(30),
        retry_timeout: Duration::from_secs(60),
    }
}

/// Creates a key named `key` and a bucket it owns through a node's CLI; the key's id and secret.
pub(crate) fn key_and_bucket(
    cli: impl Fn(&[&str]) -> anyhow::Result<String>,
    key: &str,
    bucket: &str,
) -> anyhow::Result<(String, String)> {
    let created = cli(&["key", "create", key])?;
    let field = |name: &str| {
        created
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
            .with_context(|| format!("no {name:?} in: {created}"))
    };
    let pair = (field("Key ID:")?, field("Secret key:")?);
    cli(&["bucket", "create", bucket])?;
    cli(&[
        "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", key,
    ])?;
    Ok(pair)
}

pub(crate) fn spawn_garage(binary: &Path, conf: &Path) -> anyhow::Result<Child> {
    let log_path = conf.with_file_name("garage.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)?;
    Ok(Command::new(binary)
        .arg("-c")
        .arg(conf)
        .arg("server")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

impl S3Server {
    /// Kills the server (an outage with refused connections).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed server again on the same ports and data, and waits until it serves S3.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let (binary, conf) = self.relaunch.clone().context("not a Garage we started")?;
        self.child = Some(spawn_garage(&binary, &conf)?);
        let endpoint = self.config.endpoint.clone().context("endpoint")?;
        let http = reqwest::Client::new();
        let started = Instant::now();
        // Any HTTP answer (403 without credentials) means the S3 api is back.
        while http.get(&endpoint).send().await.is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("garage did not come back");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: connections hang instead of failing.
    pub fn freeze(&self, frozen: bool) -> anyhow::Result<()> {
        let pid = self.child.as_ref().context("not running")?.id().to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").args([signal, &pid]).status()?;
        anyhow::ensure!(status.success(), "kill {signal} {pid}");
        Ok(())
    }
}

fn rand_byte() -> u8 {
    // Test-only secret: uniqueness per run is all it needs.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish() as u8
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl S3Server {
    /// Lets web pages of `origin` upload to the bucket with the POST form and read the answer
    /// (PutBucketCors, as docs/OPERATING.md "S3 mode" tells operators to do).
    pub async fn allow_browser_origin(&self, origin: &str) -> anyhow::Result<()> {
        let c = &self.config;
        let endpoint = c.endpoint.clone().context("an endpoint")?;
        let creds = gallery_api::sigv4::Credentials {
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.clone(),
            region: c.region.clone(),
        };
        let url = gallery_api::sigv4::presign(
            "PUT",
            &endpoint,
            &format!("/{}", c.bucket),
            &[("cors", "")],
            &creds,
            chrono::Utc::now(),
            300,
        );
        let body = format!(
            "<CORSConfiguration><CORSRule><AllowedOrigin>{origin}</AllowedOrigin>\
             <AllowedMethod>POST</AllowedMethod><AllowedMethod>GET</AllowedMethod>\
             <AllowedMethod>HEAD</AllowedMethod><AllowedHeader>*</AllowedHeader>\
             <ExposeHeader>ETag</ExposeHeader></CORSRule></CORSConfiguration>"
        );
        let resp = reqwest::Client::new().put(url).body(body).send().await?;
        let status = resp.status();
        anyhow::ensure!(
            status.is_success(),
            "PutBucketCors: {status}: {}",
            resp.text().await.unwrap_or_default()
        );
        Ok(())
    }
}
