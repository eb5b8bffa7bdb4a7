//! A plain HTTP/1.0 GET on loopback: enough for nats-server's monitoring
//! endpoints (`/healthz`, `/jsz`), without an HTTP client library.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one request may take, connecting and reading included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Status and body of `GET path` on `addr`, or `None` if nothing answers
/// (refused, reset, not HTTP, or not within [`REQUEST_TIMEOUT`]).
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let request = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        // HTTP/1.0: the server closes the connection after the body, so the
        // body is whatever comes until then (no chunked encoding).
        let head = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response);
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        Some((status, body.to_owned()))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .ok()
        .flatten()
}
