//! Running the server: bind, serve every protocol on one listener, and shut
//! down cleanly.
//!
//! Open streams would keep a graceful shutdown waiting forever, so shutting
//! down first ends every stream through the hub (clients see `UNAVAILABLE`
//! and reconnect), then lets connections drain.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;
use tower_http::cors::CorsLayer;

use crate::config::Config;
use crate::cors::{self, InvalidOrigin};
use crate::hub::Hub;
use crate::routes;
use crate::service::ChatServer;
use crate::store::StoreError;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Origin(#[from] InvalidOrigin),
    #[error("server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("building gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("opening the message database {db}: {source}")]
    Store { db: String, source: StoreError },
}

/// A configured server bound to its port, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    hub: Hub,
    cors: CorsLayer,
    config: Config,
}

impl Server {
    /// Checks the configuration and binds `config.addr`.
    pub async fn bind(config: &Config) -> Result<Self, ServeError> {
        let cors = cors::layer(&config.allowed_origins)?;
        let listener =
            TcpListener::bind(&config.addr)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.addr.clone(),
                    source,
                })?;
        let hub = Hub::open(
            config.db.clone(),
            config.retain,
            config.buffer,
            config.history,
        )
        .map_err(|source| ServeError::Store {
            db: config.db.to_string(),
            source,
        })?;
        Ok(Self {
            listener,
            hub,
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
        let heartbeat = Duration::from_secs(config.heartbeat);
        let health = tonic_health::server::HealthReporter::new();
        let health_service = HealthServer::new(HealthService::from_health_reporter(health.clone()));
        health
            .set_serving::<crate::ChatServiceServer<ChatServer>>()
            .await;
        let app = routes::app(routes::Parts {
            chat: ChatServer::new(self.hub.clone(), heartbeat),
            hub: self.hub.clone(),
            health: health_service,
            web_dir: &config.web_dir,
            cors: self.cors,
            trust_proxy: config.trust_proxy,
            base_path: config.base_path.clone(),
        })?;
        let hub = self.hub;
        tonic::transport::Server::builder()
            .accept_http1(true)
            .tcp_nodelay(true)
            // Native streams get HTTP/2 pings as their heartbeat.
            .http2_keepalive_interval(Some(heartbeat))
            .add_routes(tonic::service::Routes::from(app))
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), async move {
                shutdown.await;
                tracing::info!("shutting down: ending open streams");
                health
                    .set_not_serving::<crate::ChatServiceServer<ChatServer>>()
                    .await;
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                hub.shut_down();
            })
            .await?;
        Ok(())
    }
}
