//! The paper's bidirectional `ChatStream`: live messages only, never one's
//! own, the client's messages published in order. The client is read by a
//! task of its own ([`ClientReader`]), so that delivering waits on nothing
//! but the hub.

use std::sync::{Arc, OnceLock};

use chat_proto::ChatMessage;
use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::debug;

use super::moderate::{banned, muted};
use super::send::accept_message;
use super::status::{claim_refused, invalid_argument, refusal, reserved, unavailable};
use super::subscribe::BURST;
use super::visit::Visit;
use super::{ChatServer, EncodedStream, client};
use crate::http::client_addr::ClientAddr;
use crate::http::connection::Conn;
use crate::hub::wire::Encoded;
use crate::hub::{Delivery, Hub, Origin, Room, Start};
use crate::limits::RateLimiter;
use crate::metrics::Limit;
use crate::moderation::Moderation;
use crate::people::claims::Hold;
use crate::people::name_key::NameKey;
use crate::people::names::Names;
use crate::people::presence::Here;
use crate::people::roles::Roles;

impl ChatServer {
    pub(super) async fn chat_stream(
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
        let address = client(&request);
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
        let vouched = match self.proxy_session(&request)? {
            Some(session) => {
                self.admit_noting(address, &session.name)?;
                self.not_banned(&session.name)?;
                if let Some(hold) = self.names.hold(&session) {
                    let _ = holding.set((hold, room.presence().arrive(&session.name)));
                }
                Some(session.name)
            }
            None => {
                self.admit(address, None)?;
                None
            }
        };
        let reader = ClientReader {
            conn: request.extensions().get::<Arc<Conn>>().cloned(),
            inbound: request.into_inner(),
            hub: self.hub.clone(),
            room,
            rates: Arc::clone(&self.rates),
            origin,
            named: visit.name_slot(),
            names: self.names.clone(),
            roles: Arc::clone(&self.roles),
            moderation: Arc::clone(&self.moderation),
            address,
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
                                // Nor of any entry but a chat message.
                                if let Delivery::Entry(relayed) = delivery
                                    && let Some(message) = Encoded::message(relayed)
                                {
                                    yield Ok(message);
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
    names: Names,
    /// Moderators' names, which a stream without a session cannot use.
    roles: Arc<Roles>,
    /// Who is muted or banned where.
    moderation: Arc<Moderation>,
    /// Where the client is (for address bans).
    address: Option<ClientAddr>,
    /// The name's hold, kept by the stream for as long as it is open (the
    /// client may stop sending and go on listening).
    holding: Arc<OnceLock<(Hold, Here)>>,
    /// The name an authenticating proxy gave, which every message carries.
    vouched: Option<String>,
}

impl ClientReader {
    /// Until the client closes its side (quietly) or a message is refused
    /// or cannot be stored (the reason goes to `end`).
    async fn run(mut self, end: oneshot::Sender<Status>) {
        // The store's writer says here if a message could not be stored.
        let failure = Arc::new(watch::Sender::new(None));
        let mut failed = failure.subscribe();
        let mut bans = self.moderation.bans_changed();
        let status = loop {
            let next = tokio::select! {
                next = self.inbound.next() => next,
                // A ban of the stream's name ends it.
                Ok(()) = bans.changed() => {
                    if let Some(ban) = self.named.get().and_then(|name| self.moderation.banned(name)) {
                        break banned(&ban);
                    }
                    continue;
                }
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
                None if self.roles.is_listed(&message.username) => {
                    break reserved(&message.username);
                }
                None => match self.names.hold_name(&message.username).await {
                    Ok(hold) => {
                        if let Some(ClientAddr(address)) = self.address {
                            self.moderation.saw(&message.username, address);
                        }
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
            if let Some(ban) = self.moderation.banned(&message.username) {
                break banned(&ban);
            }
            if let Some(mute) = self.moderation.muted(&message.username, self.room.name()) {
                break muted(&mute);
            }
            // Slow mode: like the rate limit, the client waits its turn.
            if self.moderation.slow_mode(self.room.name()) > 0
                && !self.roles.is_listed(&message.username)
            {
                while let Err(wait) = self
                    .moderation
                    .may_post(&message.username, self.room.name())
                {
                    tokio::time::sleep(wait).await;
                }
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
