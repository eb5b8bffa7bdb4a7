//! One client's place in a room: every entry after its start, in id
//! order, exactly once, from the ring while it keeps up and from the log
//! when it fell a full ring behind (or asked for history), with a gap
//! notice where retention removed ids it asked for.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use thiserror::Error;

use super::ring::Taken;
use super::wire::Relayed;
use super::{Inner, Origin, Room};
use crate::log::{LogError, PAGE_BYTES, Stored};

/// Messages read from the store at a time while catching up (pages are
/// also bounded in bytes: [`PAGE_BYTES`]).
const PAGE: usize = 512;
/// How long a subscription asks again for a history page that a shared
/// log could not read whole ([`LogError::Incomplete`]) before its stream
/// ends with `UNAVAILABLE` (the client resumes, maybe on another replica).
const READ_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);
/// Messages a subscriber takes from the ring under one lock, and the bytes
/// they may take: what a stuck stream keeps alive of messages the ring has
/// since let go is bounded like a page read from the store.
const TAKE: (usize, usize) = (256, PAGE_BYTES);

/// A stored entry, encoded once for every subscriber.
pub(super) fn relayed(stored: Stored) -> Arc<Relayed> {
    Arc::new(Relayed::new(
        stored.id(),
        stored.entry.into_event(),
        stored.origin,
    ))
}

/// What a subscription delivers.
#[derive(Debug)]
pub enum Delivery {
    /// The room's next entry.
    Entry(Arc<Relayed>),
    /// Messages after `after_id` and before `next_id` are no longer stored.
    Gap { after_id: u64, next_id: u64 },
}

/// Why a subscription stopped delivering.
#[derive(Debug, Error)]
pub enum Closed {
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("cannot read the message history: {0}")]
    Store(#[from] LogError),
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Live messages only (the paper's `ChatStream`).
    Live,
    /// Every stored entry after this id (where the recent history starts:
    /// see [`super::Hub::recent`]), then live; what retention removed is
    /// skipped without a word.
    Since(u64),
    /// Every stored message after this id, then live.
    After(u64),
}

/// One client's place in the hub: delivers every message after its start,
/// in id order, exactly once.
#[derive(Debug)]
pub struct Subscription {
    pub(super) hub: Arc<Inner>,
    pub(super) room: Arc<Room>,
    pub(super) own: Option<Origin>,
    /// The highest id delivered (or skipped as the client's own).
    pub(super) delivered: u64,
    /// Ids up to here may have to be read from the store.
    pub(super) fetch_upto: u64,
    /// Taken from the ring or the store, not yet delivered.
    pub(super) backlog: VecDeque<Arc<Relayed>>,
    pub(super) report_gaps: bool,
    pub(super) pending_gap: Option<(u64, u64)>,
    pub(super) newest_at_start: u64,
    /// When the history read first came back incomplete (kept across
    /// cancelled receives, so the patience is the subscription's).
    pub(super) incomplete_since: Option<tokio::time::Instant>,
}

/// What a subscription can do next without waiting.
enum Next {
    Deliver(Delivery),
    /// Read the store (history, or ids the ring no longer holds).
    Fetch,
    /// Wait for the next batch.
    Wait,
    Closed,
}

impl Subscription {
    /// The newest stored id when the subscription started.
    pub fn newest_at_start(&self) -> u64 {
        self.newest_at_start
    }

    /// The next message (or gap notice), or why there will be no more.
    /// Cancel-safe: nothing is lost if the future is dropped.
    pub async fn recv(&mut self) -> Result<Delivery, Closed> {
        loop {
            match self.next_now() {
                Next::Deliver(delivery) => return Ok(delivery),
                Next::Fetch => self.fetch().await?,
                Next::Wait => {
                    let (hub, ring, delivered) = (&self.hub, &self.room.ring, self.delivered);
                    ring.wait_unless(|| ring.newest() > delivered || hub.is_shut_down())
                        .await;
                }
                Next::Closed => return Err(Closed::ShuttingDown),
            }
        }
    }

    /// The next delivery if one is ready without waiting: lets a stream
    /// send a burst before it looks at anything else.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        match self.next_now() {
            Next::Deliver(delivery) => Some(delivery),
            Next::Fetch | Next::Wait | Next::Closed => None,
        }
    }

    /// `first`, then whatever else is ready without waiting, `max` in all:
    /// a burst a stream sends before it looks at anything else.
    pub fn burst(&mut self, first: Delivery, max: usize) -> impl Iterator<Item = Delivery> + '_ {
        let mut next = Some(first);
        let mut left = max;
        std::iter::from_fn(move || {
            let delivery = next.take()?;
            left = left.saturating_sub(1);
            if left > 0 {
                next = self.try_recv();
            }
            Some(delivery)
        })
    }

    fn next_now(&mut self) -> Next {
        loop {
            if let Some((after_id, next_id)) = self.pending_gap.take() {
                return Next::Deliver(Delivery::Gap { after_id, next_id });
            }
            if let Some(relayed) = self.backlog.pop_front() {
                if let Some(delivery) = self.accept(relayed) {
                    return Next::Deliver(delivery);
                }
                continue;
            }
            match self.room.ring.take(self.delivered, TAKE, &mut self.backlog) {
                Taken::Some(_) => {}
                Taken::Behind { oldest, .. } => {
                    self.fetch_upto = oldest - 1;
                    return Next::Fetch;
                }
                // Committed ids the ring does not have yet (or never had,
                // from before a restart) are in the store.
                Taken::Nothing if self.delivered < self.fetch_upto => return Next::Fetch,
                Taken::Nothing if self.hub.is_shut_down() => return Next::Closed,
                Taken::Nothing => return Next::Wait,
            }
        }
    }

    /// Delivers `relayed` unless it was already delivered or is our own.
    fn accept(&mut self, relayed: Arc<Relayed>) -> Option<Delivery> {
        if relayed.id() <= self.delivered {
            return None;
        }
        self.delivered = relayed.id();
        if self.own.is_some() && relayed.origin() == self.own.map(|o| o.0) {
            return None;
        }
        // One uncontended atomic add; batching it locally cost more in
        // the idle-check it needed than it saved (bench, web fan-out).
        self.hub.metrics.relayed(1);
        Some(Delivery::Entry(relayed))
    }

    /// Reads the next page of ids up to `fetch_upto` from the store.
    async fn fetch(&mut self) -> Result<(), Closed> {
        let page = loop {
            let read = self
                .hub
                .log
                .range(&self.room.key, self.delivered, self.fetch_upto, PAGE)
                .await;
            match read {
                Ok(page) => {
                    self.incomplete_since = None;
                    break page;
                }
                Err(LogError::Incomplete(why)) => {
                    let since = *self
                        .incomplete_since
                        .get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= READ_PATIENCE {
                        self.incomplete_since = None;
                        return Err(Closed::Store(LogError::Unavailable(format!(
                            "this replica cannot read the room's complete history yet ({why}); try again"
                        ))));
                    }
                    tracing::debug!(room = self.room.name(), %why, "history page incomplete; asking again");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(error) => return Err(error.into()),
            }
        };
        let Some(first) = page.first() else {
            // Everything in the range was removed by retention.
            self.skip_to(self.fetch_upto + 1);
            return Ok(());
        };
        if first.id() > self.delivered + 1 {
            self.skip_to(first.id());
        }
        let room = self.room.name();
        self.backlog.extend(page.into_iter().map(|mut stored| {
            stored.entry.set_room(room);
            relayed(stored)
        }));
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

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}
