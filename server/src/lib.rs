//! A chat server for browsers and native gRPC clients: native gRPC, gRPC-Web
//! and the web app on one port. The folders follow the way a message goes
//! (docs/architecture.md has the picture):
//!
//! - [`app`]: opening the log, the hub and the names for the mode (one
//!   machine or a cluster), the routes, binding, serving and shutting down.
//! - [`rpc`]: the `ChatService` RPCs, one family per file; who a call is
//!   from; every refusal as a gRPC status.
//! - [`http`]: below any chat word: each connection's life and limits, who a
//!   request is from (also behind a proxy), CORS, the access log, what gRPC
//!   and gRPC-Web require of every call.
//! - [`people`]: names nobody else can take (here and cluster-wide, behind
//!   one facade), who moderates, presence and typing.
//! - [`moderation`]: what moderators did (the audit log) and what holds
//!   because of it (mutes).
//! - [`hub`]: the fan-out every entry goes through, live or caught up, and
//!   each room's state.
//! - [`log`]: the seam between the hub and where a room's entries live, and
//!   the words every log shares; SQLite for one machine, NATS JetStream for
//!   several replicas.
//! - [`search`]: finding messages by their words: the query language, how
//!   words compare, and the FTS5 index both logs keep.
//! - [`limits`]: how fast a client may post.
//! - [`metrics`]: counters and gauges for `GET /metrics`.
//! - [`memory`]: returning freed memory to the system after a burst.
//! - [`config`]: flags and environment variables.
//! - [`admin`]: `chat-server admin`, the operator's commands over a Unix
//!   socket, and the server's side of that socket.

pub mod admin;
pub mod app;
pub mod config;
pub mod http;
pub mod hub;
pub mod limits;
pub mod log;
pub mod memory;
pub mod metrics;
pub mod moderation;
pub mod people;
pub mod rpc;
pub mod search;

pub use app::{ServeError, Server};
pub use config::Config;
pub use hub::Hub;
pub use rpc::{ChatService, ChatServiceServer};
