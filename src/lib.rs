//! The `gallery` binary's library: configuration, and the composition of api, projector and
//! processor into the run modes of DESIGN §8. `main.rs` only parses the command line and calls
//! in here, so tests start the whole stack in-process with [`app::start`].

pub mod app;
pub mod bench;
pub mod cli;
pub mod secret;
pub mod telemetry;
