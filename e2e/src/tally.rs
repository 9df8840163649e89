//! What a fault scenario ended with: every sent photo's fate from the listing (lost, error,
//! stuck, done and when), duplicates from the listing and the log, printed as one line and
//! asserted on.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use crate::procs::{Client, Sent};

/// What a scenario ended with; printed as one line and asserted on.
#[derive(Debug, Default)]
pub struct Tally {
    pub uploads: usize,
    pub faults: usize,
    pub lost: usize,
    pub error: usize,
    pub duplicated: usize,
    pub stuck: usize,
    pub p99: Duration,
    pub errors: Vec<String>,
}

impl Tally {
    pub fn line(&self, scenario: &str) -> String {
        format!(
            "{scenario}: {} uploads, {} faults, lost {}, error {}, duplicated {}, stuck {}, p99 upload->done {:.1}s",
            self.uploads,
            self.faults,
            self.lost,
            self.error,
            self.duplicated,
            self.stuck,
            self.p99.as_secs_f64()
        )
    }

    pub fn print_and_check(&self, scenario: &str) {
        println!("{}", self.line(scenario));
        assert!(
            self.lost == 0 && self.error == 0 && self.duplicated == 0 && self.stuck == 0,
            "{}; errors: {:?}",
            self.line(scenario),
            self.errors
        );
    }
}

/// Polls the listing until every sent image is `done` or `error` (or `limit` passes), noting
/// when each reached `done`; then counts lost, error, stuck and duplicated images. Duplicates
/// are counted from the log too: any generation of an image with more than one outcome, and
/// images in the project that no upload of ours created.
pub async fn settle(
    client: &Client,
    js: &async_nats::jetstream::Context,
    project: &str,
    sent: &[Sent],
    faults: usize,
    limit: Duration,
) -> anyhow::Result<Tally> {
    let deadline = Instant::now() + limit;
    let mut done_at: HashMap<String, Instant> = HashMap::new();
    let mut last: Vec<Value> = Vec::new();
    loop {
        if let Ok(list) = client.listing(project).await {
            for rec in &list {
                if rec["state"] == "done" {
                    let id = rec["image_id"].as_str().unwrap_or_default().to_owned();
                    done_at.entry(id).or_insert_with(Instant::now);
                }
            }
            last = list;
        }
        let states: HashMap<&str, &str> = last
            .iter()
            .map(|r| {
                (
                    r["image_id"].as_str().unwrap_or_default(),
                    r["state"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        let settled = sent.iter().all(|s| {
            matches!(
                states.get(s.image_id.as_str()),
                Some(&"done") | Some(&"error")
            )
        });
        if settled || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let by_id: HashMap<&str, &Value> = last
        .iter()
        .map(|r| (r["image_id"].as_str().unwrap_or_default(), r))
        .collect();
    let mut tally = Tally {
        uploads: sent.len(),
        faults,
        ..Tally::default()
    };
    let mut latencies = Vec::new();
    for s in sent {
        match by_id.get(s.image_id.as_str()) {
            None => tally.lost += 1,
            Some(rec) if rec["state"] == "error" => {
                tally.error += 1;
                tally
                    .errors
                    .push(format!("{}: {}", s.image_id, rec["error"]));
            }
            Some(rec) if rec["state"] != "done" => {
                tally.stuck += 1;
                tally
                    .errors
                    .push(format!("{} stuck in {}", s.image_id, rec["state"]));
            }
            Some(_) => {
                if let Some(at) = done_at.get(&s.image_id) {
                    latencies.push(at.saturating_duration_since(s.uploaded_at));
                }
            }
        }
    }
    let ours: std::collections::HashSet<&str> = sent.iter().map(|s| s.image_id.as_str()).collect();
    tally.duplicated += last
        .iter()
        .filter(|r| !ours.contains(r["image_id"].as_str().unwrap_or_default()))
        .count();
    tally.duplicated += outcomes_per_generation(js, project)
        .await?
        .values()
        .filter(|n| **n > 1)
        .count();
    latencies.sort();
    if !latencies.is_empty() {
        let idx = ((latencies.len() as f64) * 0.99).ceil() as usize - 1;
        tally.p99 = latencies[idx.min(latencies.len() - 1)];
    }
    Ok(tally)
}

/// `(image, generation)` → how many `processed`/`failed` events the log holds for it.
pub async fn outcomes_per_generation(
    js: &async_nats::jetstream::Context,
    project: &str,
) -> anyhow::Result<BTreeMap<(String, u32), usize>> {
    let project = gallery_schema::ProjectId::parse(project)?;
    let filter = gallery_schema::subjects::project_filter(&project);
    let mut events = Box::pin(gallery_nats::read::until_now(js, filter, 1).await?);
    let mut out = BTreeMap::new();
    while let Some(e) = events.next().await {
        let e = e?;
        if matches!(
            e.event.body,
            gallery_schema::EventBody::Processed { .. } | gallery_schema::EventBody::Failed(_)
        ) {
            *out.entry((e.event.image_id.to_string(), e.event.body.generation()))
                .or_insert(0) += 1;
        }
    }
    Ok(out)
}
