//! The LITE Gallery domain, shared by every service: event types and their protobuf wire form,
//! validated ids, NATS subject names, the versions and their fit math, stable error codes.
//!
//! Nothing here does I/O: no tokio, NATS, S3, sled or HTTP. The compiler keeps it that way
//! because none of them is a dependency of this crate.

pub mod error_code;
pub mod event;
pub mod fit;
pub mod ids;
pub mod keys;
pub mod kind;
pub mod sniff;
pub mod state;
pub mod subjects;
pub mod version;
pub mod wire;

/// Generated protobuf types. They stay at the wire: convert with [`event::Event::decode`] and
/// [`event::Event::encode`].
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/gallery.events.v1.rs"));
}

pub use error_code::ErrorCode;
pub use event::{Event, EventBody, Failure, UploadRequested, Uploaded, VersionRendered};
pub use fit::{Size, fit_inside};
pub use ids::{IdError, ImageId, ProjectId};
pub use kind::EventKind;
pub use state::ImageState;
pub use version::{RENDITIONS, RENDITIONS_VERSION, Rendition, VersionName};
