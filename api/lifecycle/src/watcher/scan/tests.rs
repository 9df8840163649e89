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
        source_url: None,
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
