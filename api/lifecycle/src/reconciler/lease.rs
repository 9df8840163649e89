//! The reconciler's lease: one key (`reconciler`) of the `gallery-leases` bucket, whose values
//! expire 30 s after they were last written. The replica that holds it acts; the others only
//! answer operators' requests.

use async_nats::jetstream::{self, kv};
use gallery_schema::subjects::LEASE_BUCKET;

const LEASE_KEY: &str = "reconciler";

/// A lease held by renewing one key of a bucket whose values expire.
pub(super) struct Lease {
    kv: kv::Store,
    holder: String,
    revision: Option<u64>,
}

impl Lease {
    /// This process's claim (`<pid>-<random>`) on the bucket; nothing is held until
    /// [`Lease::hold`].
    pub(super) async fn open(
        js: &jetstream::Context,
    ) -> Result<Self, jetstream::context::KeyValueError> {
        Ok(Self {
            kv: js.get_key_value(LEASE_BUCKET).await?,
            holder: format!("{}-{}", std::process::id(), uuid_like()),
            revision: None,
        })
    }

    /// Takes the lease if free, renews it if ours; `false` while another holds it.
    pub(super) async fn hold(&mut self) -> bool {
        let held = match self.revision {
            Some(rev) => self
                .kv
                .update(LEASE_KEY, self.holder.clone().into(), rev)
                .await
                .ok(),
            None => self
                .kv
                .create(LEASE_KEY, self.holder.clone().into())
                .await
                .ok(),
        };
        if held.is_none() && self.revision.is_some() {
            tracing::warn!("reconciler lease lost");
        }
        if held.is_some() && self.revision.is_none() {
            tracing::info!(holder = %self.holder, "reconciler lease taken: this replica acts");
        }
        self.revision = held;
        held.is_some()
    }

    pub(super) async fn release(&mut self) {
        if self.revision.take().is_some() {
            let _ = self.kv.delete(LEASE_KEY).await;
        }
    }
}

fn uuid_like() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
