//! The newest messages, held once for every subscriber.
//!
//! Ids come from the store without holes, so the ring needs no queue
//! discipline: message `id` lives in slot `id % capacity` until a newer one
//! takes the slot, or until the ring holds more bytes than its budget and
//! the oldest messages are let go. The store's writer puts a whole committed batch in under
//! one write lock and then wakes the waiting subscribers once; each
//! subscriber takes everything it has not seen under one read lock. So a
//! batch of N messages costs a subscriber one wake-up and one lock, not N,
//! and memory stays bounded by the capacity, however many subscribers lag.
//! A subscriber whose next id has already been overwritten is told where
//! the ring starts and reads the missing ids from the store.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use crate::wire::Relayed;

#[derive(Debug)]
pub struct Ring {
    held: RwLock<Held>,
    /// The newest id in the ring (0 before the first); written under the
    /// write lock, so a reader holding the read lock sees slots and id agree.
    newest: AtomicU64,
    /// Woken after every batch put in, and at shutdown.
    changed: Notify,
}

#[derive(Debug)]
struct Held {
    slots: Box<[Option<Arc<Relayed>>]>,
    /// The oldest id in the ring (0 while it is empty).
    oldest: u64,
    /// What the held messages take, by [`Relayed::size`].
    bytes: usize,
    budget: usize,
}

/// What [`Ring::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// This many messages, now at the back of the caller's queue.
    Some(usize),
    /// Nothing newer than `after` yet.
    Nothing,
    /// `after + 1` was overwritten: the ring holds `oldest..=newest` now.
    Behind { oldest: u64, newest: u64 },
}

impl Ring {
    /// A ring of `capacity` messages (at least one) that holds no more than
    /// `budget` bytes of them (but always the newest).
    pub fn new(capacity: usize, budget: usize) -> Self {
        Self {
            held: RwLock::new(Held {
                slots: vec![None; capacity.max(1)].into_boxed_slice(),
                oldest: 0,
                bytes: 0,
                budget,
            }),
            newest: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    /// The newest id put in so far (0 if none).
    pub fn newest(&self) -> u64 {
        self.newest.load(Ordering::Acquire)
    }

    /// Puts in one committed batch (consecutive ids, oldest first), then
    /// wakes every waiting subscriber once.
    pub fn put(&self, batch: Vec<Arc<Relayed>>) {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return;
        };
        let (first, last) = (first.id(), last.id());
        {
            // A poisoned lock only means a reader panicked while copying
            // pointers out: the slots themselves are always whole.
            let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
            let held = &mut *held;
            let capacity = held.slots.len() as u64;
            for relayed in batch {
                held.bytes += relayed.size();
                let slot = &mut held.slots[(relayed.id() % capacity) as usize];
                if let Some(old) = slot.replace(relayed) {
                    held.bytes -= old.size();
                }
            }
            // The ring holds consecutive ids from its first batch on.
            let since = if held.oldest == 0 { first } else { held.oldest };
            held.oldest = since.max((last + 1).saturating_sub(capacity));
            while held.bytes > held.budget && held.oldest < last {
                let slot = &mut held.slots[(held.oldest % capacity) as usize];
                if let Some(old) = slot.take() {
                    held.bytes -= old.size();
                }
                held.oldest += 1;
            }
            self.newest.store(last, Ordering::Release);
        }
        self.changed.notify_waiters();
    }

    /// Appends to `into` up to `max` messages with ids after `after`, in
    /// order, under one read lock.
    pub fn take(&self, after: u64, max: usize, into: &mut VecDeque<Arc<Relayed>>) -> Taken {
        if self.newest() <= after {
            return Taken::Nothing;
        }
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        let newest = self.newest.load(Ordering::Acquire);
        let capacity = held.slots.len() as u64;
        if after + 1 < held.oldest {
            return Taken::Behind {
                oldest: held.oldest,
                newest,
            };
        }
        let upto = newest.min(after.saturating_add(max as u64));
        for id in after + 1..=upto {
            match &held.slots[(id % capacity) as usize] {
                Some(relayed) if relayed.id() == id => into.push_back(Arc::clone(relayed)),
                // Only if ids had holes: the store has the truth.
                _ if id == after + 1 => {
                    return Taken::Behind {
                        oldest: id + 1,
                        newest,
                    };
                }
                _ => return Taken::Some((id - after - 1) as usize),
            }
        }
        Taken::Some((upto - after) as usize)
    }

    /// Completes after the next [`put`](Self::put) or [`wake_all`](Self::wake_all)
    /// that follows the call, unless `ready` already holds when registered.
    pub async fn wait_unless(&self, ready: impl Fn() -> bool) {
        let notified = self.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !ready() {
            notified.await;
        }
    }

    /// Wakes every waiting subscriber (shutdown).
    pub fn wake_all(&self) {
        self.changed.notify_waiters();
    }
}
