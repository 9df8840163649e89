//! The security suite, against real processes: project tokens on every route, the WebSocket's
//! token and Origin checks, key rotation, hostile ids, forged events published straight to
//! NATS, and the closed embedded broker. `abuse.rs` has the timeouts, caps and rate limits.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use futures::{SinkExt, StreamExt};
use gallery_api::auth::{KeyEntry, Rights, Scope, TokenKeys};
use gallery_e2e::secure::{assert_error, done_image, keys_of, mint, secured, ws_handshake};
use gallery_e2e::{TestStack, jpeg_photo};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn tokens_scope_every_route_to_their_project_and_rights() {
    let stack = secured().await;
    let keys = keys_of(&stack);
    let (status, config) = stack.get_json_as("/config", None).await.unwrap();
    assert_eq!((status, &config["auth_required"]), (200, &json!(true)));

    let a_image = done_image(&stack, "sec-a").await;
    let a_rw = mint(&keys, "sec-a", "upload,read,subscribe");
    let a_read = mint(&keys, "sec-a", "read");
    let b_all = mint(&keys, "sec-b", "upload,read,subscribe,admin");
    let expired = keys
        .mint(
            &Scope::parse("sec-a").unwrap(),
            Rights::parse("read").unwrap(),
            Utc::now() - TimeDelta::seconds(1),
        )
        .unwrap();
    let stranger = TokenKeys::from_entries(vec![KeyEntry {
        kid: "k1".into(),
        secret: "9c1d5b0e7a3f4c2d8e6b1a0f9e8d7c6b5a4f3e2d1c0b9a8f".into(),
        verify_until: None,
    }])
    .unwrap();
    let wrong_key = mint(&stranger, "*", "upload,read,subscribe,admin");

    let create = json!({"filename": "x.jpg", "project_id": "sec-a"});
    let list = "/projects/sec-a/images";
    let one = format!("/images/{a_image}");
    let reprocess = format!("/images/{a_image}/reprocess");
    let complete = format!("/images/{a_image}/complete");

    // No token, an expired one, one signed with a key we don't have: 401 everywhere.
    for token in [None, Some(expired.as_str()), Some(wrong_key.as_str())] {
        let (s, b) = stack
            .post_json_as("/images/", &create, token)
            .await
            .unwrap();
        assert_error(s, &b, 401, "unauthorized");
        let (s, b) = stack.get_json_as(list, token).await.unwrap();
        assert_error(s, &b, 401, "unauthorized");
        let (s, b) = stack.get_json_as(&one, token).await.unwrap();
        assert_error(s, &b, 401, "unauthorized");
        let (s, b) = stack
            .post_json_as(&reprocess, &json!({}), token)
            .await
            .unwrap();
        assert_error(s, &b, 401, "unauthorized");
        let headers: Vec<(&'static str, String)> = token
            .map(|t| vec![("authorization", format!("Bearer {t}"))])
            .unwrap_or_default();
        assert_eq!(
            ws_handshake(&stack, "sec-a", &headers).await.err(),
            Some(401)
        );
    }
    let resp = stack.http.get(stack.url(list)).send().await.unwrap();
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );

    // Another project's token: 403 on project routes, 404 on the image (nothing learned).
    let (s, b) = stack
        .post_json_as("/images/", &create, Some(&b_all))
        .await
        .unwrap();
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = stack.get_json_as(list, Some(&b_all)).await.unwrap();
    assert_error(s, &b, 403, "forbidden");
    for path in [&one, &reprocess, &complete] {
        let (s, b) = if path == &one {
            stack.get_json_as(path, Some(&b_all)).await.unwrap()
        } else {
            stack
                .post_json_as(path, &json!({}), Some(&b_all))
                .await
                .unwrap()
        };
        assert_error(s, &b, 404, "not_found");
        let text = b.to_string();
        assert!(
            !text.contains("photo.jpg") && !text.contains("sec-a"),
            "{text}"
        );
    }
    let bearer_b = vec![("authorization", format!("Bearer {b_all}"))];
    assert_eq!(
        ws_handshake(&stack, "sec-a", &bearer_b).await.err(),
        Some(403)
    );
    // Its own project works.
    let (s, _) = stack
        .get_json_as("/projects/sec-b/images", Some(&b_all))
        .await
        .unwrap();
    assert_eq!(s, 200);

    // A read-only token reads but can't upload, reprocess or subscribe.
    let (s, b) = stack.get_json_as(list, Some(&a_read)).await.unwrap();
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["images"][0]["image_id"], a_image.as_str());
    assert!(b["images"][0]["versions"]["original"].is_string());
    let (s, b) = stack
        .post_json_as("/images/", &create, Some(&a_read))
        .await
        .unwrap();
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = stack
        .post_json_as(&reprocess, &json!({}), Some(&a_read))
        .await
        .unwrap();
    assert_error(s, &b, 403, "forbidden");
    let read_only = vec![("authorization", format!("Bearer {a_read}"))];
    assert_eq!(
        ws_handshake(&stack, "sec-a", &read_only).await.err(),
        Some(403)
    );

    // The project's own upload token: link, upload (the link is the capability), reprocess.
    let (s, link) = stack
        .post_json_as("/images/", &create, Some(&a_rw))
        .await
        .unwrap();
    assert_eq!(s, 201, "{link}");
    let (s, b) = stack.upload(&link, jpeg_photo(300, 200)).await.unwrap();
    assert_eq!(s, 201, "{b}");
    let (s, b) = stack
        .post_json_as(&reprocess, &json!({}), Some(&a_rw))
        .await
        .unwrap();
    assert_eq!(s, 202, "{b}");

    // A version is served sandboxed, never as active content of the api's origin.
    let rec = stack.wait_state(&a_image, "done").await.unwrap();
    let resp = stack
        .http
        .get(rec["versions"]["thumb"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-security-policy"], "sandbox");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn websockets_take_the_token_as_a_subprotocol_and_check_the_origin() {
    let stack = secured().await;
    let keys = keys_of(&stack);
    let sub = mint(&keys, "sec-ws", "subscribe");
    let offer = format!("gallery.v1, gallery.bearer.{sub}");

    // A browser's way: the token rides as a subprotocol; the server selects gallery.v1.
    let origin = stack.base();
    let (protocol, mut ws) = ws_handshake(
        &stack,
        "sec-ws",
        &[
            ("sec-websocket-protocol", offer.clone()),
            ("origin", origin),
        ],
    )
    .await
    .expect("handshake");
    assert_eq!(protocol.as_deref(), Some("gallery.v1"));
    let id = done_image(&stack, "sec-ws").await;
    let events = ws.collect_until(&id, "processed").await.unwrap();
    assert!(events.iter().any(|e| e["type"] == "version_rendered"));

    // Another site's page may not, whatever token it holds.
    let evil = [
        ("sec-websocket-protocol", offer.clone()),
        ("origin", "https://evil.example".to_owned()),
    ];
    assert_eq!(ws_handshake(&stack, "sec-ws", &evil).await.err(), Some(403));
    // The token is never taken from the query string.
    let url = format!("{}&token={sub}", stack.ws_url("sec-ws", Some(0)));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401)
        }
        other => panic!(
            "a token in the query string was accepted: {:?}",
            other.is_ok()
        ),
    }

    // A socket ends when its token does (1008), not only at the next connect.
    let brief = keys
        .mint(
            &Scope::parse("sec-ws").unwrap(),
            Rights::parse("subscribe").unwrap(),
            Utc::now() + TimeDelta::seconds(2),
        )
        .unwrap();
    let (_, mut short) = ws_handshake(
        &stack,
        "sec-ws",
        &[(
            "sec-websocket-protocol",
            format!("gallery.v1, gallery.bearer.{brief}"),
        )],
    )
    .await
    .expect("handshake");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match short.stream.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .expect("closed when the token expired");
    let frame = closed.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1008);
    assert!(frame.reason.contains("expired"), "{frame:?}");

    // A 1 MiB message from a client ends its socket.
    let (_, mut ws) = ws_handshake(&stack, "sec-ws", &[("sec-websocket-protocol", offer)])
        .await
        .expect("handshake");
    let _ = ws
        .stream
        .send(Message::Text("x".repeat(1 << 20).into()))
        .await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.stream.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a 1 MiB message did not end the socket");
}

#[tokio::test]
async fn admins_mint_narrower_tokens_and_rotated_keys_keep_working_for_their_window() {
    let mut stack = secured().await;
    let keys = keys_of(&stack);
    let tenant_admin = mint(&keys, "tenant-*", "read,subscribe,admin");
    let reader = mint(&keys, "tenant-1", "read");

    let ask = json!({"project": "tenant-1", "rights": ["read", "subscribe"], "ttl": "1h"});
    let (s, minted) = stack
        .post_json_as("/tokens", &ask, Some(&tenant_admin))
        .await
        .unwrap();
    assert_eq!(s, 201, "{minted}");
    assert_eq!(minted["rights"], json!(["read", "subscribe"]));
    let minted = minted["token"].as_str().unwrap().to_owned();
    let (s, _) = stack
        .get_json_as("/projects/tenant-1/images", Some(&minted))
        .await
        .unwrap();
    assert_eq!(s, 200);
    // Outside its scope, or without admin: refused.
    let outside = json!({"project": "other", "rights": "read"});
    let (s, b) = stack
        .post_json_as("/tokens", &outside, Some(&tenant_admin))
        .await
        .unwrap();
    assert_error(s, &b, 403, "forbidden");
    let wider = json!({"project": "*", "rights": "read"});
    let (s, b) = stack
        .post_json_as("/tokens", &wider, Some(&tenant_admin))
        .await
        .unwrap();
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = stack
        .post_json_as("/tokens", &ask, Some(&reader))
        .await
        .unwrap();
    assert_error(s, &b, 403, "forbidden");
    // Nor rights the caller doesn't hold itself.
    let more = json!({"project": "tenant-1", "rights": "upload"});
    let (s, b) = stack
        .post_json_as("/tokens", &more, Some(&tenant_admin))
        .await
        .unwrap();
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = stack.post_json_as("/tokens", &ask, None).await.unwrap();
    assert_error(s, &b, 401, "unauthorized");

    // Rotation: a new key signs, the old one still verifies until its window ends.
    let path = stack.data_dir().join("token-keys.json");
    let mut entries: Vec<KeyEntry> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    entries[0].verify_until = Some(Utc::now() + TimeDelta::hours(1));
    entries.insert(
        0,
        KeyEntry {
            kid: "k-next".into(),
            secret: "5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b5e4d3c2b1a0f9e8d".into(),
            verify_until: None,
        },
    );
    std::fs::write(&path, serde_json::to_string(&entries).unwrap()).unwrap();
    stack.restart(|_| {}).await.unwrap();
    let rotated = keys_of(&stack);
    assert_eq!(rotated.signing_kid(), "k-next");
    // A token of the retiring key can't be renewed past the key's window under the new key.
    let window_end = entries[1].verify_until.unwrap();
    let long = json!({"project": "tenant-1", "rights": "read", "ttl": "30d"});
    let (s, renewed) = stack
        .post_json_as("/tokens", &long, Some(&tenant_admin))
        .await
        .unwrap();
    assert_eq!(s, 201, "{renewed}");
    let renewed_until =
        chrono::DateTime::parse_from_rfc3339(renewed["expires_at"].as_str().unwrap()).unwrap();
    assert!(
        renewed_until <= window_end + TimeDelta::seconds(1),
        "{renewed}"
    );
    let fresh = mint(&rotated, "tenant-1", "read");
    for token in [&reader, &fresh] {
        let (s, b) = stack
            .get_json_as("/projects/tenant-1/images", Some(token))
            .await
            .unwrap();
        assert_eq!(s, 200, "{b}");
    }
    // The old key's window has ended: its tokens stop working; the new ones go on.
    entries[1].verify_until = Some(Utc::now() - TimeDelta::seconds(1));
    std::fs::write(&path, serde_json::to_string(&entries).unwrap()).unwrap();
    stack.restart(|_| {}).await.unwrap();
    let (s, b) = stack
        .get_json_as("/projects/tenant-1/images", Some(&reader))
        .await
        .unwrap();
    assert_error(s, &b, 401, "unauthorized");
    let (s, _) = stack
        .get_json_as("/projects/tenant-1/images", Some(&fresh))
        .await
        .unwrap();
    assert_eq!(s, 200);
}

#[tokio::test]
async fn hostile_ids_get_a_json_4xx_on_every_route_that_takes_one() {
    let stack = secured().await;
    let token = stack.token.clone();
    let corpus = [
        "a.b",
        "*",
        ">",
        "a%2Eb",
        "a%2A",
        "%3E",
        "..",
        "a%20b",
        "a%00b",
        "images.x.>",
        "%2F..%2F",
        "a$b",
        "~",
        "%E2%80%AE",
    ];
    for id in corpus {
        for (method, path) in [
            ("GET", format!("/projects/{id}/images")),
            ("GET", format!("/projects/{id}/ws")),
            ("GET", format!("/images/{id}")),
            ("POST", format!("/images/{id}/reprocess")),
            ("POST", format!("/images/{id}/complete")),
            ("POST", format!("/uploads/{id}")),
        ] {
            // An HTTP client resolves `..` segments before sending (WHATWG URLs do, even
            // percent-encoded): those are sent as written, over a plain socket.
            let (status, body) = if id.contains("..") {
                raw_request(&stack, method, &path, token.as_deref()).await
            } else {
                let mut req = if method == "GET" {
                    stack.http.get(stack.url(&path))
                } else {
                    stack.http.post(stack.url(&path)).json(&json!({}))
                };
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let resp = req.send().await.unwrap();
                // Percent-encoding aside, the request went to the route it names.
                assert_eq!(
                    resp.url().path().split('/').count(),
                    path.split('/').count(),
                    "the client rewrote {path}"
                );
                let status = resp.status().as_u16();
                (status, resp.json().await.unwrap_or(Value::Null))
            };
            assert!(
                (400..500).contains(&status),
                "{method} {path}: {status} {body}"
            );
            assert!(body["error"]["code"].is_string(), "{method} {path}: {body}");
        }
        let body = json!({"filename": "a.jpg", "project_id": id});
        let (s, b) = stack.post_json("/images/", &body).await.unwrap();
        assert!((400..500).contains(&s), "{id}: {s} {b}");
    }
}

/// One HTTP/1.1 request over a plain socket, the path exactly as given; the status and the JSON
/// body.
async fn raw_request(
    stack: &TestStack,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = stack.running.as_ref().unwrap().addr;
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_forged_event_with_a_foreign_key_never_reaches_the_read_model_or_a_client() {
    use gallery_schema::{Event, EventBody, EventKind, ImageId, ProjectId, VersionName};
    use gallery_schema::{VersionRendered, keys, subjects};
    // No processor: the test plays it, so the image sits in `processing` where the fold
    // accepts version_rendered events, forged ones included if they got past the decode step.
    let stack = TestStack::start_with(|c| c.roles = gallery::app::Roles::Api)
        .await
        .unwrap();
    let mut ws = stack.ws("mallory", None).await.unwrap();
    let link = stack.request_link("mallory", "bait.jpg").await.unwrap();
    let target = link["image_id"].as_str().unwrap().to_owned();
    stack.upload(&link, jpeg_photo(64, 64)).await.unwrap();
    stack.wait_state(&target, "uploaded").await.unwrap();

    let nats = gallery_nats::connect(&stack.nats.url(), Duration::from_secs(10))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(nats);
    let publish = |subject: String, event: &Event| {
        let js = js.clone();
        let payload = event.encode();
        async move {
            js.publish(subject, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    let (p, i) = (
        ProjectId::parse("mallory").unwrap(),
        ImageId::parse(&target).unwrap(),
    );
    let started = Event::new(
        p.clone(),
        i,
        EventBody::ProcessingStarted {
            attempt: 1,
            generation: 1,
        },
    );
    publish(
        subjects::event_subject(&p, &i, EventKind::ProcessingStarted),
        &started,
    )
    .await;
    stack.wait_state(&target, "processing").await.unwrap();

    let rendered = |key: String| {
        Event::new(
            p.clone(),
            i,
            EventBody::VersionRendered(VersionRendered {
                version: VersionName::Thumb,
                key,
                width: 10,
                height: 10,
                bytes: 10,
                content_type: "image/jpeg".into(),
                generation: 1,
            }),
        )
    };
    let victim_p = ProjectId::parse("victim").unwrap();
    let victim = ImageId::new_v7();
    let subject = subjects::event_subject(&p, &i, EventKind::VersionRendered);
    // Keys of somebody else's original and version, and of no image at all.
    for key in [
        keys::original_key(&victim_p, &victim),
        keys::version_key(&victim_p, &victim, 1, VersionName::Thumb, "jpg"),
        "secrets/anything".to_owned(),
    ] {
        publish(subject.clone(), &rendered(key)).await;
    }
    // The image's own, valid event, but on another image's subject: misrouted.
    let own = rendered(keys::version_key(&p, &i, 1, VersionName::Thumb, "jpg"));
    let elsewhere = subjects::event_subject(&p, &ImageId::new_v7(), EventKind::VersionRendered);
    publish(elsewhere, &own).await;

    // A legitimate event after them: once it is in the listing, the forged ones were read.
    let later = stack.request_link("mallory", "later.jpg").await.unwrap();
    let later = later["image_id"].as_str().unwrap().to_owned();
    stack.wait_state(&later, "init").await.unwrap();
    let rec = stack.image(&target).await.unwrap();
    assert_eq!(rec["state"], "processing");
    assert!(
        rec["versions"]["thumb"].is_null(),
        "a forged version got in: {rec}"
    );
    // The project's socket saw the legitimate events and nothing forged.
    let events = ws.collect_until(&later, "upload_requested").await.unwrap();
    assert!(events.iter().any(|e| e["type"] == "processing_started"));
    for e in &events {
        assert_ne!(
            e["type"], "version_rendered",
            "a forged event reached a client: {e}"
        );
    }
}

#[tokio::test]
async fn the_embedded_nats_listens_on_loopback_and_refuses_connections_without_its_credential() {
    let server = gallery_nats::NatsServer::start_temp().await.unwrap();
    assert!(server.url().contains('@'), "the URL carries the credential");
    let anonymous = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::connect(server.address()),
    )
    .await
    .expect("an answer");
    assert!(anonymous.is_err(), "connected without the credential");
    let wrong = server
        .address()
        .replacen("nats://", "nats://gallery:wrong@", 1);
    let refused = async_nats::ConnectOptions::new()
        .user_and_password("gallery".into(), "wrong".into())
        .connect(server.address())
        .await;
    assert!(refused.is_err(), "connected with a wrong password");
    let wrong_client = gallery_nats::connect(&wrong, Duration::from_secs(2)).await;
    assert!(
        wrong_client.is_err()
            || wrong_client.unwrap().connection_state() != async_nats::connection::State::Connected
    );
    let client = gallery_nats::connect(&server.url(), Duration::from_secs(10))
        .await
        .unwrap();
    client.flush().await.unwrap();
    // Only loopback is listened on.
    let info = client.server_info();
    assert_eq!(info.host, "127.0.0.1");
    // The credential and the config that holds it are private to their owner.
    use std::os::unix::fs::PermissionsExt;
    for file in ["credential", "nats-server.conf"] {
        let dir = server.dir();
        let mode = std::fs::metadata(dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is readable by others: {mode:o}");
    }
}
