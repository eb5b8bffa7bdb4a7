//! What the one port answers: the gRPC service (native gRPC over HTTP/2 and
//! gRPC-Web over HTTP/1.1) and, for every other path, the web app's files.
//!
//! tonic-web's layer refuses plain HTTP requests, so it wraps only the gRPC
//! routes; the static files are the fallback. CORS wraps everything, so a
//! preflight is answered before routing.

use std::path::Path;

use axum::Router;
use axum::response::{Html, IntoResponse, Response};
use chat_proto::ChatServiceServer;
use http::{HeaderValue, StatusCode, header};
use tonic_web::GrpcWebLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::CorsLayer;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::hub::Hub;
use crate::service::{ChatServer, refusal};
use chat_proto::rules::MAX_DECODED_BYTES;

/// The whole HTTP application.
pub fn app(hub: Hub, web_dir: &Path, cors: CorsLayer) -> Router {
    let grpc =
        ChatServiceServer::new(ChatServer::new(hub)).max_decoding_message_size(MAX_DECODED_BYTES);
    tonic::service::Routes::new(grpc)
        .into_axum_router()
        .route_layer(axum::middleware::map_response(explain_oversized))
        .route_layer(GrpcWebLayer::new())
        .fallback_service(web_app(web_dir))
        .layer(cors)
}

/// The built web app, compressed, with a single-page-app fallback to
/// `index.html`. Browsers revalidate on every load (trunk's file names change
/// with their content, and index.html points at the new ones).
fn web_app(web_dir: &Path) -> Router {
    let index = web_dir.join("index.html");
    if !index.is_file() {
        tracing::warn!(dir = %web_dir.display(), "web app not built; serving a placeholder page");
        return Router::new().fallback(not_built);
    }
    let files = ServeDir::new(web_dir).fallback(ServeFile::new(index));
    Router::new()
        .fallback_service(files)
        .layer(CompressionLayer::new())
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
}

async fn not_built() -> impl IntoResponse {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(
            "<!doctype html><title>Chat</title><h1>The web app is not built</h1>\
             <p>The chat API is running. To get the web app, run <code>./scripts/start</code> \
             from the repository, or pass <code>--web-dir</code> pointing at trunk's \
             <code>dist</code> folder.</p>",
        ),
    )
}

/// Rewrites tonic's `OUT_OF_RANGE` refusal of an oversized unary request into
/// `RESOURCE_EXHAUSTED` with a readable text (streams map it in the service).
async fn explain_oversized(mut response: Response) -> Response {
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return response;
    };
    let refusal = refusal(status.clone());
    if refusal.code() != status.code() {
        // Only fails on a message that is not a valid header, and ours is.
        let _ = refusal.add_header(response.headers_mut());
    }
    response
}
