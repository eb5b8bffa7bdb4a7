//! One log line per request, with the client's address (see
//! [`client_addr`](crate::http::client_addr)), for operators and log shippers.
//!
//! For a stream the line is written when the response starts, so its
//! latency is the time to the first byte; the service logs when a streaming
//! client leaves.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::info;

use crate::http::client_addr::{self, ClientAddr};

/// Resolves the client address into the request's extensions and logs the
/// request once its response starts.
pub async fn layer(State(trust_proxy): State<bool>, mut request: Request, next: Next) -> Response {
    let client = client_addr::resolve(&request, trust_proxy);
    if let Some(client) = client {
        request.extensions_mut().insert::<ClientAddr>(client);
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    info!(
        target: "access",
        client = client.map(|c| c.to_string()),
        %method,
        path,
        status = response.status().as_u16(),
        grpc_status,
        latency_ms = started.elapsed().as_secs_f64() * 1_000.0,
        "request"
    );
    response
}
