//! What the log says of each image of a project (its story), and the waits and counts the
//! fault scenarios take from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use gallery_nats::read::StoredEvent;
use gallery_schema::EventBody;

/// One image's story in the log.
#[derive(Debug, Default)]
pub(super) struct Story {
    pub(super) uploaded: bool,
    pub(super) uploaded_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Generations asked for (the upload's, reprocesses).
    pub(super) generations: BTreeSet<u32>,
    /// Outcomes per generation: `Ok(processed at)` or `Err(failure code)`.
    pub(super) outcomes: BTreeMap<u32, Vec<Result<chrono::DateTime<chrono::Utc>, String>>>,
    /// `(generation, version)` -> the keys and sizes its `version_rendered` events named.
    pub(super) versions: BTreeMap<(u32, String), Vec<(String, u64)>>,
    /// The highest `processing_started` attempt per generation.
    pub(super) attempts: BTreeMap<u32, u32>,
}

impl Story {
    pub(super) fn settled(&self) -> bool {
        self.uploaded
            && self
                .generations
                .iter()
                .all(|g| self.outcomes.get(g).is_some_and(|o| !o.is_empty()))
    }
}

pub(super) fn stories(events: &[StoredEvent]) -> HashMap<String, Story> {
    let mut out: HashMap<String, Story> = HashMap::new();
    for e in events {
        let story = out.entry(e.event.image_id.to_string()).or_default();
        match &e.event.body {
            EventBody::Uploaded(u) => {
                story.uploaded = true;
                story.uploaded_at = Some(e.event.at);
                story.generations.insert(u.generation);
            }
            EventBody::ReprocessRequested { generation } => {
                story.generations.insert(*generation);
            }
            EventBody::ProcessingStarted {
                attempt,
                generation,
            } => {
                let a = story.attempts.entry(*generation).or_insert(0);
                *a = (*a).max(*attempt);
            }
            EventBody::VersionRendered(v) => story
                .versions
                .entry((v.generation, v.version.as_str().to_owned()))
                .or_default()
                .push((v.key.clone(), v.bytes)),
            EventBody::Processed { generation, .. } => story
                .outcomes
                .entry(*generation)
                .or_default()
                .push(Ok(e.event.at)),
            EventBody::Failed(f) => story
                .outcomes
                .entry(f.generation)
                .or_default()
                .push(Err(format!("{}: {}", f.code.as_str(), f.message))),
            _ => {}
        }
    }
    out
}

/// The project's events, from the log.
pub async fn project_events(
    js: &async_nats::jetstream::Context,
    project: &str,
) -> anyhow::Result<Vec<StoredEvent>> {
    let project = gallery_schema::ProjectId::parse(project)?;
    let filter = gallery_schema::subjects::project_filter(&project);
    gallery_nats::read::read_until_now(js, filter, 1, Duration::from_secs(10))
        .await
        .map_err(Into::into)
}

/// The highest `processing_started` attempt of each image of `project` that has one >= 2:
/// the redeliveries a fault caused.
pub async fn redelivered(
    js: &async_nats::jetstream::Context,
    project: &str,
) -> anyhow::Result<BTreeMap<String, u32>> {
    Ok(stories(&project_events(js, project).await?)
        .into_iter()
        .filter_map(|(id, s)| {
            let top = s.attempts.values().copied().max()?;
            (top >= 2).then_some((id, top))
        })
        .collect())
}

/// How many of `project`'s images are in flight (a `processing_started` for a generation with
/// no outcome yet) and how many are unsettled (uploaded, with a generation that has no outcome).
pub async fn in_flight(
    js: &async_nats::jetstream::Context,
    project: &str,
) -> anyhow::Result<(usize, usize)> {
    let stories = stories(&project_events(js, project).await?);
    let open = |s: &Story, g: &u32| s.outcomes.get(g).is_none_or(Vec::is_empty);
    let flying = stories
        .values()
        .filter(|s| s.attempts.keys().any(|g| open(s, g)))
        .count();
    let unsettled = stories
        .values()
        .filter(|s| s.uploaded && s.generations.iter().any(|g| open(s, g)))
        .count();
    Ok((flying, unsettled))
}

/// Waits (up to `limit`) until `ready(in flight, unsettled)` holds for `project`; whether it did.
pub async fn wait_for(
    js: &async_nats::jetstream::Context,
    project: &str,
    limit: Duration,
    ready: impl Fn(usize, usize) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok((flying, unsettled)) = in_flight(js, project).await
            && ready(flying, unsettled)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
