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
use axum::http::HeaderMap;
use axum::http::request::Parts;
use gallery_projector::Record;
use gallery_schema::{ErrorCode, ImageId, ProjectId};

use crate::auth::{Grant, Right};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The subprotocol every WebSocket client offers (and the server selects).
pub const WS_PROTOCOL: &str = "gallery.v1";
/// The prefix of the subprotocol that carries a token.
pub const WS_BEARER_PREFIX: &str = "gallery.bearer.";

#[derive(Debug, Clone)]
pub enum Access {
    /// Auth is off on this deployment.
    Open,
    /// Auth is on and the request carries no token.
    Anonymous,
    Token(Grant),
}

/// The token of a request, if it carries one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty());
    }
    // Only a WebSocket handshake carries a token as a subprotocol.
    headers.get(axum::http::header::UPGRADE)?;
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(WS_BEARER_PREFIX))
        .filter(|t| !t.is_empty())
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
        let rec = crate::routes::load_record(state, id)?;
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

/// Whether a browser page from `origin` may open a WebSocket here. A request without `Origin`
/// (curl, servers, native apps) is allowed: the check is against other web pages using a
/// visitor's browser, which always sends it.
pub fn origin_allowed(origin: Option<&str>, allowed: &[String]) -> bool {
    match origin {
        None => true,
        Some(origin) => {
            let origin = origin.trim().trim_end_matches('/');
            allowed
                .iter()
                .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
        }
    }
}

/// The origins allowed by default: the public URL's, and for a loopback public URL the same
/// port on every loopback name (`localhost`, `127.0.0.1`, `[::1]`), which browsers treat as
/// different origins.
pub fn default_origins(public_url: &str) -> Vec<String> {
    let trimmed = public_url.trim_end_matches('/');
    let Some((scheme, rest)) = trimmed.split_once("://") else {
        return vec![trimmed.to_owned()];
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let origin = format!("{scheme}://{authority}");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
    if !loopback {
        return vec![origin];
    }
    ["localhost", "127.0.0.1", "[::1]"]
        .into_iter()
        .map(|h| match port {
            Some(p) => format!("{scheme}://{h}:{p}"),
            None => format!("{scheme}://{h}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tokens_come_from_the_header_or_a_websocket_subprotocol_only() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer v4.local.abc"),
        );
        assert_eq!(bearer_token(&h), Some("v4.local.abc"));
        h.insert("authorization", HeaderValue::from_static("Basic dXNlcg=="));
        assert_eq!(bearer_token(&h), None);

        let mut ws = HeaderMap::new();
        ws.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("gallery.v1, gallery.bearer.v4.local.xyz"),
        );
        // Without an upgrade it is not a handshake: the subprotocol is not read.
        assert_eq!(bearer_token(&ws), None);
        ws.insert("upgrade", HeaderValue::from_static("websocket"));
        assert_eq!(bearer_token(&ws), Some("v4.local.xyz"));
    }

    #[test]
    fn origins_are_checked_against_the_list() {
        let allowed = default_origins("http://127.0.0.1:8080");
        assert!(origin_allowed(None, &allowed));
        assert!(origin_allowed(Some("http://localhost:8080"), &allowed));
        assert!(origin_allowed(Some("http://127.0.0.1:8080"), &allowed));
        assert!(!origin_allowed(Some("http://127.0.0.1:9999"), &allowed));
        assert!(!origin_allowed(Some("https://evil.example"), &allowed));
        assert!(!origin_allowed(Some("null"), &allowed));
        let public = default_origins("https://photos.example.com/");
        assert_eq!(public, vec!["https://photos.example.com".to_owned()]);
        assert!(origin_allowed(Some("https://PHOTOS.example.com"), &public));
        assert!(!origin_allowed(Some("http://photos.example.com"), &public));
    }
}
