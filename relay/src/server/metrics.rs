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
}

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
        }
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
