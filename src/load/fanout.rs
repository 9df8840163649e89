//! ws mode: subscribers first, then link requests at the pace; every subscriber of a project
//! should see every `upload_requested` of it, and each one's lag from the api's `at` counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::client::{Failure, WsStream};
use super::jobs::{Run, Shared, count_job, note};
use super::pace::{Window, drive};
use super::stats::{Latencies, Report};

pub(super) async fn fanout(run: &Run<'_>) -> anyhow::Result<(Report, Window)> {
    if run.args.project.is_some() {
        anyhow::bail!("ws mode makes its own projects: their only events are the run's");
    }
    let subscribers = run.args.subscribers.max(1);
    let received = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let readers = subscribe(run, subscribers, &received, &stop).await?;
    let (window, expected) = ask_links(run, subscribers).await;
    // Let the last events arrive, then close the sockets (each reader reports on its way out).
    settle(&received, expected).await;
    stop.cancel();
    for r in readers {
        let _ = r.await;
    }
    let got = received.load(Ordering::Relaxed);
    let report = Report {
        mode: "ws",
        subscribers: Some(subscribers),
        messages_expected: Some(expected),
        messages_missed: Some(expected.saturating_sub(got)),
        ..Report::default()
    };
    Ok((report, window))
}

/// Opens the subscribers' sockets a few hundred at a time (subscriber s on project s % M),
/// each read by a task of its own (see [`read_events`]).
async fn subscribe(
    run: &Run<'_>,
    subscribers: usize,
    received: &Arc<AtomicU64>,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let (target, projects) = (run.target, run.projects);
    let opened = futures::stream::iter(0..subscribers)
        .map(|s| {
            let project = projects[s % projects.len()].clone();
            let target = target.clone();
            async move { target.websocket(&project, None).await }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
    let mut readers = Vec::with_capacity(subscribers);
    for socket in opened {
        readers.push(tokio::spawn(read_events(
            socket?,
            run.tally.clone(),
            received.clone(),
            stop.clone(),
        )));
    }
    Ok(readers)
}

/// One subscriber: the lag of every `upload_requested` it reads, until `stop` or the socket
/// closes; then its lags into the tally.
async fn read_events(
    mut socket: WsStream,
    tally: Shared,
    received: Arc<AtomicU64>,
    stop: CancellationToken,
) {
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
        if let Some(lag) = upload_requested_lag(&text, Utc::now()) {
            latencies.record(lag);
            received.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = socket.close(None).await;
    note(&tally, |t| t.event_to_client.extend(latencies));
}

/// The time from an `upload_requested` message's `at` to `now`; `None` for any other message
/// (the run's link requests are the events expected; nothing else counts).
fn upload_requested_lag(text: &str, now: DateTime<Utc>) -> Option<Duration> {
    let event: Value = serde_json::from_str(text).ok()?;
    if event["type"] != "upload_requested" {
        return None;
    }
    let at = DateTime::parse_from_rfc3339(event["at"].as_str()?).ok()?;
    Some((now - at.with_timezone(&Utc)).to_std().unwrap_or_default())
}

/// Link requests at the pace, round the projects; the window they ran in, and the messages
/// expected: each link answered, once for every subscriber of its project.
async fn ask_links(run: &Run<'_>, subscribers: usize) -> (Window, u64) {
    let Run {
        target,
        projects,
        tally,
        bar,
        pace,
        limit,
        ..
    } = *run;
    // Subscriber s listens to project s % M.
    let m = projects.len();
    let per_project = move |p: usize| subscribers.saturating_sub(p).div_ceil(m) as u64;
    let expected = Arc::new(AtomicU64::new(0));
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
                        expected.fetch_add(listeners, Ordering::Relaxed);
                        note(&tally, |t| t.links.record(started.elapsed()));
                    }
                    Err(Failure(code)) => note(&tally, |t| t.errors.add(&code)),
                }
                count_job(&bar, limit);
            }
        })
        .await
    };
    (window, expected.load(Ordering::Relaxed))
}

/// Waits, up to 10 s, until the subscribers have received the messages expected.
async fn settle(received: &AtomicU64, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_upload_requested_messages_have_a_lag() {
        let now = DateTime::parse_from_rfc3339("2024-05-01T12:00:01.250Z")
            .unwrap()
            .with_timezone(&Utc);
        let msg = |kind: &str| format!(r#"{{"type":"{kind}","at":"2024-05-01T12:00:00Z"}}"#);
        assert_eq!(
            upload_requested_lag(&msg("upload_requested"), now),
            Some(Duration::from_millis(1250))
        );
        assert_eq!(upload_requested_lag(&msg("uploaded"), now), None);
        assert_eq!(upload_requested_lag("not json", now), None);
        let no_at = r#"{"type":"upload_requested"}"#;
        assert_eq!(upload_requested_lag(no_at, now), None);
        // A clock behind the api's counts as no lag, not as a negative one.
        let early = DateTime::parse_from_rfc3339("2024-05-01T11:59:59Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            upload_requested_lag(&msg("upload_requested"), early),
            Some(Duration::ZERO)
        );
    }
}
