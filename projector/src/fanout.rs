//! The live feed: after each commit the runner hands every event it folded to the subscribers of
//! the event's project (the api's WebSockets), in log order.

use std::collections::HashMap;
use std::sync::Arc;

use gallery_nats::StoredEvent;
use gallery_schema::ProjectId;
use tokio::sync::broadcast;

/// Events of one project buffered for its subscribers after they are committed. Subscribers that
/// fall this far behind see `Lagged` and are expected to resume from the log (the WebSocket
/// closes with 1013).
const FANOUT_CAPACITY: usize = 1024;

/// Per-project fan-out: a socket wakes only for its own project's events, so the cost of an
/// event is its project's subscribers, not every socket of the process.
#[derive(Default)]
pub struct Fanout {
    channels: std::sync::Mutex<HashMap<ProjectId, broadcast::Sender<Arc<StoredEvent>>>>,
}

impl Fanout {
    pub fn subscribe(&self, project: &ProjectId) -> broadcast::Receiver<Arc<StoredEvent>> {
        let mut channels = self.channels.lock().expect("fanout lock");
        // Channels whose sockets are all gone (projects that got no event since): without this,
        // subscribing to ever new projects would grow the map for good.
        channels.retain(|_, tx| tx.receiver_count() > 0);
        channels
            .entry(project.clone())
            .or_insert_with(|| broadcast::channel(FANOUT_CAPACITY).0)
            .subscribe()
    }

    pub(crate) fn publish(&self, event: Arc<StoredEvent>) {
        let mut channels = self.channels.lock().expect("fanout lock");
        let project = &event.event.project_id;
        // A send with no receivers left fails: the project's last socket is gone.
        if let Some(tx) = channels.get(project)
            && tx.send(event.clone()).is_err()
        {
            channels.remove(project);
        }
    }

    /// Drops every channel: subscribers see `Closed` (the server is stopping).
    pub(crate) fn close_all(&self) {
        self.channels.lock().expect("fanout lock").clear();
    }

    /// Projects with at least one channel (tests).
    pub fn projects(&self) -> usize {
        self.channels.lock().expect("fanout lock").len()
    }
}
