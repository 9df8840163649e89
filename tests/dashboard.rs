//! The example Grafana dashboard (docs/grafana-dashboard.json) only plots metrics the code
//! records: a renamed metric fails here, not on an operator's empty panel.

use std::collections::BTreeSet;

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("gallery_") {
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
            .collect();
        let name = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_count")
            .trim_end_matches("_sum")
            .to_owned();
        names.insert(name);
    }
    names
}

fn source_text() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut text = String::new();
    for dir in [
        "src",
        "api/src",
        "api/lifecycle/src",
        "processor/src",
        "projector/src",
    ] {
        for entry in walk(&std::path::Path::new(root).join(dir)) {
            text.push_str(&std::fs::read_to_string(entry).unwrap());
        }
    }
    text
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

#[test]
fn every_dashboard_metric_is_recorded_by_the_code() {
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/grafana-dashboard.json"
    ))
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert!(json["panels"].as_array().unwrap().len() >= 10);
    let wanted = metric_names(&dashboard);
    let source = source_text();
    for name in &wanted {
        assert!(
            source.contains(&format!("\"{name}\"")),
            "{name} is not recorded anywhere"
        );
    }
    // And the list is on it.
    for must in [
        "gallery_http_requests_total",
        "gallery_http_request_duration_seconds",
        "gallery_links_requested_total",
        "gallery_uploads_detected_total",
        "gallery_versions_rendered_total",
        "gallery_render_duration_seconds",
        "gallery_upload_to_done_seconds",
        "gallery_failures_total",
        "gallery_consumer_pending",
        "gallery_consumer_ack_pending",
        "gallery_projector_lag_events",
        "gallery_websocket_connections",
        "gallery_websocket_dropped_total",
        "gallery_redrives_total",
    ] {
        assert!(wanted.contains(must), "the dashboard lacks {must}");
    }
}
