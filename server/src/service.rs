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

use chat_proto::{ChatMessage, Event, Gap, Heartbeat, Ready, SendReply, SubscribeRequest};
use futures_util::{Stream, StreamExt};
use tokio::sync::{oneshot, watch};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, info};

use crate::client_addr::ClientAddr;
use crate::connection::Conn;
use crate::hub::{Closed, Delivery, Hub, Origin, Start};
use crate::limits::{RateLimiter, TooFast};
use crate::metrics::Limit;
use crate::store::{StoreError, now_millis};
use crate::wire::{self, Encoded};
use chat_proto::rules::{self, InputError, MAX_DECODED_BYTES};

/// Deliveries a stream sends in one go when they are ready, before it looks
/// at its client or its heartbeat again; tonic packs them into few frames.
const BURST: usize = 256;

/// Both streams carry pre-encoded messages: `ChatEvent`s for Subscribe,
/// `ChatMessage`s for ChatStream.
type EncodedStream = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send>>;

/// The `ChatService` implementation; cheap to clone.
#[derive(Debug, Clone)]
pub struct ChatServer {
    hub: Hub,
    heartbeat: Duration,
    rates: Arc<RateLimiter>,
}

impl ChatServer {
    /// A service on `hub` whose Subscribe streams carry a heartbeat every
    /// `heartbeat`, and whose senders are held to `rates`.
    pub fn new(hub: Hub, heartbeat: Duration, rates: Arc<RateLimiter>) -> Self {
        Self {
            hub,
            heartbeat,
            rates,
        }
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
        let presence = Presence::new("chat_stream", None, client(&request));
        let origin = self.hub.new_origin();
        // The paper's behaviour: live messages only, never one's own.
        let mut subscription = self.hub.subscribe(Start::Live, Some(origin));
        // The client is read by a task of its own, so that delivering (the
        // busy side) waits on nothing but the hub. The task says here why
        // it ended the stream; if it ends quietly (the client closed its
        // side), the client may still listen.
        let (end, mut ended) = oneshot::channel::<Status>();
        let reader = ClientReader {
            conn: request.extensions().get::<Arc<Conn>>().cloned(),
            inbound: request.into_inner(),
            hub: self.hub.clone(),
            rates: Arc::clone(&self.rates),
            origin,
            named: presence.name_slot(),
        };
        let reading = AbortOnDrop(tokio::spawn(reader.run(end)));

        let outbound = async_stream::stream! {
            // Both end with the stream: the client went, or the server said why.
            let (_reading, _presence) = (reading, presence);
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
        let username = rules::username(&request.get_ref().username).map_err(invalid_argument)?;
        let start = match request.get_ref().after_id {
            0 => Start::Recent,
            id => Start::After(id),
        };
        let presence = Presence::new("subscribe", Some(username), client(&request));
        let mut subscription = self.hub.subscribe(start, None);
        let period = self.heartbeat;
        let ready = Ready {
            timestamp: now_millis(),
            heartbeat_interval_ms: u32::try_from(period.as_millis()).unwrap_or(u32::MAX),
            last_id: subscription.newest_at_start(),
        };

        let events = async_stream::stream! {
            let _presence = presence;
            yield Ok(wire::event(Event::Ready(ready)));
            let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let step = tokio::select! {
                    received = subscription.recv() => Some(received),
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

    async fn send(&self, request: Request<ChatMessage>) -> Result<Response<SendReply>, Status> {
        self.ensure_running()?;
        let conn = request.extensions().get::<Arc<Conn>>().cloned();
        let message = accept_message(request.into_inner()).map_err(invalid_argument)?;
        self.rates
            .check(conn.as_ref().map(|c| &c.rate), &message.username)
            .map_err(|too_fast| {
                self.hub.metrics().limit_hit(Limit::RateSend);
                too_fast_status(too_fast)
            })?;
        let stored = self.hub.publish(message).await.map_err(unavailable)?;
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
    rates: Arc<RateLimiter>,
    origin: Origin,
    named: Arc<OnceLock<String>>,
}

impl ClientReader {
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
                Some(Ok(message)) => match accept_message(message) {
                    Ok(message) => message,
                    Err(error) => break invalid_argument(error),
                },
            };
            if self.named.get().is_none() && self.named.set(message.username.clone()).is_ok() {
                debug!(
                    rpc = "chat_stream",
                    username = message.username,
                    "client named"
                );
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
            if let Err(error) = self.hub.publish_from(self.origin, message, &failure).await {
                break unavailable(error);
            }
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
    })
}

fn invalid_argument(error: InputError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// The message could not be stored; nothing was relayed, so trying again
/// is safe.
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
struct Presence {
    rpc: &'static str,
    /// ChatStream clients only say who they are in their first message.
    username: Arc<OnceLock<String>>,
    client: Option<String>,
}

impl Presence {
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

impl Drop for Presence {
    fn drop(&mut self) {
        info!(
            rpc = self.rpc,
            username = self.username.get().map(String::as_str),
            client = self.client,
            "client disconnected"
        );
    }
}
