//! The JetStream topology, declared in one place and idempotently: every process calls
//! [`ensure_stream`] at start (and the processor [`ensure_processor_consumer`]); handlers never
//! create streams or consumers.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use gallery_schema::EventKind;
use gallery_schema::subjects::{self, PROCESSOR_CONSUMER, STREAM, STREAM_SUBJECTS};

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("creating stream {STREAM}: {0}")]
    Stream(#[from] jetstream::context::CreateStreamError),
    #[error("getting stream {STREAM}: {0}")]
    GetStream(#[from] jetstream::context::GetStreamError),
    #[error("creating consumer: {0}")]
    Consumer(#[from] jetstream::stream::ConsumerError),
}

/// The stream config: every event of every image, on disk, kept forever (the log is the source
/// of truth), with a 10-minute dedup window for `Nats-Msg-Id`.
pub fn stream_config() -> stream::Config {
    stream::Config {
        name: STREAM.to_owned(),
        subjects: vec![STREAM_SUBJECTS.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::ZERO,
        duplicate_window: Duration::from_secs(10 * 60),
        allow_direct: true,
        ..Default::default()
    }
}

pub async fn ensure_stream(js: &jetstream::Context) -> Result<stream::Stream, TopologyError> {
    js.create_or_update_stream(stream_config()).await?;
    Ok(js.get_stream(STREAM).await?)
}

/// Settings of the processor's shared durable consumer.
#[derive(Debug, Clone)]
pub struct ProcessorConsumerConfig {
    /// How long a delivery may go unacknowledged; renders send progress acks well within it.
    pub ack_wait: Duration,
    /// Attempts before the processor records `retries_exhausted` (enforced by the processor,
    /// not the server).
    pub max_deliver: i64,
    /// Redelivery delays after missed acks (a crashed replica); explicit naks carry their own.
    pub backoff: Vec<Duration>,
    pub max_ack_pending: i64,
}

impl Default for ProcessorConsumerConfig {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            backoff: vec![],
            max_ack_pending: 256,
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
        ],
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: cfg.ack_wait,
        // Unlimited on the server: the processor gives up after `cfg.max_deliver` attempts by
        // recording `failed` itself, and if even that can't be written (NATS hiccup on the last
        // attempt) the delivery must come back, or the image would stay `processing` forever.
        max_deliver: -1,
        backoff: cfg.backoff.clone(),
        max_ack_pending: cfg.max_ack_pending,
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
