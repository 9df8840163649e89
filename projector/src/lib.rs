//! The read model. [`fold`] is the pure heart: events in, records out, no I/O. [`store`] keeps
//! records in sled with the last applied stream sequence, written together. [`runner`] follows
//! the log from that sequence and, after each write, hands the event to subscribers (the
//! api's WebSockets), so a client told "done" finds "done" in the listing.

pub mod batch;
pub mod fold;
pub mod record;
pub mod runner;
pub mod snapshot;
pub mod store;

pub use fold::{FoldError, apply};
pub use record::{Record, RecordError, RenderedVersion};
pub use runner::{Projector, ProjectorHandle, rebuild};
pub use snapshot::{SnapshotError, SnapshotInfo};
pub use store::{Page, Store, StoreError};
