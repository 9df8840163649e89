//! The end-to-end harness: a real `nats-server` on a free loopback port with a temporary store,
//! the whole gallery stack in-process on a free port, a real HTTP client and a real WebSocket
//! client. Everything is cleaned up on drop.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use gallery::app::{AppConfig, Running};
use gallery_nats::NatsServer;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

pub mod browser;
pub mod garage;
pub mod garage_cluster;
pub mod procs;
pub mod sample_flow;
pub mod secure;
pub mod tally;

pub const WAIT: Duration = Duration::from_secs(60);

pub struct TestStack {
    pub http: reqwest::Client,
    pub running: Option<Running>,
    pub nats: NatsServer,
    pub data: tempfile::TempDir,
    pub config: AppConfig,
    /// The S3 server in S3 mode (dropped after the stack).
    pub s3: Option<garage::S3Server>,
    /// Sent as `Authorization: Bearer` by the helpers below when set (stacks with auth on).
    pub token: Option<String>,
}

impl TestStack {
    /// A fresh stack in local mode against its own nats-server.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Like [`start`](Self::start), with the config adjusted first (shorter link lifetimes...).
    pub async fn start_with(adjust: impl FnOnce(&mut AppConfig)) -> anyhow::Result<Self> {
        let nats = NatsServer::start_temp().await?;
        let data = tempfile::Builder::new().prefix("gallery-e2e-").tempdir()?;
        let mut config = AppConfig::local(data.path());
        config.nats_url = Some(nats.url().into());
        adjust(&mut config);
        let running = gallery::app::start(config.clone()).await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            running: Some(running),
            nats,
            data,
            config,
            s3: None,
            token: None,
        })
    }

    /// A stack in S3 mode against a real S3-compatible server (Garage, unless the environment
    /// names another endpoint).
    pub async fn start_s3() -> anyhow::Result<Self> {
        Self::start_s3_with(|_| {}).await
    }

    pub async fn start_s3_with(adjust: impl FnOnce(&mut AppConfig)) -> anyhow::Result<Self> {
        let s3 = garage::S3Server::start().await?;
        let s3_config = s3.config.clone();
        let mut stack = Self::start_with(move |c| {
            c.s3 = Some(s3_config);
            adjust(c);
        })
        .await?;
        stack.s3 = Some(s3);
        Ok(stack)
    }

    pub fn base(&self) -> String {
        self.running.as_ref().expect("running").base_url()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Stops the stack (not NATS) and starts it again on the same data dir.
    pub async fn restart(&mut self, adjust: impl FnOnce(&mut AppConfig)) -> anyhow::Result<()> {
        self.stop().await;
        adjust(&mut self.config);
        self.running = Some(gallery::app::start(self.config.clone()).await?);
        Ok(())
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.post_json_as(path, body, self.token.as_deref()).await
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.get_json_as(path, self.token.as_deref()).await
    }

    /// `POST` with this token (or none), whatever the stack's own token is.
    pub async fn post_json_as(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// `GET` with this token (or none), whatever the stack's own token is.
    pub async fn get_json_as(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.get(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// `DELETE` with this token (or none), whatever the stack's own token is.
    pub async fn delete_as(&self, path: &str, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.delete(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.delete_as(path, self.token.as_deref()).await
    }

    /// Every key in the stack's object store (local directory or S3 bucket), sorted.
    pub async fn object_keys(&self) -> anyhow::Result<Vec<String>> {
        use object_store::ObjectStore as _;
        let objects = gallery::storage::open(&self.config).await?.store;
        let mut keys = Vec::new();
        let mut listing = objects.list(None);
        while let Some(meta) = listing.next().await {
            keys.push(meta?.location.to_string());
        }
        keys.sort();
        Ok(keys)
    }

    /// `POST /images/` and return the link response (asserting 201).
    pub async fn request_link(&self, project: &str, filename: &str) -> anyhow::Result<Value> {
        let (status, body) = self
            .post_json(
                "/images/",
                &serde_json::json!({ "filename": filename, "project_id": project }),
            )
            .await?;
        if status != 201 {
            bail!("POST /images/ gave {status}: {body}");
        }
        Ok(body)
    }

    /// Uploads `bytes` through a link exactly as a client would: `params` first, then `file`.
    pub async fn upload(&self, link: &Value, bytes: Vec<u8>) -> anyhow::Result<(u16, Value)> {
        upload_with_params(&self.http, link, link["params"].clone(), bytes).await
    }

    /// `GET` a whole URL (an image's version or original, on the api or on S3): its body,
    /// whatever the status.
    pub async fn bytes_at(&self, url: &str) -> anyhow::Result<Vec<u8>> {
        Ok(self.http.get(url).send().await?.bytes().await?.to_vec())
    }

    pub async fn image(&self, image_id: &str) -> anyhow::Result<Value> {
        let (status, body) = self.get_json(&format!("/images/{image_id}")).await?;
        if status != 200 {
            bail!("GET /images/{image_id} gave {status}: {body}");
        }
        Ok(body)
    }

    /// Polls the image until it reaches `state`.
    pub async fn wait_state(&self, image_id: &str, state: &str) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let rec = self.image(image_id).await?;
            if rec["state"] == state {
                return Ok(rec);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "image {image_id} stuck in {} waiting for {state}: {rec}",
                    rec["state"]
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the image until it settles in `done` or `error`.
    pub async fn wait_settled(&self, image_id: &str) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let rec = self.image(image_id).await?;
            if rec["state"] == "done" || rec["state"] == "error" {
                return Ok(rec);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("image {image_id} stuck in {}: {rec}", rec["state"]);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn ws(&self, project: &str, since: Option<u64>) -> anyhow::Result<WsClient> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = self.ws_url(project, since).into_client_request()?;
        if let Some(token) = &self.token {
            req.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
        }
        let (stream, _) = tokio_tungstenite::connect_async(req)
            .await
            .context("websocket connect")?;
        Ok(WsClient { stream })
    }

    /// A JetStream context on the stack's nats-server.
    pub async fn js(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let client = gallery_nats::connect(&self.nats.url(), Duration::from_secs(5)).await?;
        Ok(async_nats::jetstream::new(client))
    }

    /// The text of the running process's Prometheus endpoint.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let addr = self
            .running
            .as_ref()
            .and_then(|r| r.metrics_addr)
            .context("no metrics listener")?;
        let resp = self
            .http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "metrics: {}", resp.status());
        Ok(resp.text().await?)
    }

    /// `ws://…/projects/{project}/ws[?since=…]`.
    pub fn ws_url(&self, project: &str, since: Option<u64>) -> String {
        let base = self.base().replacen("http://", "ws://", 1);
        match since {
            Some(s) => format!("{base}/projects/{project}/ws?since={s}"),
            None => format!("{base}/projects/{project}/ws"),
        }
    }
}

pub async fn upload_with_params(
    http: &reqwest::Client,
    link: &Value,
    params: Value,
    bytes: Vec<u8>,
) -> anyhow::Result<(u16, Value)> {
    let form =
        gallery::load::client::upload_form(params.as_object().context("params")?, bytes, "upload")?;
    assert_eq!(link["method"], "POST");
    let resp = http
        .post(link["upload_link"].as_str().context("upload_link")?)
        .multipart(form)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

pub struct WsClient {
    pub stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl WsClient {
    /// The next JSON message, or an error after `WAIT`.
    pub async fn next_json(&mut self) -> anyhow::Result<Value> {
        self.next_json_within(WAIT).await
    }

    pub async fn next_json_within(&mut self, limit: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .context("no websocket message in time")?
                .context("websocket closed")??;
            match msg {
                Message::Text(text) => return Ok(serde_json::from_str(&text)?),
                Message::Close(frame) => bail!("websocket closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// Messages until one for `image_id` has `type` == `until` (inclusive).
    pub async fn collect_until(
        &mut self,
        image_id: &str,
        until: &str,
    ) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        loop {
            let msg = self.next_json().await?;
            let done = msg["image_id"] == image_id && msg["type"] == until;
            out.push(msg);
            if done {
                return Ok(out);
            }
        }
    }
}

/// The value of the series whose line starts with `series` (name and labels, exactly as
/// exported) in a Prometheus text page; `None` when it isn't there.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A synthetic photo: a smooth gradient with detail, encoded as JPEG.
pub fn jpeg_photo(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        let r = (x * 255 / width.max(1)) as u8;
        let g = (y * 255 / height.max(1)) as u8;
        let b = ((x ^ y) & 0xff) as u8;
        image::Rgb([r, g, b])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encoding a JPEG in memory");
    out.into_inner()
}

/// The test image set and its MANIFEST (shared with the pixel pipeline's tests).
#[path = "../../testdata/testset.rs"]
pub mod testset;

/// The shared developer test set, when present (`GALLERY_TESTDATA`).
pub use testset::full_testdata as testdata;

/// Decoded size of an image in memory.
pub fn dimensions(bytes: &[u8]) -> anyhow::Result<(u32, u32)> {
    let img = image::load_from_memory(bytes)?;
    Ok((img.width(), img.height()))
}
