//! Opens the object store of a run: local files under the data dir, or an S3 bucket with the
//! configured request timeout and client-side retry window. The client's own retries are kept
//! short on purpose: an outage that outlasts them is the processor's failure policy's to handle
//! (a time budget, docs/ARCHITECTURE.md §9), not the HTTP client's.

use std::sync::Arc;

use anyhow::Context as _;
use gallery_api::readiness::READY_PROBE;
use object_store::aws::AmazonS3Builder;
use object_store::list::PaginatedListStore;
use object_store::local::LocalFileSystem;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::config::{AppConfig, S3Config};

/// The store of a run, and in S3 mode the same client for paginated LIST requests (the upload
/// watcher's batch detection).
pub struct Storage {
    pub store: Arc<dyn ObjectStore>,
    pub lister: Option<Arc<dyn PaginatedListStore>>,
}

pub async fn open(cfg: &AppConfig) -> anyhow::Result<Storage> {
    let Some(s3) = &cfg.s3 else {
        let dir = cfg.data_dir.join("storage");
        std::fs::create_dir_all(&dir)?;
        return Ok(Storage {
            store: Arc::new(LocalFileSystem::new_with_prefix(&dir)?),
            lister: None,
        });
    };
    let s3_client = Arc::new(s3_store(s3)?);
    let store: Arc<dyn ObjectStore> = s3_client.clone();
    let lister: Option<Arc<dyn PaginatedListStore>> = Some(s3_client);
    // The bucket must exist and take writes: find out now, not on the first upload. A server
    // that doesn't answer is an outage, not a mistake: start anyway (the roles retry, /ready
    // says storage is down), rather than crash-loop until it is back.
    match store
        .put(&object_store::path::Path::from(READY_PROBE), "ok".into())
        .await
    {
        Ok(_) => {}
        Err(err) if unreachable(&err) => {
            tracing::warn!(%err, "S3 is unreachable at start; starting anyway and retrying");
        }
        Err(err) => {
            return Err(err).with_context(|| {
                format!(
                    "S3 bucket {:?} at {} is not usable (does it exist, and may these credentials write to it?)",
                    s3.bucket,
                    s3.endpoint.as_deref().unwrap_or("AWS")
                )
            });
        }
    }
    Ok(Storage { store, lister })
}

/// The server could not be reached or did not answer in time (as opposed to an answer that
/// refuses us: a missing bucket, wrong credentials). object_store keeps its HTTP error kinds
/// crate-private behind a transparent wrapper, so this looks for the I/O error underneath, and
/// for reqwest's words for a request that never got an answer.
pub fn unreachable(err: &object_store::Error) -> bool {
    use std::io::ErrorKind::*;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | TimedOut
                    | HostUnreachable
                    | NetworkUnreachable
                    | AddrNotAvailable
            )
        {
            return true;
        }
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("error sending request") || text.contains("timed out") {
            return true;
        }
        source = e.source();
    }
    false
}

fn s3_store(s3: &S3Config) -> anyhow::Result<object_store::aws::AmazonS3> {
    let connect = s3.timeout.min(std::time::Duration::from_secs(5));
    // allow_http lives in the client options: set it here, or these options would undo it.
    let options = ClientOptions::new()
        .with_allow_http(s3.allow_http)
        .with_timeout(s3.timeout)
        .with_connect_timeout(connect);
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 10,
        retry_timeout: s3.retry_timeout,
    };
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region)
        .with_access_key_id(&s3.access_key_id)
        .with_secret_access_key(&s3.secret_access_key)
        .with_virtual_hosted_style_request(false)
        .with_client_options(options)
        .with_retry(retry);
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    builder.build().context("configuring S3")
}
