//! The gRPC edge: `ChatService` implemented on top of the [`Hub`].
//!
//! This is where requests are validated and where every internal error
//! becomes a `tonic::Status` a client can act on: `INVALID_ARGUMENT` for bad
//! input, `RESOURCE_EXHAUSTED` for oversized messages and for posting too
//! fast, `UNAVAILABLE` ("try again") while the server shuts down or cannot
//! reach its database.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chat_proto::{
    ChatMessage, CreateRoomRequest, Event, Gap, Heartbeat, JoinReply, JoinRequest, ListRoomsReply,
    ListRoomsRequest, Ready, Room as RoomReply, SendReply, SubscribeRequest, TypingReply,
    TypingRequest,
};
use futures_util::{Stream, StreamExt};
use tokio::sync::{oneshot, watch};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, info};

use crate::client_addr::ClientAddr;
use crate::connection::Conn;
use crate::hub::{Closed, Delivery, Hub, Origin, Room, Start};
use crate::limits::{RateLimiter, TooFast};
use crate::metrics::Limit;
use crate::people::claims::{ClaimError, Claims, Hold, Session};
use crate::people::cluster::SharedClaims;
use crate::people::names::NameKey;
use crate::people::presence::{Folded, Here};
use crate::store::{StoreError, now_millis};
use crate::wire::{self, Encoded};
use chat_proto::rules::{self, InputError, MAX_DECODED_BYTES};

/// Deliveries a stream sends in one go when they are ready, before it looks
/// at its client or its heartbeat again; tonic packs them into few frames.
const BURST: usize = 256;
/// How often a stream looks at the rooms it watches: each one's activity
/// is told at most this often.
const ACTIVITY_EVERY: Duration = Duration::from_secs(1);
/// Rooms that may exist unless `--max-rooms` says otherwise.
pub const DEFAULT_MAX_ROOMS: usize = 1_000;

/// Both streams carry pre-encoded messages: `ChatEvent`s for Subscribe,
/// `ChatMessage`s for ChatStream.
type EncodedStream = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send>>;

/// The `ChatService` implementation; cheap to clone.
#[derive(Debug, Clone)]
pub struct ChatServer {
    hub: Hub,
    /// Names claimed anywhere in the cluster (cluster mode).
    shared_claims: Option<SharedClaims>,
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
    claims: Arc<Claims>,
    /// Subscribe, Send and SetTyping need a session.
    require_join: bool,
    /// The header an authenticating proxy puts the user name in.
    auth_header: Option<String>,
}

impl ChatServer {
    /// A service on `hub` whose Subscribe streams carry a heartbeat every
    /// `heartbeat`, whose senders are held to `rates`, and whose names are
    /// held in `claims`.
    pub fn new(
        hub: Hub,
        heartbeat: Duration,
        rates: Arc<RateLimiter>,
        claims: Arc<Claims>,
    ) -> Self {
        Self {
            hub,
            shared_claims: None,
            heartbeat,
            claim_rates: Arc::new(rates.same_limits()),
            typing_rates: Arc::new(rates.same_limits()),
            room_rates: Arc::new(rates.same_limits()),
            max_rooms: DEFAULT_MAX_ROOMS,
            rates,
            claims,
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

    /// The name the authenticating proxy vouches for, if there is one.
    fn proxy_name<T>(&self, request: &Request<T>) -> Result<Option<String>, Status> {
        let Some(header) = &self.auth_header else {
            return Ok(None);
        };
        let name = request
            .metadata()
            .get(header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "the proxy in front did not say who you are (no {header} header)"
                ))
            })?;
        rules::username(name).map(Some).map_err(invalid_argument)
    }

    /// Makes a session mandatory for everything but `ChatStream`.
    /// Claims names for the whole cluster too (cluster mode).
    pub fn shared_claims(mut self, shared: Option<SharedClaims>) -> Self {
        self.shared_claims = shared;
        self
    }

    pub fn require_join(mut self, required: bool) -> Self {
        self.require_join = required;
        self
    }

    /// The session the request's `authorization: Bearer` token stands for,
    /// if it carries one.
    async fn session<T>(&self, request: &Request<T>) -> Result<Option<Session>, Status> {
        if let Some(name) = self.proxy_name(request)? {
            return self
                .claims
                .vouch(&name)
                .map(Some)
                .map_err(|error| Status::internal(error.to_string()));
        }
        let Some(value) = request.metadata().get("authorization") else {
            return if self.require_join {
                Err(Status::unauthenticated(
                    "join first: this server needs a name claimed with Join \
                     (send its token as `authorization: Bearer <token>`)",
                ))
            } else {
                Ok(None)
            };
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("the authorization header must be `Bearer <token>`")
            })?;
        self.find_session(token).await?.map(Some).ok_or_else(|| {
            Status::unauthenticated("this session has ended: join again to claim a name")
        })
    }

    /// The session of `token`, made here or (cluster mode) on any replica.
    async fn find_session(&self, token: &str) -> Result<Option<Session>, Status> {
        if let Some(session) = self.claims.session(token) {
            return Ok(Some(session));
        }
        match &self.shared_claims {
            Some(shared) => shared.session(token).await.map_err(claim_refused),
            None => Ok(None),
        }
    }

    /// Who holds `name`, here or (cluster mode) on any replica.
    async fn holder_of(&self, name: &str) -> Result<Option<String>, Status> {
        if let Some(holder) = self.claims.holder_of(name) {
            return Ok(Some(holder));
        }
        match &self.shared_claims {
            Some(shared) => shared.holder_of(name).await.map_err(claim_refused),
            None => Ok(None),
        }
    }

    /// The name a message from `session` (or from nobody) goes out under.
    async fn sender_name(&self, session: Option<&Session>, asked: &str) -> Result<String, Status> {
        match session {
            // Behind an authenticating proxy, names clients choose are ignored.
            Some(session) if self.auth_header.is_some() => Ok(session.name.clone()),
            Some(session)
                if asked.trim().is_empty() || NameKey::of(asked) == NameKey::of(&session.name) =>
            {
                Ok(session.name.clone())
            }
            Some(session) => Err(Status::permission_denied(format!(
                "this session holds the name \"{}\", not \"{}\"",
                session.name,
                asked.trim()
            ))),
            None => match self.holder_of(asked).await? {
                Some(holder) => Err(Status::permission_denied(format!(
                    "the name \"{holder}\" is held by someone else: join to claim a name of your own"
                ))),
                None => Ok(asked.to_owned()),
            },
        }
    }

    /// What `CreateRoom` and `ListRooms` say of a room.
    fn room_reply(&self, room: &Room) -> RoomReply {
        RoomReply {
            name: room.name().to_owned(),
            topic: room.topic().to_owned(),
            last_id: room.last_id(),
            online: u32::try_from(room.presence().count()).unwrap_or(u32::MAX),
        }
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

#[tonic::async_trait]
impl crate::ChatService for ChatServer {
    type ChatStreamStream = EncodedStream;
    type SubscribeStream = EncodedStream;

    async fn chat_stream(
        &self,
        request: Request<Streaming<ChatMessage>>,
    ) -> Result<Response<EncodedStream>, Status> {
        self.ensure_running()?;
        let visit = Visit::new("chat_stream", None, client(&request));
        // The paper's clients live in general; others may pick a room.
        let room = match request.metadata().get("chat-room") {
            Some(value) => {
                let name = value.to_str().map_err(|_| {
                    Status::invalid_argument("the chat-room header must be a room name")
                })?;
                self.room(name).await?
            }
            None => self.room("").await?,
        };
        let origin = self.hub.new_origin();
        // The paper's behaviour: live messages only, never one's own.
        let mut subscription = self.hub.subscribe(&room, Start::Live, Some(origin));
        // The client is read by a task of its own, so that delivering (the
        // busy side) waits on nothing but the hub. The task says here why
        // it ended the stream; if it ends quietly (the client closed its
        // side), the client may still listen.
        let (end, mut ended) = oneshot::channel::<Status>();
        let holding = Arc::new(OnceLock::new());
        // Behind an authenticating proxy the stream is its user's from the
        // start, whatever names its messages carry.
        let vouched = match self.proxy_name(&request)? {
            Some(name) => {
                let session = self
                    .claims
                    .vouch(&name)
                    .map_err(|error| Status::internal(error.to_string()))?;
                if let Some(hold) = self.claims.hold(&session) {
                    let _ = holding.set((hold, room.presence().arrive(&session.name)));
                }
                Some(session.name)
            }
            None => None,
        };
        let reader = ClientReader {
            conn: request.extensions().get::<Arc<Conn>>().cloned(),
            inbound: request.into_inner(),
            hub: self.hub.clone(),
            room,
            rates: Arc::clone(&self.rates),
            origin,
            named: visit.name_slot(),
            claims: Arc::clone(&self.claims),
            shared_claims: self.shared_claims.clone(),
            holding: Arc::clone(&holding),
            vouched,
        };
        let reading = AbortOnDrop(tokio::spawn(reader.run(end)));

        let outbound = async_stream::stream! {
            // Both end with the stream: the client went, or the server said why.
            let (_reading, _visit, _holding) = (reading, visit, holding);
            let mut reading = true;
            loop {
                tokio::select! {
                    biased;
                    end = &mut ended, if reading => match end {
                        Ok(status) => {
                            yield Err(status);
                            break;
                        }
                        Err(_) => reading = false,
                    },
                    received = subscription.recv() => match received {
                        Ok(first) => {
                            for delivery in subscription.burst(first, BURST) {
                                // Paper clients have no way to hear of a gap;
                                // live-only subscriptions do not report them anyway.
                                if let Delivery::Message(relayed) = delivery {
                                    yield Ok(Encoded::message(relayed));
                                }
                            }
                        }
                        Err(closed) => {
                            yield Err(Status::from(closed));
                            break;
                        }
                    },
                }
            }
        };
        Ok(Response::new(Box::pin(outbound)))
    }

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<EncodedStream>, Status> {
        self.ensure_running()?;
        let session = self.session(&request).await?;
        // With a session the stream holds its name; without one it listens.
        let (username, holding) = match &session {
            Some(session) => {
                let name = self
                    .sender_name(Some(session), &request.get_ref().username)
                    .await?;
                (name, self.claims.hold(session))
            }
            None => (
                rules::username(&request.get_ref().username).map_err(invalid_argument)?,
                None,
            ),
        };
        let start = match request.get_ref().after_id {
            0 => Start::Recent,
            id => Start::After(id),
        };
        let room = self.room(&request.get_ref().room).await?;
        if let Start::After(id) = start {
            // Read elsewhere up to `id`: wait until this replica has it too.
            self.hub.catch_up(&room, id).await.map_err(unavailable)?;
        }
        let mut watched = Watched::new(&self.hub, &room, &request.get_ref().watch);
        let visit = Visit::new("subscribe", Some(username), client(&request));
        // Present from here on (with a session), and told who else is.
        let here = session.as_ref().map(|s| room.presence().arrive(&s.name));
        let presence = Arc::clone(room.presence());
        let (online, mut changes) = presence.watch();
        let mut subscription = self.hub.subscribe(&room, start, None);
        let period = self.heartbeat;
        let ready = Ready {
            timestamp: now_millis(),
            heartbeat_interval_ms: u32::try_from(period.as_millis()).unwrap_or(u32::MAX),
            last_id: subscription.newest_at_start(),
        };

        let events = async_stream::stream! {
            let (_visit, _holding, _here) = (visit, holding, here);
            yield Ok(wire::event(Event::Ready(ready)));
            yield Ok(presence_event(online, Vec::new(), Vec::new()));
            for activity in watched.all() {
                yield Ok(activity);
            }
            let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut activity = tokio::time::interval_at(tokio::time::Instant::now() + ACTIVITY_EVERY, ACTIVITY_EVERY);
            activity.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let watching = !watched.is_empty();
            loop {
                let step = tokio::select! {
                    biased;
                    received = subscription.recv() => Some(received),
                    _ = activity.tick(), if watching => {
                        for activity in watched.changed() {
                            yield Ok(activity);
                        }
                        continue;
                    }
                    change = changes.recv() => {
                        match change.map_err(|_| ()).and_then(|first| Folded::gather(first, &mut changes).map_err(|_| ())) {
                            Ok(Folded { joined, left, typing }) => {
                                if !joined.is_empty() || !left.is_empty() {
                                    yield Ok(presence_event(Vec::new(), joined, left));
                                }
                                for (username, typing) in typing {
                                    yield Ok(wire::event(Event::Typing(chat_proto::Typing { username, typing })));
                                }
                            }
                            // Fell far behind the changes: start over from who is here.
                            Err(()) => {
                                let (online, fresh) = presence.watch();
                                changes = fresh;
                                yield Ok(presence_event(online, Vec::new(), Vec::new()));
                            }
                        }
                        continue;
                    }
                    _ = heartbeat.tick() => None,
                };
                match step {
                    Some(Ok(first)) => {
                        for delivery in subscription.burst(first, BURST) {
                            yield Ok(as_event(delivery));
                        }
                    }
                    Some(Err(closed)) => {
                        yield Err(Status::from(closed));
                        break;
                    }
                    None => yield Ok(wire::event(Event::Heartbeat(Heartbeat { timestamp: now_millis() }))),
                }
            }
        };
        Ok(Response::new(Box::pin(events)))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        self.ensure_running()?;
        let client = client(&request);
        if self.auth_header.is_some()
            && let Some(session) = self.session(&request).await?
        {
            // Behind an authenticating proxy, the proxy's name is the name.
            return Ok(Response::new(JoinReply {
                username: session.name,
                token: session.token,
                proxied: true,
            }));
        }
        let JoinRequest { username, token } = request.into_inner();
        let known = if token.is_empty() {
            None
        } else {
            self.find_session(&token).await?
        };
        if let Some(session) = known {
            return Ok(Response::new(JoinReply {
                username: session.name,
                token: session.token,
                proxied: false,
            }));
        }
        let name = rules::username(&username).map_err(invalid_argument)?;
        // Nobody squats on a thousand names a second.
        self.claim_rates
            .check(None, &client.map_or_else(String::new, |c| c.to_string()))
            .map_err(|too_fast| {
                self.hub.metrics().limit_hit(Limit::RateSend);
                Status::resource_exhausted(format!(
                    "claiming names too fast: wait {:.1} s and try again",
                    too_fast.retry_after.as_secs_f64().max(0.1)
                ))
            })?;
        let session = self.claims.join(&name, None).map_err(claim_refused)?;
        if let Some(shared) = &self.shared_claims {
            shared.claim(&session).await.map_err(claim_refused)?;
        }
        info!(username = session.name, "name claimed");
        Ok(Response::new(JoinReply {
            username: session.name,
            token: session.token,
            proxied: false,
        }))
    }

    async fn set_typing(
        &self,
        request: Request<TypingRequest>,
    ) -> Result<Response<TypingReply>, Status> {
        self.ensure_running()?;
        let session = self.session(&request).await?.ok_or_else(|| {
            Status::unauthenticated("only someone who joined can be typing: Join first")
        })?;
        let TypingRequest { typing, room } = request.into_inner();
        let room = self.room(&room).await?;
        // Saying so costs like a message; stopping is always allowed.
        if typing {
            self.typing_rates
                .check(None, &session.name)
                .map_err(|too_fast| {
                    self.hub.metrics().limit_hit(Limit::RateSend);
                    too_fast_status(too_fast)
                })?;
        }
        room.presence().typing(&session.name, typing);
        Ok(Response::new(TypingReply {}))
    }

    async fn create_room(
        &self,
        request: Request<CreateRoomRequest>,
    ) -> Result<Response<RoomReply>, Status> {
        self.ensure_running()?;
        let client = client(&request);
        let CreateRoomRequest { name, topic } = request.into_inner();
        if name.is_empty() {
            return Err(Status::invalid_argument("a new room needs a name"));
        }
        let name = rules::room(&name).map_err(invalid_argument)?;
        let topic = rules::topic(&topic).map_err(invalid_argument)?;
        if self.hub.room(&name).is_some() {
            return Err(Status::already_exists(format!(
                "the room {name} exists already"
            )));
        }
        if self.hub.room_count() >= self.max_rooms {
            self.hub.metrics().limit_hit(Limit::Rooms);
            return Err(Status::resource_exhausted(format!(
                "this server has its {} rooms already (--max-rooms)",
                self.max_rooms
            )));
        }
        self.room_rates
            .check(None, &client.map_or_else(String::new, |c| c.to_string()))
            .map_err(|too_fast| {
                self.hub.metrics().limit_hit(Limit::RateSend);
                Status::resource_exhausted(format!(
                    "creating rooms too fast: wait {:.1} s and try again",
                    too_fast.retry_after.as_secs_f64().max(0.1)
                ))
            })?;
        let room = self
            .hub
            .create_room(&name, &topic)
            .await
            .map_err(|error| match error {
                StoreError::RoomExists(_) => Status::already_exists(error.to_string()),
                error => unavailable(error),
            })?;
        info!(room = room.name(), "room created");
        Ok(Response::new(self.room_reply(&room)))
    }

    async fn list_rooms(
        &self,
        _request: Request<ListRoomsRequest>,
    ) -> Result<Response<ListRoomsReply>, Status> {
        self.ensure_running()?;
        self.hub.refresh_rooms().await.map_err(unavailable)?;
        let rooms = self
            .hub
            .rooms()
            .iter()
            .map(|r| self.room_reply(r))
            .collect();
        Ok(Response::new(ListRoomsReply { rooms }))
    }

    async fn send(&self, request: Request<ChatMessage>) -> Result<Response<SendReply>, Status> {
        self.ensure_running()?;
        let conn = request.extensions().get::<Arc<Conn>>().cloned();
        let session = self.session(&request).await?;
        let mut message = request.into_inner();
        message.username = self
            .sender_name(session.as_ref(), &message.username)
            .await?;
        let room = self.room(&message.room).await?;
        let message = accept_message(message).map_err(invalid_argument)?;
        self.rates
            .check(conn.as_ref().map(|c| &c.rate), &message.username)
            .map_err(|too_fast| {
                self.hub.metrics().limit_hit(Limit::RateSend);
                too_fast_status(too_fast)
            })?;
        let name = message.username.clone();
        let stored = self
            .hub
            .publish(&room, message)
            .await
            .map_err(unavailable)?;
        // Their message is out: they are no longer typing it.
        room.presence().typing(&name, false);
        Ok(Response::new(SendReply {
            timestamp: stored.timestamp,
            id: stored.id,
        }))
    }
}

/// Reads a `ChatStream` client's messages and publishes them, in order.
struct ClientReader {
    inbound: Streaming<ChatMessage>,
    conn: Option<Arc<Conn>>,
    hub: Hub,
    /// Where the stream's messages go (the paper's clients: general).
    room: Arc<Room>,
    rates: Arc<RateLimiter>,
    origin: Origin,
    named: Arc<OnceLock<String>>,
    claims: Arc<Claims>,
    /// Names claimed on other replicas (cluster mode).
    shared_claims: Option<SharedClaims>,
    /// The name's hold, kept by the stream for as long as it is open (the
    /// client may stop sending and go on listening).
    holding: Arc<OnceLock<(Hold, Here)>>,
    /// The name an authenticating proxy gave, which every message carries.
    vouched: Option<String>,
}

impl ClientReader {
    /// Holds `name` for this stream, unless somebody holds it here or
    /// (cluster mode) has claimed it on another replica.
    async fn hold_name(&self, name: &str) -> Result<Hold, ClaimError> {
        match &self.shared_claims {
            Some(shared) => shared.hold_name(name).await,
            None => self.claims.hold_name(name),
        }
    }

    /// Until the client closes its side (quietly) or a message is refused
    /// or cannot be stored (the reason goes to `end`).
    async fn run(mut self, end: oneshot::Sender<Status>) {
        // The store's writer says here if a message could not be stored.
        let failure = Arc::new(watch::Sender::new(None));
        let mut failed = failure.subscribe();
        let status = loop {
            let next = tokio::select! {
                next = self.inbound.next() => next,
                _ = failed.changed() => {
                    let reason = failed.borrow().clone().unwrap_or_default();
                    tracing::warn!(%reason, "a ChatStream message could not be stored");
                    break Status::unavailable(format!(
                        "a message you sent could not be stored ({reason}); \
                         nothing after it was relayed: reconnect and send it again"
                    ));
                }
            };
            let message = match next {
                None => return,
                Some(Err(status)) => {
                    let refused = refusal(status);
                    if refused.code() == Code::ResourceExhausted {
                        self.hub.metrics().limit_hit(Limit::MessageSize);
                    }
                    break refused;
                }
                Some(Ok(mut message)) => {
                    if let Some(name) = &self.vouched {
                        message.username.clone_from(name);
                    }
                    match accept_message(message) {
                        Ok(message) => message,
                        Err(error) => break invalid_argument(error),
                    }
                }
            };
            // The first message's name is this stream's for as long as it is
            // open, unless somebody else holds it; one name per stream.
            match self.named.get() {
                None if self.vouched.is_some() => {
                    let _ = self.named.set(message.username.clone());
                }
                None => match self.hold_name(&message.username).await {
                    Ok(hold) => {
                        let _ = self
                            .holding
                            .set((hold, self.room.presence().arrive(&message.username)));
                        let _ = self.named.set(message.username.clone());
                        debug!(
                            rpc = "chat_stream",
                            username = message.username,
                            "client named"
                        );
                    }
                    Err(error) => break claim_refused(error),
                },
                Some(name)
                    if *name == message.username
                        || NameKey::of(name) == NameKey::of(&message.username) => {}
                Some(name) => {
                    break Status::invalid_argument(format!(
                        "this stream speaks as \"{name}\": one name per stream (open another for \"{}\")",
                        message.username
                    ));
                }
            }
            // Over the rate limit the client is not read until its turn:
            // HTTP/2 flow control slows the sender, and nothing is dropped.
            while let Err(too_fast) = self
                .rates
                .check(self.conn.as_ref().map(|c| &c.rate), &message.username)
            {
                self.hub.metrics().limit_hit(Limit::RateStream);
                tokio::time::sleep(too_fast.retry_after).await;
            }
            let name = message.username.clone();
            if let Err(error) = self
                .hub
                .publish_from(&self.room, self.origin, message, &failure)
                .await
            {
                break unavailable(error);
            }
            self.room.presence().typing(&name, false);
        };
        let _ = end.send(status);
    }
}

/// Aborts the task when the stream that owns it is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A `Presence` event.
/// The other rooms a Subscribe stream reports the activity of, and the
/// newest id it last told of each.
struct Watched {
    rooms: Vec<(Arc<Room>, u64)>,
}

impl Watched {
    /// `names` that are rooms, other than `own`, each once; the rest are
    /// ignored (a room the client remembers may have gone).
    fn new(hub: &Hub, own: &Room, names: &[String]) -> Self {
        let mut rooms: Vec<(Arc<Room>, u64)> = Vec::new();
        for name in names {
            let Some(room) = rules::room(name).ok().and_then(|n| hub.room(&n)) else {
                continue;
            };
            if room.name() != own.name() && !rooms.iter().any(|(r, _)| r.name() == room.name()) {
                rooms.push((room, 0));
            }
        }
        Self { rooms }
    }

    fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Every watched room's newest id (right after `Ready`).
    fn all(&mut self) -> Vec<Encoded> {
        self.rooms
            .iter_mut()
            .map(|(room, told)| {
                *told = room.last_id();
                activity_event(room, *told)
            })
            .collect()
    }

    /// The rooms whose newest id moved since it was last told.
    fn changed(&mut self) -> Vec<Encoded> {
        self.rooms
            .iter_mut()
            .filter_map(|(room, told)| {
                let now = room.last_id();
                (now != *told).then(|| {
                    *told = now;
                    activity_event(room, now)
                })
            })
            .collect()
    }
}

fn activity_event(room: &Room, last_id: u64) -> Encoded {
    wire::event(Event::Activity(chat_proto::RoomActivity {
        room: room.name().to_owned(),
        last_id,
    }))
}

fn presence_event(online: Vec<String>, joined: Vec<String>, left: Vec<String>) -> Encoded {
    wire::event(Event::Presence(chat_proto::Presence {
        online,
        joined,
        left,
    }))
}

/// A `Subscribe` event for `delivery`.
fn as_event(delivery: Delivery) -> Encoded {
    match delivery {
        Delivery::Message(relayed) => Encoded::event(relayed),
        Delivery::Gap { after_id, next_id } => wire::event(Event::Gap(Gap { after_id, next_id })),
    }
}

/// Who sent `request`, as resolved by the access log layer.
fn client<T>(request: &Request<T>) -> Option<ClientAddr> {
    request.extensions().get::<ClientAddr>().copied()
}

fn too_fast_status(too_fast: TooFast) -> Status {
    Status::resource_exhausted(too_fast.to_string())
}

/// Validates what a client sent and keeps only what the server relays (the
/// timestamp is the server's to set).
fn accept_message(message: ChatMessage) -> Result<ChatMessage, InputError> {
    Ok(ChatMessage {
        username: rules::username(&message.username)?,
        message: rules::message_text(&message.message)?,
        nonce: rules::nonce(&message.nonce)?,
        timestamp: 0,
        id: 0,
        // The hub writes the room's name as stored.
        room: String::new(),
    })
}

fn invalid_argument(error: InputError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// The message could not be stored; nothing was relayed, so trying again
/// is safe.
/// Why a name could not be claimed or looked up, as a status.
fn claim_refused(error: ClaimError) -> Status {
    match error {
        ClaimError::Taken(_) => Status::already_exists(error.to_string()),
        ClaimError::Unavailable(_) => Status::unavailable(error.to_string()),
        ClaimError::Random(_) => Status::internal(error.to_string()),
    }
}

fn unavailable(error: StoreError) -> Status {
    tracing::warn!(%error, "store refused a message");
    Status::unavailable(error.to_string())
}

impl From<Closed> for Status {
    fn from(closed: Closed) -> Self {
        Status::unavailable(closed.to_string())
    }
}

/// tonic refuses a message over the decoding limit with `OUT_OF_RANGE` and a
/// technical text; clients of this chat get `RESOURCE_EXHAUSTED` and a
/// sentence instead. Any other status passes through unchanged.
pub fn refusal(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().contains("message length too large") {
        Status::resource_exhausted(format!(
            "message is too large: the limit is {MAX_DECODED_BYTES} bytes encoded"
        ))
    } else {
        status
    }
}

/// Logs a client's arrival and, when its stream is dropped for whatever
/// reason, its departure.
struct Visit {
    rpc: &'static str,
    /// ChatStream clients only say who they are in their first message.
    username: Arc<OnceLock<String>>,
    client: Option<String>,
}

impl Visit {
    fn new(rpc: &'static str, username: Option<String>, client: Option<ClientAddr>) -> Self {
        let client = client.map(|c| c.to_string());
        info!(
            rpc,
            username = username.as_deref(),
            client,
            "client connected"
        );
        Self {
            rpc,
            username: Arc::new(username.map(OnceLock::from).unwrap_or_default()),
            client,
        }
    }

    /// Where the name goes once the client says it.
    fn name_slot(&self) -> Arc<OnceLock<String>> {
        Arc::clone(&self.username)
    }
}

impl Drop for Visit {
    fn drop(&mut self) {
        info!(
            rpc = self.rpc,
            username = self.username.get().map(String::as_str),
            client = self.client,
            "client disconnected"
        );
    }
}
