//! Real processes of the built `gallery` binary for the fault suite: `gallery api` and
//! `gallery processor` replicas started with flags and environment as an operator would, killed
//! with -9 or stopped with SIGTERM, on loopback ports, logging to files in a temporary dir.
//! Also the client and burst driver the scenarios use; their tally is in [`crate::tally`].

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::Value;

/// The `gallery` binary: `GALLERY_BIN`, else the one cargo built next to this test binary
/// (`target/<profile>/gallery`; `cargo nextest run --workspace` builds it).
pub fn gallery_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("GALLERY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary location")?;
    let bin = profile_dir.join("gallery");
    anyhow::ensure!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --bin gallery` or set GALLERY_BIN",
        bin.display()
    );
    Ok(bin)
}

/// Runs an operator's command (`gallery sweep`, `gallery reprocess`, ...) against the NATS at
/// `nats_url`, off the async runtime's threads; its exit status and stdout, with stderr
/// appended to the error when it fails.
pub async fn gallery_admin(nats_url: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = std::process::Command::new(gallery_bin()?);
    cmd.args(args).env("GALLERY_NATS_URL", nats_url);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "gallery {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One `gallery` process.
pub struct Proc {
    pub name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(
        name: &str,
        args: &[&str],
        env: &[(&str, String)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let mut p = Self {
            name: name.to_owned(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            log: log_dir.join(format!("{name}.log")),
            child: None,
        };
        p.start()?;
        Ok(p)
    }

    /// (Re)starts the process with the same arguments, appending to its log.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(gallery_bin()?);
        cmd.args(&self.args)
            .env_remove("GALLERY_NATS_URL")
            .env("RUST_LOG", "info,async_nats=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("starting {}", self.name))?,
        );
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`: a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `limit` for the exit (SIGKILL after it).
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text[text.floor_char_boundary(start)..].to_owned()
    }

    /// The log's lines that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// How many times the log says `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches(needle)
            .count()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until `GET url` answers 200.
pub async fn wait_ready(http: &reqwest::Client, url: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(resp) = http.get(url).send().await
            && resp.status() == 200
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} not ready within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The api's base URL and HTTP client, as a client of the service sees it.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

/// One upload of a burst.
#[derive(Debug, Clone)]
pub struct Sent {
    pub image_id: String,
    pub uploaded_at: Instant,
}

impl Client {
    pub fn new(base: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        Self { http, base }
    }

    /// Requests a link and uploads `bytes`, retrying 503s (honouring `Retry-After`) and
    /// connection errors for up to `patience`. Returns the image id and how many retries it took.
    pub async fn send(
        &self,
        project: &str,
        bytes: Vec<u8>,
        patience: Duration,
    ) -> anyhow::Result<(Sent, u32)> {
        let deadline = Instant::now() + patience;
        let mut retries = 0;
        // As a careful client does: one key per photo, so a retry can't create a second image.
        let key = format!("burst-{}-{}", std::process::id(), rand_suffix());
        let link = loop {
            let resp = self
                .http
                .post(format!("{}/images/", self.base))
                .header("Idempotency-Key", &key)
                .json(&serde_json::json!({"filename": "burst.jpg", "project_id": project}))
                .send()
                .await;
            match resp {
                Ok(r) if r.status() == 201 => break r.json::<Value>().await?,
                Ok(r) if r.status() == 503 && Instant::now() < deadline => {
                    let wait = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .context("a 503 without Retry-After")?;
                    retries += 1;
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                Err(_) if Instant::now() < deadline => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Ok(r) => bail!("POST /images/ gave {}: {}", r.status(), r.text().await?),
                Err(e) => return Err(e.into()),
            }
        };
        let image_id = link["image_id"].as_str().context("image_id")?.to_owned();
        loop {
            let (status, body) =
                crate::upload_with_params(&self.http, &link, link["params"].clone(), bytes.clone())
                    .await
                    .unwrap_or((0, Value::Null));
            if (200..300).contains(&status) {
                break;
            }
            // A retry whose earlier attempt landed (its answer was lost): the upload is in.
            if retries > 0
                && status == 409
                && body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("uploaded already"))
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("upload of {image_id} gave {status}: {body}");
            }
            retries += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok((
            Sent {
                image_id,
                uploaded_at: Instant::now(),
            },
            retries,
        ))
    }

    /// Every record of a project (all pages), or an error if the api doesn't answer.
    pub async fn listing(&self, project: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/projects/{project}/images?limit=500", self.base);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let body: Value = self
                .http
                .get(&url)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            out.extend(body["images"].as_array().cloned().unwrap_or_default());
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(out),
            }
        }
    }
}

/// A unique-enough suffix for idempotency keys (process-local counter and time).
fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{t}-{n}")
}

/// Sends `count` photos to `project`, 4 at a time, and returns what was sent (acknowledged by
/// the service) and the retries it took.
pub async fn burst(
    client: &Client,
    project: &str,
    photo: &[u8],
    count: usize,
    patience: Duration,
) -> anyhow::Result<(Vec<Sent>, u32)> {
    let results = futures::stream::iter(0..count)
        .map(|_| client.send(project, photo.to_vec(), patience))
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    let mut sent = Vec::new();
    let mut retries = 0;
    for r in results {
        let (s, n) = r?;
        sent.push(s);
        retries += n;
    }
    Ok((sent, retries))
}
