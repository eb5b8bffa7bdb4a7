//! Command-line flags, each with an environment variable, for `chat-server`.

use std::path::PathBuf;

use clap::Parser;

use crate::hub::DEFAULT_BUFFER;

/// A chat server for browsers and native clients: native gRPC (HTTP/2),
/// gRPC-Web (HTTP/1.1) and the web app, all on one port.
#[derive(Debug, Clone, Parser)]
#[command(name = "chat-server", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on, HOST:PORT. Serves native gRPC, gRPC-Web and the
    /// web app on this one port.
    #[arg(long, env = "CHAT_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,

    /// An origin (like https://chat.example.org) allowed to call the API
    /// from another site; repeat the flag for more, or give `*` to allow any.
    /// http://localhost:* and http://127.0.0.1:* are always allowed (for
    /// `trunk serve`); the app's own origin needs no entry.
    #[arg(
        long = "allowed-origin",
        env = "CHAT_ALLOWED_ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Folder holding the built web app (trunk's `dist`), served at `/`.
    #[arg(long, env = "CHAT_WEB_DIR", default_value = "dist")]
    pub web_dir: PathBuf,

    /// How many messages a client may fall behind before the server
    /// disconnects it (it then reconnects). Bounds memory per slow reader.
    #[arg(long, env = "CHAT_BUFFER", default_value_t = DEFAULT_BUFFER,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub buffer: u32,
}

impl Config {
    /// The defaults, as if started with no flags and no environment.
    pub fn with_addr(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            allowed_origins: Vec::new(),
            web_dir: PathBuf::from("dist"),
            buffer: DEFAULT_BUFFER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let config = Config::try_parse_from([
            "chat-server",
            "--addr",
            "0.0.0.0:8080",
            "--allowed-origin",
            "https://a.example",
            "--allowed-origin",
            "https://b.example",
        ])
        .expect("valid flags");
        assert_eq!(config.addr, "0.0.0.0:8080");
        assert_eq!(config.allowed_origins.len(), 2);
    }

    #[test]
    fn help_is_consistent() {
        <Config as clap::CommandFactory>::command().debug_assert();
    }
}
