//! The server's integration tests, one test binary: each module is one
//! subject (run one with `cargo test -p chat-server --test it MODULE::`).
//! They start real servers on free loopback ports and talk to them with
//! real clients; `common` holds what they share.

mod common;

mod bad_input;
mod binary;
mod changes;
mod chat_stream;
mod cluster;
mod cluster_changes;
mod cluster_moderation;
mod cors;
mod deploy;
mod grpc_web;
mod history;
mod hostile;
mod lifecycle;
mod moderation;
mod operations;
mod pages;
mod people;
mod protocol;
mod proxy_auth;
mod reports;
mod rooms;
mod search;
