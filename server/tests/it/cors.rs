//! CORS: local development origins and listed origins may call the API from
//! another origin; others may not; browsers can read gRPC statuses.

use crate::common::{self, TestServer, http1_request};
use chat_server::Config;

async fn preflight(server: &TestServer, origin: &str) -> common::HttpResponse {
    http1_request(
        server.addr,
        "OPTIONS",
        "/ChatService/Send",
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type,x-grpc-web,x-user-agent,grpc-timeout",
            ),
        ],
        Vec::new(),
    )
    .await
}

fn header<'a>(response: &'a common::HttpResponse, name: &str) -> &'a str {
    response
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn preflight_allows_local_development_and_the_grpc_web_headers() {
    let server = TestServer::start().await;
    let response = preflight(&server, "http://localhost:8080").await;
    assert!(response.status < 300, "status {}", response.status);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        "http://localhost:8080"
    );
    let allowed = header(&response, "access-control-allow-headers").to_ascii_lowercase();
    for name in ["content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"] {
        assert!(allowed.contains(name), "{name} not in {allowed}");
    }
    assert!(header(&response, "access-control-allow-methods").contains("POST"));

    let response = preflight(&server, "https://evil.example").await;
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        "",
        "unlisted origin"
    );
    server.stop().await;
}

#[tokio::test]
async fn responses_expose_grpc_status_headers_to_listed_origins() {
    let mut config = Config::with_addr("127.0.0.1:0");
    config.allowed_origins = vec!["https://chat.example.org".into()];
    let server = TestServer::start_with(config).await;
    assert_eq!(
        header(
            &preflight(&server, "https://chat.example.org").await,
            "access-control-allow-origin"
        ),
        "https://chat.example.org"
    );
    // A real (failing) gRPC-Web call: the browser must be able to read why.
    let response = http1_request(
        server.addr,
        "POST",
        "/ChatService/Send",
        &[
            ("origin", "https://chat.example.org"),
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
        ],
        vec![0, 0, 0, 0, 0],
    )
    .await;
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        "https://chat.example.org"
    );
    let exposed = header(&response, "access-control-expose-headers").to_ascii_lowercase();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_star_allows_any_origin() {
    let mut config = Config::with_addr("127.0.0.1:0");
    config.allowed_origins = vec!["*".into()];
    let server = TestServer::start_with(config).await;
    assert_eq!(
        header(
            &preflight(&server, "https://anywhere.example").await,
            "access-control-allow-origin"
        ),
        "*"
    );
    server.stop().await;
}
