//! Listings served from images' JSON as last rendered. An image's view is a function of its
//! record and of the hour-aligned window its download links are signed for (plus the
//! process's configuration), so the JSON of a record at a given `last_seq`, rendered in a
//! given window, can be reused until either moves. A listing page of 50 `done` images signs
//! 250 links and writes 80 KB of JSON; from this cache it copies 50 fragments.
//!
//! Bounded: emptied when full (the next pages fill it again), like the token cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gallery_projector::Record;
use gallery_schema::ImageId;

use crate::view::{Links, image_view};

/// Images whose JSON is kept: a project of 10,000 images fits twice (about 1.6 KB each for
/// `done` images, so about 32 MB when full).
pub const CAPACITY: usize = 20_000;

struct Entry {
    last_seq: u64,
    window: i64,
    json: Arc<str>,
}

#[derive(Default)]
pub struct ViewCache {
    entries: Mutex<HashMap<ImageId, Entry>>,
}

impl ViewCache {
    /// The image's view as JSON: the kept one when it was rendered from this record in this
    /// links window, else rendered now (and kept).
    pub fn json(&self, rec: &Record, links: &Links<'_>) -> Arc<str> {
        let window = links.window();
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = entries.get(&rec.image_id)
                && e.last_seq == rec.last_seq
                && e.window == window
            {
                return e.json.clone();
            }
        }
        let json: Arc<str> = serde_json::to_string(&image_view(rec, links))
            .expect("a view always serializes")
            .into();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(
            rec.image_id,
            Entry {
                last_seq: rec.last_seq,
                window,
                json: json.clone(),
            },
        );
        json
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::Signer;

    fn record(last_seq: u64) -> Record {
        let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        let image = ImageId::parse("019a0000-0000-7000-8000-000000000001").unwrap();
        let project = gallery_schema::ProjectId::parse("p").unwrap();
        let event = gallery_schema::Event {
            image_id: image,
            project_id: project.clone(),
            at,
            body: gallery_schema::EventBody::UploadRequested(gallery_schema::UploadRequested {
                filename: "a.jpg".into(),
                object_key: gallery_schema::keys::original_key(&project, &image),
                content_type: "image/jpeg".into(),
                declared_size: None,
                link_expires_at: at,
                max_bytes: 10,
                source_url: None,
            }),
        };
        gallery_projector::apply(None, last_seq, &event).unwrap()
    }

    fn links(signer: &Signer, now: i64) -> Links<'_> {
        Links {
            base: "http://h",
            signer,
            ttl_secs: 900,
            now,
            s3: None,
        }
    }

    #[test]
    fn a_view_is_reused_until_its_record_or_its_links_window_moves() {
        let signer = Signer::new(&[7; 32]);
        let cache = ViewCache::default();
        let now = 1_767_225_600;
        let rec = record(5);
        let first = cache.json(&rec, &links(&signer, now));
        assert_eq!(
            *first,
            serde_json::to_string(&image_view(&rec, &links(&signer, now))).unwrap()
        );
        // Same record, same window: the same allocation comes back.
        let again = cache.json(&rec, &links(&signer, now + 60));
        assert!(Arc::ptr_eq(&first, &again));
        // A later event of the image: rendered again.
        let mut changed = rec.clone();
        changed.last_seq = 9;
        changed.filename = "b.jpg".into();
        let newer = cache.json(&changed, &links(&signer, now + 60));
        assert!(newer.contains("b.jpg"));
        // The next hour's links: rendered again.
        let later = cache.json(&changed, &links(&signer, now + 3600));
        assert!(!Arc::ptr_eq(&newer, &later));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_page_written_from_kept_views_is_what_serde_writes() {
        use crate::routes::projects::{ImagePage, page_json};
        let signer = Signer::new(&[7; 32]);
        let l = links(&signer, 1_767_225_600);
        let (a, mut b) = (record(3), record(4));
        b.image_id = ImageId::new_v7();
        b.filename = "quote\"and\\slash.jpg".into();
        let cache = ViewCache::default();
        for cursor in [None, Some(b.image_id)] {
            let views = [cache.json(&a, &l), cache.json(&b, &l)];
            let expected = serde_json::to_string(&ImagePage {
                images: vec![image_view(&a, &l), image_view(&b, &l)],
                next_cursor: cursor.map(|c| c.to_string()),
                seq: 42,
            })
            .unwrap();
            assert_eq!(page_json(&views, cursor.as_ref(), 42), expected);
        }
        let empty: [&str; 0] = [];
        assert_eq!(
            page_json(&empty, None, 0),
            r#"{"images":[],"next_cursor":null,"seq":0}"#
        );
    }

    #[test]
    fn a_full_cache_starts_over() {
        let signer = Signer::new(&[7; 32]);
        let cache = ViewCache::default();
        let base = record(1);
        for n in 0..CAPACITY + 3 {
            let mut rec = base.clone();
            rec.image_id = ImageId::new_v7();
            rec.last_seq = n as u64;
            cache.json(&rec, &links(&signer, 1_767_225_600));
        }
        assert_eq!(cache.len(), 3);
    }
}
