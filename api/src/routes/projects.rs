//! `GET /projects/{id}/images`: a project's images, newest first, paged, optionally by state.

use axum::Json;
use axum::extract::{Path, Query, State};
use gallery_schema::{ImageId, ImageState, ProjectId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::links;
use crate::access::Access;
use crate::auth::Right;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::view::record_json;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    state: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    access: Access,
    Path(project): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    access.signed_in()?;
    let project = ProjectId::parse(&project)?;
    access.require(&project, Right::Read)?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::invalid(format!("limit must be 1 to {MAX_LIMIT}")))?,
    };
    let filter = match q.state.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(ImageState::parse(raw).ok_or_else(|| {
            ApiError::invalid("state must be one of init, uploaded, processing, done, error")
        })?),
    };
    let cursor = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(raw) => {
            Some(ImageId::parse(raw).map_err(|_| ApiError::invalid("cursor is not valid"))?)
        }
    };
    // The sequence is read before the page: replaying the WebSocket from it can repeat an event
    // the page already shows, but never miss one.
    let seq = state.projector.applied_seq();
    let page = state
        .projector
        .store
        .list(&project, filter, limit, cursor.as_ref())
        .map_err(|e| ApiError::internal("listing images", e))?;
    let links = links(&state);
    let images: Vec<Value> = page
        .records
        .iter()
        .map(|r| record_json(r, &links))
        .collect();
    Ok(Json(json!({
        "images": images,
        "next_cursor": page.next_cursor.map(|c| c.to_string()),
        "seq": seq,
    })))
}
