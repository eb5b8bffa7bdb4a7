//! The admin socket: where it is, and serving on it.
//!
//! `--admin-socket auto` (the default) puts it in `$STATE_DIRECTORY` (set
//! by systemd's `StateDirectory=`) as `admin.sock`, else next to the
//! database as `<db>.admin.sock`; with `--db :memory:` and no state
//! directory there is none. `off` turns it off; anything else is the path.
//! A socket file left by a server that is gone is replaced; one another
//! running server answers on is left alone (this one then has none, and
//! says so in its log).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use thiserror::Error;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{info, warn};

use crate::log::sqlite::Location;
use crate::rpc::{ChatServer, ChatServiceServer, ModerationServer};

#[derive(Debug, Error)]
pub enum SocketError {
    #[error("cannot make the admin socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `--admin-socket`: `auto`, `off`, or a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminSocket {
    Auto,
    Off,
    At(PathBuf),
}

impl FromStr for AdminSocket {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "auto" | "" => Self::Auto,
            "off" => Self::Off,
            path => Self::At(PathBuf::from(path)),
        })
    }
}

impl AdminSocket {
    /// The socket's path for a server on `db`, if it has one.
    pub fn path(&self, db: &Location) -> Option<PathBuf> {
        match self {
            Self::Off => None,
            Self::At(path) => Some(path.clone()),
            Self::Auto => match std::env::var_os("STATE_DIRECTORY") {
                // systemd may list several, separated by colons: the first.
                Some(dirs) => std::env::split_paths(&dirs)
                    .next()
                    .map(|dir| dir.join("admin.sock")),
                None => match db {
                    Location::File(path) => {
                        let mut name = path.as_os_str().to_owned();
                        name.push(".admin.sock");
                        Some(PathBuf::from(name))
                    }
                    Location::Memory => None,
                },
            },
        }
    }
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
