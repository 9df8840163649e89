//! The deleter: removes what a deleted image stored. Every api replica runs one, sharing the
//! durable consumer `deleter` (every `deleted` event); deleting the same objects twice is
//! harmless, so no lease is needed.
//!
//! For each deletion it reads the image's history from the log, waits until nothing can still
//! write for the image ([`plan`]: a settle delay after the deletion, and for an image whose
//! upload link was still open, until that link expired), then removes the original and every
//! object under `versions/<project>/<image>/` (all generations). A storage error naks the
//! delivery with a growing delay: the deletion is retried until the store confirms it, and
//! acknowledged only then. See docs/ARCHITECTURE.md §5.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use gallery_nats::{EventLog, StoredEvent, topology};
use gallery_schema::{Event, EventBody, keys, subjects};
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct DeleterConfig {
    /// How long after a deletion its objects are removed: long enough for a render that was
    /// under way to usually have given up (its next append meets the deletion and stops). A
    /// slower one can still write a version after the purge; the sweeper removes it.
    pub settle: Duration,
    /// How long after its link's expiry an upload may still land (the api's upload grace):
    /// an image deleted before its upload came waits that long before its purge.
    pub upload_grace: Duration,
    /// Whether an upload link works more than once until it expires (S3 POST policies do; a
    /// local-mode link is refused once its image is uploaded or deleted). Then even an
    /// uploaded image's purge waits for its link's expiry and the grace: an upload through
    /// the link after the purge would otherwise put an original back.
    pub reusable_links: bool,
    /// Deletions worked on at once by this replica.
    pub concurrency: usize,
}

impl Default for DeleterConfig {
    fn default() -> Self {
        Self {
            settle: Duration::from_secs(30),
            upload_grace: Duration::from_secs(600),
            reusable_links: true,
            concurrency: 8,
        }
    }
}

/// What to remove for one deleted image, and from when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    /// The original's key (`None`: the log names none).
    pub original: Option<String>,
    /// Every generation's versions.
    pub versions_prefix: String,
    pub not_before: DateTime<Utc>,
}

/// Pure: what the history of a deleted image says to remove, and when. `None` when the
/// history holds no deletion (nothing to do).
pub fn plan(history: &[StoredEvent], cfg: &DeleterConfig) -> Option<Purge> {
    let deleted = history
        .iter()
        .find(|s| matches!(s.event.body, EventBody::Deleted { .. }))?;
    let event = &deleted.event;
    let delta = |d: Duration| chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX);
    let settle = delta(cfg.settle);
    let mut not_before = event.at + settle;
    let mut original = None;
    let uploaded = history
        .iter()
        .any(|s| matches!(s.event.body, EventBody::Uploaded(_)));
    for stored in history {
        if let EventBody::UploadRequested(req) = &stored.event.body {
            original = Some(req.object_key.clone());
            // A link handed out before the deletion may still take an upload until it expires
            // (in S3 mode even after a first upload: a POST policy can be used again), and an
            // upload started by then may land during the grace: one after the purge would
            // leave its bytes behind.
            let open = !uploaded || cfg.reusable_links;
            if open && req.link_expires_at > event.at {
                not_before = not_before.max(req.link_expires_at + delta(cfg.upload_grace));
            }
        }
    }
    Some(Purge {
        original,
        versions_prefix: keys::versions_prefix(&event.project_id, &event.image_id),
        not_before,
    })
}

/// What a purge removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub objects: u64,
    pub bytes: u64,
}

/// Removes the original and every version; objects already gone count as removed (a retried
/// purge, or an upload that never came).
pub async fn purge(store: &dyn ObjectStore, p: &Purge) -> Result<Removed, object_store::Error> {
    let mut found = Vec::new();
    let mut listing = store.list(Some(&ObjectPath::from(p.versions_prefix.as_str())));
    while let Some(meta) = listing.next().await {
        found.push(meta?);
    }
    if let Some(original) = &p.original {
        match store.head(&ObjectPath::from(original.as_str())).await {
            Ok(meta) => found.push(meta),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let mut removed = Removed::default();
    for meta in found {
        match store.delete(&meta.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                removed.objects += 1;
                removed.bytes += meta.size;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Follows the `deleted` events until `shutdown`.
pub async fn run(
    js: jetstream::Context,
    store: Arc<dyn ObjectStore>,
    cfg: DeleterConfig,
    shutdown: CancellationToken,
    running: impl FnOnce(),
) -> Result<(), gallery_nats::TopologyError> {
    // Declared with the rest of the topology at start (docs/ARCHITECTURE.md §4).
    let consumer = topology::wait_for_consumer(&js, subjects::DELETER_CONSUMER, &shutdown).await?;
    running();
    let log = EventLog::new(js.clone());
    loop {
        let messages = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = consumer.messages() => m,
        };
        let messages = match messages {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!(%err, "deleter: pulling");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let work = messages
            .take_while(|next| {
                let ok = next.is_ok();
                if let Err(err) = next {
                    tracing::warn!(%err, "deleter: pulling");
                }
                std::future::ready(ok)
            })
            .filter_map(|next| std::future::ready(next.ok()))
            .for_each_concurrent(cfg.concurrency.max(1), |msg| {
                handle(&log, store.as_ref(), &cfg, msg)
            });
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = work => {}
        }
    }
}

async fn handle(
    log: &EventLog,
    store: &dyn ObjectStore,
    cfg: &DeleterConfig,
    msg: jetstream::Message,
) {
    let deliveries = msg.info().map(|i| i.delivered).unwrap_or(1).max(1) as u32;
    let ack = match step(log, store, cfg, &msg).await {
        Ok(None) => msg.ack().await,
        Ok(Some(wait)) => msg.ack_with(AckKind::Nak(Some(wait))).await,
        Err(err) => {
            metrics::counter!("gallery_deleter_errors_total").increment(1);
            let wait = retry_delay(deliveries);
            tracing::warn!(%err, retry_in = ?wait, "deleter: will retry");
            msg.ack_with(AckKind::Nak(Some(wait))).await
        }
    };
    if let Err(err) = ack {
        tracing::warn!(%err, "deleter: acknowledging");
    }
}

/// 2 s, doubling per delivery, at most 5 minutes.
pub fn retry_delay(deliveries: u32) -> Duration {
    Duration::from_secs(
        2u64.saturating_mul(1 << deliveries.saturating_sub(1).min(8))
            .min(300),
    )
}

/// `None`: done (acknowledge); `Some(d)`: look again after `d`.
async fn step(
    log: &EventLog,
    store: &dyn ObjectStore,
    cfg: &DeleterConfig,
    msg: &jetstream::Message,
) -> Result<Option<Duration>, String> {
    let event = match Event::decode_checked(&msg.subject, &msg.payload) {
        Ok(e) => e,
        Err(err) => {
            tracing::warn!(subject = %msg.subject, %err, "deleter: undecodable event skipped");
            return Ok(None);
        }
    };
    let history = log
        .image_history(&event.project_id, &event.image_id)
        .await
        .map_err(|e| format!("reading the image's history: {e}"))?;
    let Some(purge_plan) = plan(&history, cfg) else {
        return Ok(None);
    };
    let wait = purge_plan.not_before - Utc::now();
    if wait > chrono::TimeDelta::zero() {
        // Looked at again when due, or in 5 minutes at most (a long-lived link takes a few).
        let wait = wait
            .to_std()
            .unwrap_or_default()
            .min(Duration::from_secs(300));
        return Ok(Some(wait.max(Duration::from_millis(100))));
    }
    let removed = purge(store, &purge_plan)
        .await
        .map_err(|e| format!("removing objects: {e}"))?;
    metrics::counter!("gallery_deleter_images_total").increment(1);
    metrics::counter!("gallery_deleter_objects_total").increment(removed.objects);
    metrics::counter!("gallery_deleter_bytes_total").increment(removed.bytes);
    tracing::info!(
        image_id = %event.image_id,
        project_id = %event.project_id,
        objects = removed.objects,
        bytes = removed.bytes,
        "deleted image's objects removed"
    );
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gallery_schema::{ImageId, ProjectId, UploadRequested, Uploaded};
    use object_store::PutPayload;
    use object_store::memory::InMemory;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn history(
        p: &ProjectId,
        i: ImageId,
        uploaded: bool,
        link_until: i64,
        deleted: i64,
    ) -> Vec<StoredEvent> {
        let mut events = vec![Event {
            at: at(0),
            ..Event::new(
                p.clone(),
                i,
                EventBody::UploadRequested(UploadRequested {
                    filename: "f.jpg".into(),
                    object_key: keys::original_key(p, &i),
                    content_type: "image/jpeg".into(),
                    declared_size: None,
                    link_expires_at: at(link_until),
                    max_bytes: 10,
                    source_url: None,
                }),
            )
        }];
        if uploaded {
            events.push(Event {
                at: at(1),
                ..Event::new(
                    p.clone(),
                    i,
                    EventBody::Uploaded(Uploaded {
                        size: 3,
                        etag: "e".into(),
                        generation: 1,
                    }),
                )
            });
        }
        events.push(Event {
            at: at(deleted),
            ..Event::new(
                p.clone(),
                i,
                EventBody::Deleted {
                    whole_project: false,
                },
            )
        });
        events
            .into_iter()
            .enumerate()
            .map(|(n, event)| StoredEvent {
                seq: n as u64 + 1,
                event,
            })
            .collect()
    }

    #[test]
    fn a_purge_waits_to_settle_and_for_an_upload_link_that_still_works() {
        let p = ProjectId::parse("p").unwrap();
        let i = ImageId::new_v7();
        let settle = &DeleterConfig {
            settle: Duration::from_secs(30),
            upload_grace: Duration::from_secs(600),
            reusable_links: false,
            concurrency: 1,
        };
        let done = plan(&history(&p, i, true, 900, 100), settle).unwrap();
        assert_eq!(done.not_before, at(130));
        // S3: the uploaded image's link (a POST policy) could put an original back until it
        // expires, so its purge waits as for an open link.
        let s3 = DeleterConfig {
            reusable_links: true,
            ..settle.clone()
        };
        let reusable = plan(&history(&p, i, true, 900, 100), &s3).unwrap();
        assert_eq!(reusable.not_before, at(1500));
        assert_eq!(done.original, Some(keys::original_key(&p, &i)));
        assert_eq!(done.versions_prefix, keys::versions_prefix(&p, &i));
        // Never uploaded, link open until 900: an upload may still come through it, and land
        // up to the grace later.
        let open = plan(&history(&p, i, false, 900, 100), settle).unwrap();
        assert_eq!(open.not_before, at(1500));
        // Never uploaded and the link had expired: nothing can come any more.
        let expired = plan(&history(&p, i, false, 50, 100), settle).unwrap();
        assert_eq!(expired.not_before, at(130));
        // No deletion in the history: nothing to do.
        let mut alive = history(&p, i, true, 900, 100);
        alive.pop();
        assert_eq!(plan(&alive, settle), None);
    }

    #[test]
    fn retries_back_off_to_five_minutes() {
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(2), Duration::from_secs(4));
        assert_eq!(retry_delay(40), Duration::from_secs(300));
    }

    #[tokio::test]
    async fn a_purge_removes_every_generation_and_the_original_only() {
        let store = InMemory::new();
        let p = ProjectId::parse("p").unwrap();
        let (i, other) = (ImageId::new_v7(), ImageId::new_v7());
        let put = |key: String, n: usize| {
            let store = &store;
            async move {
                store
                    .put(&ObjectPath::from(key), PutPayload::from(vec![0u8; n]))
                    .await
                    .unwrap();
            }
        };
        put(keys::original_key(&p, &i), 100).await;
        put(format!("{}1/thumb.jpg", keys::versions_prefix(&p, &i)), 10).await;
        put(format!("{}2/thumb.jpg", keys::versions_prefix(&p, &i)), 20).await;
        put(keys::original_key(&p, &other), 7).await;
        put(
            format!("{}1/thumb.jpg", keys::versions_prefix(&p, &other)),
            7,
        )
        .await;
        let now = DeleterConfig {
            settle: Duration::ZERO,
            ..DeleterConfig::default()
        };
        let purge_plan = plan(&history(&p, i, true, 0, 0), &now).unwrap();
        let removed = purge(&store, &purge_plan).await.unwrap();
        assert_eq!(
            removed,
            Removed {
                objects: 3,
                bytes: 130
            }
        );
        let left: Vec<String> = store
            .list(None)
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await;
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().all(|k| k.contains(&other.to_string())));
        // Again: nothing left, nothing fails.
        assert_eq!(
            purge(&store, &purge_plan).await.unwrap(),
            Removed::default()
        );
    }
}
