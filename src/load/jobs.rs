//! What the modes of `gallery load` share: the run's context ([`Run`]) and the [`Tally`] their
//! jobs collect into.

use std::sync::{Arc, Mutex};

use indicatif::ProgressBar;
use tokio::time::Instant;

use super::LoadArgs;
use super::client::Target;
use super::pace::{Limit, Pace};
use super::stats::{Errors, Latencies};

/// What the jobs of a run collect.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) links: Latencies,
    pub(super) lists: Latencies,
    pub(super) upload_to_done: Latencies,
    pub(super) event_to_client: Latencies,
    pub(super) errors: Errors,
    pub(super) last_done: Option<Instant>,
}

pub(super) type Shared = Arc<Mutex<Tally>>;

/// What every mode works with.
#[derive(Clone, Copy)]
pub(super) struct Run<'a> {
    pub(super) args: &'a LoadArgs,
    pub(super) target: &'a Target,
    pub(super) projects: &'a [String],
    pub(super) tally: &'a Shared,
    pub(super) bar: &'a ProgressBar,
    pub(super) pace: Pace,
    pub(super) limit: Limit,
}

pub(super) fn note(tally: &Shared, f: impl FnOnce(&mut Tally)) {
    f(&mut tally.lock().expect("tally lock"));
}

/// With a count limit, the bar counts jobs (with a duration limit it shows seconds).
pub(super) fn count_job(bar: &ProgressBar, limit: Limit) {
    if let Limit::Count(_) = limit {
        bar.inc(1);
    }
}
