//! The admin socket: binding it and serving on it. Where it is comes from
//! `--admin-socket` (`config::AdminSocket`). A socket file left by a server
//! that is gone is replaced; one another
//! running server answers on is left alone (this one then has none, and
//! says so in its log).

use std::path::{Path, PathBuf};

use thiserror::Error;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{info, warn};

use crate::rpc::{ChatServer, ChatServiceServer, ModerationServer};

#[derive(Debug, Error)]
pub enum SocketError {
    #[error("cannot make the admin socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Binds the socket at `path`, readable and writable by this user only.
/// `None` if another running server holds it.
pub async fn bind(path: &Path) -> Result<Option<UnixListener>, SocketError> {
    let failed = |source| SocketError::Bind {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            warn!(path = %path.display(), "another server answers on the admin socket: this one has none");
            return Ok(None);
        }
        // Left by a server that is gone.
        std::fs::remove_file(path).map_err(failed)?;
    }
    let listener = UnixListener::bind(path).map_err(failed)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    }
    info!(path = %path.display(), "admin socket ready (chat-server admin)");
    Ok(Some(listener))
}

/// Serves the operator on `listener` until `shutdown`, then removes the
/// socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    chat: ChatServer,
    shutdown: impl Future<Output = ()> + Send,
) {
    let operator = chat.as_operator();
    let served = tonic::transport::Server::builder()
        .add_service(ModerationServer::new(operator.clone()))
        .add_service(ChatServiceServer::new(operator))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    if let Err(error) = served {
        warn!(%error, "the admin socket stopped");
    }
    let _ = std::fs::remove_file(&path);
}
