//! A request id on every request: taken from `x-request-id` when the client (or a proxy) sent
//! a sane one, generated otherwise, returned in the response, and carried by the request's
//! span and by every event the request appends (`Gallery-Request-Id`), so one grep follows an
//! image from the api through the processor. Handlers record `project_id` and `image_id` on
//! the span when they know them.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// A client's id is kept if it is 1-128 characters of `[A-Za-z0-9._:-]`.
pub fn accept(raw: &str) -> Option<&str> {
    let ok = !raw.is_empty()
        && raw.len() <= 128
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    ok.then_some(raw)
}

pub async fn layer(mut req: Request, next: Next) -> Response {
    // The route's template, never the raw path: no ids (and no projects) in metric labels.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(accept)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let value = HeaderValue::from_str(&id).expect("checked characters");
    req.headers_mut().insert(HEADER, value.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        project_id = tracing::field::Empty,
        image_id = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let mut response = gallery_nats::REQUEST_ID
        .scope(id, next.run(req))
        .instrument(span.clone())
        .await;
    // One line per request: at debug level (thousands a second are normal), 5xx at warn.
    let status = response.status().as_u16();
    let secs = started.elapsed().as_secs_f64();
    let ms = secs * 1000.0;
    metrics::counter!("gallery_http_requests_total", "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("gallery_http_request_duration_seconds", "route" => route).record(secs);
    if status >= 500 {
        tracing::warn!(parent: &span, status, ms, "request failed");
    } else {
        tracing::debug!(parent: &span, status, ms, "request");
    }
    response.headers_mut().insert(HEADER, value);
    response
}

/// Records the request's project (and image) on its span.
pub fn record(project: &impl std::fmt::Display, image: Option<&impl std::fmt::Display>) {
    let span = tracing::Span::current();
    span.record("project_id", tracing::field::display(project));
    if let Some(image) = image {
        span.record("image_id", tracing::field::display(image));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_only_when_sane() {
        assert_eq!(accept("abc-123_x.y:z"), Some("abc-123_x.y:z"));
        for bad in ["", "a b", "a\nb", "ä", &"x".repeat(129), "a/b", "<script>"] {
            assert_eq!(accept(bad), None, "{bad:?}");
        }
    }
}
