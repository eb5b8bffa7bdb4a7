//! Command-line flags, each with an environment variable, for `chat-server`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::admin::cli::AdminArgs;
use crate::hub::{DEFAULT_BUFFER, DEFAULT_BUFFER_MIB, DEFAULT_HISTORY};
use crate::log::sqlite::Location;
use crate::log::{Retention, parse_age};

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

    /// The message database (SQLite; created if missing), or `:memory:` to
    /// keep nothing across restarts.
    #[arg(long, env = "CHAT_DB", default_value = "chat.db")]
    pub db: Location,

    /// Cluster mode: the NATS servers (`nats://host:4222`, comma-separated)
    /// whose JetStream holds every room, shared by every replica started
    /// with the same list. `--db` is then not used.
    #[arg(long, env = "CHAT_NATS", value_name = "URL[,URL...]")]
    pub nats: Option<String>,

    /// Copies JetStream keeps of each room (cluster mode): 3 survives the
    /// loss of one NATS node; at most the number of NATS nodes.
    #[arg(long, env = "CHAT_NATS_REPLICAS", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=5))]
    pub nats_replicas: u16,

    /// Cluster mode: the file each replica keeps its search index in,
    /// rebuilt from the rooms' streams at every start (what was there is
    /// replaced). Unset: in memory.
    #[arg(long, env = "CHAT_SEARCH_DB")]
    pub search_db: Option<PathBuf>,

    /// How many recent messages a new subscriber gets before live ones.
    #[arg(long, env = "CHAT_HISTORY", default_value_t = DEFAULT_HISTORY,
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub history: u32,

    /// How much history the database keeps: a message count (like 100000)
    /// or an age (like 30d, 12h). Older messages are deleted.
    #[arg(long, env = "CHAT_RETAIN", default_value = "100000")]
    pub retain: Retention,

    /// How long after sending a message its author may still edit it: an
    /// age like 15m or 24h; 0 for no limit. A later edit is refused with
    /// FAILED_PRECONDITION.
    #[arg(long, env = "CHAT_EDIT_WINDOW", default_value = "0")]
    pub edit_window: EditWindow,

    /// Newest messages kept in memory for delivery, shared by every client.
    /// A client that falls further behind reads what it missed from the
    /// database instead (slower), so this bounds memory, not what anyone
    /// receives.
    #[arg(long, env = "CHAT_BUFFER", default_value_t = DEFAULT_BUFFER,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub buffer: u32,

    /// MiB those messages may take at most (encoded); past it the oldest
    /// leave memory early.
    #[arg(long, env = "CHAT_BUFFER_MIB", default_value_t = DEFAULT_BUFFER_MIB,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub buffer_mib: u32,

    /// Seconds between heartbeats on every open stream (a `Heartbeat` event
    /// on Subscribe streams, HTTP/2 pings on native ones). Keep it below the
    /// idle timeout of any proxy in front (nginx: proxy_read_timeout, 60 s).
    #[arg(long, env = "CHAT_HEARTBEAT", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat: u64,

    /// Seconds a name stays held after its session's last stream closes (or
    /// after its Join, if none opens), so a reload or a reconnect keeps it.
    #[arg(long, env = "CHAT_NAME_GRACE", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub name_grace: u64,

    /// Only people who joined may listen or post: Subscribe, Send and
    /// SetTyping need a session (`UNAUTHENTICATED` without one). The paper's
    /// ChatStream still takes the name of its first message.
    #[arg(long, env = "CHAT_REQUIRE_JOIN")]
    pub require_join: bool,

    /// Rooms that may exist, general included; CreateRoom past it gets
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "CHAT_MAX_ROOMS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_rooms: u32,

    /// Behind a proxy that authenticates people (nginx auth_basic or
    /// auth_request, oauth2-proxy): take every request's user name from this
    /// header, which the proxy sets, and ignore names clients choose. Needs
    /// --trust-proxy: the server refuses to start without it.
    #[arg(long, env = "CHAT_AUTH_HEADER", value_name = "NAME")]
    pub auth_header: Option<String>,

    /// Names that moderate (delete anyone's message). A listed name is a
    /// moderator only when the authenticating proxy (--auth-header) names
    /// the caller, or when it is claimed with the moderator key; without
    /// that proof nobody can claim or speak under it. Give every replica
    /// the same list.
    #[arg(
        long,
        env = "CHAT_MODERATORS",
        value_name = "NAME[,NAME...]",
        value_delimiter = ','
    )]
    pub moderators: Vec<String>,

    /// A file holding the moderator key, which `Join` takes as `key` to
    /// prove a listed name. The server refuses to start if it is empty or
    /// readable by group or others; trailing whitespace is ignored.
    #[arg(long, env = "CHAT_MODERATOR_KEY_FILE", value_name = "PATH")]
    pub moderator_key_file: Option<PathBuf>,

    /// The longest a ban with `address = true` refuses the banned name's
    /// recent client addresses (an age like 24h or 30m).
    #[arg(long, env = "CHAT_ADDRESS_BAN", default_value = "24h", value_parser = parse_age)]
    pub address_ban: Duration,

    /// Behind a reverse proxy: take the client's address from the last
    /// X-Forwarded-For entry (or Forwarded for=) that the proxy adds, for
    /// logs. Without this flag those headers are ignored.
    #[arg(long, env = "CHAT_TRUST_PROXY")]
    pub trust_proxy: bool,

    /// Serve everything under this path (like /chat) for a proxy that passes
    /// its prefix through. Not needed when the proxy strips it, as the
    /// shipped nginx config does; the web app works under any prefix.
    #[arg(long, env = "CHAT_BASE_PATH", default_value = "/", value_parser = parse_base_path)]
    pub base_path: String,

    /// Log format: human-readable text, or one JSON object per line for log
    /// shippers. RUST_LOG sets the level (default info).
    #[arg(long, env = "CHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The operator's Unix socket for `chat-server admin`: `auto` puts it in
    /// $STATE_DIRECTORY (systemd) as admin.sock, else next to the database
    /// as <db>.admin.sock (none for --db :memory:); `off`; or a path.
    #[arg(
        long,
        env = "CHAT_ADMIN_SOCKET",
        default_value = "auto",
        value_name = "auto|off|PATH"
    )]
    pub admin_socket: AdminSocket,

    #[command(flatten)]
    pub limits: Limits,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `chat-server` does besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Moderate the running server from its own machine, over its admin
    /// socket (see --admin-socket): mute, ban, lift, purge, slow, topic,
    /// delete, reports, dismiss, audit.
    Admin(AdminArgs),
}

/// What one client may use of the server. Each limit says in the README
/// what a client sees when it hits it.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct Limits {
    /// Open connections at most; past it, new connections are closed as
    /// soon as they are accepted.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Concurrent streams (calls) per HTTP/2 connection, advertised as
    /// SETTINGS_MAX_CONCURRENT_STREAMS; clients queue or get REFUSED_STREAM.
    #[arg(long, env = "CHAT_MAX_STREAMS_PER_CONNECTION", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,

    /// Seconds a new connection gets to send its first request (idle
    /// sockets, half an HTTP/2 preface and slow headers are closed after it).
    #[arg(long, env = "CHAT_FIRST_REQUEST_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub first_request_timeout: u64,

    /// Seconds a connection may stay open with no request or stream in
    /// progress before it is closed (HTTP/2: GOAWAY).
    #[arg(long, env = "CHAT_IDLE_TIMEOUT", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,

    /// Seconds an HTTP/2 peer has to answer a keep-alive ping (sent every
    /// --heartbeat seconds) before its connection is dropped as dead.
    #[arg(long, env = "CHAT_KEEPALIVE_TIMEOUT", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keepalive_timeout: u64,

    /// Streams a connection may cancel (reset) in a burst, refilled at a
    /// tenth of this per second; a connection cancelling faster is ended
    /// with GOAWAY (a "rapid reset" flood).
    #[arg(long, env = "CHAT_MAX_STREAM_RESETS", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_stream_resets: u32,

    /// Messages per second one connection or one user name may post, after
    /// a burst of --rate-burst; 0 turns rate limiting off. Over it, Send
    /// gets RESOURCE_EXHAUSTED and ChatStream is paused.
    #[arg(long, env = "CHAT_RATE_LIMIT", default_value_t = 5.0,
          value_parser = parse_rate)]
    pub rate_limit: f64,

    /// Messages a connection or user name may post at once before
    /// --rate-limit applies.
    #[arg(long, env = "CHAT_RATE_BURST", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_burst: u32,

    /// Searches per second one client address may make, after a burst of
    /// --search-burst, on a budget of their own (searching never costs a
    /// message); 0 turns it off. Over it, Search gets RESOURCE_EXHAUSTED.
    #[arg(long, env = "CHAT_SEARCH_RATE", default_value_t = 5.0,
          value_parser = parse_rate)]
    pub search_rate: f64,

    /// Searches a client address may make at once before --search-rate
    /// applies.
    #[arg(long, env = "CHAT_SEARCH_BURST", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub search_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_streams_per_connection: 100,
            first_request_timeout: 10,
            idle_timeout: 120,
            keepalive_timeout: 20,
            max_stream_resets: 200,
            rate_limit: 5.0,
            rate_burst: 20,
            search_rate: 5.0,
            search_burst: 20,
        }
    }
}

fn parse_rate(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!(
            "{raw:?} is not a rate: give messages per second, like 5 or 0.5, or 0 for no limit"
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `/`, or `/prefix` normalised to a leading and no trailing slash.
fn parse_base_path(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Ok("/".to_owned());
    }
    if trimmed
        .chars()
        .any(|c| c.is_whitespace() || "?#%".contains(c))
    {
        return Err(format!("{raw:?} is not a plain URL path like /chat"));
    }
    Ok(format!("/{trimmed}"))
}

/// `--admin-socket`: `auto`, `off`, or a path. `auto` puts the operator's
/// socket in `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`) as
/// `admin.sock`, else next to the database as `<db>.admin.sock`; with
/// `--db :memory:` and no state directory there is none.
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

/// How long a message may be edited after it was sent (`None`: forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EditWindow(pub Option<Duration>);

impl FromStr for EditWindow {
    type Err = String;
    /// `0` (no limit) or an age: `90s`, `15m`, `24h`, `7d`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "0" {
            return Ok(Self(None));
        }
        parse_age(s).map(|age| Self(Some(age)))
    }
}

impl Config {
    /// The defaults, as if started with no flags and no environment, except
    /// that the database is in memory.
    pub fn with_addr(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            allowed_origins: Vec::new(),
            web_dir: PathBuf::from("dist"),
            db: Location::Memory,
            nats: None,
            nats_replicas: 3,
            search_db: None,
            history: DEFAULT_HISTORY,
            retain: Retention::Count(100_000),
            edit_window: EditWindow(None),
            buffer: DEFAULT_BUFFER,
            buffer_mib: DEFAULT_BUFFER_MIB,
            heartbeat: 15,
            name_grace: 60,
            require_join: false,
            max_rooms: 1_000,
            auth_header: None,
            moderators: Vec::new(),
            admin_socket: AdminSocket::Off,
            command: None,
            address_ban: Duration::from_secs(86_400),
            moderator_key_file: None,
            trust_proxy: false,
            base_path: "/".to_owned(),
            log_format: LogFormat::Text,
            limits: Limits::default(),
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
        assert_eq!(config.db, Location::File("chat.db".into()));
        assert_eq!(config.retain, Retention::Count(100_000));
    }

    #[test]
    fn retention_is_a_count_or_an_age() {
        use std::time::Duration;
        assert_eq!("500".parse(), Ok(Retention::Count(500)));
        assert_eq!(
            "30d".parse(),
            Ok(Retention::Age(Duration::from_secs(30 * 86_400)))
        );
        assert_eq!("90s".parse(), Ok(Retention::Age(Duration::from_secs(90))));
        for bad in ["0", "", "d", "12x", "-3h", "0h"] {
            assert!(bad.parse::<Retention>().is_err(), "{bad:?}");
        }
        assert_eq!(":memory:".parse(), Ok(Location::Memory));
    }

    #[test]
    fn the_edit_window_is_zero_or_an_age() {
        use std::time::Duration;
        assert_eq!("0".parse(), Ok(EditWindow(None)));
        assert_eq!(
            "15m".parse(),
            Ok(EditWindow(Some(Duration::from_secs(900))))
        );
        for bad in ["", "15", "1x", "-1m", "0m"] {
            assert!(bad.parse::<EditWindow>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base_paths_are_normalised() {
        assert_eq!(parse_base_path("/"), Ok("/".into()));
        assert_eq!(parse_base_path("chat/"), Ok("/chat".into()));
        assert_eq!(parse_base_path("/a/b/"), Ok("/a/b".into()));
        assert!(parse_base_path("/a b").is_err());
    }

    #[test]
    fn limit_defaults_match_the_flags() {
        let parsed = Config::try_parse_from(["chat-server"]).expect("no flags");
        let defaults = Limits::default();
        assert_eq!(parsed.limits.max_connections, defaults.max_connections);
        assert_eq!(
            parsed.limits.max_streams_per_connection,
            defaults.max_streams_per_connection
        );
        assert_eq!(
            parsed.limits.first_request_timeout,
            defaults.first_request_timeout
        );
        assert_eq!(parsed.limits.idle_timeout, defaults.idle_timeout);
        assert_eq!(parsed.limits.keepalive_timeout, defaults.keepalive_timeout);
        assert_eq!(parsed.limits.max_stream_resets, defaults.max_stream_resets);
        assert_eq!(parsed.limits.rate_limit, defaults.rate_limit);
        assert_eq!(parsed.limits.rate_burst, defaults.rate_burst);
        assert!(Config::try_parse_from(["chat-server", "--rate-limit", "-1"]).is_err());
        let off = Config::try_parse_from(["chat-server", "--rate-limit", "0"]).expect("0 is off");
        assert_eq!(off.limits.rate_limit, 0.0);
    }

    #[test]
    fn help_is_consistent() {
        <Config as clap::CommandFactory>::command().debug_assert();
    }
}
