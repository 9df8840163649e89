//! The processor: a member of the `processor` consumer group. For each `uploaded` (or
//! `reprocess_requested`, `redrive_requested`) event it reads the original by the ETag recorded
//! in the log, renders the versions in a render worker process ([`pool`]: the binary's hidden
//! `gallery render-worker`, under an address-space limit; in-process stacks of tests render on
//! a blocking thread instead), stores them, and appends `processing_started`,
//! `version_rendered` x4 and `processed`, or `failed` with a stable code.
//!
//! Pure parts: [`render`] (the pixel pipeline, its own optimised crate), [`plan`] (what an
//! image's history says is left to do, and how to acknowledge an outcome). I/O lives in
//! [`consumer`] (the consumer loop: deliveries and their acks), [`job`] (one job's steps
//! against the log) and [`storage`] (the original and the versions in the object store);
//! [`pool`] and [`protocol`] run the render workers, [`memory`] admits renders by the memory
//! they need.

pub mod consumer;
pub mod job;
pub mod memory;
pub mod plan;
pub mod pool;
pub mod protocol;
pub mod storage;

pub use consumer::{ProcessorConfig, run};
pub use gallery_render as render;
pub use gallery_render::{Limits, render};
pub use pool::{WorkerCommand, WorkerPool};
