//! What a request's headers say, with no state: its bearer token (the `Authorization` header,
//! or for a WebSocket handshake the subprotocol `gallery.bearer.<token>`), and which browser
//! origins are allowed. A leaf: the access checks, the rate limiter and the configuration read
//! these rules without depending on each other.

use axum::http::HeaderMap;

/// The subprotocol every WebSocket client offers (and the server selects).
pub const WS_PROTOCOL: &str = "gallery.v1";
/// The prefix of the subprotocol that carries a token.
pub const WS_BEARER_PREFIX: &str = "gallery.bearer.";

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
