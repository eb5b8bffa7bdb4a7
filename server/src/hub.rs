//! The fan-out at the centre of the chat: every message is stored, then goes
//! through one [`Hub`] to every connected client, in id order.
//!
//! Live delivery is a single bounded ring buffer (`tokio::sync::broadcast`):
//! publishing costs the same however many clients listen, and each message
//! is stored and encoded once and shared by reference ([`WireMessage`]).
//! The [`Store`] is the other half: history for new subscribers, and the
//! way back for a subscriber that fell a full ring behind. Such a reader is
//! not cut off and loses nothing: it reads what it missed from the store by
//! id, then goes on from the ring. Ids come without holes, so a
//! [`Subscription`] always knows which id comes next: it skips what it
//! already delivered and fetches anything it jumped over.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chat_proto::ChatMessage;
use thiserror::Error;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::metrics::Metrics;
use crate::store::{Location, Retention, Store, StoreError, Stored, StreamFailure};
use crate::wire::WireMessage;

/// Messages a subscriber may fall behind before it reads from the store.
pub const DEFAULT_BUFFER: u32 = 1024;
/// Messages a new subscriber gets before live ones.
pub const DEFAULT_HISTORY: u32 = 100;
/// Messages read from the store at a time while catching up (pages are
/// also bounded in bytes: [`crate::store::PAGE_BYTES`]).
const PAGE: usize = 512;

/// Identifies a connection, so `ChatStream` does not echo a client's own
/// messages back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin(u64);

/// A stored message as it travels through the hub.
#[derive(Debug)]
pub struct Relayed {
    /// The connection that sent it, or `None` for a unary `Send`.
    pub origin: Option<Origin>,
    /// With its id and timestamp.
    pub message: ChatMessage,
    /// `message` encoded, for every subscriber to send as is.
    pub wire: WireMessage,
}

impl Relayed {
    fn new(stored: Stored) -> Self {
        Self {
            origin: stored.origin.map(Origin),
            wire: WireMessage::new(&stored.message),
            message: stored.message,
        }
    }

    pub fn id(&self) -> u64 {
        self.message.id
    }
}

/// What a subscription delivers.
#[derive(Debug)]
pub enum Delivery {
    Message(Arc<Relayed>),
    /// Messages after `after_id` and before `next_id` are no longer stored.
    Gap {
        after_id: u64,
        next_id: u64,
    },
}

/// Why a subscription stopped delivering.
#[derive(Debug, Error)]
pub enum Closed {
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("cannot read the message history: {0}")]
    Store(#[from] StoreError),
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Live messages only (the paper's `ChatStream`).
    Live,
    /// The most recent history, then live.
    Recent,
    /// Every stored message after this id, then live.
    After(u64),
}

/// What travels through the ring. Shutdown travels the same way as the
/// messages, so a subscriber waits on one thing only: no second future to
/// register (and lock) on every receive.
#[derive(Debug, Clone)]
enum Item {
    Message(Arc<Relayed>),
    ShuttingDown,
}

#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sender: broadcast::Sender<Item>,
    store: Store,
    history: u64,
    next_origin: AtomicU64,
    shut_down: AtomicBool,
    metrics: Metrics,
}

impl Hub {
    /// Opens the store at `location` and a ring of `buffer` messages; new
    /// subscribers get the last `history` messages.
    pub fn open(
        location: Location,
        retention: Retention,
        buffer: u32,
        history: u32,
        metrics: Metrics,
    ) -> Result<Self, StoreError> {
        let capacity = usize::try_from(buffer.max(1)).unwrap_or(usize::MAX);
        let (sender, _) = broadcast::channel(capacity);
        let ring = sender.clone();
        let store = Store::open(
            location,
            retention,
            metrics.clone(),
            Box::new(move |batch| {
                for stored in batch {
                    // An error only means nobody is listening right now.
                    let _ = ring.send(Item::Message(Arc::new(Relayed::new(stored))));
                }
            }),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                sender,
                store,
                history: u64::from(history),
                next_origin: AtomicU64::new(1),
                shut_down: AtomicBool::new(false),
                metrics,
            }),
        })
    }

    /// An in-memory hub with default settings, for tests.
    pub fn in_memory(buffer: u32) -> Result<Self, StoreError> {
        Self::open(
            Location::Memory,
            Retention::Count(1_000_000),
            buffer,
            DEFAULT_HISTORY,
            Metrics::new(),
        )
    }

    /// A fresh identity for a connection that both sends and receives.
    pub fn new_origin(&self) -> Origin {
        Origin(self.inner.next_origin.fetch_add(1, Ordering::Relaxed))
    }

    /// Starts a subscription at `start`; `own` messages are skipped.
    pub fn subscribe(&self, start: Start, own: Option<Origin>) -> Subscription {
        // The ring first, then the newest id: whatever is committed after
        // that id is broadcast after this point, so it reaches the ring.
        let receiver = self.inner.sender.subscribe();
        // The flag is set before the shutdown item is sent, so a subscriber
        // either sees the flag or receives the item.
        let closed = self.is_shut_down();
        let newest = self.inner.store.last_id();
        let (from, report_gaps) = match start {
            Start::Live => (newest, false),
            Start::Recent => (newest.saturating_sub(self.inner.history), false),
            Start::After(id) => (id, true),
        };
        let mut subscription = Subscription {
            receiver,
            store: self.inner.store.clone(),
            own,
            delivered: from,
            fetch_upto: newest,
            backlog: VecDeque::new(),
            held: None,
            report_gaps,
            pending_gap: None,
            closed,
            newest_at_start: newest,
            metrics: self.inner.metrics.clone(),
        };
        if from > newest {
            // An id this store never gave: the client's history is from
            // another database. Say so, and start it over from recent.
            subscription.pending_gap = Some((from, newest.saturating_sub(self.inner.history) + 1));
            subscription.delivered = newest.saturating_sub(self.inner.history);
        }
        subscription
    }

    /// Stores `message` (stamped with the server's time and the next id) and
    /// broadcasts it; returns once it is durably stored.
    pub async fn publish(&self, message: ChatMessage) -> Result<ChatMessage, StoreError> {
        self.inner.store.append(message).await
    }

    /// Queues a message from a streaming connection, in order, without
    /// waiting for the disk; only a full queue makes the sender wait. If it
    /// cannot be stored, the reason goes to `failure`.
    pub async fn publish_from(
        &self,
        origin: Origin,
        message: ChatMessage,
        failure: &StreamFailure,
    ) -> Result<(), StoreError> {
        self.inner
            .store
            .append_from(origin.0, message, failure)
            .await
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Read connections the store has open (see [`crate::store::MAX_READERS`]).
    pub fn open_store_readers(&self) -> usize {
        self.inner.store.open_readers()
    }

    /// Connected subscribers (Subscribe streams and ChatStream clients).
    pub fn subscriber_count(&self) -> usize {
        self.inner.sender.receiver_count()
    }

    /// Ends every subscription; new ones end at once.
    pub fn shut_down(&self) {
        if !self.inner.shut_down.swap(true, Ordering::SeqCst) {
            let _ = self.inner.sender.send(Item::ShuttingDown);
        }
    }

    pub fn is_shut_down(&self) -> bool {
        self.inner.shut_down.load(Ordering::SeqCst)
    }
}

/// One client's place in the hub: delivers every message after its start,
/// in id order, exactly once.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Item>,
    store: Store,
    own: Option<Origin>,
    /// The highest id delivered (or skipped as the client's own).
    delivered: u64,
    /// Ids up to here are read from the store, not the ring.
    fetch_upto: u64,
    backlog: VecDeque<Arc<Relayed>>,
    /// A ring message that arrived ahead of ids still to fetch.
    held: Option<Arc<Relayed>>,
    report_gaps: bool,
    pending_gap: Option<(u64, u64)>,
    closed: bool,
    newest_at_start: u64,
    metrics: Metrics,
}

impl Subscription {
    /// The newest stored id when the subscription started.
    pub fn newest_at_start(&self) -> u64 {
        self.newest_at_start
    }

    /// The next message (or gap notice), or why there will be no more.
    pub async fn recv(&mut self) -> Result<Delivery, Closed> {
        loop {
            if self.closed {
                return Err(Closed::ShuttingDown);
            }
            if let Some((after_id, next_id)) = self.pending_gap.take() {
                return Ok(Delivery::Gap { after_id, next_id });
            }
            if let Some(relayed) = self.backlog.pop_front() {
                if let Some(delivery) = self.accept(relayed) {
                    return Ok(delivery);
                }
                continue;
            }
            if self.delivered < self.fetch_upto {
                self.fetch().await?;
                continue;
            }
            if let Some(relayed) = self.held.take() {
                if let Some(delivery) = self.accept(relayed) {
                    return Ok(delivery);
                }
                continue;
            }
            match self.receiver.recv().await {
                Ok(Item::Message(relayed)) => {
                    if relayed.id() > self.delivered + 1 {
                        // Jumped ahead (this reader fell a ring behind):
                        // fetch the ids in between first.
                        self.fetch_upto = relayed.id() - 1;
                        self.held = Some(relayed);
                        continue;
                    }
                    if let Some(delivery) = self.accept(relayed) {
                        return Ok(delivery);
                    }
                }
                Ok(Item::ShuttingDown) | Err(RecvError::Closed) => self.closed = true,
                // The next message received tells how far to fetch.
                Err(RecvError::Lagged(_)) => {}
            }
        }
    }

    /// Delivers `relayed` unless it was already delivered or is our own.
    fn accept(&mut self, relayed: Arc<Relayed>) -> Option<Delivery> {
        if relayed.id() <= self.delivered {
            return None;
        }
        self.delivered = relayed.id();
        if self.own.is_some() && relayed.origin == self.own {
            return None;
        }
        // One uncontended atomic add; batching it locally cost more in
        // the idle-check it needed than it saved (bench, web fan-out).
        self.metrics.relayed(1);
        Some(Delivery::Message(relayed))
    }

    /// Reads the next page of ids up to `fetch_upto` from the store.
    async fn fetch(&mut self) -> Result<(), Closed> {
        let page = self
            .store
            .range(self.delivered, self.fetch_upto, PAGE)
            .await?;
        let Some(first) = page.first() else {
            // Everything in the range was removed by retention.
            self.skip_to(self.fetch_upto + 1);
            return Ok(());
        };
        if first.message.id > self.delivered + 1 {
            self.skip_to(first.message.id);
        }
        self.backlog
            .extend(page.into_iter().map(|s| Arc::new(Relayed::new(s))));
        Ok(())
    }

    /// Ids before `next_id` are gone: note it and move on.
    fn skip_to(&mut self, next_id: u64) {
        if self.report_gaps {
            self.pending_gap = Some((self.delivered, next_id));
        }
        self.delivered = next_id - 1;
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(message: &str) -> ChatMessage {
        ChatMessage {
            username: "ada".into(),
            message: message.into(),
            timestamp: 42,
            ..ChatMessage::default()
        }
    }

    async fn next_text(sub: &mut Subscription) -> String {
        match sub.recv().await.expect("delivered") {
            Delivery::Message(relayed) => relayed.message.message.clone(),
            Delivery::Gap { after_id, next_id } => format!("gap {after_id}..{next_id}"),
        }
    }

    #[tokio::test]
    async fn publish_stores_stamps_and_reaches_every_subscriber_once() {
        let hub = Hub::in_memory(8).expect("hub");
        let (mut a, mut b) = (
            hub.subscribe(Start::Live, None),
            hub.subscribe(Start::Live, None),
        );
        assert_eq!(hub.subscriber_count(), 2);
        let sent = hub.publish(text("hi")).await.expect("stored");
        assert_eq!(sent.id, 1);
        assert!(sent.timestamp > 1_600_000_000_000);
        let mut pointers = Vec::new();
        for sub in [&mut a, &mut b] {
            let Ok(Delivery::Message(got)) = sub.recv().await else {
                panic!("expected the message");
            };
            assert_eq!(got.message, sent);
            pointers.push(Arc::as_ptr(&got));
        }
        assert_eq!(pointers[0], pointers[1], "shared, not copied");
        drop(a);
        assert_eq!(hub.subscriber_count(), 1);
    }

    #[tokio::test]
    async fn a_reader_that_falls_a_ring_behind_catches_up_from_the_store() {
        let hub = Hub::in_memory(4).expect("hub");
        let mut slow = hub.subscribe(Start::Live, None);
        for i in 1..=20 {
            hub.publish(text(&i.to_string())).await.expect("stored");
        }
        for i in 1..=20 {
            assert_eq!(next_text(&mut slow).await, i.to_string());
        }
    }

    #[tokio::test]
    async fn history_then_live_and_after_an_id() {
        let hub = Hub::open(
            Location::Memory,
            Retention::Count(100),
            16,
            3,
            Metrics::new(),
        )
        .expect("hub");
        for i in 1..=5 {
            hub.publish(text(&i.to_string())).await.expect("stored");
        }
        let mut recent = hub.subscribe(Start::Recent, None);
        let mut after = hub.subscribe(Start::After(1), None);
        hub.publish(text("6")).await.expect("stored");
        for want in ["3", "4", "5", "6"] {
            assert_eq!(next_text(&mut recent).await, want);
        }
        for want in ["2", "3", "4", "5", "6"] {
            assert_eq!(next_text(&mut after).await, want);
        }
    }

    #[tokio::test]
    async fn own_messages_are_skipped_for_their_origin() {
        let hub = Hub::in_memory(8).expect("hub");
        let me = hub.new_origin();
        let mut mine = hub.subscribe(Start::Live, Some(me));
        let failure = Arc::new(tokio::sync::watch::Sender::new(None));
        hub.publish_from(me, text("mine"), &failure)
            .await
            .expect("queued");
        hub.publish(text("theirs")).await.expect("stored");
        assert_eq!(next_text(&mut mine).await, "theirs");
    }

    #[tokio::test]
    async fn shutdown_ends_subscriptions_old_and_new() {
        let hub = Hub::in_memory(4).expect("hub");
        let mut old = hub.subscribe(Start::Live, None);
        hub.shut_down();
        let mut new = hub.subscribe(Start::Live, None);
        for sub in [&mut old, &mut new] {
            assert!(matches!(sub.recv().await, Err(Closed::ShuttingDown)));
            assert!(matches!(sub.recv().await, Err(Closed::ShuttingDown)));
        }
    }
}
