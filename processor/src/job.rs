//! One job: render the versions of one image for one generation, against the log and the
//! object store. Every append is guarded by the image's last sequence and deduplicated by its
//! message id, so a redelivered or duplicated job can't give a generation two outcomes.
//!
//! [`process`] reads as the job's steps: the history, `processing_started`, the original
//! ([`crate::storage`]), the render (admitted by [`crate::memory`], in a render worker or on a
//! blocking thread), the versions stored and recorded, `processed`.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use gallery_nats::{AppendError, EventLog, Guard};
use gallery_schema::event::Failure;
use gallery_schema::{ErrorCode, Event, EventBody, ImageId, ProjectId, VersionRendered};
use object_store::ObjectStore;
use tokio::sync::Semaphore;

use crate::memory::MemoryBudget;
use crate::plan::{ImageHistory, JobOutcome};
use crate::pool::{PoolError, WorkerPool};
use crate::render::{self, Limits, Rendered, RenderedVersion};
use crate::storage;

/// What a job needs. Cheap to clone.
#[derive(Clone)]
pub struct JobContext {
    pub log: EventLog,
    pub store: Arc<dyn ObjectStore>,
    pub limits: Limits,
    pub max_upload_bytes: u64,
    /// Bounds CPU-heavy renders to the number of cores, independently of I/O concurrency
    /// (renders in this process; the render worker pool has its own bound).
    pub cpu: Arc<Semaphore>,
    /// Render worker processes; `None`: render on this process's blocking threads (tests and
    /// benchmarks that run the stack in-process).
    pub workers: Option<Arc<WorkerPool>>,
    /// Render worker crashes of one generation after which it ends `processing_crashed`.
    pub crash_limit: u32,
    /// Renders are admitted by the memory their header says they need, as well as by cores.
    pub memory: Arc<MemoryBudget>,
    /// Store each version's content type with it (S3 serves it on presigned GETs; the local
    /// filesystem store can't keep attributes).
    pub typed_puts: bool,
}

/// The image and generation a delivery asks us to process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub project: ProjectId,
    pub image: ImageId,
    pub generation: u32,
}

impl Trigger {
    pub fn from_event(event: &Event) -> Option<Self> {
        let generation = match &event.body {
            EventBody::Uploaded(u) => u.generation,
            EventBody::ReprocessRequested { generation }
            | EventBody::RedriveRequested { generation, .. } => *generation,
            _ => return None,
        };
        Some(Self {
            project: event.project_id.clone(),
            image: event.image_id,
            generation,
        })
    }
}

/// How one attempt went, and when the generation's first attempt started (`None` when the log
/// could not be read or written: nothing is known, nothing can be recorded).
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub outcome: JobOutcome,
    pub first_started_at: Option<DateTime<Utc>>,
}

/// Runs the job; `delivered` is the delivery count (the attempt recorded in
/// `processing_started` is [`ImageHistory::attempt_of`] it).
pub async fn process(ctx: &JobContext, t: &Trigger, delivered: u32) -> Attempt {
    let mut first_started_at = None;
    let outcome = match process_inner(ctx, t, delivered, &mut first_started_at).await {
        Ok(outcome) | Err(outcome) => outcome,
    };
    Attempt {
        outcome,
        first_started_at,
    }
}

async fn process_inner(
    ctx: &JobContext,
    t: &Trigger,
    delivered: u32,
    first_started_at: &mut Option<DateTime<Utc>>,
) -> Result<JobOutcome, JobOutcome> {
    let h = history(ctx, t).await?;
    if h.settled(t.generation) {
        return Ok(JobOutcome::AlreadySettled);
    }
    *first_started_at = h.started_at(t.generation);
    let (key, etag) = recorded_upload(&h)?;
    let mut log = GuardedLog {
        log: &ctx.log,
        trigger: t,
        last_seq: h.last_seq,
    };
    let attempt = h.attempt_of(t.generation, delivered);
    if ImageHistory::records_attempt(attempt) {
        let started = EventBody::ProcessingStarted {
            attempt,
            generation: t.generation,
        };
        let at = log.append(started).await?;
        first_started_at.get_or_insert(at);
    }

    let (bytes, sha256) =
        storage::fetch_original(ctx.store.as_ref(), &key, &etag, ctx.max_upload_bytes).await?;
    let render_started = Instant::now();
    let _memory = ctx
        .memory
        .admit(render::budget::memory_needed(&bytes, ctx.limits))
        .await;
    let rendered = render_versions(ctx, &h, &mut log, bytes).await?;
    metrics::histogram!("gallery_render_duration_seconds")
        .record(render_started.elapsed().as_secs_f64());

    store_versions(ctx, t, &h, &mut log, &rendered.versions).await?;
    log.append(processed(t.generation, rendered, sha256))
        .await?;
    Ok(JobOutcome::Completed)
}

async fn history(ctx: &JobContext, t: &Trigger) -> Result<ImageHistory, JobOutcome> {
    let events = ctx
        .log
        .image_history(&t.project, &t.image)
        .await
        .map_err(|e| JobOutcome::transient(format!("reading history: {e}")))?;
    Ok(ImageHistory::from_events(&events))
}

/// The original's object key and ETag, as its upload recorded them.
fn recorded_upload(h: &ImageHistory) -> Result<(String, String), JobOutcome> {
    match (h.original_key.clone(), h.etag.clone()) {
        (Some(key), Some(etag)) => Ok((key, etag)),
        _ => Err(JobOutcome::permanent(
            ErrorCode::Internal,
            "no upload recorded for this image",
        )),
    }
}

/// The trigger image's log as one job writes it: each append is guarded by the sequence of the
/// one before (at first, the history's last).
struct GuardedLog<'a> {
    log: &'a EventLog,
    trigger: &'a Trigger,
    last_seq: u64,
}

impl GuardedLog<'_> {
    /// Appends `body` as the image's next event; returns when it happened.
    async fn append(&mut self, body: EventBody) -> Result<DateTime<Utc>, JobOutcome> {
        let event = Event::new(self.trigger.project.clone(), self.trigger.image, body);
        self.last_seq = self
            .log
            .append(&event, Guard::LastImageSeq(self.last_seq))
            .await
            .map_err(append_outcome)?
            .seq;
        Ok(event.at)
    }
}

fn append_outcome(err: AppendError) -> JobOutcome {
    match err {
        AppendError::Conflict => JobOutcome::Conflict,
        other => JobOutcome::transient(other.to_string()),
    }
}

/// Renders in a render worker when the processor has them, on a blocking thread otherwise.
async fn render_versions(
    ctx: &JobContext,
    h: &ImageHistory,
    log: &mut GuardedLog<'_>,
    bytes: bytes::Bytes,
) -> Result<Rendered, JobOutcome> {
    let Some(pool) = ctx.workers.as_ref() else {
        return render_blocking(ctx, bytes).await;
    };
    match pool.render(bytes, ctx.limits).await {
        Ok(Ok(rendered)) => Ok(rendered),
        Ok(Err(e)) => Err(JobOutcome::permanent(e.code, e.message)),
        Err(PoolError::TimedOut(deadline)) => Err(JobOutcome::permanent(
            ErrorCode::ProcessingTimeout,
            format!(
                "rendering took longer than {}s; the render was stopped",
                deadline.as_secs()
            ),
        )),
        Err(PoolError::Crashed(why)) => Err(record_crash(ctx, h, log, why).await),
        Err(PoolError::Unavailable(why)) => Err(JobOutcome::transient(format!(
            "starting a render worker: {why}"
        ))),
    }
}

/// The render crashed its render worker: appends `render_crashed`, then retries the job
/// (transient) until the crash limit, where it ends `processing_crashed`.
async fn record_crash(
    ctx: &JobContext,
    h: &ImageHistory,
    log: &mut GuardedLog<'_>,
    why: String,
) -> JobOutcome {
    let generation = log.trigger.generation;
    let crash = h.crashes(generation) + 1;
    let crashed = EventBody::RenderCrashed {
        generation,
        crash,
        message: why.clone(),
    };
    match log.append(crashed).await {
        Err(outcome) => outcome,
        Ok(_) if crash >= ctx.crash_limit => JobOutcome::permanent(
            ErrorCode::ProcessingCrashed,
            format!("the render crashed its worker {crash} times (last: {why})"),
        ),
        Ok(_) => JobOutcome::transient(format!(
            "the render worker crashed ({crash} of {}): {why}",
            ctx.crash_limit
        )),
    }
}

async fn render_blocking(ctx: &JobContext, bytes: bytes::Bytes) -> Result<Rendered, JobOutcome> {
    let _cpu = ctx
        .cpu
        .clone()
        .acquire_owned()
        .await
        .expect("semaphore never closed");
    let limits = ctx.limits;
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(|| render::render(&bytes, limits)))
        .await
    {
        Ok(Ok(rendered)) => Ok(rendered),
        Ok(Err(e)) => Err(JobOutcome::permanent(e.code, e.message)),
        // A decoder panic on a hostile file must cost that image, not the processor.
        Err(join) => Err(JobOutcome::permanent(
            ErrorCode::CorruptImage,
            format!("the decoder failed: {join}"),
        )),
    }
}

/// PUTs each version, then appends its `version_rendered` unless the history has it already.
async fn store_versions(
    ctx: &JobContext,
    t: &Trigger,
    h: &ImageHistory,
    log: &mut GuardedLog<'_>,
    versions: &[RenderedVersion],
) -> Result<(), JobOutcome> {
    for v in versions {
        metrics::counter!("gallery_versions_rendered_total", "version" => v.version.as_str())
            .increment(1);
        let key = storage::version_key(&t.project, &t.image, t.generation, v);
        storage::put_version(ctx.store.as_ref(), &key, v, ctx.typed_puts).await?;
        if h.rendered(t.generation, v.version) {
            continue;
        }
        let body = EventBody::VersionRendered(VersionRendered {
            version: v.version,
            key,
            width: v.size.width,
            height: v.size.height,
            bytes: v.data.len() as u64,
            content_type: v.content_type.to_owned(),
            generation: t.generation,
        });
        log.append(body).await?;
    }
    Ok(())
}

/// The generation's `processed`: the upright size, the ThumbHash and the original's SHA-256.
fn processed(generation: u32, rendered: Rendered, sha256: [u8; 32]) -> EventBody {
    EventBody::Processed {
        generation,
        width: rendered.upright.width,
        height: rendered.upright.height,
        thumbhash: rendered.thumbhash,
        sha256: Some(sha256),
        renditions_version: gallery_schema::RENDITIONS_VERSION,
    }
}

/// Appends `failed` for the trigger's generation unless it is settled already. Re-reads the
/// history for a fresh guard and retries a few times if the image keeps changing.
pub async fn record_failure(
    ctx: &JobContext,
    t: &Trigger,
    code: ErrorCode,
    message: &str,
    retryable: bool,
) -> Result<(), JobOutcome> {
    metrics::counter!("gallery_failures_total", "code" => code.as_str()).increment(1);
    for _ in 0..5 {
        let h = history(ctx, t).await?;
        if h.settled(t.generation) {
            return Ok(());
        }
        let failed = Event::new(
            t.project.clone(),
            t.image,
            EventBody::Failed(Failure {
                code,
                message: message.to_owned(),
                retryable,
                generation: t.generation,
            }),
        );
        match ctx
            .log
            .append(&failed, Guard::LastImageSeq(h.last_seq))
            .await
        {
            Ok(_) => return Ok(()),
            Err(AppendError::Conflict) => continue,
            Err(e) => return Err(JobOutcome::transient(e.to_string())),
        }
    }
    Err(JobOutcome::Conflict)
}
