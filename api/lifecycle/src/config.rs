//! The background roles' settings as a deployment gives them (flags and environment, read by
//! the binary), and the configuration of each role made from them. The binary's `AppConfig`
//! holds one [`LifecycleConfig`]; what the roles share with others (the processor's retry
//! budget, the download links' lifetime, whether upload links can be used twice) comes in as
//! parameters.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::list::PaginatedListStore;

use crate::deleter::DeleterConfig;
use crate::reconciler::{ReconcilerConfig, Sweeping};
use crate::sweeper::SweepPolicy;
use crate::watcher::{ImportConfig, ScanConfig, WatcherConfig};

#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// How long after a link's expiry an upload may still be recorded before the image ends in
    /// `upload_expired` (`GALLERY_UPLOAD_GRACE`).
    pub upload_grace: Duration,
    /// S3 mode: how often the upload watcher lists the originals for links due a look.
    pub upload_scan_every: Duration,
    /// How long after an image's deletion the deleter removes its objects.
    pub delete_settle: Duration,
    /// Imports by URL: hosts fetched whatever their address, and the fetch's time limit.
    pub import: ImportConfig,
    /// How often the acting reconciler sweeps the store (`None`: only `gallery sweep`).
    pub sweep_every: Option<Duration>,
    /// How long the sweeper keeps originals of refused or expired uploads and objects the read
    /// model doesn't know.
    pub sweep_retention: Duration,
    /// Replaces the sweep policy derived from the link lifetime and the retention (tests; the
    /// command line always derives it, so the superseded versions' grace stays at least the
    /// download links' lifetime plus an hour).
    pub sweep_policy: Option<SweepPolicy>,
    /// How often the acting reconciler looks for stuck images.
    pub reconcile_every: Duration,
    /// How long after its last event an unfinished image is re-driven.
    pub redrive_after: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            upload_grace: Duration::from_secs(600),
            upload_scan_every: Duration::from_millis(200),
            delete_settle: Duration::from_secs(30),
            import: ImportConfig::default(),
            sweep_every: Some(Duration::from_secs(6 * 3600)),
            sweep_retention: Duration::from_secs(7 * 24 * 3600),
            sweep_policy: None,
            reconcile_every: Duration::from_secs(60),
            redrive_after: Duration::from_secs(30 * 60),
        }
    }
}

impl LifecycleConfig {
    /// The upload watcher's: with `lister` (S3 mode) it LISTs for uploads nobody reports.
    pub fn watcher(&self, lister: Option<Arc<dyn PaginatedListStore>>) -> WatcherConfig {
        WatcherConfig {
            import: self.import.clone(),
            grace: self.upload_grace,
            scan: lister.map(|lister| ScanConfig {
                lister,
                every: self.upload_scan_every,
            }),
        }
    }

    /// The deleter's; `reusable_links`: upload links work until they expire (S3 POST policies).
    pub fn deleter(&self, reusable_links: bool) -> DeleterConfig {
        DeleterConfig {
            settle: self.delete_settle,
            upload_grace: self.upload_grace,
            reusable_links,
            ..Default::default()
        }
    }

    /// The reconciler's: an image in `processing` may be retried through an outage for the
    /// processors' whole `retry_budget`, so it is stuck only after the budget and the usual wait.
    pub fn reconciler(&self, retry_budget: Duration) -> ReconcilerConfig {
        ReconcilerConfig {
            every: self.reconcile_every,
            stuck_after: self.redrive_after,
            processing_after: retry_budget + self.redrive_after,
        }
    }

    /// The sweeps the reconciler schedules, over `objects`; superseded versions outlive the
    /// download links (`download_link_ttl`) that may name them.
    pub fn sweeping(&self, objects: Arc<dyn ObjectStore>, download_link_ttl: Duration) -> Sweeping {
        Sweeping {
            objects,
            policy: self
                .sweep_policy
                .clone()
                .unwrap_or_else(|| SweepPolicy::for_links(download_link_ttl, self.sweep_retention)),
            every: self.sweep_every,
        }
    }
}
