//! The load tool's client of a deployment: the sample API over HTTP exactly as any client uses
//! it (the link's `method` and `params`, then the file), and the project WebSocket.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Why a request failed: the api's `error.code`, `http_<status>` from a server that sends no
/// such body (S3), or `transport`.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure(pub String);

impl Failure {
    fn transport(err: reqwest::Error) -> Self {
        Self(
            if err.is_timeout() {
                "timeout"
            } else {
                "transport"
            }
            .into(),
        )
    }
}

/// The upload form of a link: every `params` field as given, then the file as `file`, typed
/// with the link's `Content-Type` (the S3 POST-policy contract, also the api's in local mode).
pub fn upload_form(
    params: &serde_json::Map<String, Value>,
    bytes: Vec<u8>,
    filename: &str,
) -> Result<reqwest::multipart::Form, reqwest::Error> {
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in params {
        form = form.text(k.clone(), v.as_str().unwrap_or_default().to_owned());
    }
    let content_type = params
        .get("Content-Type")
        .and_then(Value::as_str)
        .unwrap_or("application/octet-stream");
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(filename.to_owned())
        .mime_str(content_type)?;
    Ok(form.part("file", part))
}

/// What a run's token must be, after `why`: the fix for a 401 or 403.
pub fn token_hint(cleanup: bool, why: &str) -> String {
    let rights = if cleanup {
        "upload,read,subscribe,admin"
    } else {
        "upload,read,subscribe"
    };
    format!(
        "{why}: pass --token (or GALLERY_TOKEN) with {rights} on the run's projects `load-*`, \
         minted with the service's keys: gallery token --project 'load-*' --rights {rights}"
    )
}

#[derive(Clone)]
pub struct Target {
    pub http: reqwest::Client,
    /// `http://host:port`, no trailing slash.
    pub base: String,
    pub token: Option<String>,
}

impl Target {
    pub fn new(base: &str, token: Option<String>, connections: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections.max(1))
            .timeout(Duration::from_secs(120))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn answer(resp: reqwest::Response) -> Result<Value, Failure> {
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        Err(Failure(body["error"]["code"].as_str().map_or_else(
            || format!("http_{}", status.as_u16()),
            str::to_owned,
        )))
    }

    /// `POST /images/`: the link answer.
    pub async fn request_link(&self, project: &str, filename: &str) -> Result<Value, Failure> {
        let req = self
            .http
            .post(format!("{}/images/", self.base))
            .json(&serde_json::json!({ "filename": filename, "project_id": project }));
        let resp = self
            .authorized(req)
            .send()
            .await
            .map_err(Failure::transport)?;
        Self::answer(resp).await
    }

    /// Uploads with the link's form: every `params` field, then the file.
    pub async fn upload(
        &self,
        link: &Value,
        bytes: Vec<u8>,
        filename: &str,
    ) -> Result<(), Failure> {
        if link["method"] != "POST" {
            return Err(Failure("unknown_upload_method".into()));
        }
        let params = link["params"].as_object().cloned().unwrap_or_default();
        let form = upload_form(&params, bytes, filename)
            .map_err(|_| Failure("bad_content_type".into()))?;
        let url = link["upload_link"].as_str().unwrap_or_default();
        let resp = self
            .http
            .post(url)
            .multipart(form)
            .send()
            .await
            .map_err(Failure::transport)?;
        Self::answer(resp).await.map(|_| ())
    }

    /// `POST /images/{id}/complete`: the fast path after an upload.
    pub async fn complete(&self, image_id: &str) -> Result<(), Failure> {
        let req = self
            .http
            .post(format!("{}/images/{image_id}/complete", self.base));
        let resp = self
            .authorized(req)
            .send()
            .await
            .map_err(Failure::transport)?;
        Self::answer(resp).await.map(|_| ())
    }

    /// `DELETE /projects/{id}`: how many images it deleted.
    pub async fn delete_project(&self, project: &str) -> Result<u64, Failure> {
        let req = self
            .http
            .delete(format!("{}/projects/{project}", self.base));
        let resp = self
            .authorized(req)
            .send()
            .await
            .map_err(Failure::transport)?;
        Self::answer(resp)
            .await
            .map(|body| body["deleted"].as_u64().unwrap_or(0))
    }

    /// `GET /projects/{id}/images?limit=`.
    pub async fn list(&self, project: &str, limit: u32) -> Result<(), Failure> {
        let req = self.http.get(format!(
            "{}/projects/{project}/images?limit={limit}",
            self.base
        ));
        let resp = self
            .authorized(req)
            .send()
            .await
            .map_err(Failure::transport)?;
        Self::answer(resp).await.map(|_| ())
    }

    /// The project's WebSocket, replaying after `since` when given.
    pub async fn websocket(&self, project: &str, since: Option<u64>) -> anyhow::Result<WsStream> {
        let base = self
            .base
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        let url = match since {
            Some(s) => format!("{base}/projects/{project}/ws?since={s}"),
            None => format!("{base}/projects/{project}/ws"),
        };
        let mut req = url.into_client_request()?;
        if let Some(token) = &self.token {
            req.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
        }
        use tokio_tungstenite::tungstenite::Error;
        match tokio_tungstenite::connect_async(req).await {
            Ok((stream, _)) => Ok(stream),
            Err(Error::Http(resp)) if matches!(resp.status().as_u16(), 401 | 403) => {
                let why = format!(
                    "the WebSocket of project {project} was refused ({})",
                    resp.status()
                );
                anyhow::bail!("{}", token_hint(false, &why))
            }
            Err(e) => Err(e).with_context(|| format!("opening the WebSocket of project {project}")),
        }
    }
}
