//! Running the server: bind, serve every protocol on one listener, and shut
//! down cleanly.
//!
//! Open streams would keep a graceful shutdown waiting forever, so shutting
//! down first ends every stream through the hub (clients see `UNAVAILABLE`
//! and reconnect), then lets connections drain.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tower_http::cors::CorsLayer;

use crate::config::Config;
use crate::cors::{self, InvalidOrigin};
use crate::hub::Hub;
use crate::routes;

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
}

/// A configured server bound to its port, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    hub: Hub,
    web_dir: PathBuf,
    cors: CorsLayer,
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
        Ok(Self {
            listener,
            hub: Hub::new(config.buffer),
            web_dir: config.web_dir.clone(),
            cors,
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
        let hub = self.hub.clone();
        let app = routes::app(self.hub, &self.web_dir, self.cors);
        tonic::transport::Server::builder()
            .accept_http1(true)
            .tcp_nodelay(true)
            .add_routes(tonic::service::Routes::from(app))
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), async move {
                shutdown.await;
                tracing::info!("shutting down: ending open streams");
                hub.shut_down();
            })
            .await?;
        Ok(())
    }
}
