//! Helpers of the security suites (`tests/security.rs`, `tests/abuse.rs`): tokens minted with
//! a stack's own keys, WebSocket handshakes with chosen headers, clients bound to chosen
//! loopback addresses (each one a different client to the server's limits).

use chrono::{TimeDelta, Utc};
use gallery_api::auth::{Rights, Scope, TokenKeys};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::{TestStack, WsClient, jpeg_photo};
use std::time::Duration;

pub fn keys_of(stack: &TestStack) -> TokenKeys {
    TokenKeys::load(&stack.data_dir().join("token-keys.json")).unwrap()
}

pub fn mint(keys: &TokenKeys, project: &str, rights: &str) -> String {
    keys.mint(
        &Scope::parse(project).unwrap(),
        Rights::parse(rights).unwrap(),
        Utc::now() + TimeDelta::hours(1),
    )
    .unwrap()
}

/// A stack with auth on, and an admin token for every project as its own token.
pub async fn secured() -> TestStack {
    let mut stack = TestStack::start_with(|c| c.api.auth = gallery_api::auth::Switch::On)
        .await
        .unwrap();
    stack.token = Some(mint(&keys_of(&stack), "*", "upload,read,subscribe,admin"));
    stack
}

/// An image of `project`, uploaded and rendered, using the stack's admin token.
pub async fn done_image(stack: &TestStack, project: &str) -> String {
    let photo = jpeg_photo(400, 300);
    stack
        .sample_flow(project, "photo.jpg", photo)
        .await
        .unwrap()
        .id
}

/// A WebSocket handshake with these extra headers: `Ok(selected subprotocol)` on 101, or
/// `Err(status)`.
pub async fn ws_handshake(
    stack: &TestStack,
    project: &str,
    headers: &[(&'static str, String)],
) -> Result<(Option<String>, WsClient), u16> {
    let mut req = stack
        .ws_url(project, Some(0))
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        req.headers_mut()
            .insert(*name, value.parse().expect("header value"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((stream, resp)) => {
            let protocol = resp
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned());
            Ok((protocol, WsClient { stream }))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(other) => panic!("websocket handshake: {other}"),
    }
}

pub fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
}

/// An HTTP client whose connections come from `ip` (any 127.x address is this machine).
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `POST /images/` `n` times at once from `client`; the statuses, and one 429's body and
/// `Retry-After`.
pub async fn link_flood(
    stack: &TestStack,
    client: &reqwest::Client,
    token: Option<&str>,
    n: usize,
) -> (Vec<u16>, Option<(Value, String)>) {
    let body = json!({"filename": "f.jpg", "project_id": "flood"});
    let requests = (0..n).map(|_| {
        let mut req = client.post(stack.url("/images/")).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    });
    let mut statuses = Vec::new();
    let mut limited = None;
    for resp in futures::future::join_all(requests).await {
        let resp = resp.unwrap();
        let status = resp.status().as_u16();
        statuses.push(status);
        if status == 429 && limited.is_none() {
            let retry = resp.headers()["retry-after"].to_str().unwrap().to_owned();
            limited = Some((resp.json().await.unwrap(), retry));
        }
    }
    (statuses, limited)
}
