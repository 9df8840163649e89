//! The HTTP api: upload links, the local-mode upload and download endpoints, listings, single
//! images, reprocessing, WebSockets and health. [`router`] builds the routes over an
//! [`AppState`]; [`serve`] runs them on a bound listener until a cancellation token fires, so
//! tests start it on port 0 in-process.

pub mod access;
pub mod auth;
pub mod content_type;
pub mod error;
pub mod idempotency;
pub mod limits;
pub mod readiness;
pub mod reconciler;
pub mod request_id;
pub mod routes;
pub mod serve;
pub mod signing;
pub mod sigv4;
pub mod state;
pub mod view;
pub mod watcher;

#[cfg(test)]
mod fuzz_tests;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use gallery_schema::ErrorCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use readiness::{Readiness, RoleBoard, RoleState, health_router};
pub use state::{ApiConfig, AppState};

pub fn router(state: AppState) -> Router {
    // Room for the form fields and multipart framing around the largest accepted file.
    let upload_limit = state.config.max_upload_bytes as usize + 64 * 1024;
    let mut create = post(routes::images::create);
    let mut reprocess = post(routes::images::reprocess);
    let mut subscribe = get(routes::ws::subscribe);
    if let Some(l) = &state.config.rate_limits {
        let keys = state.config.auth.as_ref();
        create = limits::limit(create, l, keys, l.links, l.token_links);
        reprocess = limits::limit(reprocess, l, keys, l.reprocess, l.reprocess);
        subscribe = limits::limit(subscribe, l, keys, l.ws, l.ws);
    }
    Router::new()
        .route("/", get(routes::web::index))
        .route("/web/app.js", get(routes::web::app_js))
        .route("/web/style.css", get(routes::web::style))
        .route("/health", get(routes::health::health))
        .route("/ready", get(routes::health::ready))
        .route("/config", get(routes::tokens::config))
        .route("/tokens", post(routes::tokens::mint))
        .route("/images", create.clone())
        .route("/images/", create)
        .route("/images/{id}", get(routes::images::get_one))
        .route("/images/{id}/reprocess", reprocess)
        .route("/images/{id}/complete", post(routes::images::complete))
        .route(
            "/uploads/{id}",
            post(routes::uploads::upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/files/{*key}", get(routes::files::download))
        .route("/projects/{id}/images", get(routes::projects::list))
        .route("/projects/{id}/ws", subscribe)
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
                code: ErrorCode::InvalidRequest,
                message: "method not allowed on this endpoint".into(),
                retry_after: None,
            }
        })
        .with_state(state)
        .layer(axum::middleware::from_fn(request_id::layer))
}

/// Serves until `shutdown` fires, then lets open requests finish (with the default timeouts
/// and caps of [`serve::ServeConfig`]).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve::serve(
        listener,
        router(state),
        serve::ServeConfig::default(),
        shutdown,
    )
    .await
}
