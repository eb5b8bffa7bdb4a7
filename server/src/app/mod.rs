//! Running the server: accept connections within the limits, serve every
//! protocol on each, and shut down cleanly.
//!
//! The accept loop is ours rather than tonic's so that each connection can
//! be ended for its own reasons (see [`crate::http::connection`]): over the
//! connection cap it is closed at once; a connection that never sends a
//! request, sits idle, or resets streams without pause is closed, with
//! GOAWAY where HTTP/2 allows. Open streams would keep a graceful shutdown
//! waiting forever, so shutting down first ends every stream through the
//! hub (clients see `UNAVAILABLE` and reconnect), then lets connections drain.
//!
//! - [`assets`]: the web app's files, from memory, compressed once.
//! - [`open`]: the log, the hub and the names, on one machine or in a cluster.
//! - [`presence_nats`]: presence and typing shared with the other replicas.
//! - [`routes`]: gRPC, gRPC-Web, health checks and the web app on one HTTP service.

pub mod assets;
pub mod open;
pub mod presence_nats;
pub mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;
use tower_http::cors::CorsLayer;
use tracing::{debug, info, warn};

use crate::admin::socket::{self, SocketError};
use crate::config::Config;
use crate::http::connection::Conn;
use crate::http::cors::{self, InvalidOrigin};
use crate::http::serve::{Serving, http_builder};
use crate::hub::Hub;
use crate::limits::RateLimiter;
use crate::log::LogError;
use crate::metrics::Limit;
use crate::moderation::{Moderation, ModerationError};
use crate::people::names::Names;
use crate::people::roles::{Roles, RolesError};
use crate::rpc::{ChatServer, ChatServiceServer};

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
    Store { db: String, source: LogError },
    #[error(
        "--auth-header {0} takes names from a header that anyone could send: \
         use it only behind a proxy that sets it, and say so with --trust-proxy"
    )]
    AuthHeaderUntrusted(String),
    #[error(transparent)]
    Roles(#[from] RolesError),
    #[error("opening moderation: {0}")]
    Moderation(#[from] ModerationError),
    #[error(transparent)]
    AdminSocket(#[from] SocketError),
}

/// A configured server bound to its port, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    hub: Hub,
    names: Names,
    roles: Arc<Roles>,
    moderation: Arc<Moderation>,
    /// The operator's socket and its path, if this server has one.
    admin: Option<(UnixListener, PathBuf)>,
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
        let roles = Arc::new(Roles::load(
            &config.moderators,
            config.moderator_key_file.as_deref(),
        )?);
        let (hub, names, moderation) = open::open(config).await?;
        let admin = match config.admin_socket.path(&config.db) {
            Some(path) => socket::bind(&path).await?.map(|listener| (listener, path)),
            None => None,
        };
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
            names,
            roles,
            moderation,
            admin,
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
        health.set_serving::<ChatServiceServer<ChatServer>>().await;
        let chat = ChatServer::new(
            self.hub.clone(),
            heartbeat,
            Arc::clone(&rates),
            self.names.clone(),
            Arc::clone(&self.moderation),
        )
        .require_join(config.require_join)
        .max_rooms(usize::try_from(config.max_rooms).unwrap_or(usize::MAX))
        .auth_header(config.auth_header.clone())
        .edit_window(config.edit_window.0)
        .roles(Arc::clone(&self.roles))
        .search_limits(limits.search_rate, limits.search_burst);
        let admin_closing = Arc::new(tokio::sync::Notify::new());
        let admin = self.admin.map(|(listener, path)| {
            let closing = Arc::clone(&admin_closing);
            tokio::spawn(socket::serve(listener, path, chat.clone(), async move {
                closing.notified().await;
            }))
        });
        let app = routes::app(routes::Parts {
            chat,
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
        admin_closing.notify_one();
        info!("shutting down: ending open streams");
        health
            .set_not_serving::<ChatServiceServer<ChatServer>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        self.hub.shut_down();
        drop(closing_rx);
        let _ = closing.send(());
        closing.closed().await;
        // The admin socket's file goes with the server.
        if let Some(admin) = admin {
            let _ = admin.await;
        }
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
                    <ChatServiceServer<ChatServer> as tonic::server::NamedService>::NAME,
                    status,
                )
                .await;
            was = now;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
