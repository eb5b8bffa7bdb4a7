//! The HTTP side of the server, below any chat word: each connection's life
//! and limits ([`connection`]), who a request is from, also behind a proxy
//! ([`client_addr`]), a log line per request ([`access_log`]), which other
//! origins browsers may call from ([`cors`]), and what gRPC and gRPC-Web
//! require of every call beyond what tonic does ([`protocol`]), and
//! serving one accepted connection with hyper ([`serve`]).

pub mod access_log;
pub mod client_addr;
pub mod connection;
pub mod cors;
pub mod protocol;
pub mod serve;
