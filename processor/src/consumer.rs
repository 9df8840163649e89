//! The consumer loop: pull one delivery per free slot from the shared durable consumer, run the
//! job with progress acks, and acknowledge as [`crate::plan::decide`] says. On shutdown it stops
//! pulling and gives in-flight jobs a deadline; unfinished ones are redelivered elsewhere.
//! (Renders themselves run in render worker processes: [`crate::pool`].)

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use gallery_nats::{EventLog, ProcessorConsumerConfig, topology};
use gallery_schema::Event;
use gallery_schema::subjects::PROCESSOR_CONSUMER;
use object_store::ObjectStore;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::job::{self, Attempt, JobContext, Trigger};
use crate::memory::MemoryBudget;
use crate::plan::{AckDecision, JobOutcome, RetryPolicy, decide};
use crate::pool::{WorkerCommand, WorkerPool};
use crate::render::Limits;

#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Renders at once (CPU-bound): defaults to the number of cores.
    pub cpu_concurrency: usize,
    /// Jobs in flight (renders plus storage and NATS I/O): twice the renders.
    pub job_concurrency: usize,
    /// Only `ack_wait` matters here (the progress-ack period); the api role declares the
    /// consumer with the same settings.
    pub consumer: ProcessorConsumerConfig,
    pub retry: RetryPolicy,
    pub limits: Limits,
    pub max_upload_bytes: u64,
    /// How long in-flight jobs may run after shutdown is requested.
    pub shutdown_grace: Duration,
    /// Store content types with versions (S3).
    pub typed_puts: bool,
    /// Render in render worker processes started with this command (the `gallery` binary
    /// does); `None`: on this process's blocking threads.
    pub render_workers: Option<WorkerCommand>,
    /// A render's wall-clock limit in a render worker (`GALLERY_JOB_DEADLINE`).
    pub job_deadline: Duration,
    /// Render worker crashes of one generation before it ends `processing_crashed`
    /// (`GALLERY_CRASH_LIMIT`).
    pub crash_limit: u32,
    /// Bytes renders may use at once, by their headers' estimate
    /// (`GALLERY_RENDER_MEMORY_BUDGET`).
    pub memory_budget: u64,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            cpu_concurrency: cores,
            job_concurrency: cores * 2,
            consumer: ProcessorConsumerConfig::default(),
            retry: RetryPolicy::default(),
            limits: Limits::default(),
            max_upload_bytes: 50_000_000,
            shutdown_grace: Duration::from_secs(7),
            typed_puts: false,
            render_workers: None,
            job_deadline: Duration::from_secs(120),
            crash_limit: 3,
            memory_budget: 4 << 30,
        }
    }
}

impl ProcessorConfig {
    /// `n` renders at once (at least one) and twice as many jobs in flight.
    pub fn set_concurrency(&mut self, n: usize) {
        self.cpu_concurrency = n.max(1);
        self.job_concurrency = 2 * n.max(1);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error(transparent)]
    Topology(#[from] gallery_nats::TopologyError),
}

pub async fn run(
    js: jetstream::Context,
    store: Arc<dyn ObjectStore>,
    config: ProcessorConfig,
    shutdown: CancellationToken,
    running: impl FnOnce(),
) -> Result<(), ConsumerError> {
    // Declared by the api role; a processor only waits for it (it may lack the permission).
    let consumer = topology::wait_for_consumer(&js, PROCESSOR_CONSUMER, &shutdown).await?;
    running();
    let ctx = job_context(js, store, &config);
    let slots = Arc::new(Semaphore::new(config.job_concurrency.max(1)));
    let tracker = TaskTracker::new();
    // Fires when in-flight jobs ran out of shutdown grace: they nak, to be redelivered at once.
    let release = CancellationToken::new();
    tracing::info!(
        renders = config.cpu_concurrency,
        jobs = config.job_concurrency,
        memory_budget_mib = config.memory_budget >> 20,
        "processor started"
    );
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        // One message per free slot: nothing waits in a local buffer while its ack timer runs.
        let pulling = next_message(&consumer);
        tokio::pin!(pulling);
        let msg = tokio::select! {
            m = &mut pulling => m,
            _ = shutdown.cancelled() => {
                release_pulled(pulling).await;
                break;
            }
        };
        let Some(msg) = msg else { continue };
        let ctx = ctx.clone();
        let ack_wait = config.consumer.ack_wait;
        let retry = config.retry;
        let release = release.clone();
        tracker.spawn(async move {
            handle(&ctx, msg, ack_wait, &retry, &release).await;
            drop(permit);
        });
    }
    drain(tracker, config.shutdown_grace, &release).await;
    Ok(())
}

/// What every job of this processor shares: the log, the store, the limits and the bounds on
/// renders (cores, render workers, memory).
fn job_context(
    js: jetstream::Context,
    store: Arc<dyn ObjectStore>,
    config: &ProcessorConfig,
) -> JobContext {
    JobContext {
        log: EventLog::new(js),
        store,
        limits: config.limits,
        max_upload_bytes: config.max_upload_bytes,
        cpu: Arc::new(Semaphore::new(config.cpu_concurrency.max(1))),
        workers: config.render_workers.clone().map(|cmd| {
            Arc::new(WorkerPool::new(
                cmd,
                config.cpu_concurrency,
                config.job_deadline,
            ))
        }),
        crash_limit: config.crash_limit.max(1),
        memory: Arc::new(MemoryBudget::new(config.memory_budget)),
        typed_puts: config.typed_puts,
    }
}

/// After shutdown: gives in-flight jobs `grace`, then releases what is left to other replicas.
async fn drain(tracker: TaskTracker, grace: Duration, release: &CancellationToken) {
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("in-flight jobs did not finish in time; releasing them to other replicas");
        release.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
    }
}

/// How long one pull waits for a message; also how long a shutdown may wait for the pull in
/// progress ([`release_pulled`]).
const PULL_EXPIRY: Duration = Duration::from_secs(1);

/// On shutdown, the pull in progress may already have a message on its way: take it (the pull
/// ends within [`PULL_EXPIRY`]) and release it to the other replicas at once, rather than
/// strand it until its `ack_wait` runs out.
async fn release_pulled(pulling: impl Future<Output = Option<jetstream::Message>>) {
    if let Ok(Some(msg)) = tokio::time::timeout(2 * PULL_EXPIRY, pulling).await {
        let image = trigger_of(&msg)
            .map(|t| t.image.to_string())
            .unwrap_or_default();
        tracing::info!(image_id = %image, "released on shutdown (pulled as it began)");
        release_now(&msg).await;
    }
}

/// Naks `msg` for immediate redelivery and waits (up to a second) for the server to confirm:
/// the process exits right after, and a nak still in the client's buffer would leave the
/// delivery stranded until its `ack_wait`.
async fn release_now(msg: &jetstream::Message) {
    let confirmed = tokio::time::timeout(
        Duration::from_secs(1),
        msg.double_ack_with(AckKind::Nak(None)),
    )
    .await;
    if !matches!(confirmed, Ok(Ok(()))) {
        tracing::warn!("a release was not confirmed; the delivery returns after its ack_wait");
    }
}

async fn next_message(
    consumer: &consumer::Consumer<consumer::pull::Config>,
) -> Option<jetstream::Message> {
    let batch = consumer
        .batch()
        .max_messages(1)
        .expires(PULL_EXPIRY)
        .messages()
        .await;
    let mut batch = match batch {
        Ok(b) => b,
        Err(err) => {
            tracing::warn!(%err, "pulling from the processor consumer");
            tokio::time::sleep(Duration::from_secs(1)).await;
            return None;
        }
    };
    match batch.next().await {
        Some(Ok(msg)) => Some(msg),
        Some(Err(err)) => {
            tracing::warn!(%err, "pulling from the processor consumer");
            tokio::time::sleep(Duration::from_millis(500)).await;
            None
        }
        None => None,
    }
}

/// One delivery: run its job with progress acks, decide, count, and acknowledge.
async fn handle(
    ctx: &JobContext,
    msg: jetstream::Message,
    ack_wait: Duration,
    retry: &RetryPolicy,
    release: &CancellationToken,
) {
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
    let Some(trigger) = trigger_of(&msg) else {
        tracing::error!(subject = %msg.subject, "not a processing trigger; terminating it");
        let _ = msg.ack_with(AckKind::Term).await;
        return;
    };
    let request_id = request_id_of(&msg);
    let span = tracing::info_span!(
        "job",
        request_id = %request_id,
        project_id = %trigger.project,
        image_id = %trigger.image,
        generation = trigger.generation,
        delivered
    );
    let job = gallery_nats::REQUEST_ID
        .scope(
            request_id,
            job::process(ctx, &trigger, delivered.max(1) as u32),
        )
        .instrument(span.clone());
    let Some(attempt) = with_progress_acks(&msg, job, ack_wait, release, &span).await else {
        return;
    };
    let published = published_at(&msg);
    let elapsed = budget_elapsed(&attempt, published);
    let outcome = attempt.outcome;
    let decision = decide(&outcome, delivered, elapsed, retry);
    tracing::info!(parent: &span, ?outcome, ?decision, "job finished");
    count_job(&outcome, &decision, &trigger, published);
    let ack = acknowledge(ctx, &msg, &trigger, decision, delivered, retry, &span).await;
    if let Err(err) = ack {
        tracing::warn!(parent: &span, %err, "acknowledging; the delivery may be repeated");
    }
}

/// The image and generation the delivery asks for; `None` for anything that is not a
/// processing trigger (or not a valid event).
fn trigger_of(msg: &jetstream::Message) -> Option<Trigger> {
    Event::decode_checked(&msg.subject, &msg.payload)
        .ok()
        .as_ref()
        .and_then(Trigger::from_event)
}

/// The request that caused this job (an upload, a reprocess): its id goes on the job's log
/// lines and on the events the job appends.
fn request_id_of(msg: &jetstream::Message) -> String {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(gallery_schema::subjects::HEADER_REQUEST_ID))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

/// Runs `job`, sending a progress ack every `ack_wait / 3`. `None`: released on shutdown (the
/// delivery is nakked for another replica).
async fn with_progress_acks(
    msg: &jetstream::Message,
    job: impl Future<Output = Attempt>,
    ack_wait: Duration,
    release: &CancellationToken,
    span: &tracing::Span,
) -> Option<Attempt> {
    tokio::pin!(job);
    let mut progress = tokio::time::interval(ack_wait / 3);
    progress.tick().await;
    loop {
        tokio::select! {
            attempt = &mut job => return Some(attempt),
            _ = release.cancelled() => {
                // Shutting down: not a failure, not a crash; another replica takes it now.
                tracing::info!(parent: span, "released on shutdown");
                release_now(msg).await;
                return None;
            }
            _ = progress.tick() => {
                let _ = msg.ack_with(AckKind::Progress).await;
            }
        }
    }
}

/// When the trigger reached the log.
fn published_at(msg: &jetstream::Message) -> Option<chrono::DateTime<chrono::Utc>> {
    msg.info().ok().and_then(|i| {
        let nanos = i64::try_from(i.published.unix_timestamp_nanos()).ok()?;
        Some(chrono::DateTime::from_timestamp_nanos(nanos))
    })
}

/// How much of the failure budget is spent now ([`crate::plan::budget_elapsed`]).
fn budget_elapsed(attempt: &Attempt, published: Option<chrono::DateTime<chrono::Utc>>) -> Duration {
    crate::plan::budget_elapsed(attempt.first_started_at, published, chrono::Utc::now())
}

/// `gallery_jobs_total` by outcome, and, for a first generation done,
/// `gallery_upload_to_done_seconds`.
fn count_job(
    outcome: &JobOutcome,
    decision: &AckDecision,
    trigger: &Trigger,
    published: Option<chrono::DateTime<chrono::Utc>>,
) {
    let label = match (outcome, decision) {
        (JobOutcome::Completed, _) => "done",
        (_, AckDecision::FailAndTerm { .. }) => "failed",
        (_, AckDecision::Nak(_)) => "retry",
        (_, AckDecision::Ack) => "skipped",
    };
    metrics::counter!("gallery_jobs_total", "outcome" => label).increment(1);
    if matches!(outcome, JobOutcome::Completed)
        && trigger.generation == 1
        && let Some(at) = published
        && let Ok(took) = (chrono::Utc::now() - at).to_std()
    {
        // From the upload being recorded to the image being done (first generation only).
        metrics::histogram!("gallery_upload_to_done_seconds").record(took.as_secs_f64());
    }
}

/// Acknowledges as decided; a failure is recorded in the log before its delivery is terminated
/// (retried with backoff when it can't be).
async fn acknowledge(
    ctx: &JobContext,
    msg: &jetstream::Message,
    trigger: &Trigger,
    decision: AckDecision,
    delivered: i64,
    retry: &RetryPolicy,
    span: &tracing::Span,
) -> Result<(), async_nats::Error> {
    match decision {
        AckDecision::Ack => msg.ack().await,
        AckDecision::Nak(delay) => msg.ack_with(AckKind::Nak(Some(delay))).await,
        AckDecision::FailAndTerm {
            code,
            message,
            retryable,
        } => match job::record_failure(ctx, trigger, code, &message, retryable).await {
            Ok(()) => msg.ack_with(AckKind::Term).await,
            Err(err) => {
                tracing::warn!(parent: span, ?err, "could not record the failure; retrying");
                msg.ack_with(AckKind::Nak(Some(retry.backoff(delivered))))
                    .await
            }
        },
    }
}
