//! The processor: a member of the `processor` consumer group. For each `uploaded` (or
//! `reprocess_requested`) event it reads the original by the ETag recorded in the log, renders
//! the versions in a render worker process ([`pool`]: the binary's hidden `gallery
//! render-worker`, under an address-space limit; in-process stacks of tests render on a
//! blocking thread instead), stores them, and appends `processing_started`, `version_rendered`
//! x4 and `processed`, or `failed` with a stable code.
//!
//! Pure parts: [`render`] (the pixel pipeline, its own optimised crate), [`plan`] (what an image's history says is left to do, and
//! how to acknowledge an outcome). I/O lives in [`job`] and [`worker`].

pub mod job;
pub mod plan;
pub mod pool;
pub mod protocol;
pub mod worker;

pub use gallery_render as render;
pub use gallery_render::{Limits, render};
pub use pool::{WorkerCommand, WorkerPool};
pub use worker::{ProcessorConfig, run};
