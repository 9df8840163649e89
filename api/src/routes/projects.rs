//! `GET /projects/{id}/images`: a project's images, newest first, paged, optionally by state;
//! `DELETE /projects/{id}`: every image of a project.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gallery_schema::{ImageId, ImageState, ProjectId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::links;
use crate::access::Access;
use crate::auth::Right;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::view::{ErrorBody, ImageView};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

/// The listing's query. Read as text, so that a bad value gets `invalid_request` with the
/// reason; documented with the types the handler accepts.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Images per page, 1 to 500 (default 50)
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// `next_cursor` of the previous page
    #[param(format = Uuid)]
    cursor: Option<String>,
    /// Only images in this state
    #[param(schema_with = crate::openapi_schemas::image_state)]
    state: Option<String>,
}

/// A page of a project's images, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagePage {
    pub images: Vec<ImageView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    #[schema(required = true, format = Uuid)]
    pub next_cursor: Option<String>,
    /// The read model's stream sequence when the page was read: open the WebSocket with
    /// `?since=<seq>` to miss no change after it.
    pub seq: u64,
}

/// List a project's images.
#[utoipa::path(
    get,
    path = "/projects/{id}/images",
    tag = "projects",
    operation_id = "list_images",
    params(crate::openapi::ProjectPath, ListQuery),
    responses(
        (status = 200, description = "A page, newest first", body = ImagePage),
        (status = 400, description = "A bad project id, limit, cursor or state", body = ErrorBody),
        (status = 403, description = "The token doesn't grant `read` on the project", body = ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    access: Access,
    Path(project): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
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
        // Deleted images are never listed.
        Some(raw) => Some(
            ImageState::parse(raw)
                .filter(|s| *s != ImageState::Deleted)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "state must be one of init, uploaded, processing, done, error",
                    )
                })?,
        ),
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
    // The `ImagePage` JSON, written from the images' kept JSON (`view_cache`): signing 250
    // links and writing 80 KB of JSON per page of `done` images is most of a listing's cost.
    let views: Vec<_> = page
        .records
        .iter()
        .map(|r| state.views.json(r, &links))
        .collect();
    let body = page_json(&views, page.next_cursor.as_ref(), seq);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// An [`ImagePage`] as JSON from its images' JSON (pure: the same text serde writes for it).
pub fn page_json(views: &[impl AsRef<str>], next_cursor: Option<&ImageId>, seq: u64) -> String {
    let mut body =
        String::with_capacity(64 + views.iter().map(|v| v.as_ref().len() + 1).sum::<usize>());
    body.push_str("{\"images\":[");
    for (n, view) in views.iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        body.push_str(view.as_ref());
    }
    body.push_str("],\"next_cursor\":");
    match next_cursor {
        Some(c) => {
            body.push('"');
            body.push_str(&c.to_string());
            body.push('"');
        }
        None => body.push_str("null"),
    }
    body.push_str(",\"seq\":");
    body.push_str(&seq.to_string());
    body.push('}');
    body
}

/// Delete every image of a project.
///
/// Records `deleted` for each image the project has now (an image whose link is asked for
/// meanwhile may stay): they leave the listing at once, subscribers get a `deleted` message per
/// image, and the deleter removes their objects shortly after. Safe to repeat.
#[utoipa::path(
    delete,
    path = "/projects/{id}",
    tag = "projects",
    operation_id = "delete_project",
    params(crate::openapi::ProjectPath),
    responses(
        (status = 202, description = "Deleted; the objects go shortly after", body = super::images::Deletion),
        (status = 400, description = "A bad project id", body = ErrorBody),
        (status = 403, description = "The token doesn't grant `admin` on the project", body = ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    access: Access,
    Path(project): Path<String>,
) -> ApiResult<Response> {
    access.signed_in()?;
    let project = ProjectId::parse(&project)?;
    access.require(&project, Right::Admin)?;
    let mut images = Vec::new();
    let mut cursor = None;
    loop {
        let page = state
            .projector
            .store
            .list(&project, None, MAX_LIMIT, cursor.as_ref())
            .map_err(|e| ApiError::internal("listing images", e))?;
        images.extend(page.records.iter().map(|r| r.image_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let deletion = super::images::record_deletions(&state, &project, &images, true).await?;
    Ok((StatusCode::ACCEPTED, Json(deletion)).into_response())
}
