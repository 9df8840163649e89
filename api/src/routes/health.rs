//! `GET /health` (the process is up) and `GET /ready` (see [`crate::readiness`]).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::readiness::ReadinessReport;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[schema(schema_with = ok_only)]
    pub status: &'static str,
}

fn ok_only() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["ok"]))
        .build()
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    operation_id = "health",
    responses((status = 200, description = "Up", body = Health)),
)]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: NATS, the stream, storage, every role, and the read model caught up.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    operation_id = "ready",
    responses(
        (status = 200, description = "Ready", body = ReadinessReport),
        (status = 503, description = "Not ready: `problems` says why", body = ReadinessReport),
    ),
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<ReadinessReport>) {
    state.readiness.respond().await
}

/// `/health` and `/ready` alone, for a process without the api (`gallery processor`).
pub fn health_router(readiness: std::sync::Arc<crate::readiness::Readiness>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new().route("/health", get(health)).route(
        "/ready",
        get(move || {
            let readiness = readiness.clone();
            async move { readiness.respond().await }
        }),
    )
}
