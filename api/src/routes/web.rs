//! The web page at `/`: three static files compiled into the binary (`api/web/`), no build
//! step. It uses the public API only (links, listing, WebSocket), like any other client.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/style.css");
const DOCS: &str = include_str!("../../web/docs.html");
const DOCS_JS: &str = include_str!("../../web/docs.js");

/// Scripts and styles from this origin only; images and uploads may go to the S3 endpoint, and
/// the live stream is a WebSocket.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' http: https: data: blob:; connect-src 'self' ws: wss: http: https:; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The web page: upload photos and watch them being processed.
#[utoipa::path(get, path = "/", tag = "web", operation_id = "web_page",
    responses((status = 200, description = "HTML", content_type = "text/html", body = String)))]
pub async fn index() -> Response {
    page(INDEX, "text/html; charset=utf-8")
}

/// The web page's script.
#[utoipa::path(get, path = "/web/app.js", tag = "web", operation_id = "web_page_script",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String)))]
pub async fn app_js() -> Response {
    page(APP_JS, "text/javascript; charset=utf-8")
}

/// The pages' style sheet.
#[utoipa::path(get, path = "/web/style.css", tag = "web", operation_id = "web_page_style",
    responses((status = 200, description = "CSS", content_type = "text/css", body = String)))]
pub async fn style() -> Response {
    page(STYLE, "text/css; charset=utf-8")
}

/// This document as a page.
#[utoipa::path(get, path = "/docs", tag = "web", operation_id = "docs_page",
    responses((status = 200, description = "HTML", content_type = "text/html", body = String)))]
pub async fn docs() -> Response {
    page(DOCS, "text/html; charset=utf-8")
}

/// The docs page's script: renders `/openapi.json`.
#[utoipa::path(get, path = "/web/docs.js", tag = "web", operation_id = "docs_page_script",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String)))]
pub async fn docs_js() -> Response {
    page(DOCS_JS, "text/javascript; charset=utf-8")
}
