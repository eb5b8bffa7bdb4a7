//! Talking to the server: a gRPC-Web client on `fetch` (`grpc`), the RPCs
//! the page makes with the page's wording of their failures and input rules
//! (`api`), and the session they are made as (`session`). It knows nothing
//! of the page's state or views: what a reply means for them is decided by
//! `state` and `feed`.

pub mod api;
pub mod grpc;
pub mod session;
