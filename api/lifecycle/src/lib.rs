//! The background roles of an api process (docs/ARCHITECTURE.md §1): they never touch HTTP.
//! Each works on the event log (`gallery-nats`), the object store and the read model
//! (`gallery-projector`); the api crate starts none of them (the binary's `app` does) and calls
//! in for two things only: [`watcher::inspect_upload`] (`POST /images/{id}/complete`) and
//! [`import::parse_source_url`] / [`import::name_from_url`] (`POST /images/` with a URL).
//!
//! - [`watcher`]: notices uploads (local mode: told by the upload route; S3: LISTs), expires
//!   unused links, and runs imports by URL ([`import`] holds the fetch and its rules);
//! - [`reconciler`]: one acting replica (a lease) re-drives stuck images, answers operators'
//!   `gallery redrive`, `gallery reprocess` and `gallery sweep`, and schedules sweeps;
//! - [`sweeper`]: removes stored objects no record needs;
//! - [`deleter`]: removes what a deleted image stored;
//! - [`reprocess`]: bulk re-renders at a bounded rate;
//! - [`config`]: the roles' settings as a deployment gives them ([`LifecycleConfig`]).

pub mod config;
pub mod deleter;
pub mod import;
pub mod reconciler;
pub mod reprocess;
pub mod sweeper;
pub mod watcher;

pub use config::LifecycleConfig;
