//! Prometheus metrics, one registry per relay (tests run several in one process).

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub bytes_served: IntCounterVec,
    pub auth_failures: IntCounter,
    pub rate_limited: IntCounter,
    pub connections_refused: IntCounter,
    pub watchers: IntGauge,
    pub current_sequence: IntGauge,
    pub bundle_age_seconds: IntGauge,
    pub uploads: IntCounterVec,
    pub supervisors_behind: IntGauge,
    pub supervisor_oldest_bundle_age_seconds: IntGauge,
    /// Every request answered (routed or on the lean watch path), for the console's rates.
    pub requests_seen: std::sync::atomic::AtomicU64,
    /// Samples of `requests_seen`, one per [`RATE_SAMPLE`], the last [`RATE_SAMPLES`].
    rate_samples: std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, u64)>>,
}

/// How often the console's request rates are sampled, and how many samples are kept
/// (five minutes).
pub const RATE_SAMPLE: std::time::Duration = std::time::Duration::from_secs(10);
const RATE_SAMPLES: usize = 31;

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help)
                .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help)
                .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        Self {
            requests: counter_vec(
                "relay_http_requests_total",
                "HTTP requests by route and status",
                &["route", "status"],
            ),
            bytes_served: counter_vec(
                "relay_http_response_bytes_total",
                "Response body bytes by route",
                &["route"],
            ),
            auth_failures: counter(
                "relay_auth_failures_total",
                "Requests with missing or wrong credentials",
            ),
            rate_limited: counter(
                "relay_auth_rate_limited_total",
                "Requests refused with 429 after repeated failures",
            ),
            connections_refused: counter(
                "relay_connections_refused_total",
                "Connections closed at the connection cap",
            ),
            watchers: gauge("relay_watchers", "Open watch channels"),
            current_sequence: gauge("relay_current_sequence", "Sequence of the current bundle"),
            bundle_age_seconds: gauge(
                "relay_bundle_age_seconds",
                "Age of the current bundle (since it was created)",
            ),
            uploads: counter_vec("relay_uploads_total", "Uploads by outcome", &["outcome"]),
            supervisors_behind: gauge(
                "relay_supervisors_behind",
                "Supervisors that hold less than this relay's current bundle",
            ),
            supervisor_oldest_bundle_age_seconds: gauge(
                "relay_supervisor_oldest_bundle_age_seconds",
                "Age of the oldest bundle a supervisor holds, from its creation",
            ),
            registry,
            requests_seen: std::sync::atomic::AtomicU64::new(0),
            rate_samples: std::sync::Mutex::default(),
        }
    }

    /// A request answered on `route` with `status`: counted for the rates and by route
    /// and status (both request paths, routed and lean, call this).
    pub fn answered(&self, route: &str, status: &str) {
        self.requests_seen
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.requests.with_label_values(&[route, status]).inc();
    }

    /// Counts `bytes` of response body served on `route`.
    pub fn served(&self, route: &str, bytes: u64) {
        self.bytes_served.with_label_values(&[route]).inc_by(bytes);
    }

    /// Records the request count now (every [`RATE_SAMPLE`]).
    pub fn sample_requests(&self) {
        let total = self
            .requests_seen
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut samples = self
            .rate_samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        samples.push_back((std::time::Instant::now(), total));
        while samples.len() > RATE_SAMPLES {
            samples.pop_front();
        }
    }

    /// Requests per second over about `window` (up to now), from the samples; `None`
    /// until there are two samples.
    pub fn request_rate(&self, window: std::time::Duration) -> Option<f64> {
        let samples = self
            .rate_samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let &(last_at, last) = samples.back()?;
        let &(first_at, first) = samples
            .iter()
            .find(|(at, _)| last_at.duration_since(*at) <= window)?;
        let secs = last_at.duration_since(first_at).as_secs_f64();
        (secs > 0.0).then(|| (last - first) as f64 / secs)
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
