//! The fan-out at the centre of the chat: every entry is stored, then goes
//! through one [`Hub`] to every connected client, in id order.
//!
//! Live delivery is one bounded [`Ring`] of the newest entries per room:
//! the log puts each committed batch in at once and wakes the subscribers
//! once, and each entry is encoded once and shared by reference
//! ([`Relayed`]), so publishing costs the same however many clients
//! listen and a subscriber pays one wake-up per batch, not per entry.
//! The log ([`RoomLog`]) is the other half: history for new subscribers,
//! and the way back for a subscriber that fell a full ring behind. Such a
//! reader is not cut off and loses nothing: it reads what it missed from
//! the log by id, then goes on from the ring. Ids come without holes, so a
//! [`Subscription`] always knows which id comes next.
//!
//! Each room is its own such log: its own ids, its own ring, its own
//! subscribers (a room's name is looked up once, when a stream starts or a
//! message arrives, and the [`Room`] handle is kept).
//!
//! - [`room`]: a room's state, owned by the hub alone, and every room known.
//! - [`history`]: a room's past read by pages of messages.
//! - [`subscription`]: one client's place in a room.
//! - [`ring`]: the newest entries in memory, shared by every subscriber.
//! - [`wire`]: each entry encoded once, shared by every stream.

mod history;
pub mod ring;
mod room;
mod search;
mod subscription;
pub mod wire;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use chat_proto::ChatMessage;

use crate::log::sqlite::{Location, Store};
use crate::log::{
    ChangeRequest, Changed, Committed, Entry, LogError, OnCommit, Retention, RoomLog, RoomRow,
    StreamFailure,
};
use crate::metrics::Metrics;
pub use history::{Around, Page};
pub use room::Room;
use room::{Rooms, read};
pub use search::Hits;
use subscription::relayed;
pub use subscription::{Closed, Delivery, Start, Subscription};
use wire::Relayed;

/// Messages a subscriber may fall behind before it reads from the store...
pub const DEFAULT_BUFFER: u32 = 65_536;
/// ...as long as they take no more than this many MiB.
pub const DEFAULT_BUFFER_MIB: u32 = 32;

/// How much of the newest history the hub keeps in memory for delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    pub messages: u32,
    pub mib: u32,
}

impl Buffer {
    /// `messages` at most, with the default byte budget.
    pub fn messages(messages: u32) -> Self {
        Self {
            messages,
            mib: DEFAULT_BUFFER_MIB,
        }
    }
}
/// Messages a new subscriber gets before live ones.
pub const DEFAULT_HISTORY: u32 = 100;
/// What is done with every room as it opens.
pub type OnRoom = Box<dyn Fn(&Room) + Send + Sync>;

struct RoomHook(OnRoom);

impl std::fmt::Debug for RoomHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomHook")
    }
}

/// How long a resuming client waits for this replica to catch up with the
/// id it read elsewhere, before it is served what is here.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// Identifies a connection, so `ChatStream` does not echo a client's own
/// messages back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin(u64);

#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    rooms: Arc<RwLock<Rooms>>,
    buffer: Buffer,
    log: Arc<dyn RoomLog>,
    /// Called with every room as it opens (cluster mode: presence hooks).
    on_room: std::sync::OnceLock<RoomHook>,
    subscribers: AtomicUsize,
    history: u64,
    next_origin: AtomicU64,
    shut_down: AtomicBool,
    metrics: Metrics,
}

impl Hub {
    /// Opens the SQLite store at `location` and a ring of `buffer`; new
    /// subscribers get the last `history` messages.
    pub fn open(
        location: Location,
        retention: Retention,
        buffer: Buffer,
        history: u32,
        metrics: Metrics,
    ) -> Result<Self, LogError> {
        Self::open_log(
            |on_commit, metrics| {
                let store = Store::open(location, retention, metrics, on_commit)?;
                Ok(Arc::new(store) as Arc<dyn RoomLog>)
            },
            buffer,
            history,
            metrics,
        )
    }

    /// Opens the hub on the log `open` makes, which hands every committed
    /// batch to the callback it is given.
    pub fn open_log(
        open: impl FnOnce(OnCommit, Metrics) -> Result<Arc<dyn RoomLog>, LogError>,
        buffer: Buffer,
        history: u32,
        metrics: Metrics,
    ) -> Result<Self, LogError> {
        let rooms = Arc::new(RwLock::new(Rooms::default()));
        let committed = Arc::clone(&rooms);
        let keep_recent = usize::try_from(history).unwrap_or(usize::MAX);
        let log = open(
            // Encoded here, on the log's thread, once for every subscriber.
            Box::new(move |batch: Committed| {
                let room = read(&committed).by_id(batch.room).cloned();
                if let (Some(room), Some(last)) = (room, batch.entries.last()) {
                    let messages = batch
                        .entries
                        .iter()
                        .filter_map(|stored| match &stored.entry {
                            Entry::Message(message) => Some(message.id),
                            Entry::Change(_) => None,
                        });
                    room.recent
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .add(messages.clone(), keep_recent);
                    if let Some(newest) = messages.max() {
                        room.last_message_id.fetch_max(newest, Ordering::SeqCst);
                    }
                    // Moved first: whatever a subscriber finds newer than
                    // `last_id` when it starts is put in the ring after.
                    room.last_id.store(last.id(), Ordering::SeqCst);
                    let mut refreshed = Vec::with_capacity(batch.rewritten.len());
                    for mut entry in batch.rewritten {
                        entry.set_room(room.name());
                        let id = entry.id();
                        refreshed.push(id);
                        room.ring
                            .refresh(id, |origin| Relayed::new(id, entry.into_event(), origin));
                    }
                    // What the log did not hand over rewritten, the ring
                    // brings up to date itself.
                    for stored in &batch.entries {
                        if let Entry::Change(change) = &stored.entry
                            && !refreshed.contains(&change.target)
                        {
                            room.ring.apply(change);
                        }
                    }
                    let entries = batch
                        .entries
                        .into_iter()
                        .map(|mut stored| {
                            if let Entry::Change(change) = &mut stored.entry {
                                room.name().clone_into(&mut change.room);
                            }
                            relayed(stored)
                        })
                        .collect();
                    room.ring.put(entries, batch.oldest_kept);
                }
            }),
            metrics.clone(),
        )?;
        let inner = Inner {
            rooms,
            buffer,
            log,
            on_room: std::sync::OnceLock::new(),
            subscribers: AtomicUsize::new(0),
            history: u64::from(history),
            next_origin: AtomicU64::new(1),
            shut_down: AtomicBool::new(false),
            metrics,
        };
        for row in inner.log.rooms_at_open() {
            inner.add_room(row);
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The room called `name` (as the protocol's rules give it), if it
    /// exists.
    pub fn room(&self, name: &str) -> Option<Arc<Room>> {
        read(&self.inner.rooms).by_name(name).cloned()
    }

    /// The room called `name`, also if another replica created it since
    /// this one started.
    pub async fn find_room(&self, name: &str) -> Result<Option<Arc<Room>>, LogError> {
        if let Some(room) = self.room(name) {
            return Ok(Some(room));
        }
        Ok(self
            .inner
            .log
            .find_room(name)
            .await?
            .map(|row| self.inner.add_room(row)))
    }

    /// Learns of rooms other replicas created (a no-op on one machine).
    pub async fn refresh_rooms(&self) -> Result<(), LogError> {
        for row in self.inner.log.list_rooms().await? {
            if self.room(&row.name).is_none() {
                self.inner.add_room(row);
            }
        }
        Ok(())
    }

    /// Waits (a little) until `room` has been handed every id up to `id`
    /// that exists: a client resuming here after reading from another
    /// replica may be ahead of this one for a moment.
    pub async fn catch_up(&self, room: &Room, id: u64) -> Result<(), LogError> {
        if room.last_id() >= id {
            return Ok(());
        }
        let target = id.min(self.inner.log.newest(&room.key).await?);
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        while room.last_id() < target && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Calls `on_room` with every room, now and as rooms open (set once).
    pub fn on_room(&self, on_room: OnRoom) {
        if self.inner.on_room.set(RoomHook(on_room)).is_ok()
            && let Some(RoomHook(on_room)) = self.inner.on_room.get()
        {
            for room in read(&self.inner.rooms).all() {
                on_room(room);
            }
        }
    }

    /// Whether the log takes writes (health checks say so).
    pub fn is_available(&self) -> bool {
        self.inner.log.is_available()
    }

    /// Every room, sorted by name.
    pub fn rooms(&self) -> Vec<Arc<Room>> {
        let mut rooms: Vec<_> = read(&self.inner.rooms).all().cloned().collect();
        rooms.sort_by(|a, b| a.name().cmp(b.name()));
        rooms
    }

    pub fn room_count(&self) -> usize {
        read(&self.inner.rooms).len()
    }

    /// Opens a new room (`LogError::RoomExists` if there is one by that
    /// name).
    pub async fn create_room(&self, name: &str, topic: &str) -> Result<Arc<Room>, LogError> {
        let row = self.inner.log.create_room(name, topic).await?;
        Ok(self.inner.add_room(row))
    }

    /// An in-memory hub with a ring of `buffer` messages, for tests.
    pub fn in_memory(buffer: u32) -> Result<Self, LogError> {
        Self::open(
            Location::Memory,
            Retention::Count(1_000_000),
            Buffer::messages(buffer),
            DEFAULT_HISTORY,
            Metrics::new(),
        )
    }

    /// A fresh identity for a connection that both sends and receives.
    pub fn new_origin(&self) -> Origin {
        Origin(self.inner.next_origin.fetch_add(1, Ordering::Relaxed))
    }

    /// Starts a subscription to `room` at `start`; `own` messages are
    /// skipped.
    pub fn subscribe(&self, room: &Arc<Room>, start: Start, own: Option<Origin>) -> Subscription {
        // Whatever is committed after this id is put in the ring later, so
        // the ring (or the store) has every id after it.
        let newest = room.last_id();
        let (from, report_gaps) = match start {
            Start::Live => (newest, false),
            Start::Since(id) => (id.min(newest), false),
            Start::After(id) => (id, true),
        };
        self.inner.subscribers.fetch_add(1, Ordering::Relaxed);
        let mut subscription = Subscription {
            hub: Arc::clone(&self.inner),
            room: Arc::clone(room),
            own,
            delivered: from,
            fetch_upto: newest,
            backlog: VecDeque::new(),
            report_gaps,
            pending_gap: None,
            newest_at_start: newest,
            incomplete_since: None,
        };
        if from > newest {
            // An id this store never gave: the client's history is from
            // another database. Say so, and start it over from recent.
            subscription.pending_gap = Some((from, newest.saturating_sub(self.inner.history) + 1));
            subscription.delivered = newest.saturating_sub(self.inner.history);
        }
        subscription
    }

    /// Where a subscriber that asks for the recent history of `room` starts:
    /// after the id before the newest `--history` messages (changes are
    /// not counted).
    pub async fn recent(&self, room: &Room) -> Result<Start, LogError> {
        let keep = self.inner.history;
        if keep == 0 {
            return Ok(Start::Live);
        }
        let known = {
            let recent = room.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.complete.then(|| recent.ids.clone())
        };
        let ids = match known {
            Some(ids) => ids,
            None => {
                let stored = self.inner.log.recent_messages(&room.key, keep).await?;
                let mut recent = room.recent.lock().unwrap_or_else(|e| e.into_inner());
                recent.add(stored, usize::try_from(keep).unwrap_or(usize::MAX));
                recent.complete = true;
                recent.ids.clone()
            }
        };
        // Fewer than `keep` messages: all of them, from the start.
        let start = match ids.front() {
            Some(&oldest) if ids.len() as u64 >= keep => oldest - 1,
            _ => 0,
        };
        Ok(Start::Since(start))
    }

    /// Entry `id` of `room` as it stands, if it is stored (on a shared log,
    /// also if it was stored through another replica a moment ago).
    pub async fn entry(&self, room: &Room, id: u64) -> Result<Option<Entry>, LogError> {
        self.catch_up(room, id).await?;
        if id == 0 || id > room.last_id() {
            return Ok(None);
        }
        // A shared log's copy that is behind (or a stream electing its
        // leader) answers again soon: asked again, as every reader does.
        let page = self.range_patiently(room, id - 1, id, 1).await?;
        Ok(page
            .into_iter()
            .find(|stored| stored.id() == id)
            .map(|stored| stored.entry))
    }

    /// Checks `change` against its message in `room` and stores it (see
    /// [`RoomLog::change`]); returns once it is durable and on its way to
    /// every subscriber.
    pub async fn change(&self, room: &Room, change: ChangeRequest) -> Result<Changed, LogError> {
        self.inner.log.change(&room.key, change).await
    }

    /// Stores `message` in `room` (stamped with the server's time, the
    /// room's next id and its name) and broadcasts it; returns once it is
    /// durably stored.
    pub async fn publish(
        &self,
        room: &Room,
        message: ChatMessage,
    ) -> Result<ChatMessage, LogError> {
        let message = ChatMessage {
            room: room.name().to_owned(),
            ..message
        };
        self.inner.log.append(&room.key, message).await
    }

    /// Queues a message from a streaming connection, in order, without
    /// waiting for the disk; only a full queue makes the sender wait. If it
    /// cannot be stored, the reason goes to `failure`.
    pub async fn publish_from(
        &self,
        room: &Room,
        origin: Origin,
        message: ChatMessage,
        failure: &StreamFailure,
    ) -> Result<(), LogError> {
        let message = ChatMessage {
            room: room.name().to_owned(),
            ..message
        };
        self.inner
            .log
            .append_from(&room.key, origin.0, message, failure)
            .await
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Read connections the store has open (see [`crate::log::sqlite::MAX_READERS`]).
    pub fn open_store_readers(&self) -> usize {
        self.inner.log.open_readers()
    }

    /// Connected subscribers (Subscribe streams and ChatStream clients).
    pub fn subscriber_count(&self) -> usize {
        self.inner.subscribers.load(Ordering::Relaxed)
    }

    /// Ends every subscription once it has delivered what the ring holds;
    /// new ones end at once.
    pub fn shut_down(&self) {
        if !self.inner.shut_down.swap(true, Ordering::SeqCst) {
            for room in read(&self.inner.rooms).all() {
                room.ring.wake_all();
            }
        }
    }

    pub fn is_shut_down(&self) -> bool {
        self.inner.is_shut_down()
    }
}

impl Inner {
    fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::SeqCst)
    }

    /// Knows `row`'s room from now on, and follows it: the log hands its
    /// batches over from the id the row says. Every known room is followed
    /// today; following only rooms with subscribers here would move the
    /// `follow` call to the first subscription.
    fn add_room(&self, row: RoomRow) -> Arc<Room> {
        let room = Arc::new(Room::new(row, self.buffer));
        let (room, new) = self
            .rooms
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room);
        if new {
            self.log.follow(&room.key, Arc::clone(&room.last_id));
            if let Some(RoomHook(on_room)) = self.on_room.get() {
                on_room(&room);
            }
        }
        room
    }
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
            Delivery::Entry(relayed) => relayed.decode().expect("decodes").message,
            Delivery::Gap { after_id, next_id } => format!("gap {after_id}..{next_id}"),
        }
    }

    #[tokio::test]
    async fn publish_stores_stamps_and_reaches_every_subscriber_once() {
        let hub = Hub::in_memory(8).expect("hub");
        let general = hub.room("general").expect("general");
        let (mut a, mut b) = (
            hub.subscribe(&general, Start::Live, None),
            hub.subscribe(&general, Start::Live, None),
        );
        assert_eq!(hub.subscriber_count(), 2);
        let sent = hub.publish(&general, text("hi")).await.expect("stored");
        assert_eq!(sent.id, 1);
        assert!(sent.timestamp > 1_600_000_000_000);
        let mut pointers = Vec::new();
        for sub in [&mut a, &mut b] {
            let Ok(Delivery::Entry(got)) = sub.recv().await else {
                panic!("expected the message");
            };
            assert_eq!(got.decode().expect("decodes"), sent);
            pointers.push(Arc::as_ptr(&got));
        }
        assert_eq!(pointers[0], pointers[1], "shared, not copied");
        drop(a);
        assert_eq!(hub.subscriber_count(), 1);
    }

    #[tokio::test]
    async fn a_reader_that_falls_a_ring_behind_catches_up_from_the_store() {
        let hub = Hub::in_memory(4).expect("hub");
        let general = hub.room("general").expect("general");
        let mut slow = hub.subscribe(&general, Start::Live, None);
        for i in 1..=20 {
            hub.publish(&general, text(&i.to_string()))
                .await
                .expect("stored");
        }
        for i in 1..=20 {
            assert_eq!(next_text(&mut slow).await, i.to_string());
        }
    }

    #[tokio::test]
    async fn a_receive_cancelled_while_waiting_or_reading_loses_nothing() {
        let hub = Hub::in_memory(4).expect("hub");
        let general = hub.room("general").expect("general");
        let mut sub = hub.subscribe(&general, Start::Live, None);
        let publisher = {
            let hub = hub.clone();
            tokio::spawn(async move {
                for i in 1..=60 {
                    hub.publish(&general, text(&i.to_string()))
                        .await
                        .expect("stored");
                    if i % 7 == 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
                    }
                }
            })
        };
        let mut got = Vec::new();
        let mut turn = 0u64;
        while got.len() < 60 {
            turn += 1;
            // A timer that often wins: the receive is dropped mid-wait or
            // mid-fetch from the store, as a select! in a stream does.
            let patience = std::time::Duration::from_micros(50 * (turn % 5));
            tokio::select! {
                delivery = sub.recv() => match delivery.expect("open") {
                    Delivery::Entry(relayed) => got.push(relayed.id()),
                    Delivery::Gap { .. } => panic!("live subscriptions report no gaps"),
                },
                () = tokio::time::sleep(patience) => {}
            }
        }
        publisher.await.expect("published");
        assert_eq!(got, (1..=60).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn history_then_live_and_after_an_id() {
        let hub = Hub::open(
            Location::Memory,
            Retention::Count(100),
            Buffer::messages(16),
            3,
            Metrics::new(),
        )
        .expect("hub");
        let general = hub.room("general").expect("general");
        for i in 1..=5 {
            hub.publish(&general, text(&i.to_string()))
                .await
                .expect("stored");
        }
        let start = hub.recent(&general).await.expect("recent");
        assert_eq!(start, Start::Since(2));
        let mut recent = hub.subscribe(&general, start, None);
        let mut after = hub.subscribe(&general, Start::After(1), None);
        hub.publish(&general, text("6")).await.expect("stored");
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
        let general = hub.room("general").expect("general");
        let me = hub.new_origin();
        let mut mine = hub.subscribe(&general, Start::Live, Some(me));
        let failure = Arc::new(tokio::sync::watch::Sender::new(None));
        hub.publish_from(&general, me, text("mine"), &failure)
            .await
            .expect("queued");
        hub.publish(&general, text("theirs")).await.expect("stored");
        assert_eq!(next_text(&mut mine).await, "theirs");
    }

    #[tokio::test]
    async fn shutdown_ends_subscriptions_old_and_new() {
        let hub = Hub::in_memory(4).expect("hub");
        let general = hub.room("general").expect("general");
        let mut old = hub.subscribe(&general, Start::Live, None);
        hub.shut_down();
        let mut new = hub.subscribe(&general, Start::Live, None);
        for sub in [&mut old, &mut new] {
            assert!(matches!(sub.recv().await, Err(Closed::ShuttingDown)));
            assert!(matches!(sub.recv().await, Err(Closed::ShuttingDown)));
        }
    }
}
