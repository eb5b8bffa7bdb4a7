//! What the one port answers: the gRPC services (native gRPC over HTTP/2 and
//! gRPC-Web over HTTP/1.1), `GET /healthz`, `GET /metrics`, and for every
//! other path the web app's files.
//!
//! tonic-web's layer refuses plain HTTP requests, so it wraps only the gRPC
//! routes (inside it, [`protocol`](crate::http::protocol) holds every call to what
//! gRPC requires); the static files are the fallback. CORS wraps everything, so a
//! preflight is answered before routing; outermost, the access log resolves
//! who the client is, and a base path (for proxies that do not strip their
//! prefix) is removed before any routing.

use std::path::Path;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use chat_proto::rules::MAX_DECODED_BYTES;
use http::{StatusCode, Uri, header};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;
use tonic_web::GrpcWebLayer;
use tower::ServiceBuilder;
use tower_http::cors::CorsLayer;

use super::assets::{self, Assets};
use crate::http::access_log;
use crate::http::protocol;
use crate::hub::Hub;
use crate::metrics::{self, Limit, Metrics};
use crate::rpc::status::refusal;
use crate::rpc::{ChatServer, ChatServiceServer, ModerationServer};

/// Everything the HTTP application is built from.
pub struct Parts<'a> {
    pub chat: ChatServer,
    pub hub: Hub,
    pub health: HealthServer<HealthService>,
    pub web_dir: &'a Path,
    pub cors: CorsLayer,
    pub trust_proxy: bool,
    /// `/` or a prefix like `/chat` (no trailing slash).
    pub base_path: String,
}

/// The whole HTTP application.
pub fn app(parts: Parts<'_>) -> Result<Router, tonic_reflection::server::Error> {
    let moderation = ModerationServer::new(parts.chat.clone());
    let chat = ChatServiceServer::new(parts.chat).max_decoding_message_size(MAX_DECODED_BYTES);
    let metrics = parts.hub.metrics().clone();
    // Both reflection versions (grpcurl and buf curl differ in which they
    // ask), each listing both, so either finds the other.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(chat_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .include_reflection_service(false)
    };
    let app = tonic::service::Routes::new(chat)
        .add_service(moderation)
        .add_service(parts.health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .into_axum_router()
        .route_layer(middleware::map_response_with_state(
            metrics.clone(),
            explain_oversized,
        ))
        .route_layer(middleware::from_fn(protocol::explain_unimplemented))
        .route_layer(middleware::from_fn_with_state(
            metrics.clone(),
            protocol::require_grpc,
        ))
        .route_layer(middleware::from_fn_with_state(
            metrics.clone(),
            protocol::deadline,
        ))
        .route_layer(GrpcWebLayer::new())
        .route_layer(middleware::from_fn(protocol::answer_in_kind))
        .route_layer(middleware::from_fn(protocol::drain_refused_bodies))
        .route("/healthz", get(healthz).with_state(parts.hub))
        .route("/metrics", get(scrape).with_state(metrics))
        .fallback_service(
            web_app(parts.web_dir).layer(middleware::from_fn(protocol::unknown_service)),
        )
        .layer(parts.cors)
        .layer(middleware::from_fn_with_state(
            parts.trust_proxy,
            access_log::layer,
        ));
    if parts.base_path == "/" {
        return Ok(app);
    }
    let prefixed = ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(
            parts.base_path,
            strip_base_path,
        ))
        .service(app);
    Ok(Router::new().fallback_service(prefixed))
}

/// For a reverse proxy: 200 while serving, 503 once shutting down or while
/// the message log (NATS, in cluster mode) cannot be reached.
async fn healthz(State(hub): State<Hub>) -> (StatusCode, &'static str) {
    if hub.is_shut_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if !hub.is_available() {
        (StatusCode::SERVICE_UNAVAILABLE, "message log unavailable\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

/// For Prometheus: every counter and gauge in [`metrics`].
async fn scrape(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics.render(),
    )
}

/// Serves `/base/...` as `/...`; `/base` itself redirects to `/base/` so the
/// app's relative asset URLs resolve; anything else is not ours.
async fn strip_base_path(State(base): State<String>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == base {
        return Redirect::permanent(&format!("{base}/")).into_response();
    }
    let Some(rest) = path
        .strip_prefix(base.as_str())
        .filter(|r| r.starts_with('/'))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let rest = match request.uri().query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = rest.parse().ok();
    match Uri::from_parts(parts) {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    }
    next.run(request).await
}

/// The built web app ([`assets`]), with a single-page-app fallback to
/// `index.html`.
fn web_app(web_dir: &Path) -> Router {
    match Assets::load(web_dir) {
        Ok(Some(assets)) => Router::new().fallback(assets::serve).with_state(assets),
        Ok(None) => {
            tracing::warn!(dir = %web_dir.display(), "web app not built; serving a placeholder page");
            Router::new().fallback(not_built)
        }
        Err(error) => {
            tracing::warn!(dir = %web_dir.display(), %error, "cannot read the web app; serving a placeholder page");
            Router::new().fallback(not_built)
        }
    }
}

async fn not_built() -> impl IntoResponse {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(
            "<!doctype html><title>Chat</title><h1>The web app is not built</h1>\
             <p>The chat API is running. To get the web app, run <code>scripts/start</code> \
             from the repository, or pass <code>--web-dir</code> pointing at trunk's \
             <code>dist</code> folder.</p>",
        ),
    )
}

/// Rewrites tonic's `OUT_OF_RANGE` refusal of an oversized unary request into
/// `RESOURCE_EXHAUSTED` with a readable text (streams map it in the service).
async fn explain_oversized(State(metrics): State<Metrics>, mut response: Response) -> Response {
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return response;
    };
    let refusal = refusal(status.clone());
    if refusal.code() != status.code() {
        metrics.limit_hit(Limit::MessageSize);
        // Only fails on a message that is not a valid header, and ours is.
        let _ = refusal.add_header(response.headers_mut());
    }
    response
}
