//! The chat protocol's types and gRPC stubs, generated from `chat.proto`.
//!
//! One crate shared by the server, the web app and the tests, so both ends
//! always agree on the wire format. The proto has no `package` line (to stay
//! compatible with the paper's clients), so the RPC paths are
//! `/ChatService/<Method>`. [`rules`] holds the input limits both ends
//! apply, and [`state`] how a message's changes fold into its current state,
//! which both ends apply the same way.

pub mod rules;
pub mod state;

#[allow(clippy::all, clippy::pedantic)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

pub use generated::*;

/// The encoded descriptors of `chat.proto`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/chat_descriptor.bin"));

pub use chat_event::Event;
#[cfg(feature = "client")]
pub use chat_service_client::ChatServiceClient;
