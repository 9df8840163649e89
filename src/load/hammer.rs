//! links and list modes: `POST /images/` alone, or `GET /projects/{id}/images?limit=50` alone,
//! at the pace.

use tokio::time::Instant;

use super::Mode;
use super::client::Failure;
use super::jobs::{Run, count_job, note};
use super::pace::{Window, drive};
use super::stats::Report;

pub(super) async fn hammer(run: &Run<'_>) -> (Report, Window) {
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
