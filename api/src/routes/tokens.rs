//! `POST /tokens`: an admin token mints narrower tokens.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use gallery_schema::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::access::Access;
use crate::auth::{MAX_TTL, Right, Rights, Scope};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::view::ErrorBody;

/// The body of `POST /tokens` (documentation: [`parse_mint`] reads it).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct MintTokenRequest {
    /// A project id, a prefix ending in `*` (`acme-*`), or `*` for every project.
    #[schema(example = "acme-42")]
    project: String,
    /// `upload`, `read`, `subscribe`, `admin`: a list, or one comma-separated string.
    #[schema(schema_with = rights_schema)]
    rights: Value,
    /// Seconds, or a duration like `24h` or `30d` (default 24h, at most 366 days).
    #[schema(schema_with = ttl_schema)]
    ttl: Option<Value>,
}

fn right_names() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(Right::ALL.map(Right::as_str)))
        .build()
}

fn rights_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(ArrayBuilder::new().items(right_names()).min_items(Some(1)))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .examples(["read,subscribe"]),
        )
        .build()
        .into()
}

fn ttl_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .examples(["24h"]),
        )
        .build()
        .into()
}

/// A minted token.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintedToken {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// The token's project scope.
    pub project: String,
    #[schema(schema_with = minted_rights)]
    pub rights: Vec<&'static str>,
    /// The token's end: the asked TTL, cut to the minting token's own end.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

fn minted_rights() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(right_names())
        .build()
}

/// A mint request: `{"project": "<id or prefix*>", "rights": "read,subscribe" | [..],
/// "ttl": "24h" | seconds}` (pure, unit-tested).
#[derive(Debug, PartialEq)]
pub struct MintRequest {
    pub scope: Scope,
    pub rights: Rights,
    pub ttl: Duration,
}

pub fn parse_mint(body: &[u8]) -> ApiResult<MintRequest> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body must be a JSON object: {e}")))?;
    let field = |name: &str| value.get(name).filter(|v| !v.is_null());
    let scope = match field("project") {
        Some(Value::String(s)) => Scope::parse(s).map_err(|e| ApiError::invalid(e.to_string()))?,
        Some(_) => return Err(ApiError::invalid("project must be a string")),
        None => {
            return Err(ApiError::invalid(
                "project is required (an id, or a prefix ending in *)",
            ));
        }
    };
    let rights = match field("rights") {
        Some(Value::String(s)) => Rights::parse(s),
        Some(Value::Array(items)) => {
            let names: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            let names = names.ok_or_else(|| ApiError::invalid("rights must be strings"))?;
            Rights::parse(&names.join(","))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "rights must be a list or a comma-separated string",
            ));
        }
        None => return Err(ApiError::invalid("rights is required")),
    }
    .map_err(|e| ApiError::invalid(e.to_string()))?;
    let ttl = match field("ttl") {
        None => Duration::from_secs(24 * 3600),
        Some(Value::Number(n)) => Duration::from_secs(
            n.as_u64()
                .ok_or_else(|| ApiError::invalid("ttl must be a whole number of seconds"))?,
        ),
        Some(Value::String(s)) => humantime::parse_duration(s.trim())
            .map_err(|e| ApiError::invalid(format!("ttl {s:?}: {e} (try 1h or 30d)")))?,
        Some(_) => {
            return Err(ApiError::invalid(
                "ttl must be seconds or a duration like 24h",
            ));
        }
    };
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(ApiError::invalid(
            "ttl must be between 1 second and 366 days",
        ));
    }
    Ok(MintRequest { scope, rights, ttl })
}

/// Mints a token inside the caller's scope and rights, expiring no later than the caller's own
/// token.
/// Mint a project token.
///
/// Needs an admin token covering the asked scope and rights; the new token never outlives the
/// admin token (nor its key's retirement).
#[utoipa::path(
    post,
    path = "/tokens",
    tag = "tokens",
    operation_id = "mint_token",
    request_body = MintTokenRequest,
    responses(
        (status = 201, description = "The token", body = MintedToken),
        (status = 400, description = "A bad project, rights or ttl", body = ErrorBody),
        (status = 403, description = "The token is not admin over that scope, or lacks a right it would grant", body = ErrorBody),
        (status = 404, description = "Tokens are off on this deployment (`--auth off`)", body = ErrorBody),
    ),
    security(("token" = [])),
)]
pub async fn mint(
    State(state): State<AppState>,
    access: Access,
    body: Bytes,
) -> ApiResult<Response> {
    let Some(keys) = state.config.auth.as_deref() else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "tokens are off on this deployment (--auth off): every request is allowed",
        ));
    };
    access.signed_in()?;
    let req = parse_mint(&body)?;
    let grant = access
        .grant()
        .ok_or_else(|| ApiError::new(ErrorCode::Forbidden, "minting needs an admin token"))?;
    if !grant.rights.contains(Right::Admin) || !grant.scope.covers_scope(&req.scope) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("the token does not grant admin on {}", req.scope),
        ));
    }
    // Never wider than the caller: its rights, and its lifetime (which ends with a retiring
    // key's window, so a retiring key's tokens can't be renewed under the new one).
    if !grant.rights.covers(req.rights) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "the token grants {} only; it can't mint {}",
                grant.rights, req.rights
            ),
        ));
    }
    let wanted = Utc::now()
        + chrono::TimeDelta::from_std(req.ttl).map_err(|e| ApiError::invalid(e.to_string()))?;
    let expires_at = wanted.min(grant.valid_until());
    let token = keys
        .mint(&req.scope, req.rights, expires_at)
        .map_err(|e| ApiError::internal("minting a token", e))?;
    tracing::info!(scope = %req.scope, rights = %req.rights, by_kid = %grant.kid, "token minted");
    Ok((
        StatusCode::CREATED,
        Json(MintedToken {
            token,
            project: req.scope.to_string(),
            rights: req.rights.names(),
            expires_at: expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_requests_are_validated() {
        let ok = parse_mint(br#"{"project":"acme-*","rights":["read","subscribe"],"ttl":"2h"}"#)
            .unwrap();
        assert_eq!(ok.scope, Scope::Prefix("acme-".into()));
        assert_eq!(ok.rights, Rights::parse("read,subscribe").unwrap());
        assert_eq!(ok.ttl, Duration::from_secs(7200));
        let secs = parse_mint(br#"{"project":"p","rights":"upload","ttl":60}"#).unwrap();
        assert_eq!(secs.ttl, Duration::from_secs(60));
        for bad in [
            "x",
            r#"{"rights":"read"}"#,
            r#"{"project":"a.b","rights":"read"}"#,
            r#"{"project":"p","rights":"write"}"#,
            r#"{"project":"p","rights":[1]}"#,
            r#"{"project":"p","rights":"read","ttl":0}"#,
            r#"{"project":"p","rights":"read","ttl":"400d"}"#,
            r#"{"project":"p","rights":"read","ttl":-1}"#,
        ] {
            let err = parse_mint(bad.as_bytes()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "{bad}");
        }
    }
}
