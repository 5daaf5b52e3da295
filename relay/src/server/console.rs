//! The relay console: `GET /` and the pages under `/console/`, for readers.
//!
//! Server-rendered HTML, one small stylesheet and one small script, both served by the relay
//! itself: no build step, no CDN, nothing fetched from elsewhere, so it works in a network
//! that reaches nothing. Pages:
//!
//! - `/`: the current bundle (feed kinds and record counts, its signer), freshness and a
//!   chart of the data's age over the last days (an inline SVG drawn here, with the 24 h and
//!   36 h alarm lines), each source (last check and success, next check, backoff, last error
//!   and its kind), vendor archives (marked NOT SIGNED), traffic (watchers, request rates) and
//!   the fleet's summary;
//! - `/console/history`: the bundles held (sequence, created, received, source, size);
//! - `/console/fleet`: for a central relay, each supervisor (what it holds, how far behind,
//!   last push, next attempt, error).
//!
//! Live: `live.js` listens on the watch channel (a new bundle) and polls every 10 s, and
//! swaps the page's `<main>` for a fresh render: no reload. Every value from outside (source
//! URLs, error messages, origin names) is HTML-escaped.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

use super::Relay;
use super::status::{Status, escape, status};
use crate::bundle::{Manifest, Timestamp};
use crate::store::BundleRecord;

/// The chart's span: the data's age over this many days.
const CHART_DAYS: i64 = 7;
const WARNING_HOURS: f64 = 24.0;
const CRITICAL_HOURS: f64 = 36.0;

/// `GET /`.
pub async fn overview(State(relay): State<Arc<Relay>>) -> Response {
    let s = status(&relay);
    let held = relay.store.held_all().unwrap_or_default();
    let current = relay.store.current();
    let mut main = String::new();
    current_section(&mut main, &s, current.as_ref().map(|c| &c.record));
    freshness_chart(&mut main, &held, s.now);
    sources_section(&mut main, &s);
    archives_section(&mut main, &s);
    traffic_section(&mut main, &relay, &s);
    if !s.supervisors.is_empty() {
        let _ = writeln!(
            main,
            "<section><h2>Fleet</h2><p>{} supervisors, <span class=\"{}\">{} behind</span>: \
             <a href=\"/console/fleet\">the fleet</a></p></section>",
            s.supervisors.len(),
            if s.supervisors_behind > 0 {
                "critical"
            } else {
                "ok"
            },
            s.supervisors_behind
        );
        fleet_table(&mut main, &s);
    }
    page("Overview", &main)
}

/// `GET /console/history`.
pub async fn history(State(relay): State<Arc<Relay>>) -> Response {
    let mut held = relay.store.held_all().unwrap_or_default();
    held.sort_by_key(|r| std::cmp::Reverse(r.sequence));
    let current = relay.store.current().map(|c| c.record.sha256);
    let mut main = String::from(
        "<section><h2>Bundle history</h2>\n<table>\n<tr><th>Sequence</th><th>Created</th>\
         <th>Received</th><th>Source</th><th>Size</th><th>SHA-256</th></tr>\n",
    );
    for r in &held {
        let mark = if Some(r.sha256) == current {
            " <span class=\"badge\">current</span>"
        } else {
            ""
        };
        let _ = writeln!(
            main,
            "<tr><td>{}{mark}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            r.sequence,
            time(r.created),
            time(r.stored_at),
            escape(&r.source),
            bytes(r.size),
            &r.sha256.to_string()[..16],
        );
    }
    if held.is_empty() {
        main += "<tr><td colspan=\"6\">no bundle held yet</td></tr>\n";
    }
    main += "</table></section>\n";
    page("History", &main)
}

/// `GET /console/fleet`.
pub async fn fleet(State(relay): State<Arc<Relay>>) -> Response {
    let s = status(&relay);
    let mut main = String::new();
    if s.supervisors.is_empty() {
        main += "<section><h2>Fleet</h2><p>This relay pushes to no supervisor \
                 (<code>[[supervisors]]</code> in its config).</p></section>\n";
    } else {
        fleet_table(&mut main, &s);
    }
    page("Fleet", &main)
}

/// The supervisors, one row each: what it holds, how far behind the current bundle, the
/// last push, the next attempt, how the last transfer went and why one failed. The overview
/// and the fleet page show this same table.
fn fleet_table(main: &mut String, s: &Status) {
    let head = s.current.as_ref().map(|c| c.sequence.0);
    let _ = writeln!(
        main,
        "<section><h2>Supervisors ({} of {} behind)</h2>\n<table>\n<tr><th>Supervisor</th>\
         <th>Holds</th><th>Lag</th><th>Last push</th><th>Last attempt</th><th>Next attempt</th>\
         <th>Last transfer</th><th>Error</th></tr>",
        s.supervisors_behind,
        s.supervisors.len()
    );
    for sup in &s.supervisors {
        let lag = match (head, sup.sequence) {
            (Some(h), Some(q)) if h > q.0 => {
                format!("<span class=\"critical\">{} behind</span>", h - q.0)
            }
            (Some(_), None) => "<span class=\"critical\">holds none</span>".to_owned(),
            _ => "<span class=\"ok\">current</span>".to_owned(),
        };
        let error = match (&sup.last_error_kind, &sup.last_error) {
            (Some(kind), Some(e)) => format!(
                "<span class=\"critical\">{}</span>: {}",
                escape(kind),
                escape(e)
            ),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            main,
            "<tr><td>{}<br><small>{}</small></td><td>{}</td><td>{lag}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"error\">{error}</td></tr>",
            escape(&sup.name),
            escape(&sup.url),
            sup.sequence
                .map_or_else(|| "none".to_owned(), |q| q.to_string()),
            when(sup.last_success),
            when(sup.last_attempt),
            when(sup.next_attempt),
            escape(sup.last_transfer.as_deref().unwrap_or("-")),
        );
    }
    main.push_str("</table></section>\n");
}

/// `GET /console/style.css`.
pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("console/style.css"))
}

/// `GET /console/live.js`.
pub async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("console/live.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// The page around `main`: the header and its links, the stylesheet and the script. Sent
/// with a policy that lets it load only the relay's own stylesheet and script (no inline
/// script, nothing from elsewhere) and never be framed.
fn page(title: &str, main: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Intelligence Relay</title>\
         <link rel=\"stylesheet\" href=\"/console/style.css\"></head>\n<body>\n\
         <header><strong>Intelligence Relay</strong><nav><a href=\"/\">Overview</a>\
         <a href=\"/console/history\">History</a><a href=\"/console/fleet\">Fleet</a>\
         <a href=\"/api/v1/status\">JSON</a><a href=\"/metrics\">Metrics</a></nav></header>\n\
         <main data-rendered=\"{}\">\n{main}</main>\n\
         <script src=\"/console/live.js\"></script>\n</body></html>\n",
        super::now()
    );
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'self'; script-src 'self'; \
                     connect-src 'self'; img-src 'self'; frame-ancestors 'none'",
                ),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Html(html),
    )
        .into_response()
}

fn current_section(out: &mut String, s: &Status, record: Option<&BundleRecord>) {
    let Some(c) = &s.current else {
        out.push_str(
            "<section><h2>Current bundle</h2><p class=\"critical\">No bundle yet: upload one, \
             or wait for a source.</p></section>\n",
        );
        return;
    };
    let _ = writeln!(
        out,
        "<section><h2>Current bundle <span class=\"badge {f}\" id=\"freshness\">{f}</span></h2>\n\
         <table class=\"facts\">\n\
         <tr><th>Sequence</th><td id=\"sequence\">{}</td></tr>\n\
         <tr><th>Data age</th><td class=\"{f}\">{}</td></tr>\n\
         <tr><th>Last streams update</th><td>{}</td></tr>\n\
         <tr><th>Source</th><td>{}</td></tr>\n\
         <tr><th>Created</th><td>{}</td></tr>\n\
         <tr><th>Expires</th><td>{}</td></tr>\n\
         <tr><th>Signed by</th><td>{} (key {})</td></tr>\n\
         <tr><th>Size</th><td>{}</td></tr>\n\
         <tr><th>SHA-256</th><td><code>{}</code></td></tr>\n</table>",
        c.sequence,
        age(c.age_seconds),
        time(c.stored_at),
        escape(&c.source),
        time(c.created),
        time(c.expires),
        escape(&c.origin),
        escape(&c.key_id),
        bytes(c.size),
        c.sha256,
        f = c.freshness,
    );
    let manifest = record.and_then(|r| serde_json::from_str::<Manifest>(&r.manifest).ok());
    if let Some(m) = manifest {
        // Feed kinds: files and records of each.
        let mut kinds: std::collections::BTreeMap<&str, (usize, u64)> = Default::default();
        for f in &m.files {
            let e = kinds.entry(f.kind.as_str()).or_default();
            e.0 += 1;
            e.1 += f.records;
        }
        out.push_str(
            "<h3>Feeds</h3>\n<table>\n<tr><th>Kind</th><th>Files</th><th>Records</th></tr>\n",
        );
        for (kind, (files, records)) in kinds {
            let _ = writeln!(
                out,
                "<tr><td>{kind}</td><td>{files}</td><td class=\"num\">{}</td></tr>",
                thousands(records)
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("</section>\n");
}

/// The data's age (now minus the current bundle's creation) over the last
/// [`CHART_DAYS`], from the bundles held: each was current from when it was received
/// until the next one was. A sawtooth, drawn as an inline SVG with the alarm lines.
fn freshness_chart(out: &mut String, held: &[BundleRecord], now: Timestamp) {
    let mut by_arrival: Vec<&BundleRecord> = held.iter().collect();
    by_arrival.sort_by_key(|r| (r.stored_at, r.sequence));
    let end = now.unix();
    let start = end - CHART_DAYS * 86_400;
    // (time, age in hours) points: a rise while one bundle is current, a drop when the
    // next arrives.
    let mut points: Vec<(i64, f64)> = Vec::new();
    for (i, r) in by_arrival.iter().enumerate() {
        let from = r.stored_at.unix().max(start);
        let until = by_arrival
            .get(i + 1)
            .map_or(end, |next| next.stored_at.unix())
            .min(end);
        if until < start || until < from {
            continue;
        }
        let hours = |t: i64| (t - r.created.unix()).max(0) as f64 / 3600.0;
        points.push((from, hours(from)));
        points.push((until, hours(until)));
    }
    let (w, h, pad) = (720.0_f64, 180.0_f64, 30.0_f64);
    let top = points
        .iter()
        .map(|p| p.1)
        .fold(CRITICAL_HOURS * 1.25, f64::max);
    let x = |t: i64| pad + (t - start) as f64 / (end - start) as f64 * (w - 2.0 * pad);
    let y = |hours: f64| h - pad - hours / top * (h - 2.0 * pad);
    let _ = write!(
        out,
        "<section><h2>Freshness</h2>\n<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
         aria-label=\"Data age over the last {CHART_DAYS} days\">\n\
         <rect x=\"{pad}\" y=\"{pad}\" width=\"{}\" height=\"{}\" class=\"frame\"/>\n",
        w - 2.0 * pad,
        h - 2.0 * pad
    );
    for (hours, class) in [(WARNING_HOURS, "warning"), (CRITICAL_HOURS, "critical")] {
        let _ = writeln!(
            out,
            "<line x1=\"{pad}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"alarm {class}\"/>\
             <text x=\"{}\" y=\"{:.1}\" class=\"{class}\">{hours} h</text>",
            w - pad,
            w - pad + 2.0,
            y(hours) + 4.0,
            y = y(hours),
        );
    }
    for day in 0..=CHART_DAYS {
        let t = start + day * 86_400;
        let label = if day == CHART_DAYS {
            "now".to_owned()
        } else {
            format!("-{}d", CHART_DAYS - day)
        };
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" class=\"axis\">{label}</text>",
            x(t) - 8.0,
            h - 8.0
        );
    }
    if points.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" class=\"axis\">no bundle in this span</text>",
            w / 2.0 - 60.0,
            h / 2.0
        );
    } else {
        let line: Vec<String> = points
            .iter()
            .map(|&(t, hours)| format!("{:.1},{:.1}", x(t), y(hours)))
            .collect();
        let _ = writeln!(
            out,
            "<polyline points=\"{}\" class=\"age\"/>",
            line.join(" ")
        );
    }
    out.push_str(
        "</svg>\n<p class=\"note\">The data's age (since the current bundle was created) over \
         the last days: a warning past 24 h, critical past 36 h.</p></section>\n",
    );
}

fn sources_section(out: &mut String, s: &Status) {
    out.push_str("<section><h2>Sources</h2>\n");
    if s.sources.is_empty() {
        out.push_str(
            "<p>No source: bundles arrive by upload (<code>relay upload</code>).</p></section>\n",
        );
        return;
    }
    let _ = writeln!(
        out,
        "<p>Last check {}, last success {}, next check {}.</p>",
        when(s.last_check),
        when(s.last_success),
        when(s.next_check)
    );
    out.push_str(
        "<table>\n<tr><th>Source</th><th>Watch</th><th>Last check</th><th>Last success</th>\
         <th>Backoff</th><th>Last error</th></tr>\n",
    );
    for src in &s.sources {
        let error = match (&src.last_error_kind, &src.last_error) {
            (Some(kind), Some(e)) => format!(
                "<span class=\"critical\">{}</span>: {}",
                escape(&serde_name(kind)),
                escape(e)
            ),
            (None, Some(e)) => escape(e),
            _ => "<span class=\"ok\">none</span>".to_owned(),
        };
        let backoff = match src.not_before {
            Some(t) if t > s.now => {
                format!(
                    "not before {} ({} failures in a row)",
                    time(t),
                    src.failures
                )
            }
            _ if src.failures > 0 => format!("{} failures in a row", src.failures),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}<br><small>{}</small></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"error\">{error}</td></tr>",
            escape(&src.url),
            escape(&serde_name(&src.kind)),
            src.watch,
            when(src.last_check),
            when(src.last_success),
            backoff,
        );
    }
    out.push_str("</table></section>\n");
}

fn archives_section(out: &mut String, s: &Status) {
    if s.archives.is_empty() {
        return;
    }
    out.push_str(
        "<section><h2>Vendor archives</h2>\n<table>\n<tr><th>Name</th><th>Path</th><th>Held</th>\
         <th>Trust</th><th>Last error</th></tr>\n",
    );
    for a in &s.archives {
        let held = a.held.as_ref().map_or_else(
            || "none held".to_owned(),
            |h| format!("<code>{}</code>", &h.sha256.to_string()[..16]),
        );
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{held}</td><td class=\"warning\"><strong>NOT SIGNED</strong></td><td>{}</td></tr>",
            escape(&a.name),
            escape(&a.path),
            escape(a.last_error.as_deref().unwrap_or("-")),
        );
    }
    out.push_str(
        "</table><p class=\"note\">Vendor archives are passed through as they came: integrity \
         checked (digest, gzip, tar, size caps), never signed.</p></section>\n",
    );
}

fn traffic_section(out: &mut String, relay: &Relay, s: &Status) {
    let rate = |secs: u64| {
        relay
            .metrics
            .request_rate(std::time::Duration::from_secs(secs))
            .map_or_else(|| "measuring".to_owned(), |r| format!("{r:.1}/s"))
    };
    let _ = writeln!(
        out,
        "<section><h2>Traffic</h2><table class=\"facts\">\
         <tr><th>Watchers</th><td id=\"watchers\">{}</td></tr>\
         <tr><th>Requests, last minute</th><td>{}</td></tr>\
         <tr><th>Requests, last 5 minutes</th><td>{}</td></tr></table></section>",
        s.watchers,
        rate(60),
        rate(300)
    );
}

/// A value's name as the JSON status spells it (`custom_location`, `tls`).
fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "-".to_owned(),
    }
}

/// A time as HTML: one line, a space for the `T`.
fn time(t: Timestamp) -> String {
    format!(
        "<time datetime=\"{t}\">{}</time>",
        t.to_string().replacen('T', " ", 1)
    )
}

fn when(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "never".to_owned(), time)
}

fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    format!("{} h {} min", s / 3600, (s % 3600) / 60)
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} bytes"),
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_an_operator_reads_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234), "1,234");
        assert_eq!(thousands(3_003_000), "3,003,000");
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(128_552_638), "122.6 MiB");
        assert_eq!(age(90_061), "25 h 1 min");
    }
}
