//! The sweeper: removes stored objects that no record needs any more. The acting reconciler
//! (one api replica at a time, by its lease) runs a sweep every `GALLERY_SWEEP_INTERVAL`, and
//! operators run one with `gallery sweep [--dry-run]` (a request on `gallery.admin.sweep`,
//! answered by one api replica).
//!
//! A sweep lists the whole store and judges each object against the read model ([`judge`],
//! pure): a staging file a crashed upload left; the original of an upload that was refused or
//! expired (it can never be processed: nothing can re-drive or reprocess it) after the
//! retention; the versions of a generation a reprocess superseded, once the record serves none
//! of them, after a grace of at least the download links' lifetime plus the hour they are
//! stable for; what a deleted image left
//! (the deleter's work, if it missed something). Everything else is kept, objects of images the
//! model doesn't know included (a replica rebuilding its model doesn't know live ones yet): read-model snapshots, the readiness probe,
//! keys of any other shape, the original of any image that was uploaded.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use gallery_projector::{Record, Store};
use gallery_schema::{ImageId, ImageState, keys};
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

/// When objects become garbage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepPolicy {
    /// How long the original of a refused or expired upload, and an object of an image the
    /// read model doesn't know, are kept.
    pub retention: Duration,
    /// How long the versions of a superseded generation are kept after the image last changed
    /// (at least the download links' lifetime plus one hour: links are stable per hour).
    pub superseded_grace: Duration,
    /// How long after a deletion the sweeper takes over what the deleter left.
    pub deleted_grace: Duration,
    /// How old a staging file of the local upload endpoint must be to be a leftover.
    pub staging_age: Duration,
}

impl SweepPolicy {
    /// The policy for download links that live `download_link_ttl`.
    pub fn for_links(download_link_ttl: Duration, retention: Duration) -> Self {
        Self {
            retention,
            superseded_grace: download_link_ttl + Duration::from_secs(3600),
            deleted_grace: Duration::from_secs(3600),
            staging_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why an object goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A staging file of a local upload that never finished.
    Staging,
    /// The original of an upload that was refused or expired.
    Refused,
    /// A version of a generation a reprocess replaced.
    Superseded,
    /// An object of a deleted image.
    Deleted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Staging => "staging",
            Self::Refused => "refused",
            Self::Superseded => "superseded",
            Self::Deleted => "deleted",
        }
    }
}

/// What an object's key says it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Staging,
    Original(ImageId),
    Version(ImageId, u32),
    /// Snapshots, the readiness probe, anything else: never swept.
    Other,
}

pub fn owner(key: &str) -> Owner {
    if key.starts_with("tmp/uploads/") {
        return Owner::Staging;
    }
    if let Some(image) = keys::original_image(key) {
        return Owner::Original(image);
    }
    if let Some((_, image, generation)) = keys::version_image(key) {
        return Owner::Version(image, generation);
    }
    Owner::Other
}

fn older_than(t: DateTime<Utc>, now: DateTime<Utc>, age: Duration) -> bool {
    now - t >= chrono::TimeDelta::from_std(age).unwrap_or(chrono::TimeDelta::MAX)
}

/// Pure: whether the object at `key`, last written at `modified`, goes, given the record of the
/// image it belongs to (`None`: the model doesn't know it).
pub fn judge(
    owner: &Owner,
    modified: DateTime<Utc>,
    rec: Option<&Record>,
    now: DateTime<Utc>,
    policy: &SweepPolicy,
) -> Option<Reason> {
    let generation = match owner {
        Owner::Other => return None,
        Owner::Staging => {
            return older_than(modified, now, policy.staging_age).then_some(Reason::Staging);
        }
        Owner::Original(_) => None,
        Owner::Version(_, generation) => Some(*generation),
    };
    // An image the model doesn't know is kept: a replica whose model is still being rebuilt
    // from the log doesn't know live images either.
    let rec = rec?;
    if rec.state == ImageState::Deleted {
        return older_than(rec.updated_at, now, policy.deleted_grace).then_some(Reason::Deleted);
    }
    match generation {
        // Never uploaded (no ETag): refused at the door or expired; nothing can process it.
        None => (rec.state == ImageState::Error
            && rec.etag.is_none()
            && older_than(rec.updated_at, now, policy.retention))
        .then_some(Reason::Refused),
        // A superseded generation's versions are still served while any of them is in the
        // record (a reprocess replaces them one by one, and a failed one keeps the rest).
        Some(generation) => (generation < rec.generation
            && !rec.versions.values().any(|v| v.generation == generation)
            && older_than(rec.updated_at, now, policy.superseded_grace))
        .then_some(Reason::Superseded),
    }
}

/// What a sweep found (and removed, unless a dry run).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SweepReport {
    pub dry_run: bool,
    /// Objects looked at.
    pub examined: u64,
    /// Objects (to be) removed, and their bytes.
    pub objects: u64,
    pub bytes: u64,
    pub by_reason: BTreeMap<String, Tally>,
    /// The first [`LISTED`] keys (to be) removed, with their size and reason.
    pub removed: Vec<Swept>,
    /// Objects whose removal failed (the next sweep tries again).
    pub failed: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Tally {
    pub objects: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Swept {
    pub key: String,
    pub bytes: u64,
    pub reason: Reason,
}

/// Keys a report names one by one; the totals count them all.
pub const LISTED: usize = 1000;

/// An operator's `gallery sweep` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SweepRequest {
    pub dry_run: bool,
}

/// One sweep over the whole store.
pub async fn sweep(
    objects: &dyn ObjectStore,
    model: &Store,
    policy: &SweepPolicy,
    dry_run: bool,
) -> Result<SweepReport, object_store::Error> {
    let mut report = SweepReport {
        dry_run,
        ..Default::default()
    };
    let now = Utc::now();
    let mut listing = objects.list(None);
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        report.examined += 1;
        let key = meta.location.to_string();
        let owner = owner(&key);
        let rec = match &owner {
            Owner::Original(image) | Owner::Version(image, _) => match model.get(image) {
                Ok(rec) => rec,
                // An unreadable record: keep the object (the projector re-folds the record).
                Err(_) => continue,
            },
            Owner::Staging | Owner::Other => None,
        };
        let Some(reason) = judge(&owner, meta.last_modified, rec.as_ref(), now, policy) else {
            continue;
        };
        if !dry_run {
            match objects.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => {
                    tracing::warn!(%key, %err, "sweeper: removing an object");
                    report.failed += 1;
                    continue;
                }
            }
            metrics::counter!("gallery_sweeper_objects_total", "reason" => reason.as_str())
                .increment(1);
            metrics::counter!("gallery_sweeper_bytes_total", "reason" => reason.as_str())
                .increment(meta.size);
        }
        report.objects += 1;
        report.bytes += meta.size;
        let tally = report
            .by_reason
            .entry(reason.as_str().to_owned())
            .or_default();
        tally.objects += 1;
        tally.bytes += meta.size;
        if report.removed.len() < LISTED {
            report.removed.push(Swept {
                key,
                bytes: meta.size,
                reason,
            });
        }
    }
    tracing::info!(
        dry_run,
        examined = report.examined,
        objects = report.objects,
        bytes = report.bytes,
        failed = report.failed,
        "sweep"
    );
    Ok(report)
}

#[cfg(test)]
mod tests;
