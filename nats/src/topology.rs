//! The JetStream topology, declared in one place. Only the roles that manage it (the api role,
//! `gallery rebuild` and the admin commands) call [`ensure_topology`]; processors only wait for
//! it ([`wait_for_consumer`]), so each role can run with the NATS permissions it needs and no more.
//!
//! Start-up creates the stream when it is missing and otherwise updates only the fields the
//! application owns ([`reconcile_stream`]: subjects, the dedup window, direct get). The replica
//! count and the limits belong to the operator once the stream exists: a restart never scales a
//! stream down or undoes `nats stream edit`; a difference from our configuration is logged.
//! Consumers inherit the stream's replica count (`num_replicas: 0`). See docs/ARCHITECTURE.md §4.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use gallery_schema::EventKind;
use gallery_schema::subjects::{
    self, IDEMPOTENCY_BUCKET, LEASE_BUCKET, PROCESSOR_CONSUMER, STREAM, STREAM_SUBJECTS,
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("creating stream {STREAM}: {0}")]
    Stream(#[from] jetstream::context::CreateStreamError),
    #[error("updating stream {STREAM}: {0}")]
    UpdateStream(jetstream::context::UpdateStreamError),
    #[error("getting stream {STREAM}: {0}")]
    GetStream(#[from] jetstream::context::GetStreamError),
    #[error("reading stream {STREAM}: {0}")]
    Info(#[from] jetstream::stream::InfoError),
    #[error("creating consumer: {0}")]
    Consumer(#[from] jetstream::stream::ConsumerError),
    #[error("stopped while waiting for {0}")]
    Cancelled(String),
    #[error("key-value bucket: {0}")]
    Bucket(String),
}

/// How many copies of the stream a cluster keeps (`--stream-replicas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicas {
    /// 3 when the server reports a cluster of 3 or more nodes, else 1.
    Auto,
    Fixed(usize),
}

impl std::str::FromStr for Replicas {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "1" => Ok(Self::Fixed(1)),
            "3" => Ok(Self::Fixed(3)),
            "5" => Ok(Self::Fixed(5)),
            other => Err(format!("{other:?}: expected auto, 1, 3 or 5")),
        }
    }
}

impl Replicas {
    /// The replica count for a cluster of `cluster_size` servers (1 for a single server).
    pub fn resolve(self, cluster_size: usize) -> usize {
        match self {
            Self::Fixed(n) => n,
            Self::Auto if cluster_size >= 3 => 3,
            Self::Auto => 1,
        }
    }
}

/// How many servers the connected server says its cluster has: itself plus the client URLs of
/// the others that it advertises (`connect_urls`, which lists every server, itself included,
/// once the routes are up).
pub fn cluster_size(info: &async_nats::ServerInfo) -> usize {
    if info.cluster.is_none() {
        return 1;
    }
    info.connect_urls.len().max(1)
}

/// The stream as the application wants it: every event of every image, on disk, kept forever
/// (the log is the source of truth), with a 10-minute dedup window for `Nats-Msg-Id`.
pub fn stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: STREAM.to_owned(),
        subjects: vec![STREAM_SUBJECTS.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::ZERO,
        duplicate_window: Duration::from_secs(10 * 60),
        allow_direct: true,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// What start-up does to an existing stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciled {
    /// The config to send as an update, when a field the application owns differs.
    pub update: Option<stream::Config>,
    /// Differences in fields the operator owns, logged and left alone.
    pub left_alone: Vec<String>,
}

/// Pure: compares the stream's current config with ours. Owned fields (subjects, dedup window,
/// direct get) are brought to ours; everything else (replicas, limits, placement) is kept as
/// the operator left it.
pub fn reconcile_stream(existing: &stream::Config, wanted: &stream::Config) -> Reconciled {
    let mut update = existing.clone();
    update.subjects = wanted.subjects.clone();
    update.duplicate_window = wanted.duplicate_window;
    update.allow_direct = wanted.allow_direct;
    let mut left_alone = Vec::new();
    if existing.num_replicas.max(1) != wanted.num_replicas.max(1) {
        left_alone.push(format!(
            "replicas: the stream has {}, configuration says {} (change it with `nats stream edit {STREAM} --replicas N`)",
            existing.num_replicas.max(1),
            wanted.num_replicas.max(1)
        ));
    }
    if existing.max_age != wanted.max_age {
        left_alone.push(format!(
            "max_age: the stream has {:?}, configuration says {:?} (unlimited)",
            existing.max_age, wanted.max_age
        ));
    }
    let changed = update.subjects != existing.subjects
        || update.duplicate_window != existing.duplicate_window
        || update.allow_direct != existing.allow_direct;
    Reconciled {
        update: changed.then_some(update),
        left_alone,
    }
}

fn is_not_found(err: &jetstream::context::GetStreamError) -> bool {
    matches!(
        err.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Creates the stream with `replicas` copies when it is missing; otherwise applies
/// [`reconcile_stream`].
pub async fn ensure_stream(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<stream::Stream, TopologyError> {
    let wanted = stream_config(replicas);
    let mut stream = match js.get_stream(STREAM).await {
        Ok(stream) => stream,
        Err(err) if is_not_found(&err) => {
            tracing::info!(replicas, "creating stream {STREAM}");
            return Ok(js.create_stream(wanted).await?);
        }
        Err(err) => return Err(err.into()),
    };
    let existing = stream.info().await?.config.clone();
    let reconciled = reconcile_stream(&existing, &wanted);
    for note in &reconciled.left_alone {
        tracing::warn!("stream {STREAM} differs from the configuration, left as is: {note}");
    }
    if let Some(update) = reconciled.update {
        tracing::info!("updating the application's fields of stream {STREAM}");
        js.update_stream(update)
            .await
            .map_err(TopologyError::UpdateStream)?;
        stream = js.get_stream(STREAM).await?;
    }
    Ok(stream)
}

/// Everything the roles need: the stream and the durable consumers. Called by the api role,
/// `gallery rebuild` and admin commands.
pub async fn ensure_topology(
    js: &jetstream::Context,
    replicas: usize,
    processor: &ProcessorConsumerConfig,
) -> Result<stream::Stream, TopologyError> {
    let stream = ensure_stream(js, replicas).await?;
    ensure_processor_consumer(&stream, processor).await?;
    ensure_upload_watcher_consumer(&stream).await?;
    stream.create_consumer(deleter_consumer_config()).await?;
    ensure_idempotency_bucket(js, replicas).await?;
    ensure_lease_bucket(js, replicas).await?;
    Ok(stream)
}

/// How long a lease outlives its holder's last renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// How long `POST /images/` remembers an `Idempotency-Key`.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// The bucket of leases: a value disappears `LEASE_TTL` after it was last written.
pub async fn ensure_lease_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<jetstream::kv::Store, TopologyError> {
    ensure_bucket(
        js,
        LEASE_BUCKET,
        "leases: one acting reconciler",
        LEASE_TTL,
        replicas,
    )
    .await
}

/// The bucket of `Idempotency-Key` answers: one value per key, gone after 24 h.
pub async fn ensure_idempotency_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<jetstream::kv::Store, TopologyError> {
    let about = "answers of POST /images/ by Idempotency-Key";
    ensure_bucket(js, IDEMPOTENCY_BUCKET, about, IDEMPOTENCY_WINDOW, replicas).await
}

/// A key-value bucket keeping one value per key for `max_age`: created when missing, an
/// existing one left as the operator has it.
async fn ensure_bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<jetstream::kv::Store, TopologyError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.create_key_value(jetstream::kv::Config {
        bucket: name.to_owned(),
        description: description.to_owned(),
        history: 1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| TopologyError::Bucket(format!("{name}: {e}")))
}

/// Settings of the processor's shared durable consumer.
#[derive(Debug, Clone)]
pub struct ProcessorConsumerConfig {
    /// How long a delivery may go unacknowledged; renders send progress acks well within it.
    pub ack_wait: Duration,
    /// Redelivery delays after missed acks (a crashed replica); explicit naks carry their own.
    pub backoff: Vec<Duration>,
    pub max_ack_pending: i64,
}

impl Default for ProcessorConsumerConfig {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            backoff: vec![],
            max_ack_pending: 256,
        }
    }
}

impl ProcessorConsumerConfig {
    /// The defaults with the fleet's cap on jobs in flight (`GALLERY_PROCESSOR_MAX_ACK_PENDING`;
    /// at least 1).
    pub fn with_max_ack_pending(max_ack_pending: i64) -> Self {
        Self {
            max_ack_pending: max_ack_pending.max(1),
            ..Default::default()
        }
    }
}

pub fn processor_consumer_config(cfg: &ProcessorConsumerConfig) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(PROCESSOR_CONSUMER.to_owned()),
        description: Some("renders versions of uploaded images; shared by every processor".into()),
        filter_subjects: vec![
            subjects::kind_filter(EventKind::Uploaded),
            subjects::kind_filter(EventKind::ReprocessRequested),
            subjects::kind_filter(EventKind::RedriveRequested),
        ],
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: cfg.ack_wait,
        // Unlimited on the server: the processor's failure policy (a time budget for transient
        // failures) decides when to give up, by recording `failed` itself; if even that can't be
        // written the delivery must come back, or the image would stay `processing` forever.
        max_deliver: -1,
        backoff: cfg.backoff.clone(),
        max_ack_pending: cfg.max_ack_pending,
        // 0: as many replicas as the stream.
        num_replicas: 0,
        ..Default::default()
    }
}

pub async fn ensure_processor_consumer(
    stream: &stream::Stream,
    cfg: &ProcessorConsumerConfig,
) -> Result<consumer::Consumer<consumer::pull::Config>, TopologyError> {
    // create_consumer on an existing durable with the same name updates it when the config
    // differs (server 2.10+), so a config change in a new release is applied on start.
    Ok(stream
        .create_consumer(processor_consumer_config(cfg))
        .await?)
}

/// The upload watcher's durable consumer: every upload request, redelivered (by naks with a
/// delay) until its upload is seen or its link has expired. Many links wait at once, so
/// nothing caps the deliveries or the acks pending.
pub fn upload_watcher_consumer_config() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(subjects::UPLOAD_WATCHER_CONSUMER.to_owned()),
        description: Some("notices uploads and expires unused upload links".into()),
        filter_subject: subjects::kind_filter(EventKind::UploadRequested),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_deliver: -1,
        max_ack_pending: 1_000_000,
        num_replicas: 0,
        ..Default::default()
    }
}

pub async fn ensure_upload_watcher_consumer(
    stream: &stream::Stream,
) -> Result<consumer::Consumer<consumer::pull::Config>, TopologyError> {
    Ok(stream
        .create_consumer(upload_watcher_consumer_config())
        .await?)
}

/// The deleter's durable consumer: every `deleted` event, redelivered (naks with a delay)
/// until the image's objects are gone from storage. Deleting a project queues one event per
/// image, so many may wait at once.
pub fn deleter_consumer_config() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(subjects::DELETER_CONSUMER.to_owned()),
        description: Some("removes the objects of deleted images".into()),
        filter_subject: subjects::kind_filter(EventKind::Deleted),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(60),
        max_deliver: -1,
        max_ack_pending: 100_000,
        num_replicas: 0,
        ..Default::default()
    }
}

/// Waits, with backoff up to 5 s, until the stream and the durable consumer `name` exist (the
/// api role declares them), or `shutdown` fires. Roles that only consume call this instead of
/// declaring anything.
pub async fn wait_for_consumer(
    js: &jetstream::Context,
    name: &str,
    shutdown: &CancellationToken,
) -> Result<consumer::Consumer<consumer::pull::Config>, TopologyError> {
    let mut delay = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    let mut warned = false;
    loop {
        let found = match js.get_stream(STREAM).await {
            Ok(stream) => stream
                .get_consumer::<consumer::pull::Config>(name)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match found {
            Ok(consumer) => return Ok(consumer),
            Err(err) if waited >= Duration::from_secs(10) && !warned => {
                warned = true;
                tracing::warn!(
                    consumer = name,
                    %err,
                    "waiting for the stream and consumer (declared by a `gallery api` or `up`)"
                );
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(TopologyError::Cancelled(name.to_owned())),
            _ = tokio::time::sleep(delay) => {}
        }
        waited += delay;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_parse_and_resolve() {
        assert_eq!("auto".parse(), Ok(Replicas::Auto));
        assert_eq!("3".parse(), Ok(Replicas::Fixed(3)));
        assert!("2".parse::<Replicas>().is_err());
        assert_eq!(Replicas::Auto.resolve(1), 1);
        assert_eq!(Replicas::Auto.resolve(2), 1);
        assert_eq!(Replicas::Auto.resolve(3), 3);
        assert_eq!(Replicas::Auto.resolve(5), 3);
        assert_eq!(Replicas::Fixed(5).resolve(1), 5);
    }

    #[test]
    fn reconcile_keeps_what_the_operator_owns() {
        // An operator raised the replicas and set a byte limit; ours says 1 and unlimited.
        let mut existing = stream_config(3);
        existing.max_bytes = 1 << 40;
        existing.duplicate_window = Duration::from_secs(120);
        let wanted = stream_config(1);
        let r = reconcile_stream(&existing, &wanted);
        let update = r.update.expect("the dedup window is ours");
        assert_eq!(update.num_replicas, 3, "never scaled down");
        assert_eq!(update.max_bytes, 1 << 40, "operator limits kept");
        assert_eq!(update.duplicate_window, Duration::from_secs(600));
        assert_eq!(r.left_alone.len(), 1, "{:?}", r.left_alone);
        assert!(r.left_alone[0].starts_with("replicas"));
    }

    #[test]
    fn reconcile_of_an_equal_stream_changes_nothing() {
        let r = reconcile_stream(&stream_config(3), &stream_config(3));
        assert_eq!(
            r,
            Reconciled {
                update: None,
                left_alone: vec![]
            }
        );
    }
}
