//! One client connection's life: what is open on it, and when it must end.
//!
//! Every request is wrapped by [`Tracked`], which counts it as an open
//! stream until its response body ends (or is dropped), and notes a stream
//! the client cancelled before its end. [`Conn::watch`] turns that into the
//! connection limits: no first request within `--first-request-timeout`
//! (idle sockets, half a preface, slow headers), nothing open for
//! `--idle-timeout`, or streams cancelled without pause (a reset flood).
//! The server's accept loop acts on what it returns.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::Limits;
use crate::limits::TokenBucket;
use crate::metrics::Metrics;

/// Why a connection's watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No request arrived in time: close at once.
    NoFirstRequest,
    /// Nothing open for the idle timeout: end gracefully.
    Idle,
    /// Streams cancelled without pause: end with GOAWAY.
    ResetFlood,
}

/// A client connection, shared by its requests (through their extensions)
/// and the task serving it.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub peer: SocketAddr,
    opened: Instant,
    requests: AtomicU64,
    open_streams: AtomicUsize,
    last_active: Mutex<Instant>,
    resets: Mutex<TokenBucket>,
    reset_burst: f64,
    flooding: AtomicBool,
    /// Posting rate of this connection (see [`crate::limits`]).
    pub rate: Mutex<TokenBucket>,
    changed: Notify,
}

impl Conn {
    pub fn new(id: u64, peer: SocketAddr, limits: &Limits, rate: TokenBucket) -> Self {
        let reset_burst = f64::from(limits.max_stream_resets);
        let now = Instant::now();
        Self {
            id,
            peer,
            opened: now,
            requests: AtomicU64::new(0),
            open_streams: AtomicUsize::new(0),
            last_active: Mutex::new(now),
            resets: Mutex::new(TokenBucket::full(reset_burst)),
            reset_burst,
            flooding: AtomicBool::new(false),
            rate: Mutex::new(rate),
            changed: Notify::new(),
        }
    }

    /// Streams (requests) in progress.
    pub fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::SeqCst)
    }

    fn stream_started(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.open_streams.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_one();
    }

    fn stream_ended(&self, cancelled: bool) {
        if cancelled {
            let refill = self.reset_burst / 10.0;
            let over = self
                .resets
                .lock()
                .map(|mut bucket| bucket.take(refill, self.reset_burst).is_err())
                .unwrap_or(false);
            if over {
                self.flooding.store(true, Ordering::SeqCst);
            }
        }
        if self.open_streams.fetch_sub(1, Ordering::SeqCst) == 1
            && let Ok(mut at) = self.last_active.lock()
        {
            *at = Instant::now();
        }
        self.changed.notify_one();
    }

    /// Resolves when a limit says this connection must end.
    pub async fn watch(&self, first_request: Duration, idle: Duration) -> Verdict {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.flooding.load(Ordering::SeqCst) {
                return Verdict::ResetFlood;
            }
            let deadline = if self.requests.load(Ordering::SeqCst) == 0 {
                Some((self.opened + first_request, Verdict::NoFirstRequest))
            } else if self.open_streams() == 0 {
                let since = self
                    .last_active
                    .lock()
                    .map_or_else(|_| Instant::now(), |at| *at);
                Some((since + idle, Verdict::Idle))
            } else {
                None
            };
            match deadline {
                Some((at, verdict)) if Instant::now() >= at => return verdict,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = &mut changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Sleeps until `at`, or forever if there is no `at` (a disabled branch of
/// a `select!` loop).
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What kind of call a request is, for the `streams_open` metric.
fn kind(path: &str) -> &'static str {
    match path {
        "/ChatService/Subscribe" => "subscribe",
        "/ChatService/ChatStream" => "chat_stream",
        "/ChatService/Send" => "send",
        _ => "other",
    }
}

fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Counts `request` as open on `conn` until its response body is done;
/// returns the guard that ends it, to be moved into the response body.
pub fn track(conn: &std::sync::Arc<Conn>, metrics: &Metrics, request: &Request) -> StreamGuard {
    conn.stream_started();
    StreamGuard {
        conn: std::sync::Arc::clone(conn),
        open: metrics.stream_opened(kind(request.uri().path())),
        grpc: is_grpc(request),
        finished: false,
    }
}

/// Ends a tracked stream when dropped; a gRPC stream dropped before its
/// body finished was cancelled by the client.
#[derive(Debug)]
pub struct StreamGuard {
    conn: std::sync::Arc<Conn>,
    /// This stream's kind in the `streams_open` metric.
    open: prometheus_client::metrics::gauge::Gauge,
    grpc: bool,
    finished: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.open.dec();
        self.conn.stream_ended(self.grpc && !self.finished);
    }
}

/// Wraps `response`'s body so that `guard` ends with it.
pub fn finish_with(response: Response, guard: StreamGuard) -> Response<TrackedBody> {
    response.map(|inner| TrackedBody { inner, guard })
}

/// A response body that ends its stream's [`StreamGuard`].
#[derive(Debug)]
pub struct TrackedBody {
    inner: axum::body::Body,
    guard: StreamGuard,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.guard.finished = true,
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => this.guard.finished = true,
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.guard.finished = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
