//! The read model. [`fold`] is the pure heart: events in, records out, no I/O. [`store`] keeps
//! records in sled with the last applied stream sequence, written together. [`runner`] follows
//! the log from that sequence and, after each write, hands the event to subscribers (the
//! api's WebSockets), so a client told "done" finds "done" in the listing.
//!
//! On disk and around it: [`open`] takes the data dir's lock and opens the model (restored
//! from the newest snapshot, or rebuilt from the log by [`rebuild()`] when it can't be opened);
//! [`snapshot`] is the snapshot file format, [`snapshots`] their copies in the object store
//! (written periodically, restored at start).

pub mod batch;
pub mod chunk;
pub mod fanout;
pub mod fold;
pub mod open;
pub mod rebuild;
pub mod record;
pub mod runner;
pub mod snapshot;
pub mod snapshots;
pub mod store;

pub use fold::{FoldError, apply};
pub use rebuild::rebuild;
pub use record::{Record, RecordError, RenderedVersion};
pub use runner::{Projector, ProjectorHandle};
pub use snapshot::{SnapshotError, SnapshotInfo};
pub use store::{Page, Store, StoreError};
