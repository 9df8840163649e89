//! The OpenAPI 3.1 description of the api, served at `/openapi.json` and read by the `/docs`
//! page.
//!
//! It is generated from the handlers: each carries a `#[utoipa::path]` attribute, and
//! [`crate::router`] registers every route through utoipa-axum's `routes!`, which takes the
//! path and method for the router from that same attribute. A route can't be served without
//! its operation, nor documented without being served (e2e/tests/openapi.rs checks both ways,
//! and checks the sample flow's real answers against the documented schemas).
//!
//! The string enums (states, error codes, event types, version names, accepted types) are built
//! from the Rust enums themselves, so the document can't drift from what the api sends.

use std::sync::Arc;

use axum::Extension;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Server};

use crate::view::{ErrorBody, VersionMeta, WsMessage};

/// The document's fixed parts; the paths come from the router.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "LITE Gallery API",
        description = "Upload links, listings, single images, reprocessing and a WebSocket per \
            project. Clients upload the file itself straight to the link they are given (S3, or \
            the api's own `/uploads/{id}` in local mode) with the same form in both modes.\n\n\
            Every error answer is a JSON `ErrorBody` with a stable `code`. When the deployment \
            requires tokens (`GET /config` says so), send `Authorization: Bearer <token>`; a \
            browser's WebSocket offers the token as the subprotocol `gallery.bearer.<token>` \
            next to `gallery.v1`. The WebSocket sends one `WsMessage` per event of the project.",
        license(name = "MIT OR Apache-2.0"),
    ),
    components(schemas(ErrorBody, WsMessage, VersionMeta)),
    modifiers(&BearerToken),
    tags(
        (name = "images", description = "Upload links, images and reprocessing"),
        (name = "projects", description = "A project's listing and live events"),
        (name = "files", description = "Local mode only: the upload and download endpoints S3 plays otherwise"),
        (name = "tokens", description = "Access: what the deployment requires, and minting project tokens"),
        (name = "operations", description = "Health and readiness"),
        (name = "web", description = "The web page and this document"),
    )
)]
pub struct ApiDoc;

/// The security scheme the operations name: `Authorization: Bearer <PASETO v4.local token>`.
pub const TOKEN: &str = "token";

struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("PASETO v4.local".into());
        scheme.description = Some(
            "A project token (`gallery token`, or `POST /tokens`). Required when `GET /config` \
             says `auth_required`; otherwise every request is allowed."
                .into(),
        );
        components
            .security_schemes
            .insert(TOKEN.into(), RefOr::T(SecurityScheme::Http(scheme)));
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// Whether the operation names the token scheme (it then answers 401 without a valid token
/// when the deployment requires tokens).
fn takes_token(op: &utoipa::openapi::path::Operation) -> bool {
    op.security
        .iter()
        .flatten()
        .any(|req| serde_json::to_value(req).is_ok_and(|v| v.get(TOKEN).is_some()))
}

/// Completes the generated document: the public URL as its server; 401 on every operation that
/// takes a token; and the error body as the `default` answer of every operation (any status an
/// operation doesn't list is an error with that body).
pub fn finish(mut doc: OpenApi, public_url: &str) -> OpenApi {
    doc.servers = Some(vec![Server::new(public_url)]);
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            if takes_token(op) {
                op.responses
                    .responses
                    .entry("401".into())
                    .or_insert_with(|| error_response("A token is required (`unauthorized`)"));
            }
            op.responses
                .responses
                .entry("default".into())
                .or_insert_with(|| {
                    error_response("An error: the status and `error.code` say which")
                });
        }
    }
    doc
}

/// The serialized document, built once per router.
#[derive(Clone)]
pub struct Spec(Arc<str>);

impl Spec {
    pub fn new(doc: &OpenApi) -> Self {
        Self(doc.to_pretty_json().expect("the document is JSON").into())
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "web",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn spec(Extension(spec): Extension<Spec>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        spec.0.to_string(),
    )
        .into_response()
}

/// `{id}` of the project routes (documentation: the handlers answer `invalid_project_id`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct ProjectPath {
    /// The project id: letters, digits, `_` and `-` (path parameters are required, which a
    /// `schema_with` field would lose)
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi_schemas::project_id;

    #[test]
    fn the_path_parameter_spells_the_project_id_rule() {
        use utoipa::IntoParams;
        let params = ProjectPath::into_params(|| None);
        let json = serde_json::to_value(&params[0]).unwrap();
        assert_eq!(json["required"], true);
        assert_eq!(
            json["schema"]["pattern"],
            serde_json::to_value(project_id()).unwrap()["pattern"]
        );
    }
}
