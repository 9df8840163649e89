//! What a fault scenario ended with, judged by the log (not by the read model, which keeps
//! whatever the log may have lost): for every upload the client was told succeeded, its
//! `uploaded` in the log, exactly one outcome per generation, every `version_rendered` object
//! in storage at the size the event says, no version rendered twice; then `/ready` and the
//! read model against a fresh rebuild of the same log. Printed as one line and asserted on.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use object_store::ObjectStore;

use crate::procs::{Client, Sent};

mod stories;
use stories::{Story, stories};
pub use stories::{in_flight, project_events, redelivered, wait_for};

/// What a scenario ended with; printed as one line and asserted on.
#[derive(Debug, Default)]
pub struct Tally {
    /// Uploads the client was told succeeded.
    pub acknowledged: usize,
    /// Of those, how many have `uploaded` in the log.
    pub in_log: usize,
    /// Of those, how many have exactly one outcome for each generation.
    pub outcomes: usize,
    /// Acknowledged but not in the log, or a rendered version missing from storage (or of
    /// another size than its event says).
    pub lost: usize,
    /// Images whose generation ended `failed`.
    pub error: usize,
    /// A generation with two outcomes, a version recorded twice or into two objects, or an
    /// image in the project that no upload of ours created.
    pub duplicated: usize,
    /// A generation with no outcome when the scenario gave up waiting.
    pub stuck: usize,
    /// `/ready` answered 200 at the end.
    pub ready: bool,
    /// `Some(true)`: the read model equals a fresh rebuild of the log (checked by
    /// [`Tally::model_equals_log`] once the api is stopped).
    pub model_equals_log: Option<bool>,
    /// The log's last sequence of the project when the judge read it.
    pub last_seq: u64,
    /// How long after the log settled the api's read model reached it (`None`: not waited
    /// for, or it never did).
    pub model_caught_up: Option<Duration>,
    /// How the fault was shown to hit (`None`: it was not).
    pub hit: Option<String>,
    /// `uploaded` -> `processed`, from the log's own times.
    pub p99: Duration,
    pub errors: Vec<String>,
}

impl Tally {
    pub fn line(&self, scenario: &str) -> String {
        let yes = |b: bool| if b { "yes" } else { "NO" };
        format!(
            "{scenario}: hit {}, acknowledged {}, in log {}, outcomes {}, lost {}, error {}, duplicated {}, stuck {}, ready {}, model = log {} (caught up in {}), p99 upload->done {:.1}s",
            self.hit
                .as_ref()
                .map_or("NO".to_owned(), |h| format!("yes ({h})")),
            self.acknowledged,
            self.in_log,
            self.outcomes,
            self.lost,
            self.error,
            self.duplicated,
            self.stuck,
            yes(self.ready),
            self.model_equals_log.map_or("not checked", yes),
            self.model_caught_up
                .map_or("never".to_owned(), |d| format!("{:.1}s", d.as_secs_f64())),
            self.p99.as_secs_f64()
        )
    }

    /// Whether nothing went wrong and the fault hit.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.error == 0
            && self.duplicated == 0
            && self.stuck == 0
            && self.in_log == self.acknowledged
            && self.outcomes == self.acknowledged
            && self.ready
            && self.model_equals_log != Some(false)
            && self.model_caught_up.is_some()
            && self.hit.is_some()
    }

    pub fn print_and_check(&self, scenario: &str) {
        println!("{}", self.line(scenario));
        assert!(
            self.clean(),
            "{}; errors: {:?}",
            self.line(scenario),
            self.errors
        );
    }

    /// Waits (up to `limit`) until the api's read model has applied the log up to
    /// [`Tally::last_seq`] (the listing's `seq`), and notes how long that took.
    pub async fn wait_model(&mut self, client: &Client, project: &str, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            let seq = async {
                let url = format!("{}/projects/{project}/images?limit=1", client.base);
                let body: serde_json::Value =
                    client.http.get(url).send().await.ok()?.json().await.ok()?;
                body["seq"].as_u64()
            }
            .await;
            if seq.is_some_and(|s| s >= self.last_seq) {
                self.model_caught_up = Some(started.elapsed());
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.errors.push(format!(
            "the read model did not reach seq {} within {}s",
            self.last_seq,
            limit.as_secs()
        ));
    }

    /// Compares the read model in `data_dir` (its api stopped) with a rebuild of the log.
    pub async fn model_equals_log(
        &mut self,
        js: &async_nats::jetstream::Context,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<()> {
        let live = gallery_projector::Store::open(&data_dir.join("readmodel"))?.all()?;
        let fresh = tempfile::tempdir()?;
        let dir = fresh.path().join("readmodel");
        gallery_projector::rebuild(js, &dir).await?;
        let rebuilt = gallery_projector::Store::open(&dir)?.all()?;
        let equal = live == rebuilt;
        if !equal {
            let ids = |v: &[gallery_projector::Record]| -> BTreeSet<String> {
                v.iter().map(|r| r.image_id.to_string()).collect()
            };
            let (l, r) = (ids(&live), ids(&rebuilt));
            let differing = live
                .iter()
                .find(|a| rebuilt.iter().any(|b| b.image_id == a.image_id && b != *a))
                .map(|a| {
                    let b = rebuilt.iter().find(|b| b.image_id == a.image_id);
                    format!("live {a:?} vs rebuilt {b:?}")
                });
            self.errors.push(format!(
                "read model ({} records) differs from a rebuild ({} records): only live {:?}, only rebuilt {:?}, first differing: {}",
                live.len(),
                rebuilt.len(),
                l.difference(&r).collect::<Vec<_>>(),
                r.difference(&l).collect::<Vec<_>>(),
                differing.unwrap_or_default()
            ));
        }
        self.model_equals_log = Some(equal);
        Ok(())
    }
}

/// Everything a fault needs to be judged by.
pub struct Judged<'a> {
    pub client: &'a Client,
    pub js: &'a async_nats::jetstream::Context,
    pub store: &'a dyn ObjectStore,
    pub project: &'a str,
    pub sent: &'a [Sent],
    pub limit: Duration,
}

/// Waits (up to `limit`) until every acknowledged upload has an outcome for every generation
/// in the log, then judges what the log says against the client's acknowledgements and the
/// store's objects.
pub async fn settle(j: Judged<'_>) -> anyhow::Result<Tally> {
    let deadline = Instant::now() + j.limit;
    let events = loop {
        let events = project_events(j.js, j.project).await.unwrap_or_default();
        let stories = stories(&events);
        let settled = j
            .sent
            .iter()
            .all(|s| stories.get(&s.image_id).is_some_and(Story::settled));
        if settled || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let stories = stories(&events);
    let mut tally = Tally {
        acknowledged: j.sent.len(),
        last_seq: events.iter().map(|e| e.seq).max().unwrap_or(0),
        ..Tally::default()
    };
    let mut latencies = Vec::new();
    for s in j.sent {
        let Some(story) = stories.get(&s.image_id).filter(|st| st.uploaded) else {
            tally.lost += 1;
            tally
                .errors
                .push(format!("{}: acknowledged, not in the log", s.image_id));
            continue;
        };
        tally.in_log += 1;
        judge_image(&mut tally, j.store, &s.image_id, story, &mut latencies).await;
    }
    let ours: BTreeSet<&str> = j.sent.iter().map(|s| s.image_id.as_str()).collect();
    for id in stories.keys().filter(|id| !ours.contains(id.as_str())) {
        tally.duplicated += 1;
        tally.errors.push(format!("{id}: in the log, not ours"));
    }
    tally.ready = j
        .client
        .http
        .get(format!("{}/ready", j.client.base))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200);
    latencies.sort();
    if !latencies.is_empty() {
        let idx = ((latencies.len() as f64) * 0.99).ceil() as usize - 1;
        tally.p99 = latencies[idx.min(latencies.len() - 1)];
    }
    Ok(tally)
}

/// One acknowledged image against its story and the store.
async fn judge_image(
    tally: &mut Tally,
    store: &dyn ObjectStore,
    id: &str,
    story: &Story,
    latencies: &mut Vec<Duration>,
) {
    let mut one_each = true;
    for g in &story.generations {
        let outcomes = story.outcomes.get(g).map_or(&[][..], Vec::as_slice);
        match outcomes {
            [] => {
                one_each = false;
                tally.stuck += 1;
                tally
                    .errors
                    .push(format!("{id}: generation {g} has no outcome"));
            }
            [Err(why)] => {
                tally.error += 1;
                tally
                    .errors
                    .push(format!("{id}: generation {g} failed: {why}"));
            }
            [Ok(at)] => {
                if let Some(up) = story.uploaded_at
                    && let Ok(took) = (*at - up).to_std()
                {
                    latencies.push(took);
                }
            }
            more => {
                one_each = false;
                tally.duplicated += 1;
                tally
                    .errors
                    .push(format!("{id}: generation {g} has {} outcomes", more.len()));
            }
        }
    }
    if one_each {
        tally.outcomes += 1;
    }
    for ((g, version), recorded) in &story.versions {
        if recorded.len() > 1 {
            tally.duplicated += 1;
            tally.errors.push(format!(
                "{id}: {version} of generation {g} recorded {} times: {recorded:?}",
                recorded.len()
            ));
        }
        for (key, bytes) in recorded {
            let path = object_store::path::Path::from(key.as_str());
            match store.head(&path).await {
                Ok(meta) if meta.size == *bytes => {}
                Ok(meta) => {
                    tally.lost += 1;
                    tally.errors.push(format!(
                        "{id}: {key} has {} bytes, its event says {bytes}",
                        meta.size
                    ));
                }
                Err(e) => {
                    tally.lost += 1;
                    tally
                        .errors
                        .push(format!("{id}: {key} is not in storage: {e}"));
                }
            }
        }
    }
}
