//! Serving one accepted connection: HTTP/1.1 and HTTP/2 on one port with
//! the limits hyper enforces, and the connection's own life (no first
//! request in time, idle, cancelling streams without pause: ended, with
//! GOAWAY where HTTP/2 allows, see [`super::connection`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::{debug, warn};

use super::connection::{self, Conn, Verdict};
use crate::config::Limits;
use crate::limits::RateLimiter;
use crate::metrics::{Limit, Metrics};

/// HTTP/2 flow-control window per stream: what a client may send before the
/// server reads it. Small enough that a paused (rate-limited) `ChatStream`
/// cannot buffer more small frames than h2 tolerates before it calls the
/// client abusive (`ENHANCE_YOUR_CALM`), large enough for any one message.
const STREAM_WINDOW: u32 = 64 * 1024;
/// The connection's window; h2 allows unread small frames in proportion.
const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;
/// How long an ended (idle or flooding) connection gets to finish what is
/// in flight before it is closed outright.
const GRACE: Duration = Duration::from_secs(5);

/// HTTP/1.1 and HTTP/2 on one port, with the limits that hyper enforces.
pub fn http_builder(limits: &Limits, heartbeat: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A timer makes hyper enforce its HTTP/1 header read timeout (30 s).
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        // Native streams get HTTP/2 pings as their heartbeat; a peer that
        // does not answer one in time is dropped as dead.
        .keep_alive_interval(heartbeat)
        .keep_alive_timeout(Duration::from_secs(limits.keepalive_timeout))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    builder
}

/// What every connection task needs; cheap to clone.
#[derive(Clone)]
pub struct Serving {
    pub app: Router,
    pub http: auto::Builder<TokioExecutor>,
    pub metrics: Metrics,
    pub limits: Limits,
    pub rates: Arc<RateLimiter>,
}

impl Serving {
    /// Serves one connection until it closes, the server shuts down, or a
    /// limit ends it.
    pub async fn connection(
        self,
        tcp: TcpStream,
        conn: Arc<Conn>,
        permit: OwnedSemaphorePermit,
        mut closing: watch::Receiver<()>,
    ) {
        let _permit = permit;
        let _ = tcp.set_nodelay(true);
        self.metrics.connection_opened();
        let (app, metrics, requests_conn) = (self.app, self.metrics.clone(), Arc::clone(&conn));
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let (app, metrics, conn) = (app.clone(), metrics.clone(), Arc::clone(&requests_conn));
            async move {
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(Arc::clone(&conn));
                let guard = connection::track(&conn, &metrics, &request);
                let response = match app.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(connection::finish_with(response, guard))
            }
        });
        let serving = self.http.serve_connection(TokioIo::new(tcp), service);
        tokio::pin!(serving);
        let watch = conn.watch(
            Duration::from_secs(self.limits.first_request_timeout),
            Duration::from_secs(self.limits.idle_timeout),
        );
        tokio::pin!(watch);
        // Futures made once, not on every turn of the loop: the loop turns
        // each time the connection has work, once per message at low rates.
        let server_closing = closing.changed();
        tokio::pin!(server_closing);
        let give_up = connection::sleep_until(None);
        tokio::pin!(give_up);
        let (mut watching, mut draining) = (true, false);
        loop {
            tokio::select! {
                result = serving.as_mut() => {
                    if let Err(error) = result {
                        debug!(peer = %conn.peer, %error, "connection ended with an error");
                    }
                    break;
                }
                _ = &mut server_closing, if !draining => {
                    draining = true;
                    serving.as_mut().graceful_shutdown();
                }
                verdict = &mut watch, if watching => {
                    watching = false;
                    match verdict {
                        Verdict::NoFirstRequest => {
                            self.metrics.limit_hit(Limit::FirstRequestTimeout);
                            debug!(peer = %conn.peer, "closed a connection that sent no request in time");
                            break;
                        }
                        Verdict::Idle => {
                            self.metrics.limit_hit(Limit::IdleTimeout);
                            debug!(peer = %conn.peer, "closing an idle connection");
                        }
                        Verdict::ResetFlood => {
                            self.metrics.limit_hit(Limit::ResetFlood);
                            warn!(peer = %conn.peer, "ending a connection that cancels streams without pause");
                        }
                    }
                    draining = true;
                    serving.as_mut().graceful_shutdown();
                    give_up.set(connection::sleep_until(Some(Instant::now() + GRACE)));
                }
                () = &mut give_up => break,
            }
        }
        self.metrics.connection_closed();
    }
}
