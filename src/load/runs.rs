//! The modes of `gallery load` (see the module above): each drives jobs at the pace, collects
//! into a [`Tally`], and returns the [`Report`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Failure, Target};
use super::pace::{Limit, Pace, Window, drive};
use super::photos::{Photo, load_dir, unique};
use super::stats::{Errors, Latencies, Report, per_second, rates_between, upload_check_requests};
use super::{LoadArgs, Mode};

/// What the jobs of a run collect.
#[derive(Default)]
struct Tally {
    links: Latencies,
    lists: Latencies,
    upload_to_done: Latencies,
    event_to_client: Latencies,
    errors: Errors,
    last_done: Option<Instant>,
}

type Shared = Arc<Mutex<Tally>>;

/// What every mode works with.
#[derive(Clone, Copy)]
struct Run<'a> {
    args: &'a LoadArgs,
    target: &'a Target,
    projects: &'a [String],
    tally: &'a Shared,
    bar: &'a ProgressBar,
    pace: Pace,
    limit: Limit,
}

fn note(tally: &Shared, f: impl FnOnce(&mut Tally)) {
    f(&mut tally.lock().expect("tally lock"));
}

fn progress(limit: Limit) -> ProgressBar {
    let bar = match limit {
        Limit::Count(n) => ProgressBar::new(n),
        Limit::For(d) => ProgressBar::new(d.as_secs().max(1)),
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

pub async fn run(args: &LoadArgs) -> anyhow::Result<Report> {
    let pace = args.pace()?;
    let limit = args.limit();
    let connections = match pace {
        Pace::Closed { concurrency } => concurrency,
        Pace::Open { rate, .. } => rate.ceil() as usize,
    };
    let target = Target::new(&args.url, args.token.clone(), connections)?;
    let run_id = format!("{:06x}", rand::random::<u32>() & 0xFF_FFFF);
    let projects: Vec<String> = match &args.project {
        Some(p) => vec![p.clone()],
        None => (0..args.projects.max(1))
            .map(|k| format!("load-{run_id}-{k}"))
            .collect(),
    };
    let tally: Shared = Arc::default();
    let bar = progress(limit);
    let ticker = tick_by_time(&bar, limit);
    let run = Run {
        args,
        target: &target,
        projects: &projects,
        tally: &tally,
        bar: &bar,
        pace,
        limit,
    };
    let metrics_before = match &args.metrics {
        Some(url) => Some((upload_checks(&target, url).await?, Instant::now())),
        None => None,
    };
    let (mut report, window) = match args.mode {
        Mode::Flow => flow(&run).await?,
        Mode::Links | Mode::List => hammer(&run).await,
        Mode::Ws => fanout(&run).await?,
    };
    ticker.abort();
    bar.finish_and_clear();
    // Rates are over the time the jobs ran, not the set-up (photos read, sockets opened).
    let (start, elapsed) = (window.start, window.end - window.start);
    let t = std::mem::take(&mut *tally.lock().expect("tally lock"));
    report.elapsed_s = (elapsed.as_secs_f64() * 10.0).round() / 10.0;
    report.run = match &args.project {
        Some(p) => p.clone(),
        None => format!("load-{run_id}"),
    };
    tally_into(&mut report, t, args.mode, start, elapsed);
    if let (Some(url), Some((before, since))) = (&args.metrics, metrics_before) {
        let after = upload_checks(&target, url).await?;
        report.upload_check_s3_rps = Some(rates_between(&before, &after, since.elapsed()));
    }
    if args.cleanup {
        cleanup(&target, &projects, &mut report).await;
    }
    Ok(report)
}

/// What the run counted, as the report's rates and summaries (rates over `elapsed`, the time
/// the jobs ran from `start`).
fn tally_into(report: &mut Report, t: Tally, mode: Mode, start: Instant, elapsed: Duration) {
    if !t.links.is_empty() {
        report.link_rps = Some(per_second(t.links.len(), elapsed));
        report.link_ms = Some(t.links.summary());
    }
    if !t.lists.is_empty() {
        report.list_rps = Some(per_second(t.lists.len(), elapsed));
        report.list_ms = Some(t.lists.summary());
    }
    if mode == Mode::Flow {
        let done = t.upload_to_done.len();
        report.done = Some(done);
        report.upload_to_done_ms = Some(t.upload_to_done.summary());
        let until = t.last_done.map_or(elapsed, |at| at - start);
        report.photos_per_s = Some(per_second(done, until));
    }
    if mode == Mode::Ws {
        report.event_to_client_ms = Some(t.event_to_client.summary());
    }
    report.errors = t.errors;
}

/// `--cleanup`: deletes the run's projects, counting what went and what failed.
async fn cleanup(target: &Target, projects: &[String], report: &mut Report) {
    let mut deleted = 0;
    for project in projects {
        match target.delete_project(project).await {
            Ok(n) => deleted += n,
            Err(Failure(code)) => report.errors.add(&format!("cleanup_{code}")),
        }
    }
    report.cleaned_up = Some(deleted);
}

/// The api's S3 requests for upload checks so far, by who made them.
async fn upload_checks(
    target: &Target,
    url: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let text = target
        .http
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("reading metrics from {url}"))?
        .text()
        .await?;
    Ok(upload_check_requests(&text))
}

/// With a duration limit, the bar shows seconds.
fn tick_by_time(bar: &ProgressBar, limit: Limit) -> tokio::task::JoinHandle<()> {
    let bar = bar.clone();
    tokio::spawn(async move {
        if let Limit::For(_) = limit {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                bar.set_position(bar.elapsed().as_secs());
            }
        }
    })
}

fn count_job(bar: &ProgressBar, limit: Limit) {
    if let Limit::Count(_) = limit {
        bar.inc(1);
    }
}

/// How a photo ended, as its project's WebSocket said.
enum Outcome {
    Processed,
    Failed(String),
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Outcome>>>>;

async fn flow(run: &Run<'_>) -> anyhow::Result<(Report, Window)> {
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
    let (target, projects) = (target.clone(), projects.to_vec());
    let (tally_c, bar_c) = (tally.clone(), bar.clone());
    let (complete, timeout) = (!args.no_complete, args.timeout);
    let window = drive(pace, limit, move |i| {
        let (target, tally, bar) = (target.clone(), tally_c.clone(), bar_c.clone());
        let project = projects[i as usize % projects.len()].clone();
        let photo = photos[i as usize % photos.len()].clone();
        let waiters = waiters.clone();
        async move {
            let result = one_photo(
                &target, &project, &photo, i, complete, timeout, &waiters, &tally,
            )
            .await;
            if let Err(Failure(code)) = result {
                note(&tally, |t| t.errors.add(&code));
            }
            bar.set_message(progress_message(&tally));
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

fn progress_message(tally: &Shared) -> String {
    let t = tally.lock().expect("tally lock");
    format!(
        "links {} · done {} · errors {}",
        t.links.len(),
        t.upload_to_done.len(),
        t.errors.total()
    )
}

#[allow(clippy::too_many_arguments)]
async fn one_photo(
    target: &Target,
    project: &str,
    photo: &Photo,
    i: u64,
    complete: bool,
    timeout: Duration,
    waiters: &Waiters,
    tally: &Shared,
) -> Result<(), Failure> {
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
    if complete && let Err(e) = target.complete(&image_id).await {
        // The watcher records the upload anyway; the photo goes on.
        note(tally, |t| t.errors.add(&format!("complete_{}", e.0)));
    }
    match tokio::time::timeout(timeout, rx).await {
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

/// Reads a project's WebSocket and hands each photo's end to its waiter; reconnects with
/// `?since` (missing nothing) when the socket closes.
async fn watch(
    target: Target,
    project: String,
    mut socket: super::client::WsStream,
    waiters: Waiters,
) {
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

async fn hammer(run: &Run<'_>) -> (Report, Window) {
    let Run {
        args,
        target,
        projects,
        tally,
        bar,
        pace,
        limit,
    } = *run;
    let mode = args.mode;
    let (target, projects) = (target.clone(), projects.to_vec());
    let (tally_c, bar_c) = (tally.clone(), bar.clone());
    let window = drive(pace, limit, move |i| {
        let (target, tally, bar) = (target.clone(), tally_c.clone(), bar_c.clone());
        let project = projects[i as usize % projects.len()].clone();
        async move {
            let started = Instant::now();
            let result = if mode == Mode::Links {
                target.request_link(&project, "load.jpg").await.map(|_| ())
            } else {
                target.list(&project, 50).await
            };
            let took = started.elapsed();
            note(&tally, |t| match result {
                Ok(()) if mode == Mode::Links => t.links.record(took),
                Ok(()) => t.lists.record(took),
                Err(Failure(code)) => t.errors.add(&code),
            });
            count_job(&bar, limit);
        }
    })
    .await;
    let report = Report {
        mode: if mode == Mode::Links { "links" } else { "list" },
        ..Report::default()
    };
    (report, window)
}

/// ws mode: subscribers first, then link requests at the pace; every subscriber of a project
/// should see every `upload_requested` of it.
async fn fanout(run: &Run<'_>) -> anyhow::Result<(Report, Window)> {
    let Run {
        args,
        target,
        projects,
        tally,
        bar,
        pace,
        limit,
    } = *run;
    if args.project.is_some() {
        anyhow::bail!("ws mode makes its own projects: their only events are the run's");
    }
    let subscribers = args.subscribers.max(1);
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut readers = Vec::with_capacity(subscribers);
    // Open the sockets a few hundred at a time.
    let opened = futures::stream::iter(0..subscribers)
        .map(|s| {
            let project = projects[s % projects.len()].clone();
            let target = target.clone();
            async move { target.websocket(&project, None).await }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
    for socket in opened {
        let mut socket = socket?;
        let (tally, received, stop) = (tally.clone(), received.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => break,
                    msg = socket.next() => match msg {
                        Some(Ok(msg)) => msg,
                        _ => break,
                    },
                };
                let Message::Text(text) = msg else { continue };
                let now = chrono::Utc::now();
                let Ok(event) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                // The run's link requests are the events expected; nothing else counts.
                if event["type"] != "upload_requested" {
                    continue;
                }
                if let Some(at) = event["at"]
                    .as_str()
                    .and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok())
                {
                    let lag = (now - at.with_timezone(&chrono::Utc))
                        .to_std()
                        .unwrap_or_default();
                    latencies.record(lag);
                    received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            let _ = socket.close(None).await;
            note(&tally, |t| t.event_to_client.extend(latencies));
        }));
    }
    // Subscriber s listens to project s % M.
    let m = projects.len();
    let per_project = move |p: usize| subscribers.saturating_sub(p).div_ceil(m) as u64;
    let expected = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let window = {
        let (target, projects) = (target.clone(), projects.to_vec());
        let (tally, bar, expected) = (tally.clone(), bar.clone(), expected.clone());
        drive(pace, limit, move |i| {
            let (target, tally, bar, expected) =
                (target.clone(), tally.clone(), bar.clone(), expected.clone());
            let p = i as usize % projects.len();
            let project = projects[p].clone();
            let listeners = per_project(p);
            async move {
                let started = Instant::now();
                match target.request_link(&project, "load.jpg").await {
                    Ok(_) => {
                        expected.fetch_add(listeners, std::sync::atomic::Ordering::Relaxed);
                        note(&tally, |t| t.links.record(started.elapsed()));
                    }
                    Err(Failure(code)) => note(&tally, |t| t.errors.add(&code)),
                }
                count_job(&bar, limit);
            }
        })
        .await
    };
    // Let the last events arrive, then close the sockets (each reader reports on its way out).
    let expected = expected.load(std::sync::atomic::Ordering::Relaxed);
    let settle = Instant::now() + Duration::from_secs(10);
    while received.load(std::sync::atomic::Ordering::Relaxed) < expected && Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    for r in readers {
        let _ = r.await;
    }
    let got = received.load(std::sync::atomic::Ordering::Relaxed);
    let report = Report {
        mode: "ws",
        subscribers: Some(subscribers),
        messages_expected: Some(expected),
        messages_missed: Some(expected.saturating_sub(got)),
        ..Report::default()
    };
    Ok((report, window))
}
