//! Readiness, in one implementation for every run mode: `/ready` of the api and of a
//! processor-only process. Ready means NATS connected, the stream answering, storage usable,
//! every supervised role running (a role that is restarting or still waiting for its consumer
//! is named), and, where a projector runs, the read model caught up within a bound and not
//! halted (docs/ARCHITECTURE.md §10).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use axum::Json;
use axum::http::StatusCode;
use gallery_projector::ProjectorHandle;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use serde::Serialize;
use utoipa::ToSchema;

/// A small object every process can look at to tell that storage answers.
pub const READY_PROBE: &str = "ready-probe";

/// The body of `/ready`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadinessReport {
    #[schema(schema_with = ready_or_not)]
    pub status: &'static str,
    /// Every reason the process is not ready, for people.
    pub problems: Vec<String>,
    /// The read model's applied stream sequence (`null` in a process without a projector).
    #[schema(required = true)]
    pub seq: Option<u64>,
    /// The stream's last sequence (`null` when JetStream doesn't answer).
    #[schema(required = true)]
    pub stream_seq: Option<u64>,
}

fn ready_or_not() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["ready", "not_ready"]))
        .build()
}

/// What a supervised role is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleState {
    /// Started, not yet serving (waiting for its consumer, say).
    Starting,
    Running,
    /// Ended unexpectedly; restarts after a backoff.
    Restarting {
        error: String,
        restarts: u32,
    },
}

/// The states of the process's roles, written by the supervisor and read by `/ready`.
#[derive(Debug, Clone, Default)]
pub struct RoleBoard(Arc<Mutex<BTreeMap<String, RoleState>>>);

impl RoleBoard {
    pub fn set(&self, role: &str, state: RoleState) {
        self.0
            .lock()
            .expect("role board lock")
            .insert(role.to_owned(), state);
    }

    pub fn get(&self, role: &str) -> Option<RoleState> {
        self.0.lock().expect("role board lock").get(role).cloned()
    }

    /// One line per role that is not running. The cause of a restart is in the log, not here:
    /// `/ready` is public, and dependency errors name hosts, buckets and users.
    pub fn problems(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("role board lock")
            .iter()
            .filter_map(|(name, state)| match state {
                RoleState::Running => None,
                RoleState::Starting => Some(format!("{name}: starting")),
                RoleState::Restarting { restarts, .. } => Some(format!(
                    "{name}: down, restarting (restart {restarts}; the cause is in the log)"
                )),
            })
            .collect()
    }
}

pub struct Readiness {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub store: Arc<dyn ObjectStore>,
    /// Present where a projector runs (the api role).
    pub projector: Option<ProjectorHandle>,
    pub roles: RoleBoard,
    /// How far the read model may trail the stream.
    pub max_lag: u64,
}

impl Readiness {
    /// The report: ready when it names no problem.
    pub async fn check(&self) -> ReadinessReport {
        let mut problems = Vec::new();
        // Read before the stream's sequence: the log only grows, so a sane model can't be
        // ahead of a sequence read after it.
        let applied = self.projector.as_ref().map(|p| p.applied_seq());
        if self.client.connection_state() != async_nats::connection::State::Connected {
            problems.push("nats: not connected".to_owned());
        }
        let stream_seq = match tokio::time::timeout(Duration::from_secs(2), self.stream_seq()).await
        {
            Ok(Ok(seq)) => Some(seq),
            Ok(Err(e)) => {
                tracing::warn!(err = %e, "/ready: jetstream");
                problems.push("jetstream: unavailable".to_owned());
                None
            }
            Err(_) => {
                problems.push("jetstream: no answer within 2 s".to_owned());
                None
            }
        };
        match tokio::time::timeout(
            Duration::from_secs(2),
            self.store.head(&ObjectPath::from(READY_PROBE)),
        )
        .await
        {
            Ok(Ok(_) | Err(object_store::Error::NotFound { .. })) => {}
            Ok(Err(e)) => {
                tracing::warn!(err = %e, "/ready: storage");
                problems.push("storage: unavailable".to_owned());
            }
            Err(_) => problems.push("storage: no answer within 2 s".to_owned()),
        }
        problems.extend(self.roles.problems());
        if let Some(projector) = &self.projector {
            if let Some(reason) = projector.halted() {
                problems.push(format!("projector: halted: {reason}"));
            }
            if let (Some(seq), Some(stream_seq)) = (applied, stream_seq) {
                problems.extend(lag_problem(seq, stream_seq, self.max_lag));
            }
        }
        ReadinessReport {
            status: if problems.is_empty() {
                "ready"
            } else {
                "not_ready"
            },
            problems,
            seq: applied,
            stream_seq,
        }
    }

    async fn stream_seq(&self) -> Result<u64, String> {
        gallery_nats::last_seq(&self.js).await.map_err(|e| e.0)
    }

    /// The `/ready` response.
    pub async fn respond(&self) -> (StatusCode, Json<ReadinessReport>) {
        let body = self.check().await;
        let status = if body.problems.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, Json(body))
    }
}

/// What the read model's position says, given the stream's last sequence read after it: too
/// far behind, or ahead, which a log that only grows can't explain (a stream recreated or
/// restored short of what this model folded: its later events would be new ones at sequences
/// the model believes it has applied, and would be skipped).
pub fn lag_problem(applied: u64, stream_seq: u64, max_lag: u64) -> Option<String> {
    if applied > stream_seq {
        return Some(format!(
            "read model: ahead of the stream ({applied} > {stream_seq}): the log lost events \
             this model folded; rebuild it (gallery rebuild)"
        ));
    }
    let lag = stream_seq - applied;
    (lag > max_lag).then(|| format!("read model: {lag} events behind"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_too_far_behind_or_ahead_of_the_log_is_a_problem() {
        assert_eq!(lag_problem(100, 100, 0), None);
        assert_eq!(lag_problem(90, 100, 10), None);
        assert_eq!(
            lag_problem(89, 100, 10).as_deref(),
            Some("read model: 11 events behind")
        );
        let ahead = lag_problem(120, 100, 1_000).unwrap();
        assert!(ahead.contains("ahead of the stream (120 > 100)"), "{ahead}");
    }

    #[test]
    fn the_board_names_roles_that_are_not_running() {
        let board = RoleBoard::default();
        board.set("processor", RoleState::Running);
        assert!(board.problems().is_empty());
        board.set("upload-watcher", RoleState::Starting);
        board.set(
            "projector",
            RoleState::Restarting {
                error: "lost the log".into(),
                restarts: 2,
            },
        );
        assert_eq!(
            board.problems(),
            [
                "projector: down, restarting (restart 2; the cause is in the log)",
                "upload-watcher: starting"
            ]
        );
    }
}
