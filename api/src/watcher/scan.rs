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
mod tests {
    use super::*;
    use gallery_schema::{ImageId, ProjectId, keys};
    use object_store::ListResult;
    use object_store::list::PaginatedListResult;
    use object_store::path::Path;

    /// An in-memory bucket answering LIST like S3: keys after `offset`, sorted, `max_keys` at
    /// a time, with a token when there are more.
    struct Bucket(BTreeSet<String>);

    #[async_trait::async_trait]
    impl PaginatedListStore for Bucket {
        async fn list_paginated(
            &self,
            prefix: Option<&str>,
            opts: PaginatedListOptions,
        ) -> object_store::Result<PaginatedListResult> {
            let prefix = prefix.unwrap_or("");
            let after = opts.offset.unwrap_or_default();
            let mut keys = self
                .0
                .iter()
                .filter(|k| k.starts_with(prefix) && k.as_str() > after.as_str());
            let page: Vec<ObjectMeta> = keys
                .by_ref()
                .take(opts.max_keys.unwrap())
                .map(|k| ObjectMeta {
                    location: Path::from(k.as_str()),
                    last_modified: Utc::now(),
                    size: 1,
                    e_tag: Some("\"e\"".into()),
                    version: None,
                })
                .collect();
            let more = keys.next().is_some();
            Ok(PaginatedListResult {
                result: ListResult {
                    common_prefixes: vec![],
                    objects: page,
                },
                page_token: more.then(|| "t".to_owned()),
            })
        }
    }

    fn key(n: u32) -> String {
        // Sortable like UUIDv7 keys: a time-ordered image id first.
        format!("originals/{n:08}-0000-7000-8000-000000000000/p")
    }

    async fn run_find(bucket: &Bucket, due: &[u32], page: usize) -> (Vec<u32>, Vec<u32>, u64) {
        let due: Vec<String> = due.iter().map(|n| key(*n)).collect();
        let mut requests = 0;
        let pass = find(bucket, &due, page, &mut requests).await.unwrap();
        assert_eq!(pass.requests, requests);
        let num = |k: &str| k[10..18].parse::<u32>().unwrap();
        let found = pass
            .found
            .iter()
            .map(|m| num(m.location.as_ref()))
            .collect();
        let missing = pass.missing.iter().map(|k| num(k)).collect();
        (found, missing, requests)
    }

    #[tokio::test]
    async fn one_page_answers_for_every_due_link_it_covers() {
        // 10,000 uploads; the due links are 40 recent ones, some not uploaded yet.
        let mut keys: BTreeSet<String> = (0..10_000).map(key).collect();
        for gone in [9_905, 9_950, 9_999] {
            keys.remove(&key(gone));
        }
        keys.insert("originals/legacy-project/x".into());
        keys.insert("versions/p/x/1/thumb.jpg".into());
        let bucket = Bucket(keys);
        let due: Vec<u32> = (9_900..9_940).chain([9_950, 9_999, 10_500]).collect();
        let (found, missing, requests) = run_find(&bucket, &due, PAGE).await;
        assert_eq!(requests, 1, "one page from just before the first due key");
        assert_eq!(missing, [9_905, 9_950, 9_999, 10_500]);
        assert_eq!(found.len(), due.len() - missing.len());
        assert!(found.is_sorted());
    }

    #[tokio::test]
    async fn far_apart_links_cost_one_request_each_and_dense_ranges_one_per_page() {
        let bucket = Bucket((0..100_000).map(key).collect());
        // Three old links far apart: a jump to each, not a walk over the keys between.
        let (found, missing, requests) = run_find(&bucket, &[10, 50_000, 99_999], PAGE).await;
        assert_eq!(
            (found, missing, requests),
            (vec![10, 50_000, 99_999], vec![], 3)
        );
        // 2,500 consecutive links: three pages.
        let dense: Vec<u32> = (20_000..22_500).collect();
        let (found, _, requests) = run_find(&bucket, &dense, PAGE).await;
        assert_eq!((found.len(), requests), (2_500, 3));
        // Every other key: still one request per page of listed keys.
        let sparse: Vec<u32> = (30_000..32_000).step_by(2).collect();
        let (found, _, requests) = run_find(&bucket, &sparse, PAGE).await;
        assert_eq!((found.len(), requests), (1_000, 2));
        // Nothing there at all: one request, all missing.
        let (found, missing, requests) = run_find(&bucket, &[200_000, 200_001], PAGE).await;
        assert_eq!(
            (found, missing, requests),
            (vec![], vec![200_000, 200_001], 1)
        );
    }

    #[tokio::test]
    async fn small_pages_still_make_progress() {
        let bucket = Bucket((0..50).map(key).collect());
        let due: Vec<u32> = (0..60).collect();
        let (found, missing, requests) = run_find(&bucket, &due, 7).await;
        assert_eq!(found, (0..50).collect::<Vec<_>>());
        assert_eq!(missing, (50..60).collect::<Vec<_>>());
        assert_eq!(requests, 8);
    }

    fn held(project: &str, at: DateTime<Utc>) -> Held {
        let p = ProjectId::parse(project).unwrap();
        let i = ImageId::new_v7();
        let req = UploadRequested {
            filename: "a.jpg".into(),
            object_key: keys::original_key(&p, &i),
            content_type: "image/jpeg".into(),
            declared_size: None,
            link_expires_at: at + TimeDelta::minutes(15),
            max_bytes: 10,
        };
        let mut event = Event::new(p, i, EventBody::UploadRequested(req.clone()));
        event.at = at;
        Held::new(&event, &req)
    }

    #[test]
    fn links_are_due_at_once_then_less_often_as_they_age() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let every = Duration::from_millis(200);
        let mut pending: Pending<u32> = Pending::default();
        let (a, b) = (held("p1", t0), held("p2", t0 - TimeDelta::minutes(10)));
        let (ka, kb) = (a.key().to_owned(), b.key().to_owned());
        pending.hold(a.clone(), 1, t0);
        pending.hold(b, 2, t0);
        assert_eq!(pending.due(t0), {
            let mut both = vec![ka.clone(), kb.clone()];
            both.sort();
            both
        });
        // Not found: the new link is due again after `every`, the ten-minute-old one after
        // the longest interval.
        pending.later(&ka, t0, every);
        pending.later(&kb, t0, every);
        assert!(pending.due(t0).is_empty());
        assert_eq!(
            pending.due(t0 + TimeDelta::milliseconds(200)),
            std::slice::from_ref(&ka)
        );
        assert_eq!(
            pending.due(t0 + TimeDelta::seconds(29)),
            std::slice::from_ref(&ka)
        );
        assert_eq!(pending.due(t0 + TimeDelta::seconds(30)).len(), 2);
        // A redelivery swaps the delivery and keeps the schedule.
        pending.hold(a, 3, t0 + TimeDelta::seconds(1));
        assert_eq!(pending.len(), 2);
        assert_eq!(
            pending.due(t0 + TimeDelta::milliseconds(200)),
            std::slice::from_ref(&ka)
        );
        assert_eq!(pending.forget(&ka), Some(3));
        assert_eq!(pending.forget(&ka), None);
        assert_eq!(pending.due(t0 + TimeDelta::seconds(30)), [kb]);
    }

    #[test]
    fn intervals_grow_with_age_within_bounds() {
        let every = Duration::from_millis(200);
        let at = |secs: u64| interval(Duration::from_secs(secs), every);
        assert_eq!(at(0), every);
        assert_eq!(at(1), every);
        assert_eq!(at(8), Duration::from_secs(1));
        assert_eq!(at(80), Duration::from_secs(10));
        assert_eq!(at(3_600), MAX_INTERVAL);
    }
}
