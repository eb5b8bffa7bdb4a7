//! The fan-out at the centre of the chat: every relayed message goes through
//! one [`Hub`] to every connected client.
//!
//! It is a single bounded ring buffer (`tokio::sync::broadcast`): publishing
//! costs the same however many clients listen, each message is stored and
//! encoded once and shared by reference ([`WireMessage`]), and a client that stops reading cannot slow
//! anyone else or grow memory: once it falls a full buffer behind, it learns
//! how much it missed ([`Lagged`]) and its stream is ended so it can
//! reconnect. A client's [`Subscription`] is dropped with its stream, so a
//! departed client leaves nothing behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chat_proto::ChatMessage;
use thiserror::Error;

use crate::wire::WireMessage;
use tokio::sync::broadcast::{self, error::RecvError};

/// Messages a subscriber may fall behind before it is cut off.
pub const DEFAULT_BUFFER: u32 = 1024;

/// Identifies a connection, so `ChatStream` does not echo a client's own
/// messages back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin(u64);

/// A message as it travels through the hub.
#[derive(Debug)]
pub struct Relayed {
    /// The connection that sent it, or `None` for a unary `Send`.
    pub origin: Option<Origin>,
    pub message: ChatMessage,
    /// `message` encoded, for every subscriber to send as is.
    pub wire: WireMessage,
}

/// Why a subscription stopped delivering.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Closed {
    #[error("fell {0} messages behind and was disconnected; reconnect to continue")]
    Lagged(u64),
    #[error("the server is shutting down")]
    ShuttingDown,
}

pub use Closed::Lagged;

#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// What travels through the ring. Shutdown travels the same way as the
/// messages, so a subscriber waits on one thing only: no second future to
/// register (and lock) on every receive.
#[derive(Debug, Clone)]
enum Item {
    Message(Arc<Relayed>),
    ShuttingDown,
}

#[derive(Debug)]
struct Inner {
    sender: broadcast::Sender<Item>,
    next_origin: AtomicU64,
    shut_down: AtomicBool,
}

impl Hub {
    /// A hub whose subscribers may each fall `buffer` messages behind.
    pub fn new(buffer: u32) -> Self {
        let capacity = usize::try_from(buffer.max(1)).unwrap_or(usize::MAX);
        let (sender, _) = broadcast::channel(capacity);
        Self {
            inner: Arc::new(Inner {
                sender,
                next_origin: AtomicU64::new(1),
                shut_down: AtomicBool::new(false),
            }),
        }
    }

    /// A fresh identity for a connection that both sends and receives.
    pub fn new_origin(&self) -> Origin {
        Origin(self.inner.next_origin.fetch_add(1, Ordering::Relaxed))
    }

    /// Starts receiving everything published from now on.
    pub fn subscribe(&self) -> Subscription {
        let receiver = self.inner.sender.subscribe();
        // Checked after subscribing: the flag is set before the shutdown item
        // is sent, so a subscriber either sees the flag or receives the item.
        let closed = self.is_shut_down();
        Subscription { receiver, closed }
    }

    /// Stamps `message` with the server's time and sends it to every
    /// subscriber. Returns the relayed copy.
    pub fn publish(&self, origin: Option<Origin>, mut message: ChatMessage) -> Arc<Relayed> {
        message.timestamp = now_millis();
        let wire = WireMessage::new(&message);
        let relayed = Arc::new(Relayed {
            origin,
            message,
            wire,
        });
        // An error only means nobody is listening right now, which is fine.
        let _ = self.inner.sender.send(Item::Message(Arc::clone(&relayed)));
        relayed
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

/// One client's place in the hub.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Item>,
    closed: bool,
}

impl Subscription {
    /// The next relayed message, or why there will be no more.
    pub async fn recv(&mut self) -> Result<Arc<Relayed>, Closed> {
        if self.closed {
            return Err(Closed::ShuttingDown);
        }
        match self.receiver.recv().await {
            Ok(Item::Message(relayed)) => Ok(relayed),
            Ok(Item::ShuttingDown) | Err(RecvError::Closed) => {
                self.closed = true;
                Err(Closed::ShuttingDown)
            }
            Err(RecvError::Lagged(missed)) => Err(Closed::Lagged(missed)),
        }
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

    #[tokio::test]
    async fn publish_stamps_the_time_and_reaches_every_subscriber() {
        let hub = Hub::new(8);
        let (mut a, mut b) = (hub.subscribe(), hub.subscribe());
        assert_eq!(hub.subscriber_count(), 2);
        let sent = hub.publish(None, text("hi"));
        assert!(sent.message.timestamp > 1_600_000_000_000);
        for sub in [&mut a, &mut b] {
            let got = sub.recv().await.expect("delivered");
            assert!(Arc::ptr_eq(&got, &sent), "shared, not copied");
        }
        drop(a);
        assert_eq!(hub.subscriber_count(), 1);
    }

    #[tokio::test]
    async fn a_reader_that_falls_a_buffer_behind_is_told_how_much_it_missed() {
        let hub = Hub::new(4);
        let mut slow = hub.subscribe();
        for i in 0..6 {
            hub.publish(None, text(&i.to_string()));
        }
        assert_eq!(slow.recv().await.map(|_| ()), Err(Closed::Lagged(2)));
    }

    #[tokio::test]
    async fn shutdown_ends_subscriptions_old_and_new() {
        let hub = Hub::new(4);
        let mut old = hub.subscribe();
        hub.shut_down();
        let mut new = hub.subscribe();
        for sub in [&mut old, &mut new] {
            assert_eq!(sub.recv().await.map(|_| ()), Err(Closed::ShuttingDown));
            assert_eq!(sub.recv().await.map(|_| ()), Err(Closed::ShuttingDown));
        }
    }
}
