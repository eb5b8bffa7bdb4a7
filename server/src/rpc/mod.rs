//! The gRPC edge: `ChatService` implemented on top of the [`Hub`] and the
//! [`Names`], one family of RPCs per file, each its own `impl ChatServer`:
//!
//! - [`send`]: `Send`, one message.
//! - [`chat_stream`]: the paper's bidirectional `ChatStream`.
//! - [`subscribe`]: `Subscribe`, a room's history then live events.
//! - [`rooms`]: `CreateRoom` and `ListRooms`.
//! - [`people`]: `Join` (claiming a name) and `SetTyping`.
//! - [`auth`]: who a call is from (a bearer token or the proxy's header),
//!   resolved in one place for every RPC.
//! - [`status`]: every internal error as a `tonic::Status` a client can act
//!   on: `INVALID_ARGUMENT` for bad input, `RESOURCE_EXHAUSTED` for oversized
//!   messages and for posting too fast, `UNAVAILABLE` ("try again") while the
//!   server shuts down or cannot reach its log.
//! - [`visit`]: a log line when a stream's client arrives and leaves.

mod auth;
mod chat_stream;
mod people;
mod rooms;
mod send;
pub mod status;
mod subscribe;
mod visit;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chat_proto::rules;
use chat_proto::{
    ChatMessage, CreateRoomRequest, JoinReply, JoinRequest, ListRoomsReply, ListRoomsRequest,
    Room as RoomReply, SendReply, SubscribeRequest, TypingReply, TypingRequest,
};
use futures_util::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::http::client_addr::ClientAddr;
use crate::hub::wire::Encoded;
use crate::hub::{Closed, Hub, Room};
use crate::limits::RateLimiter;
use crate::people::names::Names;
use status::{invalid_argument, unavailable};

/// Rooms that may exist unless `--max-rooms` says otherwise.
pub const DEFAULT_MAX_ROOMS: usize = 1_000;

/// Both streams carry pre-encoded messages: `ChatEvent`s for Subscribe,
/// `ChatMessage`s for ChatStream.
type EncodedStream = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send>>;

/// The `ChatService` implementation; cheap to clone.
#[derive(Debug, Clone)]
pub struct ChatServer {
    hub: Hub,
    /// Every name held, here and (cluster mode) anywhere in the cluster.
    names: Names,
    heartbeat: Duration,
    rates: Arc<RateLimiter>,
    /// Name claims, per client address: like messages, on a budget of
    /// their own.
    claim_rates: Arc<RateLimiter>,
    /// Typing notices, per name: like messages, on a budget of their own
    /// (a notice every 3 s must not cost the message being typed).
    typing_rates: Arc<RateLimiter>,
    /// New rooms, per client address: like messages, on a budget of their own.
    room_rates: Arc<RateLimiter>,
    /// How many rooms may exist, general included.
    max_rooms: usize,
    /// Subscribe, Send and SetTyping need a session.
    require_join: bool,
    /// The header an authenticating proxy puts the user name in.
    auth_header: Option<String>,
}

impl ChatServer {
    /// A service on `hub` whose Subscribe streams carry a heartbeat every
    /// `heartbeat`, whose senders are held to `rates`, and whose names are
    /// held in `names`.
    pub fn new(hub: Hub, heartbeat: Duration, rates: Arc<RateLimiter>, names: Names) -> Self {
        Self {
            hub,
            names,
            heartbeat,
            claim_rates: Arc::new(rates.same_limits()),
            typing_rates: Arc::new(rates.same_limits()),
            room_rates: Arc::new(rates.same_limits()),
            max_rooms: DEFAULT_MAX_ROOMS,
            rates,
            require_join: false,
            auth_header: None,
        }
    }

    /// Bounds how many rooms may exist, general included.
    pub fn max_rooms(mut self, max: usize) -> Self {
        self.max_rooms = max;
        self
    }

    /// Takes every request's name from `header`, set by a trusted proxy.
    pub fn auth_header(mut self, header: Option<String>) -> Self {
        self.auth_header = header.map(|h| h.to_ascii_lowercase());
        self
    }

    /// Makes a session mandatory for everything but `ChatStream`.
    pub fn require_join(mut self, required: bool) -> Self {
        self.require_join = required;
        self
    }

    /// The room a request names (empty: general), also one that another
    /// replica created.
    async fn room(&self, raw: &str) -> Result<Arc<Room>, Status> {
        let name = rules::room(raw).map_err(invalid_argument)?;
        self.hub
            .find_room(&name)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                Status::not_found(format!("there is no room called {name}: create it first"))
            })
    }

    fn ensure_running(&self) -> Result<(), Status> {
        if self.hub.is_shut_down() {
            Err(Closed::ShuttingDown.into())
        } else {
            Ok(())
        }
    }
}

/// Each RPC is an inherent method of the same name in its family's file
/// (inherent methods come first), so this only delegates.
#[tonic::async_trait]
impl crate::ChatService for ChatServer {
    type ChatStreamStream = EncodedStream;
    type SubscribeStream = EncodedStream;

    async fn chat_stream(
        &self,
        request: Request<Streaming<ChatMessage>>,
    ) -> Result<Response<EncodedStream>, Status> {
        self.chat_stream(request).await
    }

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<EncodedStream>, Status> {
        self.subscribe(request).await
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        self.join(request).await
    }

    async fn set_typing(
        &self,
        request: Request<TypingRequest>,
    ) -> Result<Response<TypingReply>, Status> {
        self.set_typing(request).await
    }

    async fn create_room(
        &self,
        request: Request<CreateRoomRequest>,
    ) -> Result<Response<RoomReply>, Status> {
        self.create_room(request).await
    }

    async fn list_rooms(
        &self,
        request: Request<ListRoomsRequest>,
    ) -> Result<Response<ListRoomsReply>, Status> {
        self.list_rooms(request).await
    }

    async fn send(&self, request: Request<ChatMessage>) -> Result<Response<SendReply>, Status> {
        self.send(request).await
    }
}

/// Who sent `request`, as resolved by the access log layer.
fn client<T>(request: &Request<T>) -> Option<ClientAddr> {
    request.extensions().get::<ClientAddr>().copied()
}
