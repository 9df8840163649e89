//! One run of `gallery load`: the set-up, the mode (each drives jobs at the pace and collects
//! into a [`Tally`]), then the [`Report`] of what it measured, and `--cleanup`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use super::client::{Failure, Target};
use super::fanout::fanout;
use super::flow::flow;
use super::hammer::hammer;
use super::jobs::{Run, Shared, Tally};
use super::pace::{Limit, Pace};
use super::stats::{Report, per_second, rates_between, upload_check_requests};
use super::{LoadArgs, Mode};

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
    refused_hint(&report, args.cleanup);
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

/// Requests refused for the token (401, 403) are counted like any error; the operator also
/// gets the fix on stderr.
fn refused_hint(report: &Report, cleanup: bool) {
    let refused: u64 = [
        "unauthorized",
        "forbidden",
        "cleanup_unauthorized",
        "cleanup_forbidden",
    ]
    .iter()
    .filter_map(|code| report.errors.0.get(*code))
    .sum();
    if refused > 0 {
        let why = format!("{refused} requests were refused for the token (401/403)");
        eprintln!("{}", crate::load::client::token_hint(cleanup, &why));
    }
}
