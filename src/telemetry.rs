//! Logs and metrics, in one place: the log subscriber (`RUST_LOG` overrides the default
//! filter), the Prometheus recorder and its `/metrics` router, and the sampler of gauges.

use tracing_subscriber::EnvFilter;

/// `--log-format`: `text` for people, `json` (one object per line, with the span's fields:
/// `request_id`, `project_id`, `image_id`) for log pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sled=warn,async_nats=warn"));
    // Colours only on a terminal (a log file or pipe gets plain text to grep), and never
    // under NO_COLOR.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .try_init(),
    };
}

/// The process's Prometheus recorder, installed on first use (every `gallery_*` metric of
/// every role goes to it); its handle renders the text format for `/metrics`.
pub fn metrics() -> metrics_exporter_prometheus::PrometheusHandle {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0, 60.0, 120.0,
                    ],
                )
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Tests may start several stacks in one process: the first recorder stays.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// `/metrics` on its own router (the metrics listener, or a processor's health port).
pub fn metrics_router() -> axum::Router {
    let handle = metrics();
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    )
}

/// Samples what the log and the consumers say, every `every`, until `stop`: consumer pending
/// and ack-pending, and how far the read model trails the stream.
pub async fn sample(
    js: async_nats::jetstream::Context,
    projector: Option<gallery_projector::ProjectorHandle>,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    use gallery_schema::subjects::{
        DELETER_CONSUMER, PROCESSOR_CONSUMER, STREAM, UPLOAD_WATCHER_CONSUMER,
    };
    let handle = metrics();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        handle.run_upkeep();
        let Ok(mut stream) = js.get_stream(STREAM).await else {
            continue;
        };
        if let Ok((_, last)) = gallery_nats::read::bounds_of(&mut stream).await {
            metrics::gauge!("gallery_stream_last_seq").set(last as f64);
            if let Some(p) = &projector {
                let lag = last.saturating_sub(p.applied_seq());
                metrics::gauge!("gallery_projector_lag_events").set(lag as f64);
            }
        }
        for name in [
            PROCESSOR_CONSUMER,
            UPLOAD_WATCHER_CONSUMER,
            DELETER_CONSUMER,
        ] {
            let consumer: Result<async_nats::jetstream::consumer::PullConsumer, _> =
                stream.get_consumer(name).await;
            if let Ok(mut consumer) = consumer
                && let Ok(info) = consumer.info().await
            {
                metrics::gauge!("gallery_consumer_pending", "consumer" => name)
                    .set(info.num_pending as f64);
                metrics::gauge!("gallery_consumer_ack_pending", "consumer" => name)
                    .set(info.num_ack_pending as f64);
            }
        }
    }
}
