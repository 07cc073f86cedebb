//! berthd's Prometheus metrics, served at `--metrics-addr` (`/metrics`, see
//! `api::metrics`). One registry per process; the domain records into it
//! through the small functions here ([`container_started`],
//! [`image_pulled`], [`build_step`], [`api_request`]), and the containers
//! by state are counted from the engine at each scrape.
//!
//! Names and labels are listed in docs/operating.md.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::containers::record::Status;
use crate::Engine;

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric berthd keeps.
pub struct Metrics {
    registry: Registry,
    containers: Family<StateLabels, Gauge>,
    container_starts: Counter,
    start_seconds: Histogram,
    pulls: Counter,
    pulled_bytes: Counter,
    build_steps: Counter,
    build_cache_hits: Counter,
    api_requests: Family<RequestLabels, Counter>,
    api_seconds: HistogramFamily<RouteLabels>,
}

/// Latencies from 1 ms to about 33 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth_engine");
        let containers = Family::<StateLabels, Gauge>::default();
        registry.register(
            "containers",
            "Containers by state, counted at the scrape",
            containers.clone(),
        );
        let container_starts = Counter::default();
        registry.register(
            "container_starts",
            "Containers started (by the user or a restart policy)",
            container_starts.clone(),
        );
        let start_seconds = latency_histogram();
        registry.register(
            "container_start_duration_seconds",
            "Time from a start's request to the container's process running",
            start_seconds.clone(),
        );
        let pulls = Counter::default();
        registry.register("image_pulls", "Images pulled", pulls.clone());
        let pulled_bytes = Counter::default();
        registry.register(
            "image_pulled_bytes",
            "Bytes fetched from registries by pulls (blobs already here are not counted)",
            pulled_bytes.clone(),
        );
        let build_steps = Counter::default();
        registry.register(
            "build_steps",
            "Dockerfile steps built or taken from the cache",
            build_steps.clone(),
        );
        let build_cache_hits = Counter::default();
        registry.register(
            "build_cache_hits",
            "Dockerfile steps taken from the build cache",
            build_cache_hits.clone(),
        );
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Engine API requests by method, route template and status code",
            api_requests.clone(),
        );
        let api_seconds: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "api_request_duration_seconds",
            "Engine API request latency by method and route template (to the response's head)",
            api_seconds.clone(),
        );
        Metrics {
            registry,
            containers,
            container_starts,
            start_seconds,
            pulls,
            pulled_bytes,
            build_steps,
            build_cache_hits,
            api_requests,
            api_seconds,
        }
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// A container's task started, `elapsed` after the start began.
pub fn container_started(elapsed: Duration) {
    let m = metrics();
    m.container_starts.inc();
    m.start_seconds.observe(elapsed.as_secs_f64());
}

/// A pull stored its image, having fetched `bytes`.
pub fn image_pulled(bytes: u64) {
    let m = metrics();
    m.pulls.inc();
    m.pulled_bytes.inc_by(bytes);
}

/// A Dockerfile step was done; `cached`: taken from the build cache.
pub fn build_step(cached: bool) {
    let m = metrics();
    m.build_steps.inc();
    if cached {
        m.build_cache_hits.inc();
    }
}

/// An API request was answered.
pub fn api_request(method: &str, path: &str, status: u16, elapsed: Duration) {
    let m = metrics();
    let route = route_template(path);
    m.api_requests
        .get_or_create(&RequestLabels {
            method: method.to_string(),
            route: route.clone(),
            status: status.to_string(),
        })
        .inc();
    m.api_seconds
        .get_or_create(&RouteLabels {
            method: method.to_string(),
            route,
        })
        .observe(elapsed.as_secs_f64());
}

/// The metrics as Prometheus (OpenMetrics) text, the containers counted now.
pub fn encode(engine: &Engine) -> Result<String, std::fmt::Error> {
    let m = metrics();
    let all = engine.containers.all();
    for status in [
        Status::Created,
        Status::Running,
        Status::Paused,
        Status::Restarting,
        Status::Removing,
        Status::Exited,
        Status::Dead,
    ] {
        let n = all.iter().filter(|c| c.status() == status).count();
        m.containers
            .get_or_create(&StateLabels {
                state: status.name().to_string(),
            })
            .set(n as i64);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &m.registry)?;
    Ok(text)
}

/// Resources whose second segment is an action, not a name.
const COLLECTION_ACTIONS: &[(&str, &[&str])] = &[
    ("containers", &["json", "create", "prune"]),
    (
        "images",
        &["json", "create", "prune", "search", "load", "get"],
    ),
    ("networks", &["create", "prune"]),
    ("volumes", &["create", "prune"]),
    ("plugins", &["privileges", "pull", "create"]),
];

/// The route template of a path without its version prefix, so a label
/// holds no ids: `/containers/abc/start` is `/containers/:id/start`,
/// `/images/library/busybox:1/json` is `/images/:name/json`.
pub fn route_template(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some((&first, rest)) = segments.split_first() else {
        return "/".to_string();
    };
    let Some(actions) = COLLECTION_ACTIONS
        .iter()
        .chain([("exec", &[][..])].iter())
        .find(|(r, _)| *r == first)
        .map(|(_, a)| *a)
    else {
        // /version, /info, /events, /system/df, /build, /_ping: no ids.
        return match first {
            "_ping" | "version" | "info" | "events" | "system" | "auth" | "build" | "commit"
            | "session" | "distribution" | "swarm" | "nodes" | "services" | "tasks" | "secrets"
            | "configs" => {
                let fixed = segments.iter().take(2).copied().collect::<Vec<_>>();
                format!("/{}", fixed.join("/"))
            }
            _ => "/:unknown".to_string(),
        };
    };
    let Some(&second) = rest.first() else {
        return format!("/{first}");
    };
    if actions.contains(&second) {
        return format!("/{first}/{second}");
    }
    let placeholder = match first {
        "images" | "plugins" | "volumes" | "networks" => ":name",
        _ => ":id",
    };
    // Image names hold slashes: the action is the last segment, if any.
    let action = if first == "images" || first == "plugins" {
        match rest.last() {
            Some(&a)
                if rest.len() > 1
                    && matches!(
                        a,
                        "json"
                            | "history"
                            | "push"
                            | "tag"
                            | "get"
                            | "enable"
                            | "disable"
                            | "upgrade"
                            | "set"
                    ) =>
            {
                Some(a.to_string())
            }
            _ => None,
        }
    } else {
        (rest.len() > 1).then(|| rest[1..].join("/"))
    };
    match action {
        Some(a) => format!("/{first}/{placeholder}/{a}"),
        None => format!("/{first}/{placeholder}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_hold_no_ids() {
        let cases = [
            ("/containers/json", "/containers/json"),
            ("/containers/create", "/containers/create"),
            ("/containers/abc123/start", "/containers/:id/start"),
            ("/containers/abc123", "/containers/:id"),
            ("/containers/abc/archive", "/containers/:id/archive"),
            ("/images/library/busybox:1/json", "/images/:name/json"),
            ("/images/busybox", "/images/:name"),
            ("/images/create", "/images/create"),
            ("/images/reg:5000/a/b/push", "/images/:name/push"),
            ("/exec/xyz/start", "/exec/:id/start"),
            ("/networks/mynet/connect", "/networks/:name/connect"),
            ("/volumes/v1", "/volumes/:name"),
            ("/_ping", "/_ping"),
            ("/system/df", "/system/df"),
            ("/version", "/version"),
            ("/nope/whatever", "/:unknown"),
        ];
        for (path, want) in cases {
            assert_eq!(route_template(path), want, "{path}");
        }
    }

    #[test]
    fn counters_move_and_encode() {
        // Other tests of this process start containers and build: deltas.
        let m = metrics();
        let labels = RequestLabels {
            method: "GET".to_string(),
            route: "/containers/:id/json".to_string(),
            status: "200".to_string(),
        };
        let before = (
            m.container_starts.get(),
            m.build_steps.get(),
            m.build_cache_hits.get(),
            m.pulled_bytes.get(),
            m.api_requests.get_or_create(&labels).get(),
        );
        container_started(Duration::from_millis(30));
        build_step(true);
        build_step(false);
        image_pulled(1000);
        api_request("GET", "/containers/abc/json", 200, Duration::from_millis(2));
        let after = (
            m.container_starts.get(),
            m.build_steps.get(),
            m.build_cache_hits.get(),
            m.pulled_bytes.get(),
            m.api_requests.get_or_create(&labels).get(),
        );
        assert_eq!(after.0, before.0 + 1);
        assert_eq!(after.1, before.1 + 2);
        assert_eq!(after.2, before.2 + 1);
        assert_eq!(after.3, before.3 + 1000);
        assert_eq!(after.4, before.4 + 1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        assert!(
            text.contains("# TYPE berth_engine_container_starts counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "berth_engine_api_requests_total{method=\"GET\",route=\"/containers/:id/json\",status=\"200\"}"
            ),
            "{text}"
        );
    }
}
