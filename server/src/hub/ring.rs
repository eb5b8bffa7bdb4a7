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
//!
//! Every room has a ring, so one starts small and grows (up to its
//! capacity) only when a room's traffic needs it: a thousand quiet rooms
//! cost a few kilobytes each, not their capacity in slots.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chat_proto::{Change, Event, state};
use tokio::sync::Notify;

use crate::hub::wire::Relayed;

/// Slots a ring starts with (it doubles as needed, up to its capacity).
const FIRST_SLOTS: usize = 64;

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
    /// The most slots the ring may grow to.
    capacity: usize,
    /// The oldest id in the ring (0 while it is empty).
    oldest: u64,
    /// What the held messages take, by [`Relayed::size`].
    bytes: usize,
    budget: usize,
}

impl Held {
    /// Moves to `len` slots; `oldest..=newest` are the ids held.
    fn grow(&mut self, len: usize, oldest: u64, newest: u64) {
        let mut slots = vec![None; len].into_boxed_slice();
        let (old, new) = (self.slots.len() as u64, len as u64);
        if newest >= oldest && oldest > 0 {
            for id in oldest..=newest {
                slots[(id % new) as usize] = self.slots[(id % old) as usize].take();
            }
        }
        self.slots = slots;
    }
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
                slots: vec![None; capacity.clamp(1, FIRST_SLOTS)].into_boxed_slice(),
                capacity: capacity.max(1),
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

    /// Puts in one committed batch (consecutive ids, oldest first) and lets
    /// go of ids before `oldest_kept` (what retention removed from the
    /// store: nobody gets those any more), then wakes every waiting
    /// subscriber once.
    pub fn put(&self, batch: Vec<Arc<Relayed>>, oldest_kept: Option<u64>) {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return;
        };
        let (first, last) = (first.id(), last.id());
        {
            // A poisoned lock only means a reader panicked while copying
            // pointers out: the slots themselves are always whole.
            let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
            let held = &mut *held;
            // The ring holds consecutive ids from its first batch on: room
            // for all of them since the oldest held, if the capacity allows.
            let since = if held.oldest == 0 { first } else { held.oldest };
            let span = usize::try_from(last + 1 - since.min(last + 1)).unwrap_or(usize::MAX);
            if span > held.slots.len() && held.slots.len() < held.capacity {
                held.grow(
                    span.next_power_of_two().min(held.capacity),
                    since,
                    self.newest(),
                );
            }
            let capacity = held.slots.len() as u64;
            for relayed in batch {
                held.bytes += relayed.size();
                let slot = &mut held.slots[(relayed.id() % capacity) as usize];
                if let Some(old) = slot.replace(relayed) {
                    held.bytes -= old.size();
                }
            }
            held.oldest = since.max((last + 1).saturating_sub(capacity));
            let floor = oldest_kept.unwrap_or(0).min(last);
            while (held.bytes > held.budget || held.oldest < floor) && held.oldest < last {
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

    /// Replaces the copy of entry `id`, if the ring still holds it, with
    /// what `encode` makes of it (given the held copy's origin): a message
    /// whose state a change moved on. A subscriber that already took the
    /// old copy gets the change after it, which brings it to the same state.
    pub fn refresh(&self, id: u64, encode: impl FnOnce(Option<u64>) -> Relayed) {
        self.refresh_with(id, |old| Some(encode(old.origin())));
    }

    /// Folds `change` into the ring's copy of the message it changes, if the
    /// ring holds it and the copy has not got it yet (a log that hands over
    /// the change alone, not the message rewritten).
    pub fn apply(&self, change: &Change) {
        self.refresh_with(change.target, |old| {
            let mut message = old.decode()?;
            state::apply(&mut message, change)
                .then(|| Relayed::new(change.target, Event::Message(message), old.origin()))
        });
    }

    /// Replaces the copy of entry `id`, if the ring holds it, with what
    /// `rewrite` makes of it (`None`: keep it).
    fn refresh_with(&self, id: u64, rewrite: impl FnOnce(&Relayed) -> Option<Relayed>) {
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        let held = &mut *held;
        if id < held.oldest || id > self.newest() {
            return;
        }
        let capacity = held.slots.len() as u64;
        let slot = &mut held.slots[(id % capacity) as usize];
        let Some(old) = slot.as_ref().filter(|old| old.id() == id) else {
            return;
        };
        let Some(new) = rewrite(old).map(Arc::new) else {
            return;
        };
        held.bytes = held.bytes + new.size() - old.size();
        *slot = Some(new);
    }

    /// Appends to `into` up to `max` messages with ids after `after`, in
    /// order, under one read lock; stops early once they take `max_bytes`.
    pub fn take(
        &self,
        after: u64,
        (max, max_bytes): (usize, usize),
        into: &mut VecDeque<Arc<Relayed>>,
    ) -> Taken {
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
        let mut bytes = 0;
        for id in after + 1..=upto {
            if bytes >= max_bytes {
                return Taken::Some((id - after - 1) as usize);
            }
            match &held.slots[(id % capacity) as usize] {
                Some(relayed) if relayed.id() == id => {
                    bytes += relayed.size();
                    into.push_back(Arc::clone(relayed));
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::ChatMessage;

    fn batch(ids: std::ops::RangeInclusive<u64>, text: &str) -> Vec<Arc<Relayed>> {
        ids.map(|id| {
            let message = ChatMessage {
                id,
                message: text.into(),
                ..ChatMessage::default()
            };
            Arc::new(Relayed::new(id, chat_proto::Event::Message(message), None))
        })
        .collect()
    }

    fn ids(queue: &VecDeque<Arc<Relayed>>) -> Vec<u64> {
        queue.iter().map(|r| r.id()).collect()
    }

    #[test]
    fn takes_what_is_newer_in_order_and_at_most_max() {
        let ring = Ring::new(8, usize::MAX);
        let mut got = VecDeque::new();
        assert_eq!(ring.take(0, (10, usize::MAX), &mut got), Taken::Nothing);
        ring.put(batch(1..=5, "x"), None);
        assert_eq!(ring.take(2, (2, usize::MAX), &mut got), Taken::Some(2));
        assert_eq!(ids(&got), [3, 4]);
        // The byte bound stops after the message that reaches it.
        got.clear();
        assert_eq!(ring.take(0, (10, 1), &mut got), Taken::Some(1));
        assert_eq!(ring.take(5, (10, usize::MAX), &mut got), Taken::Nothing);
    }

    #[test]
    fn a_reader_whose_next_id_was_overwritten_is_told_where_the_ring_starts() {
        let ring = Ring::new(4, usize::MAX);
        ring.put(batch(1..=3, "x"), None);
        ring.put(batch(4..=10, "x"), None);
        let mut got = VecDeque::new();
        assert_eq!(
            ring.take(2, (10, usize::MAX), &mut got),
            Taken::Behind {
                oldest: 7,
                newest: 10
            }
        );
        assert_eq!(ring.take(6, (10, usize::MAX), &mut got), Taken::Some(4));
        assert_eq!(ids(&got), [7, 8, 9, 10]);
    }

    #[test]
    fn a_ring_that_starts_after_a_restart_sends_older_ids_to_the_store() {
        let ring = Ring::new(8, usize::MAX);
        ring.put(batch(501..=502, "x"), None);
        let mut got = VecDeque::new();
        assert!(matches!(
            ring.take(400, (10, usize::MAX), &mut got),
            Taken::Behind { oldest: 501, .. }
        ));
        assert_eq!(ring.take(500, (10, usize::MAX), &mut got), Taken::Some(2));
    }

    #[test]
    fn the_byte_budget_lets_the_oldest_go_but_keeps_the_newest() {
        let one = batch(1..=1, &"x".repeat(1000))[0].size();
        let ring = Ring::new(100, 3 * one);
        ring.put(batch(1..=10, &"x".repeat(1000)), None);
        let mut got = VecDeque::new();
        assert!(matches!(
            ring.take(0, (100, usize::MAX), &mut got),
            Taken::Behind { oldest: 8, .. }
        ));
        // A single message over the whole budget is still kept.
        let tiny = Ring::new(100, 1);
        tiny.put(batch(1..=2, "x"), None);
        assert_eq!(tiny.take(1, (10, 1), &mut got), Taken::Some(1));
    }

    #[test]
    fn what_retention_removed_from_the_store_leaves_the_ring_too() {
        let ring = Ring::new(100, usize::MAX);
        ring.put(batch(1..=10, "x"), Some(8));
        let mut got = VecDeque::new();
        assert!(matches!(
            ring.take(2, (100, usize::MAX), &mut got),
            Taken::Behind { oldest: 8, .. }
        ));
    }
}
