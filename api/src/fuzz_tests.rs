//! Bounded, reproducible fuzzing of the request parsers on every CI run (a fixed seed); the
//! `fuzz/` crate has `cargo fuzz` targets for longer runs. Whatever a client sends, the answer
//! is a value or a 4xx error with a stable code, never a panic or a 5xx.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::routes::create_image::parse_create;
use crate::routes::tokens::parse_mint;
use crate::routes::uploads::Params;
use crate::routes::ws::parse_since;

fn config() -> Config {
    Config {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x6a11_e7a5),
        failure_persistence: None,
        ..Config::default()
    }
}

fn client_error<T>(result: Result<T, ApiError>) -> Result<(), TestCaseError> {
    if let Err(e) = result {
        prop_assert!(e.status.is_client_error(), "{e:?}");
        prop_assert!(!e.message.is_empty());
    }
    Ok(())
}

/// JSON values shaped like what clients send, with hostile leaves.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,300}".prop_map(Value::String),
        "[a-z0-9*>._ -]{0,70}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("filename".to_owned()),
                    Just("project_id".to_owned()),
                    Just("content_type".to_owned()),
                    Just("size".to_owned()),
                    Just("project".to_owned()),
                    Just("rights".to_owned()),
                    Just("ttl".to_owned()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn create_bodies_are_a_request_or_a_4xx(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        client_error(parse_create(&raw, 50_000_000))?;
    }

    #[test]
    fn json_shaped_create_bodies_are_a_request_or_a_4xx(value in json_value()) {
        let raw = serde_json::to_vec(&value).unwrap();
        match parse_create(&raw, 50_000_000) {
            // What is accepted has a project id that is a valid subject token.
            Ok(req) => prop_assert!(gallery_schema::ProjectId::parse(req.project_id.as_str()).is_ok()),
            Err(e) => prop_assert!(e.status.is_client_error(), "{e:?}"),
        }
        client_error(parse_mint(&raw))?;
    }

    #[test]
    fn upload_form_fields_are_checked_or_a_4xx(
        fields in prop::collection::vec(prop::option::of(".{0,40}"), 5),
    ) {
        let params = Params {
            key: fields[0].clone(),
            content_type: fields[1].clone(),
            max_bytes: fields[2].clone(),
            expires: fields[3].clone(),
            signature: fields[4].clone(),
        };
        client_error(params.check())?;
    }

    #[test]
    fn websocket_since_is_a_sequence_or_a_4xx(raw in prop::option::of(".{0,30}")) {
        client_error(parse_since(raw.as_deref()))?;
    }

    #[test]
    fn tokens_of_any_shape_are_refused_without_a_panic(raw in ".{0,600}") {
        let keys = crate::auth::TokenKeys::from_json(
            r#"[{"kid":"k","secret":"0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978"}]"#,
        ).unwrap();
        prop_assert!(keys.verify(&raw, chrono::Utc::now()).is_err());
        let mut headers = axum::http::HeaderMap::new();
        if let Ok(v) = axum::http::HeaderValue::from_str(&raw) {
            headers.insert("authorization", v.clone());
            let _ = crate::headers::bearer_token(&headers);
        }
    }
}
