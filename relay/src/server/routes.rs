//! Every route and every layer, listed once.
//!
//! Two routes are also answered, in their most frequent case, by the lean HTTP/1.1 path
//! before hyper (`lean.rs`): the watch channel ([`watch::PATH`]) and a conditional
//! manifest check ([`files::MANIFEST_PATH`]) that would be answered 304. That path uses
//! these same constants, and does what the layers below do (span, metrics, access line,
//! the auth cache).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use tower_http::trace::TraceLayer;

use super::access::AccessUser;
use super::{ClientAddr, Relay, console, files, status, upload, watch};
use crate::auth::{Decision, Role, claimed_user};

/// The route table. Layers, outermost first:
/// - observe: requests by route and status and bytes served in the metrics, and one
///   access line per request when its response is over (`access.rs`); one layer for both,
///   as each layer costs allocations on every request;
/// - trace: one span per request (method, path, status, latency; never headers);
/// - auth (per group): who is asking, and may they.
///
/// Limits on connections, header size and time, and TLS handshakes live in the accept
/// loop and hyper (`server::Relay::serve`); the upload cap in `upload`.
pub fn router(relay: Arc<Relay>) -> Router {
    let public = Router::new().route("/api/v1/_ping", get(ping));

    let mut readers = Router::new()
        .route(files::MANIFEST_PATH, get(files::manifest))
        .route("/api/v1/archives/{name}", get(files::archive_by_name))
        .route(watch::PATH, get(watch::watch))
        .route("/api/v1/bundles/{sha256}", get(files::held_bundle))
        .route("/api/v1/bundles/{sha256}/index", get(files::held_index))
        .route(
            "/api/v1/bundles/{sha256}/delta/{from}",
            get(files::held_delta),
        )
        .route("/api/v1/status", get(status::json))
        .route("/", get(console::overview))
        .route("/console/history", get(console::history))
        .route("/console/fleet", get(console::fleet))
        .route("/console/style.css", get(console::stylesheet))
        .route("/console/live.js", get(console::script))
        .route(
            &relay.config.routes.custom_location,
            get(files::current_bundle),
        )
        .route(
            &format!("{}.idx", relay.config.routes.custom_location),
            get(files::current_index),
        )
        .route(
            &format!("{}.delta-{{from}}", relay.config.routes.custom_location),
            get(files::current_delta),
        );
    // Each vendor archive at the path consoles are configured with.
    for archive in &relay.config.archives {
        let name = archive.name.clone();
        readers = readers.route(
            &archive.path,
            get(
                move |State(relay): State<Arc<Relay>>, headers: axum::http::HeaderMap| {
                    files::archive(relay, name.clone(), headers)
                },
            ),
        );
    }
    let readers = readers.route_layer(middleware::from_fn_with_state(
        (Arc::clone(&relay), Role::Reader),
        require,
    ));

    // One path, two roles: GET/HEAD for readers, PUT/POST for uploaders.
    let bundle = Router::new()
        .route(
            "/api/v1/feeds/bundle",
            get(files::current_bundle).route_layer(middleware::from_fn_with_state(
                (Arc::clone(&relay), Role::Reader),
                require,
            )),
        )
        .merge(
            Router::new()
                .route(
                    "/api/v1/feeds/bundle",
                    put(upload::upload).post(upload::upload),
                )
                .route(
                    "/api/v1/archives/{name}",
                    put(upload::upload_archive).post(upload::upload_archive),
                )
                .route_layer(middleware::from_fn_with_state(
                    (Arc::clone(&relay), Role::Uploader),
                    require,
                ))
                // The upload handler streams the body to disk under its own cap.
                .layer(DefaultBodyLimit::disable()),
        );

    let admins = Router::new()
        .route(
            "/api/v1/feeds/force-refresh",
            put(status::force_refresh).post(status::force_refresh),
        )
        .route(
            "/api/v1/projects/push",
            post(status::projects_push).put(status::projects_push),
        )
        .route("/api/v1/admin/reset-sequence", post(status::reset_sequence))
        .route(
            "/api/v1/origin/run",
            post(status::origin_run).put(status::origin_run),
        )
        .route_layer(middleware::from_fn_with_state(
            (Arc::clone(&relay), Role::Admin),
            require,
        ));

    let metrics = if relay.config.auth.metrics_public {
        Router::new().route("/metrics", get(status::metrics))
    } else {
        Router::new()
            .route("/metrics", get(status::metrics))
            .route_layer(middleware::from_fn_with_state(
                (Arc::clone(&relay), Role::Reader),
                require,
            ))
    };

    Router::new()
        .merge(public)
        .merge(readers)
        .merge(bundle)
        .merge(admins)
        .merge(metrics)
        .fallback(not_found)
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn_with_state(Arc::clone(&relay), observe))
        .with_state(relay)
}

async fn ping() -> &'static str {
    "OK"
}

async fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "no such route")
}

/// A JSON error body: `{"error": "..."}`. Details beyond it go to the log.
pub fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() }).to_string();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Authenticates the request and checks its role.
async fn require(
    State((relay, need)): State<(Arc<Relay>, Role)>,
    mut req: Request,
    next: Next,
) -> Response {
    let client = req
        .extensions()
        .get::<ClientAddr>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match relay.auth.check(authorization, client, need).await {
        Decision::Allowed(principal) => {
            // Who asked, for the access log: only when there is one to write.
            let user = relay
                .config
                .listen
                .access_log
                .then(|| AccessUser(principal.name.clone()));
            req.extensions_mut().insert(principal);
            let mut response = next.run(req).await;
            if let Some(user) = user {
                response.extensions_mut().insert(user);
            }
            response
        }
        denied => {
            let user = AccessUser(authorization.map_or_else(|| "-".to_owned(), claimed_user));
            let mut response = denial(&relay, need, denied);
            response.extensions_mut().insert(user);
            response
        }
    }
}

/// The answer to a request whose credentials were not good enough: 401 with the
/// challenge, 403, or 429 with `Retry-After`. Counted in the metrics.
pub fn denial(relay: &Relay, need: Role, decision: Decision) -> Response {
    match decision {
        Decision::Allowed(_) => problem(StatusCode::INTERNAL_SERVER_ERROR, "not a denial"),
        Decision::Unauthorized => {
            relay.metrics.auth_failures.inc();
            let mut response = problem(StatusCode::UNAUTHORIZED, "credentials required");
            let challenge = format!(
                "Basic realm=\"{}\", charset=\"UTF-8\"",
                relay.auth.realm().replace('"', "")
            );
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            response
        }
        Decision::Forbidden(principal) => {
            tracing::info!(user = %principal.name, ?need, "role does not allow this");
            problem(StatusCode::FORBIDDEN, "your role does not allow this")
        }
        Decision::RateLimited { retry_after } => {
            relay.metrics.rate_limited.inc();
            let mut response = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed attempts from this address; try later",
            );
            let secs = retry_after.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

/// Counts requests by route and status, and response bytes by route; begins and ends
/// each request's access line.
async fn observe(State(relay): State<Arc<Relay>>, req: Request, next: Next) -> Response {
    // MatchedPath is shared (an Arc): cloned, not copied.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let access = super::access::begin(&relay, &req);
    let response = next.run(req).await;
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    relay.metrics.answered(route, response.status().as_str());
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(len) = declared.or_else(|| axum::body::HttpBody::size_hint(response.body()).exact())
    {
        relay.metrics.served(route, len);
    }
    match access {
        Some(begun) => super::access::finish(begun, response),
        None => response,
    }
}

/// An empty body with a status, for 304 and the like.
pub fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}
