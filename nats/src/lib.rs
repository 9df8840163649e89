//! LITE Gallery on NATS JetStream: connecting ([`connect`]: URL lists, credentials, TLS), the
//! topology (declared once, idempotently), idempotent and ordered appends of events, reads of an
//! image's or a project's history, and a real `nats-server` child process (used by `gallery up`
//! and by every test harness; [`cluster`] runs several for failover tests). A process's first
//! steps, connecting or starting the embedded server and declaring the topology once JetStream
//! answers, are [`startup`].
//!
//! Subject, stream and header names come from `gallery_schema::subjects`; nothing here invents
//! its own.

pub mod append;
pub mod backup;
pub mod cluster;
pub mod connect;
pub mod read;
pub mod server;
pub mod startup;
pub mod topology;

pub use append::{AppendError, Appended, EventLog, Guard, REQUEST_ID};
pub use cluster::NatsCluster;
pub use connect::{
    NatsAuth, Refusals, connect, connect_command, connect_with, redact, server_addrs,
};
pub use read::{ReadError, StoredEvent, StreamStateError, last_seq, stream_bounds};
pub use server::{NatsServer, ServerError, embedded_url, find_nats_server, write_private};
pub use startup::{StartupError, connect_or_start, declare_topology};
pub use topology::{ProcessorConsumerConfig, Replicas, TopologyError};
