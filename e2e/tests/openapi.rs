//! The OpenAPI document (`/openapi.json`) against the real api:
//! - every route the router serves is documented, and every documented operation is served,
//!   method by method;
//! - the sample flow's real answers (successes, errors, and every WebSocket message) match the
//!   schemas the document gives for their operation and status, in local and S3 mode. The
//!   schemas forbid unknown fields, so a field the api sends without documenting it fails too.

use std::collections::{BTreeMap, BTreeSet};

use gallery_e2e::secure::{keys_of, mint, secured};
use gallery_e2e::{TestStack, jpeg_photo};
use serde_json::{Value, json};

/// The document, and checks of values against its schemas (JSON Schema 2020-12, formats
/// checked: date-times, UUIDs and URIs must be real ones).
struct Doc(Value);

impl Doc {
    async fn fetch(stack: &TestStack) -> Doc {
        let resp = stack
            .http
            .get(stack.url("/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let doc: Value = resp.json().await.unwrap();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1."),
            "{}",
            doc["openapi"]
        );
        Doc(doc)
    }

    /// Path parameters must be required (OpenAPI 3.1, 4.8.12.1): tools refuse documents where
    /// one isn't.
    fn check_path_parameters(&self) {
        for (path, item) in self.0["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["in"] == "path" {
                        assert_eq!(p["required"], true, "{method} {path}: {p}");
                        assert!(path.contains(&format!("{{{}}}", p["name"].as_str().unwrap())));
                    }
                }
            }
        }
    }

    /// `(path template, method)` of every documented operation.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.0["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((path.clone(), method.clone()));
            }
        }
        out
    }

    /// The JSON schema documented for this answer. The status must be listed itself: every
    /// operation also has a `default` (the error body), which would let any status pass.
    fn response_schema(&self, path: &str, method: &str, status: u16) -> Value {
        let op = &self.0["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        let response = &op["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} answered {status}, which its operation doesn't list"
        );
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path} documents no JSON body for {status}: {response}"
        );
        schema.clone()
    }

    fn validate(&self, schema: &Value, value: &Value, what: &str) {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.0["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("{what}: the documented schema doesn't compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what} doesn't match its documented schema:\n  {}\nvalue: {value:#}",
            errors.join("\n  ")
        );
    }

    /// Checks a real answer against the documented answer of `method path` for `status`.
    fn check(&self, method: &str, path: &str, status: u16, body: &Value) {
        let schema = self.response_schema(path, method, status);
        self.validate(&schema, body, &format!("{method} {path} -> {status}"));
    }

    fn check_component(&self, name: &str, value: &Value) {
        let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
        self.validate(&schema, value, name);
    }
}

/// The paths of an axum router, read from its `Debug` form (axum doesn't list its routes
/// otherwise): the path router's `RouteId(n): "/path"` entries, before the fallback router's.
fn router_paths(router: &axum::Router<gallery_api::AppState>) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    let routes = debug
        .split("fallback_router")
        .next()
        .expect("a path router");
    let mut paths = BTreeSet::new();
    for piece in routes.split("RouteId(").skip(1) {
        let Some((_, rest)) = piece.split_once(')') else {
            continue;
        };
        if let Some(quoted) = rest.strip_prefix(": \"") {
            let path = quoted.split('"').next().unwrap();
            // axum's `{*key}` is OpenAPI's `{key}`.
            paths.insert(path.replace("{*", "{"));
        }
    }
    paths
}

/// A concrete request path for a template.
fn concrete(path: &str) -> String {
    let image = uuid::Uuid::now_v7().to_string();
    if path.starts_with("/projects/") {
        path.replace("{id}", "p1")
    } else {
        path.replace("{id}", &image)
            .replace("{key}", "originals/p1/some/key")
    }
}

#[tokio::test]
async fn every_route_is_documented_and_every_operation_served() {
    let stack = TestStack::start().await.unwrap();
    let doc = Doc::fetch(&stack).await;
    let config = gallery_api::ApiConfig::new("http://127.0.0.1:1");
    let (router, _) = gallery_api::api_routes(&config).split_for_parts();
    let served = router_paths(&router);
    assert!(
        served.len() >= 15 && served.contains("/projects/{id}/ws"),
        "reading the router's paths failed (did axum's Debug output change?): {served:?}"
    );
    doc.check_path_parameters();
    let documented: BTreeSet<String> = doc.operations().into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        served, documented,
        "paths served (left) and documented (right) differ"
    );

    // Method by method, against the running api: a method is served unless the router
    // answers with its 405 fallback.
    let mut served_ops = BTreeSet::new();
    for path in &served {
        for method in ["get", "post", "put", "patch", "delete"] {
            let url = stack.url(&concrete(path));
            let req = stack
                .http
                .request(method.to_uppercase().parse().unwrap(), url);
            let req = if method == "get" {
                req
            } else {
                req.json(&json!({}))
            };
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert!(
                !(status == 404 && body["error"]["message"] == "no such endpoint"),
                "{method} {path}: the path is not routed at all"
            );
            let refused =
                status == 405 && body["error"]["message"] == gallery_api::METHOD_NOT_ALLOWED;
            if !refused {
                served_ops.insert((path.clone(), method.to_owned()));
            }
        }
    }
    assert_eq!(
        served_ops,
        doc.operations(),
        "operations served (left) and documented (right) differ"
    );
}

/// Everything the sample flow sees, with tokens on: config, tokens, links, the upload, the
/// record in every state, the listing, reprocessing, a corrupt file, the errors, and every
/// WebSocket message.
#[tokio::test]
async fn the_sample_flow_matches_the_documented_schemas() {
    let stack = secured().await;
    let doc = Doc::fetch(&stack).await;

    let (status, body) = stack.get_json("/config").await.unwrap();
    assert_eq!(status, 200);
    doc.check("get", "/config", status, &body);
    for path in ["/health", "/ready"] {
        let (status, body) = stack.get_json(path).await.unwrap();
        assert_eq!(status, 200, "{body}");
        doc.check("get", path, status, &body);
    }
    let (status, body) = stack
        .post_json(
            "/tokens",
            &json!({ "project": "42", "rights": ["read", "subscribe"], "ttl": "1h" }),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    doc.check("post", "/tokens", status, &body);

    let mut ws = stack.ws("42", Some(0)).await.unwrap();
    let link = stack.request_link("42", "holiday.jpg").await.unwrap();
    doc.check("post", "/images/", 201, &link);
    let image_id = link["image_id"].as_str().unwrap().to_owned();
    let (status, body) = stack
        .get_json(&format!("/images/{image_id}"))
        .await
        .unwrap();
    assert_eq!(body["state"], "init");
    doc.check("get", "/images/{id}", status, &body);

    let (status, receipt) = stack.upload(&link, jpeg_photo(1200, 900)).await.unwrap();
    assert_eq!(status, 201, "{receipt}");
    doc.check("post", "/uploads/{id}", status, &receipt);
    let (status, body) = stack
        .post_json(&format!("/images/{image_id}/complete"), &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    doc.check("post", "/images/{id}/complete", status, &body);

    // Every message until the image is processed, each checked as the WebSocket's documented
    // message and as the component the document names.
    let messages = ws.collect_until(&image_id, "processed").await.unwrap();
    assert!(messages.iter().any(|m| m["type"] == "version_rendered"));
    for message in &messages {
        doc.check("get", "/projects/{id}/ws", 101, message);
        doc.check_component("WsMessage", message);
    }

    let done = stack.wait_state(&image_id, "done").await.unwrap();
    doc.check("get", "/images/{id}", 200, &done);
    for version in ["original", "thumb", "big_thumb", "big_1920", "d2500"] {
        assert!(done["versions"][version].is_string(), "{version}: {done}");
    }

    // A second image through the unslashed path, then the listing a page at a time.
    let (status, second) = stack
        .post_json(
            "/images",
            &json!({ "filename": "two.png", "project_id": 42 }),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{second}");
    doc.check("post", "/images", status, &second);
    let (status, page) = stack.get_json("/projects/42/images?limit=1").await.unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(page["next_cursor"].is_string(), "{page}");
    doc.check("get", "/projects/{id}/images", status, &page);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, page) = stack
        .get_json(&format!("/projects/42/images?limit=1&cursor={cursor}"))
        .await
        .unwrap();
    assert_eq!(page["images"][0]["image_id"], image_id.as_str());
    doc.check("get", "/projects/{id}/images", status, &page);

    let (status, body) = stack
        .post_json(&format!("/images/{image_id}/reprocess"), &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    doc.check("post", "/images/{id}/reprocess", status, &body);

    // A corrupt file: the record in `error`, and its `failed` message.
    let bad = stack.request_link("42", "broken.jpg").await.unwrap();
    let bad_id = bad["image_id"].as_str().unwrap().to_owned();
    let mut photo = jpeg_photo(300, 200);
    photo.truncate(300);
    let (status, body) = stack.upload(&bad, photo).await.unwrap();
    assert_eq!(status, 201, "{body}");
    let failed = stack.wait_state(&bad_id, "error").await.unwrap();
    assert!(failed["error"]["code"].is_string(), "{failed}");
    doc.check("get", "/images/{id}", 200, &failed);
    let messages = ws.collect_until(&bad_id, "failed").await.unwrap();
    for message in &messages {
        doc.check("get", "/projects/{id}/ws", 101, message);
    }

    // Errors: each checked against its documented status (or `default`).
    let errors: Vec<(&str, &str, u16, (u16, Value))> = vec![
        (
            "post",
            "/images/",
            400,
            stack
                .post_json("/images/", &json!({ "filename": "" }))
                .await
                .unwrap(),
        ),
        (
            "post",
            "/images/",
            415,
            stack
                .post_json(
                    "/images/",
                    &json!({ "filename": "a.svg", "project_id": "42" }),
                )
                .await
                .unwrap(),
        ),
        (
            "get",
            "/images/{id}",
            404,
            stack
                .get_json(&format!("/images/{}", uuid::Uuid::now_v7()))
                .await
                .unwrap(),
        ),
        (
            "get",
            "/projects/{id}/images",
            401,
            stack
                .get_json_as("/projects/42/images", None)
                .await
                .unwrap(),
        ),
        (
            "get",
            "/projects/{id}/images",
            403,
            stack
                .get_json_as(
                    "/projects/42/images",
                    Some(&mint(&keys_of(&stack), "other", "read")),
                )
                .await
                .unwrap(),
        ),
        (
            "post",
            "/tokens",
            403,
            stack
                .post_json_as(
                    "/tokens",
                    &json!({ "project": "42", "rights": "read" }),
                    Some(&mint(&keys_of(&stack), "42", "read")),
                )
                .await
                .unwrap(),
        ),
        (
            // An image still in `init` can't be reprocessed.
            "post",
            "/images/{id}/reprocess",
            409,
            stack
                .post_json(
                    &format!("/images/{}/reprocess", second["image_id"].as_str().unwrap()),
                    &json!({}),
                )
                .await
                .unwrap(),
        ),
    ];
    let mut checked = BTreeMap::new();
    for (method, path, want, (status, body)) in errors {
        assert_eq!(status, want, "{method} {path}: {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
        doc.check(method, path, status, &body);
        *checked.entry(status).or_insert(0) += 1;
    }
    assert!(checked.len() >= 5, "{checked:?}");
    let (status, body) = stack.upload(&link, jpeg_photo(100, 100)).await.unwrap();
    assert_eq!(status, 409, "a second upload: {body}");
    doc.check("post", "/uploads/{id}", status, &body);
    // Unsigned, and with a damaged expiry: both a JSON 403, not the framework's text answer.
    for query in ["", "?expires=soon&signature=x"] {
        let resp = stack
            .http
            .get(stack.url(&format!("/files/originals/42/x{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_signature");
        doc.check("get", "/files/{key}", 403, &body);
    }
}

/// In S3 mode the link carries S3's POST-policy fields and the URLs are presigned S3 URLs: the
/// same schemas hold.
#[tokio::test]
async fn s3_mode_answers_match_the_documented_schemas() {
    let stack = TestStack::start_s3().await.unwrap();
    let doc = Doc::fetch(&stack).await;
    let flow = stack
        .sample_flow("s3proj", "photo.jpg", jpeg_photo(800, 600))
        .await
        .unwrap();
    let (image_id, link) = (flow.id, flow.link);
    doc.check("post", "/images/", 201, &link);
    assert!(link["params"]["policy"].is_string(), "{link}");
    doc.check("get", "/images/{id}", 200, &flow.record);
    let (status, page) = stack.get_json("/projects/s3proj/images").await.unwrap();
    doc.check("get", "/projects/{id}/images", status, &page);
    // The api's own upload endpoint is local-mode only.
    let (status, body) = stack
        .upload(
            &json!({ "upload_link": stack.url(&format!("/uploads/{image_id}")), "method": "POST", "params": {} }),
            vec![1],
        )
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    doc.check("post", "/uploads/{id}", status, &body);
}
