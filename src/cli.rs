//! The command line (DESIGN §8). Every flag has an environment variable of the same name
//! (`--max-upload-bytes` ↔ `GALLERY_MAX_UPLOAD_BYTES`); docker-compose and other tools rely on
//! these names.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app::{AppConfig, Roles, S3Config};

#[derive(Parser, Debug)]
#[command(
    name = "gallery",
    version,
    about = "LITE Gallery: photo uploads and versions on NATS JetStream"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Everything in one process: api, projector, processor. Starts a local nats-server when
    /// no NATS URL is given.
    Up(UpArgs),
    /// The api with its projector; needs --nats-url.
    Api(ApiArgs),
    /// A processor replica (a member of the shared consumer); needs --nats-url.
    Processor(ProcessorArgs),
    /// Rebuilds the read model from the event log (service stopped).
    Rebuild(RebuildArgs),
    /// Renders the versions of every image in a directory on one thread and prints timings.
    Bench(BenchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Where the read model, local storage, the secret and (in `up`) NATS live.
    #[arg(long, env = "GALLERY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Largest accepted upload in bytes.
    #[arg(long, env = "GALLERY_MAX_UPLOAD_BYTES", default_value_t = 50_000_000)]
    pub max_upload_bytes: u64,
    /// Largest accepted image in pixels (never below 50 MP: phones make 48 MP photos).
    #[arg(long, env = "GALLERY_MAX_PIXELS", default_value_t = 100_000_000)]
    pub max_pixels: u64,
    /// Largest accepted side in pixels.
    #[arg(long, env = "GALLERY_MAX_SIDE", default_value_t = 30_000)]
    pub max_side: u32,
    #[command(flatten)]
    pub s3: S3Args,
}

/// S3 mode: on when a bucket is named. Endpoint, credentials and region use the standard AWS
/// variables; path-style addressing works with MinIO, Garage and SeaweedFS.
#[derive(Args, Debug, Clone)]
pub struct S3Args {
    /// The bucket for originals and versions (it must exist). Turns S3 mode on.
    #[arg(long, env = "GALLERY_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// The endpoint the services use, e.g. http://minio:9000 (default: AWS).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    /// The endpoint clients use in links, e.g. http://localhost:9000 (default: the endpoint).
    #[arg(long, env = "GALLERY_S3_PUBLIC_ENDPOINT")]
    pub s3_public_endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Allow a plain-HTTP endpoint.
    #[arg(long, env = "AWS_ALLOW_HTTP")]
    pub s3_allow_http: bool,
}

impl S3Args {
    pub fn into_config(self) -> anyhow::Result<Option<S3Config>> {
        let Some(bucket) = self.s3_bucket else {
            return Ok(None);
        };
        let (Some(access_key_id), Some(secret_access_key)) =
            (self.s3_access_key_id, self.s3_secret_access_key)
        else {
            anyhow::bail!(
                "S3 mode needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (upload policies are signed with them)"
            );
        };
        Ok(Some(S3Config {
            bucket,
            endpoint: self.s3_endpoint,
            public_endpoint: self.s3_public_endpoint,
            region: self.s3_region,
            access_key_id,
            secret_access_key,
            allow_http: self.s3_allow_http,
        }))
    }
}

#[derive(Args, Debug, Clone)]
pub struct HttpArgs {
    #[arg(long, env = "GALLERY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Base URL of links handed to clients; defaults to http://<listen>.
    #[arg(long, env = "GALLERY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Link-signing secret shared by api replicas; generated into the data dir when absent.
    #[arg(long, env = "GALLERY_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Lifetime of upload links, seconds.
    #[arg(long, env = "GALLERY_UPLOAD_LINK_TTL", default_value_t = 900)]
    pub upload_link_ttl: u64,
    /// Minimum lifetime of download links, seconds.
    #[arg(long, env = "GALLERY_DOWNLOAD_LINK_TTL", default_value_t = 3600)]
    pub download_link_ttl: u64,
    /// Seconds after a link's expiry during which a started upload may still land; after it an
    /// unused link ends in `upload_expired`.
    #[arg(long, env = "GALLERY_UPLOAD_GRACE", default_value_t = 600)]
    pub upload_grace: u64,
}

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub http: HttpArgs,
    /// An external NATS server; without it `up` runs nats-server as a child.
    #[arg(long, env = "GALLERY_NATS_URL")]
    pub nats_url: Option<String>,
    /// Concurrent renders (default: the number of cores).
    #[arg(long, env = "GALLERY_CONCURRENCY")]
    pub concurrency: Option<usize>,
}

#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub http: HttpArgs,
    #[arg(long, env = "GALLERY_NATS_URL")]
    pub nats_url: String,
}

#[derive(Args, Debug, Clone)]
pub struct ProcessorArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, env = "GALLERY_NATS_URL")]
    pub nats_url: String,
    /// Address of the processor's /health and /ready.
    #[arg(long, env = "GALLERY_HEALTH_LISTEN", default_value = "127.0.0.1:8081")]
    pub health_listen: SocketAddr,
    #[arg(long, env = "GALLERY_CONCURRENCY")]
    pub concurrency: Option<usize>,
}

#[derive(Args, Debug, Clone)]
pub struct RebuildArgs {
    #[arg(long, env = "GALLERY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Without it, the local nats-server under the data dir is started, as `up` does.
    #[arg(long, env = "GALLERY_NATS_URL")]
    pub nats_url: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// A directory of images.
    pub dir: PathBuf,
    /// Renders per image; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(long, default_value_t = 100_000_000)]
    pub max_pixels: u64,
}

impl HttpArgs {
    fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

fn base_config(
    common: &Common,
    http: &HttpArgs,
    nats_url: Option<String>,
    roles: Roles,
) -> anyhow::Result<AppConfig> {
    Ok(AppConfig {
        data_dir: common.data_dir.clone(),
        nats_url,
        listen: http.listen,
        public_url: Some(http.public_url()),
        secret: http.secret.clone(),
        roles,
        max_upload_bytes: common.max_upload_bytes,
        max_pixels: common.max_pixels,
        max_side: common.max_side,
        upload_link_ttl: Duration::from_secs(http.upload_link_ttl),
        download_link_ttl: Duration::from_secs(http.download_link_ttl),
        upload_grace: Duration::from_secs(http.upload_grace),
        concurrency: None,
        s3: common.s3.clone().into_config()?,
    })
}

impl UpArgs {
    pub fn into_config(self) -> anyhow::Result<AppConfig> {
        let mut cfg = base_config(&self.common, &self.http, self.nats_url.clone(), Roles::All)?;
        cfg.concurrency = self.concurrency;
        Ok(cfg)
    }
}

impl ApiArgs {
    pub fn into_config(self) -> anyhow::Result<AppConfig> {
        base_config(
            &self.common,
            &self.http,
            Some(self.nats_url.clone()),
            Roles::Api,
        )
    }
}
