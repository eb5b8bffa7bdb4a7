//! A room's live state, owned here and nowhere else: its ring of newest
//! entries, who is in it, the newest id the hub has been handed (and the
//! newest message's, and the ids of the newest messages, where a
//! subscriber asking for recent history starts). The
//! logs keep no copy of any of it: they number and store entries, and the
//! hub moves a room's newest id as it takes each batch.
//!
//! [`Rooms`] is every room this process knows, by name and by number.
//! Knowing a room (its row came from the log) is one step; following it
//! (the log hands its batches over, see [`crate::log::RoomLog::follow`]) is
//! the next, which the hub takes once per room.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use super::Buffer;
use super::ring::Ring;
use crate::log::{RoomId, RoomKey, RoomRow};
use crate::people::presence::Presence;

/// One room: its newest entries for delivery, its people, its newest id.
#[derive(Debug)]
pub struct Room {
    pub(super) key: RoomKey,
    topic: String,
    pub(super) ring: Ring,
    /// The newest id handed to the hub: moved before a batch reaches the
    /// ring; shared with the log's follower, which resumes after it.
    pub(super) last_id: Arc<AtomicU64>,
    /// The newest message's id (changes have ids too, and never make a
    /// room unread).
    pub(super) last_message_id: AtomicU64,
    /// The ids of the newest messages (as many as new subscribers get).
    pub(super) recent: Mutex<Recent>,
    /// Who is here and who is typing, in this room.
    presence: Arc<Presence>,
}

/// The ids of a room's newest messages: every one committed while the hub
/// runs, and, once a subscriber first asked, the ones the log had before.
#[derive(Debug, Default)]
pub(super) struct Recent {
    pub(super) ids: VecDeque<u64>,
    /// The log's newest messages are in `ids` too.
    pub(super) complete: bool,
}

impl Recent {
    /// Adds ids (in any order, seen before or not) and keeps the newest
    /// `keep`.
    pub(super) fn add(&mut self, ids: impl IntoIterator<Item = u64>, keep: usize) {
        for id in ids {
            if self.ids.back().is_none_or(|&newest| id > newest) {
                self.ids.push_back(id);
            } else if let Err(at) = self.ids.binary_search(&id) {
                self.ids.insert(at, id);
            }
        }
        while self.ids.len() > keep {
            self.ids.pop_front();
        }
    }
}

impl Room {
    /// A room the log described, with a ring of `buffer`.
    pub(super) fn new(row: RoomRow, buffer: Buffer) -> Self {
        Self {
            key: RoomKey {
                id: row.id,
                name: row.name.into(),
            },
            topic: row.topic,
            ring: Ring::new(
                usize::try_from(buffer.messages.max(1)).unwrap_or(usize::MAX),
                usize::try_from(buffer.mib)
                    .unwrap_or(usize::MAX)
                    .saturating_mul(1 << 20),
            ),
            last_id: Arc::new(AtomicU64::new(row.last_id)),
            last_message_id: AtomicU64::new(row.last_message_id),
            recent: Mutex::new(Recent::default()),
            presence: Presence::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.key.name
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    /// The newest id stored in the room (0 if none).
    pub fn last_id(&self) -> u64 {
        self.last_id.load(Ordering::SeqCst)
    }

    /// The newest message's id in the room (0 if none).
    pub fn last_message_id(&self) -> u64 {
        self.last_message_id.load(Ordering::SeqCst)
    }
}

/// Every room, by name and by number.
#[derive(Debug, Default)]
pub(super) struct Rooms {
    by_name: HashMap<Arc<str>, Arc<Room>>,
    by_id: HashMap<RoomId, Arc<Room>>,
}

impl Rooms {
    pub(super) fn by_name(&self, name: &str) -> Option<&Arc<Room>> {
        self.by_name.get(name)
    }

    pub(super) fn by_id(&self, id: RoomId) -> Option<&Arc<Room>> {
        self.by_id.get(&id)
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &Arc<Room>> {
        self.by_id.values()
    }

    pub(super) fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Adds `room` unless one of its name is known (two streams may look
    /// the same new room up at once); returns the room kept and whether it
    /// is the new one.
    pub(super) fn insert(&mut self, room: Arc<Room>) -> (Arc<Room>, bool) {
        if let Some(known) = self.by_name.get(room.name()) {
            return (Arc::clone(known), false);
        }
        self.by_name
            .insert(Arc::clone(&room.key.name), Arc::clone(&room));
        self.by_id.insert(room.key.id, Arc::clone(&room));
        (room, true)
    }
}

/// The rooms, for reading: a poisoned lock only means a panic elsewhere
/// while the maps were whole.
pub(super) fn read(rooms: &RwLock<Rooms>) -> RwLockReadGuard<'_, Rooms> {
    rooms.read().unwrap_or_else(|e| e.into_inner())
}
