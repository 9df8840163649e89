//! The `gallery` binary's library: configuration, and the composition of api, projector and
//! processor into the run modes of docs/ARCHITECTURE.md §10. `main.rs` only parses the command line and calls
//! in here, so tests start the whole stack in-process with [`app::start`].

pub mod admin;
pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod load;
pub mod render_worker;
mod roles;
pub mod secret;
pub mod storage;
pub mod supervise;
pub mod telemetry;
