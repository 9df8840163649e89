//! The figures of a load run (pure): latency percentiles, errors by code, and the report as a
//! table for people and JSON for machines.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Latencies of one kind, in milliseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<f64>);

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// Nearest-rank percentiles; all zero when nothing was recorded.
    pub fn summary(&self) -> Percentiles {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let rank = (q * sorted.len() as f64).ceil() as usize;
            round(sorted[rank.clamp(1, sorted.len()) - 1])
        };
        Percentiles {
            count: sorted.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: sorted.last().copied().map_or(0.0, round),
        }
    }
}

fn round(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Errors by stable code (the api's `error.code`, an image's error code, or the tool's own:
/// `transport`, `timeout`, `websocket`).
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Errors(pub BTreeMap<String, u64>);

impl Errors {
    pub fn add(&mut self, code: &str) {
        *self.0.entry(code.to_owned()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Errors) {
        for (code, n) in &other.0 {
            *self.0.entry(code.clone()).or_default() += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// Per second over `elapsed`, rounded to 0.1.
pub fn per_second(count: usize, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        return 0.0;
    }
    round(count as f64 / elapsed.as_secs_f64())
}

/// What `gallery load` prints. Fields a mode doesn't measure are absent from the JSON.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub mode: &'static str,
    /// The run's projects are `<run>-0` ... `<run>-<projects - 1>`.
    pub run: String,
    pub elapsed_s: f64,
    /// Link requests answered 201, per second of the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_rps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_ms: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_rps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_ms: Option<Percentiles>,
    /// From the upload's answer (and `complete`'s, when called) to the image's `processed`
    /// message on the project's WebSocket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_to_done_ms: Option<Percentiles>,
    /// Images done per second, from the first link request to the last `processed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub photos_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done: Option<usize>,
    /// From an event's time (`at`, set by the api) to a subscriber reading it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_to_client_ms: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribers: Option<usize>,
    /// Messages the subscribers should have seen, and those they missed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_expected: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_missed: Option<u64>,
    /// With `--metrics`: the api's S3 requests per second to find and check uploads, by who
    /// made them (`watcher`, `complete`), over the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_check_s3_rps: Option<BTreeMap<String, f64>>,
    /// With `--cleanup`: images deleted with the run's projects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleaned_up: Option<u64>,
    pub errors: Errors,
}

/// Totals of `gallery_upload_check_s3_requests_total` by its `by` label, from a Prometheus
/// text page.
pub fn upload_check_requests(text: &str) -> BTreeMap<String, f64> {
    let mut by = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("gallery_upload_check_s3_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let Some(who) = labels
            .split(',')
            .find_map(|l| l.strip_prefix("by=\"")?.strip_suffix('"'))
        else {
            continue;
        };
        if let Ok(v) = value.trim().parse::<f64>() {
            *by.entry(who.to_owned()).or_default() += v;
        }
    }
    by
}

/// Per-second rates between two readings of [`upload_check_requests`].
pub fn rates_between(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    elapsed: Duration,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(who, n)| {
            let delta = n - before.get(who).copied().unwrap_or(0.0);
            (who.clone(), round(delta / elapsed.as_secs_f64().max(1e-9)))
        })
        .collect()
}

impl Report {
    /// The table for people.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("mode".into(), self.mode.into()),
            ("projects".into(), format!("{}-*", self.run)),
            ("elapsed".into(), format!("{:.1} s", self.elapsed_s)),
        ];
        let ms = |p: &Percentiles| {
            format!(
                "p50 {} · p90 {} · p99 {} · max {} ms ({} samples)",
                p.p50, p.p90, p.p99, p.max, p.count
            )
        };
        if let Some(v) = self.link_rps {
            rows.push(("link requests/s".into(), format!("{v}")));
        }
        if let Some(p) = &self.link_ms {
            rows.push(("link latency".into(), ms(p)));
        }
        if let Some(v) = self.list_rps {
            rows.push(("listings/s".into(), format!("{v}")));
        }
        if let Some(p) = &self.list_ms {
            rows.push(("listing latency".into(), ms(p)));
        }
        if let Some(p) = &self.upload_to_done_ms {
            rows.push(("upload->done".into(), ms(p)));
        }
        if let Some(v) = self.photos_per_s {
            rows.push(("photos/s sustained".into(), format!("{v}")));
        }
        if let Some(v) = self.done {
            rows.push(("images done".into(), v.to_string()));
        }
        if let Some(v) = self.subscribers {
            rows.push(("subscribers".into(), v.to_string()));
        }
        if let Some(p) = &self.event_to_client_ms {
            rows.push(("event->client".into(), ms(p)));
        }
        if let (Some(expected), Some(missed)) = (self.messages_expected, self.messages_missed) {
            rows.push((
                "messages".into(),
                format!("{expected} expected, {missed} missed"),
            ));
        }
        if let Some(rates) = &self.upload_check_s3_rps {
            let text = if rates.is_empty() {
                "none".to_owned()
            } else {
                rates
                    .iter()
                    .map(|(who, v)| format!("{who} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            rows.push(("upload checks, S3 requests/s".into(), text));
        }
        if let Some(n) = self.cleaned_up {
            rows.push(("cleaned up".into(), format!("{n} images deleted")));
        }
        let errors = if self.errors.0.is_empty() {
            "none".to_owned()
        } else {
            self.errors
                .0
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        rows.push(("errors".into(), errors));
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<width$}  {v}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_check_requests_are_read_from_the_metrics_page() {
        let before = "# TYPE gallery_upload_check_s3_requests_total counter\n\
            gallery_upload_check_s3_requests_total{by=\"watcher\",op=\"list\"} 10\n\
            gallery_upload_check_s3_requests_total{by=\"watcher\",op=\"get\"} 5\n\
            gallery_uploads_detected_total{via=\"watcher\"} 5\n";
        let after = "gallery_upload_check_s3_requests_total{by=\"watcher\",op=\"list\"} 30\n\
            gallery_upload_check_s3_requests_total{by=\"watcher\",op=\"get\"} 25\n\
            gallery_upload_check_s3_requests_total{by=\"complete\",op=\"head\"} 4\n";
        let (b, a) = (upload_check_requests(before), upload_check_requests(after));
        assert_eq!(b.get("watcher"), Some(&15.0));
        assert_eq!(a.get("watcher"), Some(&55.0));
        let rates = rates_between(&b, &a, Duration::from_secs(4));
        assert_eq!(rates.get("watcher"), Some(&10.0));
        assert_eq!(rates.get("complete"), Some(&1.0));
    }

    fn ms(v: &[u64]) -> Latencies {
        let mut l = Latencies::default();
        for x in v {
            l.record(Duration::from_millis(*x));
        }
        l
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = ms(&(1..=100).collect::<Vec<_>>()).summary();
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max, p.count),
            (50.0, 90.0, 99.0, 100.0, 100)
        );
        let one = ms(&[7]).summary();
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        let none = Latencies::default().summary();
        assert_eq!((none.count, none.p99), (0, 0.0));
        // Order of arrival doesn't matter.
        assert_eq!(ms(&[30, 10, 20]).summary().p50, 20.0);
    }

    #[test]
    fn errors_add_up_by_code() {
        let mut a = Errors::default();
        a.add("timeout");
        a.add("corrupt_image");
        let mut b = Errors::default();
        b.add("timeout");
        a.merge(&b);
        assert_eq!(a.0["timeout"], 2);
        assert_eq!(a.total(), 3);
    }

    #[test]
    fn the_json_has_the_contract_fields_and_only_measured_ones() {
        let report = Report {
            mode: "flow",
            elapsed_s: 2.0,
            link_rps: Some(10.0),
            upload_to_done_ms: Some(ms(&[10, 20]).summary()),
            photos_per_s: Some(5.0),
            ..Report::default()
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["link_rps"], 10.0);
        assert_eq!(json["upload_to_done_ms"]["p99"], 20.0);
        assert_eq!(json["photos_per_s"], 5.0);
        assert_eq!(json["errors"], serde_json::json!({}));
        assert!(json.get("event_to_client_ms").is_none());
        assert!(report.table().contains("upload->done"));
        assert_eq!(per_second(30, Duration::from_secs(4)), 7.5);
    }
}
