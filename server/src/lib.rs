//! A chat server for browsers and native gRPC clients.
//!
//! - [`hub`]: the fan-out every message goes through.
//! - [`service`]: the `ChatService` RPCs, validation, and gRPC statuses.
//! - [`routes`]: gRPC, gRPC-Web, health checks and the web app on one HTTP service.
//! - [`client_addr`], [`access_log`]: who each request is from (also behind a
//!   proxy), and a log line per request.
//! - [`cors`]: which other origins browsers may call from.
//! - [`config`]: flags and environment variables.
//! - [`server`]: binding, serving and shutting down.

pub mod access_log;
pub mod client_addr;
pub mod config;
pub mod cors;
pub mod hub;
pub mod routes;
pub mod server;
pub mod service;

pub use config::Config;
pub use hub::Hub;
pub use server::{ServeError, Server};
