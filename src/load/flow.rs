//! flow mode: the sample flow per photo: a link, the upload with the link's form (byte-unique
//! bytes), `complete` (unless `--no-complete`), then the image's `processed` (or `failed`)
//! message on its project's WebSocket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Failure, Target, WsStream};
use super::jobs::{Run, Shared, count_job, note};
use super::pace::{Window, drive};
use super::photos::{Photo, load_dir, unique};
use super::stats::Report;

/// How a photo ended, as its project's WebSocket said.
enum Outcome {
    Processed,
    Failed(String),
}

/// The photos waiting for their end, by image id.
type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Outcome>>>>;

/// What every photo's job needs (each job has its own clone).
#[derive(Clone)]
struct Job {
    target: Target,
    waiters: Waiters,
    tally: Shared,
    complete: bool,
    timeout: Duration,
}

pub(super) async fn flow(run: &Run<'_>) -> anyhow::Result<(Report, Window)> {
    let Run {
        args,
        target,
        projects,
        tally,
        bar,
        pace,
        limit,
    } = *run;
    let dir = args
        .photos
        .as_deref()
        .context("flow mode needs --photos DIR")?;
    let photos: Arc<Vec<Photo>> = Arc::new(load_dir(dir)?);
    let waiters: Waiters = Arc::default();
    let watchers = watch_projects(target, projects, &waiters).await?;
    let job = Job {
        target: target.clone(),
        waiters,
        tally: tally.clone(),
        complete: !args.no_complete,
        timeout: args.timeout,
    };
    let (projects, bar) = (projects.to_vec(), bar.clone());
    let window = drive(pace, limit, move |i| {
        let (job, bar) = (job.clone(), bar.clone());
        let project = projects[i as usize % projects.len()].clone();
        let photo = photos[i as usize % photos.len()].clone();
        async move {
            if let Err(Failure(code)) = job.one_photo(&project, &photo, i).await {
                note(&job.tally, |t| t.errors.add(&code));
            }
            bar.set_message(progress_message(&job.tally));
            count_job(&bar, limit);
        }
    })
    .await;
    for w in watchers {
        w.abort();
    }
    let report = Report {
        mode: "flow",
        ..Report::default()
    };
    Ok((report, window))
}

/// A WebSocket on each project, read by a task of its own (see [`watch`]).
async fn watch_projects(
    target: &Target,
    projects: &[String],
    waiters: &Waiters,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut watchers = Vec::new();
    for project in projects {
        let socket = target.websocket(project, None).await?;
        watchers.push(tokio::spawn(watch(
            target.clone(),
            project.clone(),
            socket,
            waiters.clone(),
        )));
    }
    Ok(watchers)
}

fn progress_message(tally: &Shared) -> String {
    let t = tally.lock().expect("tally lock");
    format!(
        "links {} · done {} · errors {}",
        t.links.len(),
        t.upload_to_done.len(),
        t.errors.total()
    )
}

impl Job {
    /// Photo `i` through the sample flow in `project`, its times into the tally.
    async fn one_photo(&self, project: &str, photo: &Photo, i: u64) -> Result<(), Failure> {
        let (target, waiters, tally) = (&self.target, &self.waiters, &self.tally);
        let asked = Instant::now();
        let link = target.request_link(project, &photo.name).await?;
        note(tally, |t| t.links.record(asked.elapsed()));
        let image_id = link["image_id"].as_str().unwrap_or_default().to_owned();
        let (tx, rx) = oneshot::channel();
        waiters
            .lock()
            .expect("waiters lock")
            .insert(image_id.clone(), tx);
        let forget = || waiters.lock().expect("waiters lock").remove(&image_id);
        let bytes = unique(&photo.bytes, &format!("{project}-{i}-{image_id}"));
        if let Err(e) = target.upload(&link, bytes, &photo.name).await {
            forget();
            return Err(e);
        }
        // The clock starts at the upload's answer: in local mode processing starts right then.
        let uploaded = Instant::now();
        if self.complete
            && let Err(e) = target.complete(&image_id).await
        {
            // The watcher records the upload anyway; the photo goes on.
            note(tally, |t| t.errors.add(&format!("complete_{}", e.0)));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(Outcome::Processed)) => {
                let now = Instant::now();
                note(tally, |t| {
                    t.upload_to_done.record(now - uploaded);
                    t.last_done = Some(t.last_done.map_or(now, |l| l.max(now)));
                });
                Ok(())
            }
            Ok(Ok(Outcome::Failed(code))) => Err(Failure(code)),
            Ok(Err(_)) => Err(Failure("websocket".into())),
            Err(_) => {
                forget();
                Err(Failure("timeout".into()))
            }
        }
    }
}

/// Reads a project's WebSocket and hands each photo's end to its waiter; reconnects with
/// `?since` (missing nothing) when the socket closes.
async fn watch(target: Target, project: String, mut socket: WsStream, waiters: Waiters) {
    let mut last_seq = 0u64;
    loop {
        while let Some(Ok(msg)) = socket.next().await {
            let Message::Text(text) = msg else { continue };
            let Ok(event) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            last_seq = last_seq.max(event["seq"].as_u64().unwrap_or(0));
            let outcome = match event["type"].as_str() {
                Some("processed") => Outcome::Processed,
                Some("failed") => Outcome::Failed(
                    event["error"]["code"]
                        .as_str()
                        .unwrap_or("failed")
                        .to_owned(),
                ),
                _ => continue,
            };
            let id = event["image_id"].as_str().unwrap_or_default();
            if let Some(tx) = waiters.lock().expect("waiters lock").remove(id) {
                let _ = tx.send(outcome);
            }
        }
        // Closed (the api restarted, or this client fell behind): resume after the last event.
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(s) = target.websocket(&project, Some(last_seq)).await {
                socket = s;
                break;
            }
        }
    }
}
