//! Batch detection of uploads in S3 mode: the pending index of links waiting for their upload,
//! and the scanner that looks for them with LIST requests instead of one HEAD per link.
//!
//! Each pass takes the links that are due, in key order, and lists the originals from just
//! before the first of them: one page (up to 1,000 keys) answers for every due link whose key
//! it covers, found or not. The next request starts just before the first due link the page
//! didn't reach, so a pass costs about one request per 1,000 uploads in the range it spans,
//! and never more than one per due link. Original keys start with the UUIDv7 image id
//! (`schema/src/keys.rs`), so the links of the last seconds are one contiguous range.
//!
//! A link is due at once, then again after an eighth of its age (at least `every`, at most
//! 30 s): a photo uploaded right after its link is found within a pass or two, and a link
//! nobody uses costs little until its deadline, where the watcher's delivery path looks one
//! last time with HEAD.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use gallery_nats::EventLog;
use gallery_schema::keys::ORIGINALS_PREFIX;
use gallery_schema::{Event, EventBody, UploadRequested};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::{ObjectMeta, ObjectStore};
use tokio_util::sync::CancellationToken;

use super::{ScanConfig, WatcherConfig, conclude, count_request};

/// Keys per LIST request (S3's maximum).
pub const PAGE: usize = 1000;
/// The longest a waiting link goes unchecked.
pub const MAX_INTERVAL: Duration = Duration::from_secs(30);
/// Uploads checked and recorded at once after a pass.
const SETTLE_CONCURRENCY: usize = 16;

/// An upload request the scanner looks for.
#[derive(Debug, Clone)]
pub struct Held {
    event: Event,
}

impl Held {
    pub fn new(event: &Event, req: &UploadRequested) -> Self {
        debug_assert!(matches!(&event.body, EventBody::UploadRequested(r) if r == req));
        Self {
            event: event.clone(),
        }
    }

    fn request(&self) -> &UploadRequested {
        match &self.event.body {
            EventBody::UploadRequested(req) => req,
            _ => unreachable!("Held::new takes upload requests only"),
        }
    }

    pub fn key(&self) -> &str {
        &self.request().object_key
    }
}

struct Entry<M> {
    held: Held,
    /// The delivery to acknowledge once settled (the newest one: a held delivery comes back
    /// after the consumer's ack wait and replaces the old).
    msg: M,
    due: DateTime<Utc>,
}

/// The links waiting for their upload, by object key, with when each is next due.
pub struct Pending<M = jetstream::Message> {
    entries: BTreeMap<String, Entry<M>>,
    schedule: BTreeSet<(DateTime<Utc>, String)>,
}

impl<M> Default for Pending<M> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            schedule: BTreeSet::new(),
        }
    }
}

impl<M> Pending<M> {
    /// Holds a delivery: a new link is due at once; a redelivered one keeps its schedule and
    /// swaps in the new delivery.
    pub fn hold(&mut self, held: Held, msg: M, now: DateTime<Utc>) {
        let key = held.key().to_owned();
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.msg = msg;
            entry.held = held;
            return;
        }
        self.schedule.insert((now, key.clone()));
        self.entries.insert(
            key,
            Entry {
                held,
                msg,
                due: now,
            },
        );
    }

    /// Drops a link from the index, handing back its delivery.
    pub fn forget(&mut self, key: &str) -> Option<M> {
        let entry = self.entries.remove(key)?;
        self.schedule.remove(&(entry.due, key.to_owned()));
        Some(entry.msg)
    }

    /// The keys due at `now`, in key order.
    pub fn due(&self, now: DateTime<Utc>) -> Vec<String> {
        let mut keys: Vec<String> = self
            .schedule
            .iter()
            .take_while(|(due, _)| *due <= now)
            .map(|(_, key)| key.clone())
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Not found this time: due again after an eighth of the link's age.
    pub fn later(&mut self, key: &str, now: DateTime<Utc>, every: Duration) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        let age = (now - entry.held.event.at).to_std().unwrap_or_default();
        let next = now + TimeDelta::from_std(interval(age, every)).unwrap_or_default();
        self.schedule.remove(&(entry.due, key.to_owned()));
        entry.due = next;
        self.schedule.insert((next, key.to_owned()));
    }

    pub fn held(&self, key: &str) -> Option<&Held> {
        self.entries.get(key).map(|e| &e.held)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How long a link of this age waits before it is looked for again.
pub fn interval(age: Duration, every: Duration) -> Duration {
    (age / 8).clamp(every, MAX_INTERVAL.max(every))
}

/// What one pass saw.
#[derive(Debug, Default, PartialEq)]
pub struct Pass {
    /// Due links whose object is there.
    pub found: Vec<ObjectMeta>,
    /// Due links without one (yet).
    pub missing: Vec<String>,
    /// LIST requests made.
    pub requests: u64,
}

/// Looks for the objects of `due` (sorted) with LIST requests of `page` keys under
/// `originals/`. A failed request ends the pass with its error; `requests` counts it.
pub async fn find(
    lister: &dyn PaginatedListStore,
    due: &[String],
    page: usize,
    requests: &mut u64,
) -> Result<Pass, object_store::Error> {
    debug_assert!(due.is_sorted());
    let mut pass = Pass::default();
    let mut next = 0;
    let mut listed_to: Option<String> = None;
    while next < due.len() {
        // Just before the first unresolved key (S3 lists keys after `start-after`), and never
        // back over keys already listed.
        let before = &due[next][..due[next].len() - 1];
        let offset = match listed_to {
            Some(last) if last.as_str() > before => last,
            _ => before.to_owned(),
        };
        *requests += 1;
        pass.requests += 1;
        let result = lister
            .list_paginated(
                Some(ORIGINALS_PREFIX),
                PaginatedListOptions {
                    offset: Some(offset),
                    max_keys: Some(page),
                    ..Default::default()
                },
            )
            .await?;
        let mut objects = result.result.objects;
        objects.sort_unstable_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
        // The listing is complete past the last key when there is no next page.
        let last = objects.last().map(|o| o.location.as_ref().to_owned());
        let complete = result.page_token.is_none() || last.is_none();
        let mut at = 0;
        while next < due.len() {
            let key = due[next].as_str();
            if !complete && last.as_deref().is_some_and(|last| key > last) {
                break;
            }
            while at < objects.len() && objects[at].location.as_ref() < key {
                at += 1;
            }
            match objects.get(at) {
                Some(meta) if meta.location.as_ref() == key => pass.found.push(meta.clone()),
                _ => pass.missing.push(key.to_owned()),
            }
            next += 1;
        }
        listed_to = last;
    }
    Ok(pass)
}

pub(super) struct Scanner {
    pub scan: ScanConfig,
    pub store: Arc<dyn ObjectStore>,
    pub log: EventLog,
    pub cfg: WatcherConfig,
    pub pending: Arc<Mutex<Pending>>,
    pub shutdown: CancellationToken,
}

pub(super) async fn run(s: Scanner) {
    let mut tick = tokio::time::interval(s.scan.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = s.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Utc::now();
        let due = {
            let pending = s.pending.lock().expect("pending index");
            metrics::gauge!("gallery_upload_watcher_pending").set(pending.len() as f64);
            pending.due(now)
        };
        if due.is_empty() {
            continue;
        }
        let mut requests = 0;
        let pass = find(s.scan.lister.as_ref(), &due, PAGE, &mut requests).await;
        count_request("watcher", "list", requests);
        let pass = match pass {
            Ok(pass) => pass,
            Err(err) => {
                tracing::warn!(%err, "upload watcher: listing uploads; will retry");
                let mut pending = s.pending.lock().expect("pending index");
                for key in &due {
                    pending.later(key, now, s.scan.every);
                }
                continue;
            }
        };
        {
            let mut pending = s.pending.lock().expect("pending index");
            for key in &pass.missing {
                pending.later(key, now, s.scan.every);
            }
        }
        futures::stream::iter(pass.found)
            .for_each_concurrent(SETTLE_CONCURRENCY, |meta| settle(&s, meta, now))
            .await;
    }
}

/// A due link's object is there: check it, record it, and acknowledge the held delivery.
async fn settle(s: &Scanner, meta: ObjectMeta, now: DateTime<Utc>) {
    let key = meta.location.as_ref().to_owned();
    let Some(held) = s.pending.lock().expect("pending index").held(&key).cloned() else {
        return;
    };
    let outcome = conclude(
        &s.log,
        s.store.as_ref(),
        &s.cfg,
        &held.event,
        held.request(),
        Some(&meta),
    )
    .await;
    match outcome {
        Ok(None) => {
            let msg = s.pending.lock().expect("pending index").forget(&key);
            if let Some(msg) = msg
                && let Err(err) = msg.ack().await
            {
                // The delivery comes back after the ack wait and is found settled then.
                tracing::warn!(%err, "upload watcher: acknowledging");
            }
        }
        Ok(Some(_)) => s
            .pending
            .lock()
            .expect("pending index")
            .later(&key, now, s.scan.every),
        Err(err) => {
            tracing::warn!(%err, key, "upload watcher: recording an upload; will retry");
            s.pending
                .lock()
                .expect("pending index")
                .later(&key, now, s.scan.every);
        }
    }
}

#[cfg(test)]
mod tests;
