//! One job: render the versions of one image for one generation, against the log and the
//! object store. Every append is guarded by the image's last sequence and deduplicated by its
//! message id, so a redelivered or duplicated job can't give a generation two outcomes.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;

use gallery_nats::{AppendError, EventLog, Guard};
use gallery_schema::event::Failure;
use gallery_schema::{ErrorCode, Event, EventBody, ImageId, ProjectId, VersionRendered};
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, PutOptions, path::Path as ObjectPath,
};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::plan::{ImageHistory, JobOutcome};
use crate::pool::{PoolError, WorkerPool};
use crate::render::{self, Limits, Rendered};

/// What a job needs. Cheap to clone.
#[derive(Clone)]
pub struct JobContext {
    pub log: EventLog,
    pub store: Arc<dyn ObjectStore>,
    pub limits: Limits,
    pub max_upload_bytes: u64,
    /// Bounds CPU-heavy renders to the number of cores, independently of I/O concurrency
    /// (renders in this process; the worker pool has its own bound).
    pub cpu: Arc<Semaphore>,
    /// Render worker processes; `None`: render on this process's blocking threads (tests and
    /// benchmarks that run the stack in-process).
    pub workers: Option<Arc<WorkerPool>>,
    /// Worker crashes of one generation after which it ends `processing_crashed`.
    pub crash_limit: u32,
    /// Renders are admitted by the memory their header says they need, as well as by cores.
    pub memory: Arc<MemoryBudget>,
    /// Store each version's content type with it (S3 serves it on presigned GETs; the local
    /// filesystem store can't keep attributes).
    pub typed_puts: bool,
}

/// The memory renders may use at once (`GALLERY_RENDER_MEMORY_BUDGET`), in MiB permits. A
/// render larger than the whole budget still runs, alone.
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_mib: u32,
}

impl MemoryBudget {
    pub fn new(bytes: u64) -> Self {
        let total_mib = u32::try_from((bytes >> 20).max(1)).unwrap_or(u32::MAX >> 3);
        Self {
            permits: Arc::new(Semaphore::new(total_mib as usize)),
            total_mib,
        }
    }

    /// Waits until `bytes` fit in what other renders leave. Renders are admitted in arrival
    /// order, so a large one is never starved by a stream of small ones.
    pub async fn admit(&self, bytes: u64) -> tokio::sync::OwnedSemaphorePermit {
        let mib = u32::try_from(bytes.div_ceil(1 << 20))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_mib);
        self.permits
            .clone()
            .acquire_many_owned(mib)
            .await
            .expect("never closed")
    }

    pub fn available_mib(&self) -> usize {
        self.permits.available_permits()
    }
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

pub fn version_key(
    project: &ProjectId,
    image: &ImageId,
    generation: u32,
    rendered: &render::RenderedVersion,
) -> String {
    gallery_schema::keys::version_key(
        project,
        image,
        generation,
        rendered.version,
        rendered.extension,
    )
}

async fn history(ctx: &JobContext, t: &Trigger) -> Result<ImageHistory, JobOutcome> {
    let events = ctx
        .log
        .image_history(&t.project, &t.image)
        .await
        .map_err(|e| JobOutcome::Transient {
            message: format!("reading history: {e}"),
        })?;
    Ok(ImageHistory::from_events(&events))
}

fn append_outcome(err: AppendError) -> JobOutcome {
    match err {
        AppendError::Conflict => JobOutcome::Conflict,
        other => JobOutcome::Transient {
            message: other.to_string(),
        },
    }
}

fn permanent(code: ErrorCode, message: impl Into<String>) -> JobOutcome {
    JobOutcome::Permanent {
        code,
        message: message.into(),
    }
}

/// How one attempt went, and when the generation's first attempt started (`None` when the log
/// could not be read or written: nothing is known, nothing can be recorded).
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub outcome: JobOutcome,
    pub first_started_at: Option<DateTime<Utc>>,
}

/// Runs the job; `attempt` is the delivery count, recorded in `processing_started`.
pub async fn process(ctx: &JobContext, t: &Trigger, attempt: u32) -> Attempt {
    let mut first_started_at = None;
    let outcome = match process_inner(ctx, t, attempt, &mut first_started_at).await {
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
    attempt: u32,
    first_started_at: &mut Option<DateTime<Utc>>,
) -> Result<JobOutcome, JobOutcome> {
    let h = history(ctx, t).await?;
    if h.settled(t.generation) {
        return Ok(JobOutcome::AlreadySettled);
    }
    *first_started_at = h.started_at(t.generation);
    let (Some(key), Some(etag)) = (h.original_key.clone(), h.etag.clone()) else {
        return Err(permanent(
            ErrorCode::Internal,
            "no upload recorded for this image",
        ));
    };
    let event = |body| Event::new(t.project.clone(), t.image, body);
    let mut last = h.last_seq;
    if !h.started(t.generation) {
        let started = event(EventBody::ProcessingStarted {
            attempt,
            generation: t.generation,
        });
        last = ctx
            .log
            .append(&started, Guard::LastImageSeq(last))
            .await
            .map_err(append_outcome)?
            .seq;
        *first_started_at = Some(started.at);
    }

    let (bytes, sha256) = fetch_original(ctx, &key, &etag).await?;
    let render_started = std::time::Instant::now();
    let _memory = ctx
        .memory
        .admit(render::budget::memory_needed(&bytes, ctx.limits))
        .await;
    let rendered = match ctx.workers.as_ref() {
        None => render_blocking(ctx, bytes).await?,
        Some(pool) => match pool.render(bytes, ctx.limits).await {
            Ok(Ok(rendered)) => rendered,
            Ok(Err(e)) => return Err(permanent(e.code, e.message)),
            Err(PoolError::TimedOut(deadline)) => {
                return Err(permanent(
                    ErrorCode::ProcessingTimeout,
                    format!(
                        "rendering took longer than {}s; the render was stopped",
                        deadline.as_secs()
                    ),
                ));
            }
            Err(PoolError::Crashed(why)) => {
                let crash = h.crashes(t.generation) + 1;
                let crashed = EventBody::RenderCrashed {
                    generation: t.generation,
                    crash,
                    message: why.clone(),
                };
                ctx.log
                    .append(&event(crashed), Guard::LastImageSeq(last))
                    .await
                    .map_err(append_outcome)?;
                if crash >= ctx.crash_limit {
                    return Err(permanent(
                        ErrorCode::ProcessingCrashed,
                        format!("the render crashed its worker {crash} times (last: {why})"),
                    ));
                }
                return Err(JobOutcome::Transient {
                    message: format!(
                        "the render worker crashed ({crash} of {}): {why}",
                        ctx.crash_limit
                    ),
                });
            }
            Err(PoolError::Unavailable(why)) => {
                return Err(JobOutcome::Transient {
                    message: format!("starting a render worker: {why}"),
                });
            }
        },
    };

    metrics::histogram!("gallery_render_duration_seconds")
        .record(render_started.elapsed().as_secs_f64());
    for v in &rendered.versions {
        metrics::counter!("gallery_versions_rendered_total", "version" => v.version.as_str())
            .increment(1);
        let vkey = version_key(&t.project, &t.image, t.generation, v);
        // Deterministic keys: a retry overwrites with the same content.
        let mut options = PutOptions::default();
        if ctx.typed_puts {
            options.attributes = Attributes::from_iter([(Attribute::ContentType, v.content_type)]);
        }
        ctx.store
            .put_opts(
                &ObjectPath::from(vkey.as_str()),
                v.data.clone().into(),
                options,
            )
            .await
            .map_err(|e| JobOutcome::Transient {
                message: format!("storing {vkey}: {e}"),
            })?;
        if h.rendered(t.generation, v.version) {
            continue;
        }
        let body = EventBody::VersionRendered(VersionRendered {
            version: v.version,
            key: vkey,
            width: v.size.width,
            height: v.size.height,
            bytes: v.data.len() as u64,
            content_type: v.content_type.to_owned(),
            generation: t.generation,
        });
        last = ctx
            .log
            .append(&event(body), Guard::LastImageSeq(last))
            .await
            .map_err(append_outcome)?
            .seq;
    }
    let done = EventBody::Processed {
        generation: t.generation,
        width: rendered.upright.width,
        height: rendered.upright.height,
        thumbhash: rendered.thumbhash,
        sha256: Some(sha256),
        renditions_version: gallery_schema::RENDITIONS_VERSION,
    };
    ctx.log
        .append(&event(done), Guard::LastImageSeq(last))
        .await
        .map_err(append_outcome)?;
    Ok(JobOutcome::Completed)
}

/// The original's bytes and their SHA-256, hashed chunk by chunk as they arrive (no second
/// pass over a 50 MB file).
async fn fetch_original(
    ctx: &JobContext,
    key: &str,
    etag: &str,
) -> Result<(bytes::Bytes, [u8; 32]), JobOutcome> {
    let path = ObjectPath::from(key);
    // A store that gave no ETag at upload can't be asked for one now.
    let if_match = (!etag.is_empty()).then(|| etag.to_owned());
    let options = GetOptions {
        if_match,
        ..Default::default()
    };
    let result = match ctx.store.get_opts(&path, options).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(permanent(
                ErrorCode::Internal,
                "the original is missing from storage",
            ));
        }
        Err(object_store::Error::Precondition { .. }) => {
            return Err(permanent(
                ErrorCode::Conflict,
                "the original was replaced after its upload was recorded",
            ));
        }
        Err(e) => {
            return Err(JobOutcome::Transient {
                message: format!("reading original: {e}"),
            });
        }
    };
    if result.meta.size > ctx.max_upload_bytes {
        return Err(permanent(
            ErrorCode::UploadTooLarge,
            format!(
                "{} bytes is over the limit of {}",
                result.meta.size, ctx.max_upload_bytes
            ),
        ));
    }
    let mut body = bytes::BytesMut::with_capacity(result.meta.size as usize);
    let mut hasher = Sha256::new();
    let mut chunks = result.into_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| JobOutcome::Transient {
            message: format!("reading original: {e}"),
        })?;
        if (body.len() + chunk.len()) as u64 > ctx.max_upload_bytes {
            // Longer than its listed size said: never past the limit.
            return Err(permanent(
                ErrorCode::UploadTooLarge,
                format!("more than the limit of {} bytes", ctx.max_upload_bytes),
            ));
        }
        hasher.update(&chunk);
        body.extend_from_slice(&chunk);
    }
    Ok((body.freeze(), hasher.finalize().into()))
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
        Ok(Err(e)) => Err(permanent(e.code, e.message)),
        // A decoder panic on a hostile file must cost that image, not the processor.
        Err(join) => Err(permanent(
            ErrorCode::CorruptImage,
            format!("the decoder failed: {join}"),
        )),
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
            Err(e) => {
                return Err(JobOutcome::Transient {
                    message: e.to_string(),
                });
            }
        }
    }
    Err(JobOutcome::Conflict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn renders_wait_for_memory_and_an_oversized_one_runs_alone() {
        let budget = Arc::new(MemoryBudget::new(4 << 30));
        let big = budget.admit(3 << 30).await;
        // 2 GiB more does not fit next to 3 GiB: it waits until the first render is done.
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.admit(2 << 30).await })
        };
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        drop(big);
        let second = waiting.await.unwrap();
        // Room is handed out in arrival order (a large render is not starved by small ones);
        // a small one fits beside the second.
        let small = budget.admit(100 << 20).await;
        drop((small, second));
        assert_eq!(budget.available_mib(), 4096);
        // Larger than the whole budget: admitted when nothing else runs, taking all of it.
        let huge = budget.admit(10 << 30).await;
        assert_eq!(budget.available_mib(), 0);
        drop(huge);
        assert_eq!(budget.available_mib(), 4096);
    }
}
