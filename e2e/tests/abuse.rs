//! Abuse is bounded, against real processes: slow and stalled clients are cut off, uploads end
//! with their link, floods are limited per address and per token, connections per address and
//! waiting links per project are capped. Several clients are several loopback addresses.

use std::time::Duration;

use futures::StreamExt;
use gallery_e2e::secure::{client_from, done_image, keys_of, link_flood, mint};
use gallery_e2e::{TestStack, jpeg_photo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn slow_header_and_stalled_body_clients_are_cut_off_while_others_are_served() {
    let stack = TestStack::start_with(|c| {
        c.api.http.header_timeout = Duration::from_secs(2);
        c.api.http.idle_timeout = Duration::from_secs(3);
        c.api.ws_ping_every = Duration::from_millis(500);
    })
    .await
    .unwrap();
    let addr = stack.running.as_ref().unwrap().addr;

    // Half a request line, then a byte a second: cut at the header timeout.
    let slow_header = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                n = s.read(&mut buf) => {
                    // Closed (0 or an error), or a 408 before closing.
                    match n {
                        Ok(0) | Err(_) => return started.elapsed(),
                        Ok(_) => continue,
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if s.write_all(b"X").await.is_err() {
                        return started.elapsed();
                    }
                }
            }
            assert!(started.elapsed() < Duration::from_secs(20), "never cut off");
        }
    });
    // A body announced but never sent: cut at the idle timeout.
    let stalled_body = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /images/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"file",
        )
        .await
        .unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 512];
        loop {
            match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
                Ok(Ok(_)) => continue,
                Err(_) => panic!("a stalled body was never cut off"),
            }
        }
    });
    // Meanwhile a normal client is served, and a WebSocket that answers pings (its reader
    // never stops, as a browser's doesn't) stays open past the idle timeout.
    let mut ws = stack.ws("calm", None).await.unwrap();
    let (tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            let next = ws.next_json_within(Duration::from_secs(60)).await;
            let end = next.is_err();
            let _ = tx.send(next.map_err(|e| format!("{e:#}")));
            if end {
                return;
            }
        }
    });
    let (s, _) = stack.get_json("/health").await.unwrap();
    assert_eq!(s, 200);
    let cut_header = slow_header.await.unwrap();
    let cut_body = stalled_body.await.unwrap();
    assert!(
        cut_header < Duration::from_secs(6),
        "slow header held {cut_header:?}"
    );
    assert!(
        cut_body < Duration::from_secs(8),
        "stalled body held {cut_body:?}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let id = done_image(&stack, "calm").await;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), messages.recv())
            .await
            .expect("an event in time")
            .expect("the reader is running")
            .expect("the socket stayed open");
        if msg["image_id"] == id.as_str() && msg["type"] == "processed" {
            break;
        }
    }
    reader.abort();
}

#[tokio::test]
async fn an_upload_that_outlives_its_link_is_stopped_and_one_image_takes_one_upload_at_a_time() {
    let stack = TestStack::start_with(|c| {
        c.api.upload_link_ttl = Duration::from_secs(2);
        c.lifecycle.upload_grace = Duration::from_secs(1);
    })
    .await
    .unwrap();
    let link = stack.request_link("trickle", "slow.jpg").await.unwrap();
    let id = link["image_id"].as_str().unwrap().to_owned();
    let photo = jpeg_photo(200, 200);
    // A body that trickles in for 20 s: the link (2 s) plus the grace (1 s) ends it.
    let trickle = {
        let chunks: Vec<Vec<u8>> = photo.chunks(64).map(<[u8]>::to_vec).collect();
        futures::stream::iter(chunks).then(|c| async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            Ok::<_, std::io::Error>(c)
        })
    };
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in link["params"].as_object().unwrap() {
        form = form.text(k.clone(), v.as_str().unwrap().to_owned());
    }
    form = form.part(
        "file",
        reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(trickle))
            .file_name("slow.jpg")
            .mime_str("image/jpeg")
            .unwrap(),
    );
    let http = stack.http.clone();
    let url = link["upload_link"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let slow = tokio::spawn(async move { http.post(url).multipart(form).send().await });
    // While it trickles, a second upload through the same link is refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, b) = stack.upload(&link, photo.clone()).await.unwrap();
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{b}"
    );
    match slow.await.unwrap() {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_eq!(status, 410, "{body}");
            assert_eq!(body["error"]["code"], "link_expired");
        }
        // The server may close the connection before the client finishes sending.
        Err(err) => assert!(err.is_request() || err.is_body(), "{err}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    let rec = stack.image(&id).await.unwrap();
    assert_ne!(rec["state"], "uploaded");
    assert!(rec["meta"]["size"].is_null(), "{rec}");
}

#[tokio::test]
async fn a_link_flood_from_one_address_is_limited_while_another_address_is_served() {
    use gallery_api::rate_limits::Rate;
    let stack = TestStack::start_with(|c| {
        c.api.rate_limits = gallery_api::auth::Switch::On;
        c.api.limits.links = Rate {
            per_second: 2.0,
            burst: 5,
        };
    })
    .await
    .unwrap();
    let flooder = client_from("127.0.0.2");
    let started = std::time::Instant::now();
    let (statuses, limited) = link_flood(&stack, &flooder, None, 40).await;
    let took = started.elapsed().as_secs_f64();
    let served = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    // The burst, plus what the rate (2/s) refilled while the flood lasted.
    let most = 5 + (took * 2.0).ceil() as usize;
    assert!(
        (5..=most).contains(&served),
        "{served} served in {took:.2} s: {statuses:?}"
    );
    assert_eq!(served + refused, 40, "{statuses:?}");
    let (body, retry_after) = limited.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(retry_after.parse::<u64>().unwrap() >= 1);
    // Another address is served meanwhile.
    let neighbour = client_from("127.0.0.3");
    let (statuses, _) = link_flood(&stack, &neighbour, None, 3).await;
    assert_eq!(statuses, vec![201, 201, 201]);
    // And the flooder again once its quota has refilled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (statuses, _) = link_flood(&stack, &flooder, None, 1).await;
    assert_eq!(statuses, vec![201]);
}

#[tokio::test]
async fn a_link_flood_with_one_token_is_limited_while_another_token_is_served() {
    use gallery_api::rate_limits::Rate;
    let mut stack = TestStack::start_with(|c| {
        c.api.auth = gallery_api::auth::Switch::On;
        c.api.rate_limits = gallery_api::auth::Switch::On;
        c.api.limits.links = Rate {
            per_second: 1000.0,
            burst: 1000,
        };
        c.api.limits.token_links = Rate {
            per_second: 2.0,
            burst: 5,
        };
    })
    .await
    .unwrap();
    let keys = keys_of(&stack);
    let noisy = mint(&keys, "flood", "upload");
    let quiet = mint(&keys, "flood", "upload");
    stack.token = None;
    // From several addresses: the token, not the address, is what is limited.
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    for ip in ["127.0.0.4", "127.0.0.5", "127.0.0.6"] {
        let (s, _) = link_flood(&stack, &client_from(ip), Some(&noisy), 10).await;
        statuses.extend(s);
    }
    let served = statuses.iter().filter(|s| **s == 201).count();
    let took = started.elapsed().as_secs_f64();
    let most = 5 + (took * 2.0).ceil() as usize;
    assert!(
        (5..=most).contains(&served),
        "{served} served in {took:.2} s: {statuses:?}"
    );
    let (quiet_statuses, _) = link_flood(&stack, &client_from("127.0.0.4"), Some(&quiet), 3).await;
    assert_eq!(quiet_statuses, vec![201, 201, 201]);
}

#[tokio::test]
async fn websocket_connects_and_connections_per_address_are_capped() {
    use gallery_api::rate_limits::Rate;
    let stack = TestStack::start_with(|c| {
        c.api.rate_limits = gallery_api::auth::Switch::On;
        // One more every 10 s: the five connects below can't earn a refill, however slow.
        c.api.limits.ws = Rate {
            per_second: 0.1,
            burst: 3,
        };
        c.api.max_connections_per_address = 4;
    })
    .await
    .unwrap();
    let addr = stack.running.as_ref().unwrap().addr;
    let connect_from = |ip: &'static str| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    };
    // WebSocket connects: a burst of 3, then 429.
    let mut outcomes = Vec::new();
    let mut open = Vec::new();
    for _ in 0..5 {
        let stream = connect_from("127.0.0.7").await;
        let req = stack.ws_url("capped", None).into_client_request().unwrap();
        match tokio_tungstenite::client_async(req, stream).await {
            Ok((ws, _)) => {
                outcomes.push(101);
                open.push(ws);
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                outcomes.push(resp.status().as_u16())
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(outcomes, vec![101, 101, 101, 429, 429]);
    // Open sockets count against the address's connections even though their HTTP
    // connections ended with the upgrade: with three open, one more connection fits.
    let mut fourth = connect_from("127.0.0.7").await;
    fourth
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = fourth.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut over = connect_from("127.0.0.7").await;
    let mut answer = String::new();
    over.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    drop((open, fourth));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Connections: four held open from one address; the fifth gets a 429 and is closed,
    // while another address connects.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = connect_from("127.0.0.8").await;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut fifth = connect_from("127.0.0.8").await;
    let mut answer = String::new();
    fifth.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("rate_limited"));
    let other = client_from("127.0.0.9");
    let resp = other.get(stack.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // A held connection that closes frees its slot.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = connect_from("127.0.0.8").await;
    again
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = again.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_project_can_have_only_so_many_links_waiting_for_their_upload() {
    let stack = TestStack::start_with(|c| {
        c.api.rate_limits = gallery_api::auth::Switch::On;
        c.api.max_pending_links = 3;
    })
    .await
    .unwrap();
    let mut links = Vec::new();
    for n in 0..3 {
        links.push(
            stack
                .request_link("hoard", &format!("{n}.jpg"))
                .await
                .unwrap(),
        );
    }
    let body = json!({"filename": "4.jpg", "project_id": "hoard"});
    let resp = stack
        .http
        .post(stack.url("/images/"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "rate_limited", "{err}");
    // Another project is not affected, and using a link makes room.
    stack.request_link("other", "a.jpg").await.unwrap();
    let (s, b) = stack.upload(&links[0], jpeg_photo(100, 100)).await.unwrap();
    assert_eq!(s, 201, "{b}");
    stack.request_link("hoard", "4.jpg").await.unwrap();
}
