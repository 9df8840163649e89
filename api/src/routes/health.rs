//! `GET /health` (the process is up) and `GET /ready` (NATS and storage usable, read model
//! caught up within a bound).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use gallery_schema::subjects::STREAM;
use object_store::path::Path as ObjectPath;
use serde_json::{Value, json};

use crate::state::AppState;

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let mut problems = Vec::new();
    if state.client.connection_state() != async_nats::connection::State::Connected {
        problems.push("nats: not connected".to_owned());
    }
    let stream_seq = match tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let mut stream = state
            .js
            .get_stream(STREAM)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .info()
            .await
            .map(|i| i.state.last_sequence)
            .map_err(|e| e.to_string())
    })
    .await
    {
        Ok(Ok(seq)) => Some(seq),
        Ok(Err(e)) => {
            problems.push(format!("jetstream: {e}"));
            None
        }
        Err(_) => {
            problems.push("jetstream: no answer within 2 s".to_owned());
            None
        }
    };
    match state.store.head(&ObjectPath::from("ready-probe")).await {
        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => problems.push(format!("storage: {e}")),
    }
    let applied = state.projector.applied_seq();
    if let Some(seq) = stream_seq {
        let lag = seq.saturating_sub(applied);
        if lag > state.config.ready_max_lag {
            problems.push(format!("read model: {lag} events behind"));
        }
    }
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if problems.is_empty() { "ready" } else { "not_ready" },
        "problems": problems,
        "seq": applied,
        "stream_seq": stream_seq,
    });
    (status, Json(body))
}
