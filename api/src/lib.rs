//! The HTTP edge: upload links, the local-mode upload and download endpoints, listings, single
//! images, reprocessing, WebSockets and health, with auth, rate limits, the OpenAPI document
//! and the web page. [`router`] builds the routes over an [`AppState`]; [`serve`] runs them on
//! a bound listener until a cancellation token fires, so tests start it on port 0 in-process.
//! The background roles of an api process (upload watcher, import by URL, reconciler, deleter,
//! sweeper, bulk reprocess) are in `gallery-lifecycle`, which this crate calls into and which
//! never calls back.

pub mod access;
pub mod auth;
pub mod content_type;
pub mod error;
pub mod headers;
pub mod idempotency;
pub mod link_mode;
pub mod openapi;
pub mod openapi_schemas;
pub mod options;
pub mod rate_limits;
pub mod readiness;
pub mod request_id;
pub mod routes;
pub mod serve;
pub mod signing;
pub mod sigv4;
pub mod state;
pub mod view;
pub mod view_cache;

#[cfg(test)]
mod fuzz_tests;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use gallery_schema::ErrorCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use options::ApiOptions;
pub use readiness::{Readiness, RoleBoard, RoleState};
pub use routes::health::health_router;
pub use state::{ApiConfig, AppState};

/// The api's router: [`api_routes`] with the fallbacks, `/openapi.json`'s document and the
/// request-id layer.
pub fn router(state: AppState) -> Router {
    let (routes, doc) = api_routes(&state.config).split_for_parts();
    let spec = openapi::Spec::new(&openapi::finish(doc, &state.config.public_url));
    routes
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
                code: ErrorCode::InvalidRequest,
                message: METHOD_NOT_ALLOWED.into(),
                retry_after: None,
            }
        })
        .with_state(state)
        .layer(axum::Extension(spec))
        .layer(axum::middleware::from_fn(request_id::layer))
}

/// The message of the 405 answer (tests tell a route's absence from its refusals by it).
pub const METHOD_NOT_ALLOWED: &str = "method not allowed on this endpoint";

/// Every route with its documented operation: `routes!` takes each route's path and method
/// from the handler's `#[utoipa::path]`, so the router and the document can't disagree.
pub fn api_routes(config: &ApiConfig) -> OpenApiRouter<AppState> {
    // Room for the form fields and multipart framing around the largest accepted file.
    let upload_limit = config.max_upload_bytes as usize + 64 * 1024;
    let mut create = routes!(routes::create_image::create);
    let mut reprocess = routes!(routes::images::reprocess);
    let mut subscribe = routes!(routes::ws::subscribe);
    let mut upload = routes!(routes::uploads::upload);
    upload.2 = upload.2.layer(DefaultBodyLimit::max(upload_limit));
    if let Some(l) = &config.rate_limits {
        let keys = config.auth.as_ref();
        create.2 = rate_limits::limit(create.2, l, keys, l.links, l.token_links);
        reprocess.2 = rate_limits::limit(reprocess.2, l, keys, l.reprocess, l.reprocess);
        subscribe.2 = rate_limits::limit(subscribe.2, l, keys, l.ws, l.ws);
    }
    // Both spellings of the path share one handler and one rate limiter.
    let mut unslashed = routes!(routes::create_image::create_unslashed);
    unslashed.2 = create.2.clone();
    let mut router = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(routes::web::index))
        .routes(routes!(routes::web::app_js))
        .routes(routes!(routes::web::style))
        .routes(routes!(routes::web::docs))
        .routes(routes!(routes::web::docs_js))
        .routes(routes!(openapi::spec))
        .routes(routes!(routes::health::health))
        .routes(routes!(routes::health::ready))
        .routes(routes!(routes::config::config))
        .routes(routes!(routes::tokens::mint))
        .routes(unslashed)
        .routes(create)
        .routes(routes!(routes::images::get_one, routes::images::delete))
        .routes(reprocess)
        .routes(routes!(routes::images::complete))
        .routes(upload)
        .routes(routes!(routes::projects::list))
        .routes(routes!(routes::projects::delete))
        .routes(subscribe);
    // The key spans the rest of the path: axum's `{*key}`, which OpenAPI writes `{key}`.
    let (schemas, paths, files) = routes!(routes::files::download);
    router = router.route("/files/{*key}", files);
    let doc = router.get_openapi_mut();
    doc.paths.paths.extend(paths.paths);
    doc.components
        .get_or_insert_with(Default::default)
        .schemas
        .extend(schemas);
    router
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
