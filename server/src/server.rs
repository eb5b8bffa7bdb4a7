//! Running the server: accept connections within the limits, serve every
//! protocol on each, and shut down cleanly.
//!
//! The accept loop is ours rather than tonic's so that each connection can
//! be ended for its own reasons (see [`crate::connection`]): over the
//! connection cap it is closed at once; a connection that never sends a
//! request, sits idle, or resets streams without pause is closed, with
//! GOAWAY where HTTP/2 allows. Open streams would keep a graceful shutdown
//! waiting forever, so shutting down first ends every stream through the
//! hub (clients see `UNAVAILABLE` and reconnect), then lets connections drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;
use tower::ServiceExt;
use tower_http::cors::CorsLayer;
use tracing::{debug, info, warn};

use crate::config::{Config, Limits};
use crate::connection::{self, Conn, Verdict};
use crate::cors::{self, InvalidOrigin};
use crate::hub::{Buffer, Hub};
use crate::limits::RateLimiter;
use crate::log::RoomLog;
use crate::metrics::{Limit, Metrics};
use crate::nats::{self, NatsConfig};
use crate::people::cluster::SharedClaims;
use crate::people::{self, claims::Claims};
use crate::routes;
use crate::service::ChatServer;
use crate::store::StoreError;

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

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Origin(#[from] InvalidOrigin),
    #[error("building gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("opening the message database {db}: {source}")]
    Store { db: String, source: StoreError },
    #[error(
        "--auth-header {0} takes names from a header that anyone could send: \
         use it only behind a proxy that sets it, and say so with --trust-proxy"
    )]
    AuthHeaderUntrusted(String),
}

/// A configured server bound to its port, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    hub: Hub,
    claims: Arc<Claims>,
    /// Cluster mode: names claimed anywhere in the cluster.
    shared_claims: Option<SharedClaims>,
    cors: CorsLayer,
    config: Config,
}

impl Server {
    /// Checks the configuration and binds `config.addr`.
    pub async fn bind(config: &Config) -> Result<Self, ServeError> {
        if let Some(header) = &config.auth_header
            && !config.trust_proxy
        {
            return Err(ServeError::AuthHeaderUntrusted(header.clone()));
        }
        let cors = cors::layer(&config.allowed_origins)?;
        let buffer = Buffer {
            messages: config.buffer,
            mib: config.buffer_mib,
        };
        let claims = Claims::new(Duration::from_secs(config.name_grace));
        let mut shared_claims = None;
        let hub = match &config.nats {
            None => Hub::open(
                config.db.clone(),
                config.retain,
                buffer,
                config.history,
                Metrics::new(),
            ),
            Some(urls) => {
                let connected = nats::Connected::connect(NatsConfig {
                    urls: urls.clone(),
                    replicas: usize::from(config.nats_replicas),
                    retention: config.retain,
                })
                .await
                .map_err(|source| ServeError::Store {
                    db: urls.clone(),
                    source,
                })?;
                let (client, replica) = (connected.client(), connected.replica());
                let hub = Hub::open_log(
                    |on_commit, metrics| {
                        Ok(Arc::new(connected.open(on_commit, metrics)) as Arc<dyn RoomLog>)
                    },
                    buffer,
                    config.history,
                    Metrics::new(),
                );
                if let Ok(hub) = &hub {
                    let unavailable = |error: String| ServeError::Store {
                        db: urls.clone(),
                        source: StoreError::Unavailable(error),
                    };
                    people::cluster::start(client.clone(), hub.clone(), replica)
                        .await
                        .map_err(|e| unavailable(e.to_string()))?;
                    shared_claims = Some(
                        SharedClaims::open(
                            client,
                            usize::from(config.nats_replicas),
                            Arc::clone(&claims),
                        )
                        .await
                        .map_err(|e| unavailable(e.to_string()))?,
                    );
                }
                hub
            }
        }
        .map_err(|source| ServeError::Store {
            db: config.nats.clone().unwrap_or_else(|| config.db.to_string()),
            source,
        })?;
        // Bound last, once the messages can be reached: until then a
        // connection is refused (a proxy tries another replica at once)
        // rather than accepted and left unanswered.
        let listener =
            TcpListener::bind(&config.addr)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.addr.clone(),
                    source,
                })?;
        Ok(Self {
            listener,
            hub,
            claims,
            shared_claims,
            cors,
            config: config.clone(),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The hub, for observing the server from tests and tools.
    pub fn hub(&self) -> Hub {
        self.hub.clone()
    }

    /// Serves until `shutdown` completes, then ends every stream and returns
    /// once the connections have closed.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let config = self.config;
        let limits = config.limits.clone();
        let heartbeat = Duration::from_secs(config.heartbeat);
        let rates = Arc::new(RateLimiter::new(&limits));

        let health = tonic_health::server::HealthReporter::new();
        let health_service = HealthServer::new(HealthService::from_health_reporter(health.clone()));
        health
            .set_serving::<crate::ChatServiceServer<ChatServer>>()
            .await;
        let app = routes::app(routes::Parts {
            chat: ChatServer::new(
                self.hub.clone(),
                heartbeat,
                Arc::clone(&rates),
                Arc::clone(&self.claims),
            )
            .shared_claims(self.shared_claims.clone())
            .require_join(config.require_join)
            .max_rooms(usize::try_from(config.max_rooms).unwrap_or(usize::MAX))
            .auth_header(config.auth_header.clone()),
            hub: self.hub.clone(),
            health: health_service,
            web_dir: &config.web_dir,
            cors: self.cors,
            trust_proxy: config.trust_proxy,
            base_path: config.base_path.clone(),
        })?;
        crate::memory::give_back_after_bursts(self.hub.metrics().clone());
        tokio::spawn(report_availability(self.hub.clone(), health.clone()));
        let serving = Serving {
            app,
            http: http_builder(&limits, heartbeat),
            metrics: self.hub.metrics().clone(),
            limits,
            rates,
        };

        let permits = Arc::new(Semaphore::new(
            usize::try_from(serving.limits.max_connections).unwrap_or(usize::MAX),
        ));
        let (closing, closing_rx) = watch::channel(());
        let mut next_id: u64 = 0;
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, usually: let some close.
                        warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                serving.metrics.limit_hit(Limit::Connections);
                debug!(%peer, "refused a connection: at --max-connections");
                drop(tcp);
                continue;
            };
            next_id += 1;
            let conn = Conn::new(
                next_id,
                peer,
                &serving.limits,
                serving.rates.connection_bucket(),
            );
            tokio::spawn(serving.clone().connection(
                tcp,
                Arc::new(conn),
                permit,
                closing_rx.clone(),
            ));
        }

        drop(self.listener);
        info!("shutting down: ending open streams");
        health
            .set_not_serving::<crate::ChatServiceServer<ChatServer>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        self.hub.shut_down();
        drop(closing_rx);
        let _ = closing.send(());
        closing.closed().await;
        Ok(())
    }
}

/// Keeps gRPC health in step with the log: NOT_SERVING while a replica has
/// lost NATS, so load balancers route around it until it is back.
async fn report_availability(hub: Hub, health: tonic_health::server::HealthReporter) {
    let mut was = true;
    while !hub.is_shut_down() {
        let now = hub.is_available();
        hub.metrics().log_available(now);
        if now != was {
            let status = if now {
                info!("the message log is available again");
                tonic_health::ServingStatus::Serving
            } else {
                warn!("the message log is unavailable: reporting NOT_SERVING");
                tonic_health::ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            health
                .set_service_status(
                    <crate::ChatServiceServer<ChatServer> as tonic::server::NamedService>::NAME,
                    status,
                )
                .await;
            was = now;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// HTTP/1.1 and HTTP/2 on one port, with the limits that hyper enforces.
fn http_builder(limits: &Limits, heartbeat: Duration) -> auto::Builder<TokioExecutor> {
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
struct Serving {
    app: Router,
    http: auto::Builder<TokioExecutor>,
    metrics: Metrics,
    limits: Limits,
    rates: Arc<RateLimiter>,
}

impl Serving {
    /// Serves one connection until it closes, the server shuts down, or a
    /// limit ends it.
    async fn connection(
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
