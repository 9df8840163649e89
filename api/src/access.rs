//! Who is asking: the [`Access`] extractor reads the bearer token of a request (the
//! `Authorization` header, or for a WebSocket handshake the subprotocol
//! `gallery.bearer.<token>`, since browsers can't set headers there; never the query string,
//! which ends up in logs) and checks it against the project a handler is about to touch.
//!
//! With auth off every request is allowed. With auth on: no token is 401 `unauthorized`; a bad
//! or expired one is 401 too; a valid token for another project is 403 `forbidden` on project
//! routes and 404 on image routes (an image id of another project is not confirmed to exist);
//! a missing right is 403.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use gallery_projector::Record;
use gallery_schema::{ErrorCode, ImageId, ProjectId};

use crate::auth::{Grant, Right};
use crate::error::{ApiError, ApiResult};
use crate::headers::bearer_token;
use crate::state::AppState;

#[derive(Debug, Clone)]
pub enum Access {
    /// Auth is off on this deployment.
    Open,
    /// Auth is on and the request carries no token.
    Anonymous,
    Token(Grant),
}

impl FromRequestParts<AppState> for Access {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let Some(keys) = state.config.auth.as_deref() else {
            return Ok(Self::Open);
        };
        match bearer_token(&parts.headers) {
            None => Ok(Self::Anonymous),
            Some(token) => keys
                .verify(token, chrono::Utc::now())
                .map(Self::Token)
                .map_err(|e| ApiError::new(ErrorCode::Unauthorized, e.to_string())),
        }
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "this deployment requires a token: send Authorization: Bearer <token> (see GET /config)",
    )
}

fn missing(right: Right, project: &ProjectId) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "the token does not grant {} on project {project}",
            right.as_str()
        ),
    )
}

impl Access {
    /// 401 unless the request is allowed to ask at all.
    pub fn signed_in(&self) -> ApiResult<()> {
        match self {
            Self::Anonymous => Err(unauthorized()),
            _ => Ok(()),
        }
    }

    /// For routes that name the project: 401 without a token, 403 for another project or a
    /// missing right.
    pub fn require(&self, project: &ProjectId, right: Right) -> ApiResult<()> {
        crate::request_id::record(project, None::<&ImageId>);
        match self {
            Self::Open => Ok(()),
            Self::Anonymous => Err(unauthorized()),
            Self::Token(g) if !g.scope.covers(project) => Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("the token is not for project {project}"),
            )),
            Self::Token(g) if !g.rights.contains(right) => Err(missing(right, project)),
            Self::Token(_) => Ok(()),
        }
    }

    /// For routes that name an image: loads it, answering 404 both when it doesn't exist and
    /// when it belongs to a project the token is not for; 403 for a missing right.
    pub fn image(&self, state: &AppState, id: &ImageId, right: Right) -> ApiResult<Record> {
        self.signed_in()?;
        let rec = state.load_record(id)?;
        match self {
            // Not confirmed to exist: not even the request's log line names its project.
            Self::Token(g) if !g.scope.covers(&rec.project_id) => Err(ApiError::not_found("image")),
            Self::Token(g) if !g.rights.contains(right) => Err(missing(right, &rec.project_id)),
            _ => {
                crate::request_id::record(&rec.project_id, Some(id));
                Ok(rec)
            }
        }
    }

    pub fn grant(&self) -> Option<&Grant> {
        match self {
            Self::Token(g) => Some(g),
            _ => None,
        }
    }
}
