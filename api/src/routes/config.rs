//! `GET /config`: what a client must know before its first call (whether tokens are required,
//! and the upload limit).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// `{"auth_required": bool, "max_upload_bytes": n}`: open to everyone, so clients (and the
/// web page) know whether to ask for a token.
/// What a client needs to know before its first request.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Whether requests need `Authorization: Bearer <token>`.
    pub auth_required: bool,
    /// The largest file an upload link accepts.
    pub max_upload_bytes: u64,
}

/// What the deployment requires.
#[utoipa::path(
    get,
    path = "/config",
    tag = "tokens",
    operation_id = "get_config",
    responses((status = 200, description = "Whether tokens are required, and the upload limit", body = ClientConfig)),
)]
pub async fn config(State(state): State<AppState>) -> Json<ClientConfig> {
    Json(ClientConfig {
        auth_required: state.config.auth.is_some(),
        max_upload_bytes: state.config.max_upload_bytes,
    })
}
