//! How the service reaches its two dependencies: the S3 bucket (S3 mode) and NATS's
//! credentials and TLS. Secrets come directly or from `*_FILE` files (docker secrets).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{duration, secret};
use crate::config::{S3Config, Secret};

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
    #[arg(long, env = "AWS_ACCESS_KEY_ID_FILE")]
    pub s3_access_key_id_file: Option<PathBuf>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<Secret>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY_FILE")]
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Allow a plain-HTTP endpoint.
    #[arg(long, env = "AWS_ALLOW_HTTP")]
    pub s3_allow_http: bool,
    /// Deadline of one storage request (e.g. 30s).
    #[arg(long, env = "GALLERY_S3_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub s3_timeout: Duration,
    /// How long the storage client retries one request itself; after that the processor's
    /// failure policy (GALLERY_RETRY_BUDGET) takes over.
    #[arg(long, env = "GALLERY_S3_RETRY_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub s3_retry_timeout: Duration,
}

impl S3Args {
    pub fn into_config(self) -> anyhow::Result<Option<S3Config>> {
        let Some(bucket) = self.s3_bucket else {
            return Ok(None);
        };
        let access_key_id = secret(
            self.s3_access_key_id,
            self.s3_access_key_id_file.as_deref(),
            "AWS_ACCESS_KEY_ID",
        )?;
        let secret_access_key = secret(
            self.s3_secret_access_key.map(|s| s.0),
            self.s3_secret_access_key_file.as_deref(),
            "AWS_SECRET_ACCESS_KEY",
        )?;
        let (Some(access_key_id), Some(secret_access_key)) = (access_key_id, secret_access_key)
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
            timeout: self.s3_timeout,
            retry_timeout: self.s3_retry_timeout,
        }))
    }
}

/// Credentials and TLS for NATS (docs/ARCHITECTURE.md §11). Without them a `user:password@`
/// in the URL is used; the embedded server of `gallery up` needs none of this.
#[derive(Args, Debug, Clone, Default)]
pub struct NatsAuthArgs {
    /// The NATS user of this role (api, processor or admin in nats/conf).
    #[arg(long, env = "GALLERY_NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "GALLERY_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<Secret>,
    /// A file holding the password (docker secrets).
    #[arg(long, env = "GALLERY_NATS_PASSWORD_FILE")]
    pub nats_password_file: Option<PathBuf>,
    /// A .creds file (JWT and NKey seed) instead of a user and password.
    #[arg(long, env = "GALLERY_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// The CA certificate (PEM) of the servers: TLS is then required.
    #[arg(long, env = "GALLERY_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// A client certificate (PEM), for servers that verify clients; needs --nats-key.
    #[arg(long, env = "GALLERY_NATS_CERT", requires = "nats_key")]
    pub nats_cert: Option<PathBuf>,
    #[arg(long, env = "GALLERY_NATS_KEY", requires = "nats_cert")]
    pub nats_key: Option<PathBuf>,
}

impl NatsAuthArgs {
    pub fn resolve(&self) -> anyhow::Result<gallery_nats::NatsAuth> {
        let password = secret(
            self.nats_password.clone().map(|s| s.0),
            self.nats_password_file.as_deref(),
            "GALLERY_NATS_PASSWORD",
        )?;
        anyhow::ensure!(
            password.is_none() || self.nats_user.is_some(),
            "GALLERY_NATS_PASSWORD needs GALLERY_NATS_USER"
        );
        Ok(gallery_nats::NatsAuth {
            user: self.nats_user.clone(),
            password,
            creds_file: self.nats_creds.clone(),
            ca_file: self.nats_ca.clone(),
            client_cert: self.nats_cert.clone().zip(self.nats_key.clone()),
        })
    }
}
