//! `chat-testkit`: what the server's tests, the load generator (`bench`)
//! and the browser tests (`e2e/`, through the `nats-cluster` binary) run
//! besides chat-server itself, written once.
//!
//! - [`nats`]: a three-node NATS JetStream cluster of real `nats-server`
//!   processes on loopback ports, with the crashes, freezes and restarts the
//!   tests put it through.
//! - [`http`]: the one plain HTTP GET it needs for nats-server's monitoring
//!   endpoints.

pub mod http;
pub mod nats;
