//! What gRPC and gRPC-Web require of every call, beyond what tonic's
//! generated services do by themselves:
//!
//! - a `grpc-timeout` ends the call with `DEADLINE_EXCEEDED` (before the
//!   first response, or mid-stream), as the spec says, not `CANCELLED`;
//! - a request without a gRPC content type gets HTTP 415;
//! - an unknown service or method gets `UNIMPLEMENTED` with a sentence;
//! - a request body the server stops reading early (an oversized message)
//!   is still read to its end over HTTP/1.1, so the connection is not reset
//!   under a proxy that is still sending it, and the client gets the status;
//! - a gRPC-Web text request is answered as text, errors included.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tonic::{Code, Status};

use crate::metrics::{Limit, Metrics};

/// The most a refused request body is read (and thrown away) to keep its
/// connection usable; a larger one closes the connection.
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;
/// How long draining may take.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

fn deadline_status(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "deadline exceeded: the call's grpc-timeout of {timeout:?} ran out"
    ))
}

/// A trailers-only gRPC answer carrying `status`.
pub fn status_response(status: &Status) -> Response {
    status.clone().into_http::<Body>()
}

/// Honours `grpc-timeout`: `DEADLINE_EXCEEDED` when it runs out, whether
/// before the response starts or while a stream is open.
pub async fn deadline(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let Some(timeout) = parse_timeout(request.headers()) else {
        return next.run(request).await;
    };
    let at = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(at, next.run(request)).await {
        Ok(response) => response.map(|inner| {
            Body::new(DeadlineBody {
                inner,
                timer: Box::pin(tokio::time::sleep_until(at)),
                timeout,
                metrics,
                done: false,
            })
        }),
        Err(_) => {
            metrics.limit_hit(Limit::Deadline);
            status_response(&deadline_status(timeout))
        }
    }
}

/// A response body that ends with `DEADLINE_EXCEEDED` trailers when its
/// call's deadline passes before it finishes.
struct DeadlineBody {
    inner: Body,
    timer: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    metrics: Metrics,
    done: bool,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {}
            ready => return ready,
        }
        if this.timer.as_mut().poll(cx).is_ready() {
            this.done = true;
            this.metrics.limit_hit(Limit::Deadline);
            let mut trailers = HeaderMap::new();
            // Only fails on a message that is not a valid header, and ours is.
            let _ = deadline_status(this.timeout).add_header(&mut trailers);
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// gRPC calls must say they are gRPC; anything else gets HTTP 415 (as the
/// gRPC over HTTP/2 spec asks) instead of being decoded as if it were.
pub async fn require_grpc(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    if content_type(request.headers()).starts_with("application/grpc") {
        return next.run(request).await;
    }
    metrics.limit_hit(Limit::ContentType);
    let status = Status::invalid_argument(
        "not a gRPC request: the content-type must be application/grpc (or a gRPC-Web type)",
    );
    let mut response = status_response(&status);
    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response
}

/// gRPC requests to a path no service answers: `UNIMPLEMENTED`, not the
/// web app. Everything else goes on to `next`.
pub async fn unknown_service(request: Request, next: Next) -> Response {
    if request.method() == http::Method::POST
        && content_type(request.headers()).starts_with("application/grpc")
    {
        let status = Status::unimplemented(format!(
            "unknown method {}: this server offers ChatService, grpc.health.v1.Health and reflection",
            request.uri().path()
        ));
        return with_web_content_type(request.headers(), status_response(&status));
    }
    next.run(request).await
}

/// Gives tonic's bare `UNIMPLEMENTED` (an unknown method of a known
/// service) a `grpc-message`.
pub async fn explain_unimplemented(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let unimplemented = response
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"12");
    if unimplemented && !response.headers().contains_key("grpc-message") {
        let status = Status::new(
            Code::Unimplemented,
            format!("unknown method {path}: this server does not implement it"),
        );
        let _ = status.add_header(response.headers_mut());
    }
    response
}

/// gRPC-Web answers in the encoding it was asked in. tonic-web picks the
/// response encoding from `accept` only, so a text request that does not
/// also ask for text in `accept` (browsers send `*/*`) would get binary
/// answers, errors included: ask for it on the client's behalf.
pub async fn answer_in_kind(mut request: Request, next: Next) -> Response {
    let text = content_type(request.headers()).starts_with("application/grpc-web-text");
    let accepts_web = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/grpc-web"));
    if text && !accepts_web {
        request.headers_mut().insert(
            header::ACCEPT,
            HeaderValue::from_static("application/grpc-web-text"),
        );
    }
    next.run(request).await
}

/// For answers made here rather than by tonic-web: the content type the
/// gRPC-Web client asked in, or native gRPC's.
fn with_web_content_type(request: &HeaderMap, mut response: Response) -> Response {
    let asked = content_type(request);
    let answer = if asked.starts_with("application/grpc-web-text") {
        "application/grpc-web-text+proto"
    } else if asked.starts_with("application/grpc-web") {
        "application/grpc-web+proto"
    } else {
        "application/grpc"
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(answer));
    response
}

/// Over HTTP/1.1, a request body that the service stops reading early is
/// read to its end (up to [`DRAIN_LIMIT`]) in the background: closing with
/// unread bytes would reset the connection, and a proxy still sending them
/// would answer 502 instead of passing on the status.
pub async fn drain_refused_bodies(request: Request, next: Next) -> Response {
    if request.version() > Version::HTTP_11 {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let body = Body::new(DrainOnDrop {
        inner: Some(body),
        ended: false,
    });
    next.run(Request::from_parts(parts, body)).await
}

struct DrainOnDrop {
    inner: Option<Body>,
    ended: bool,
}

impl http_body::Body for DrainOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) || inner.is_end_stream()
        {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(SizeHint::default, |b| b.size_hint())
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Some(mut body) = self.inner.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let drain = async {
                    let mut read = 0;
                    while let Some(Ok(frame)) = body.frame().await {
                        read += frame.data_ref().map_or(0, Bytes::len);
                        if read > DRAIN_LIMIT {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(raw: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", HeaderValue::from_str(raw).expect("header"));
        parse_timeout(&headers)
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "S", "123456789S", "1x", "-1S"] {
            assert_eq!(timeout(bad), None, "{bad:?}");
        }
    }
}
