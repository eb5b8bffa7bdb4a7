//! Talking to the server: the RPCs the page makes, through tonic's generated
//! client over tonic-web-wasm-client, with the page's wording of their
//! failures and input rules (`api`); the session they are made as
//! (`session`); and a proxy's own HTTP errors turned into gRPC statuses,
//! which the library does not do (`proxy`). It knows nothing of the page's
//! state or views: what a reply means for them is decided by `state` and
//! `feed`.

pub mod api;
pub mod moderation;
pub mod proxy;
pub mod session;
