//! The fan-out at the centre of the chat: every message is stored, then goes
//! through one [`Hub`] to every connected client, in id order.
//!
//! Live delivery is one bounded [`Ring`] of the newest messages: the store's
//! writer puts each committed batch in at once and wakes the subscribers
//! once, and each message is encoded once and shared by reference
//! ([`Relayed`]), so publishing costs the same however many clients
//! listen and a subscriber pays one wake-up per batch, not per message.
//! The [`Store`] is the other half: history for new subscribers, and the
//! way back for a subscriber that fell a full ring behind. Such a reader is
//! not cut off and loses nothing: it reads what it missed from the store by
//! id, then goes on from the ring. Ids come without holes, so a
//! [`Subscription`] always knows which id comes next.
//!
//! Each room is its own such log: its own ids, its own ring, its own
//! subscribers (a room's name is looked up once, when a stream starts or a
//! message arrives, and the [`Room`] handle is kept).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use chat_proto::ChatMessage;
use thiserror::Error;

use crate::log::RoomLog;
use crate::metrics::Metrics;
use crate::people::presence::Presence;
use crate::ring::{Ring, Taken};
use crate::store::{
    Committed, Location, OnCommit, Retention, RoomId, RoomRow, Store, StoreError, Stored,
    StreamFailure,
};
use crate::wire::Relayed;

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
/// Messages read from the store at a time while catching up (pages are
/// also bounded in bytes: [`crate::store::PAGE_BYTES`]).
const PAGE: usize = 512;
/// How long a subscription asks again for a history page that a shared
/// log could not read whole ([`StoreError::Incomplete`]) before its stream
/// ends with `UNAVAILABLE` (the client resumes, maybe on another replica).
const READ_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);
/// Messages a subscriber takes from the ring under one lock, and the bytes
/// they may take: what a stuck stream keeps alive of messages the ring has
/// since let go is bounded like a page read from the store.
const TAKE: (usize, usize) = (256, crate::store::PAGE_BYTES);

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

fn relayed(stored: Stored) -> Arc<Relayed> {
    Arc::new(Relayed::new(&stored.message, stored.origin))
}

/// One room: its newest messages for delivery, and its newest id.
#[derive(Debug)]
pub struct Room {
    id: RoomId,
    name: Arc<str>,
    topic: String,
    ring: Ring,
    /// The store's count: moved before a batch reaches the ring.
    last_id: Arc<AtomicU64>,
    /// Who is here and who is typing, in this room.
    presence: Arc<Presence>,
}

impl Room {
    pub fn name(&self) -> &str {
        &self.name
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
}

/// Every room, by name and by number.
#[derive(Debug, Default)]
struct Rooms {
    by_name: HashMap<Arc<str>, Arc<Room>>,
    by_id: HashMap<RoomId, Arc<Room>>,
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
    ) -> Result<Self, StoreError> {
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
        open: impl FnOnce(OnCommit, Metrics) -> Result<Arc<dyn RoomLog>, StoreError>,
        buffer: Buffer,
        history: u32,
        metrics: Metrics,
    ) -> Result<Self, StoreError> {
        let rooms = Arc::new(RwLock::new(Rooms::default()));
        let committed = Arc::clone(&rooms);
        let log = open(
            // Encoded here, on the log's thread, once for every subscriber.
            Box::new(move |batch: Committed| {
                let room = read(&committed).by_id.get(&batch.room).cloned();
                if let Some(room) = room {
                    let messages = batch.messages.into_iter().map(relayed).collect();
                    room.ring.put(messages, batch.oldest_kept);
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
        read(&self.inner.rooms).by_name.get(name).cloned()
    }

    /// The room called `name`, also if another replica created it since
    /// this one started.
    pub async fn find_room(&self, name: &str) -> Result<Option<Arc<Room>>, StoreError> {
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
    pub async fn refresh_rooms(&self) -> Result<(), StoreError> {
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
    pub async fn catch_up(&self, room: &Room, id: u64) -> Result<(), StoreError> {
        if room.last_id() >= id {
            return Ok(());
        }
        let target = id.min(self.inner.log.newest(room.id).await?);
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
            for room in read(&self.inner.rooms).by_id.values() {
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
        let mut rooms: Vec<_> = read(&self.inner.rooms).by_name.values().cloned().collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    pub fn room_count(&self) -> usize {
        read(&self.inner.rooms).by_name.len()
    }

    /// Opens a new room (`StoreError::RoomExists` if there is one by that
    /// name).
    pub async fn create_room(&self, name: &str, topic: &str) -> Result<Arc<Room>, StoreError> {
        let row = self.inner.log.create_room(name, topic).await?;
        Ok(self.inner.add_room(row))
    }

    /// An in-memory hub with a ring of `buffer` messages, for tests.
    pub fn in_memory(buffer: u32) -> Result<Self, StoreError> {
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
            Start::Recent => (newest.saturating_sub(self.inner.history), false),
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

    /// Stores `message` in `room` (stamped with the server's time, the
    /// room's next id and its name) and broadcasts it; returns once it is
    /// durably stored.
    pub async fn publish(
        &self,
        room: &Room,
        message: ChatMessage,
    ) -> Result<ChatMessage, StoreError> {
        let message = ChatMessage {
            room: room.name.to_string(),
            ..message
        };
        self.inner.log.append(room.id, message).await
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
    ) -> Result<(), StoreError> {
        let message = ChatMessage {
            room: room.name.to_string(),
            ..message
        };
        self.inner
            .log
            .append_from(room.id, origin.0, message, failure)
            .await
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Read connections the store has open (see [`crate::store::MAX_READERS`]).
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
            for room in read(&self.inner.rooms).by_id.values() {
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

    fn add_room(&self, row: RoomRow) -> Arc<Room> {
        let last_id = self
            .log
            .last_id(row.id)
            .unwrap_or_else(|| Arc::new(AtomicU64::new(row.last_id)));
        let room = Arc::new(Room {
            id: row.id,
            name: row.name.into(),
            topic: row.topic,
            ring: Ring::new(
                usize::try_from(self.buffer.messages.max(1)).unwrap_or(usize::MAX),
                usize::try_from(self.buffer.mib)
                    .unwrap_or(usize::MAX)
                    .saturating_mul(1 << 20),
            ),
            last_id,
            presence: Presence::new(),
        });
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        // Two streams may have looked the same new room up at once.
        if let Some(known) = rooms.by_name.get(&room.name) {
            return Arc::clone(known);
        }
        rooms
            .by_name
            .insert(Arc::clone(&room.name), Arc::clone(&room));
        rooms.by_id.insert(room.id, Arc::clone(&room));
        drop(rooms);
        if let Some(RoomHook(on_room)) = self.on_room.get() {
            on_room(&room);
        }
        room
    }
}

/// The rooms, for reading: a poisoned lock only means a panic elsewhere
/// while the maps were whole.
fn read(rooms: &RwLock<Rooms>) -> std::sync::RwLockReadGuard<'_, Rooms> {
    rooms.read().unwrap_or_else(|e| e.into_inner())
}

/// One client's place in the hub: delivers every message after its start,
/// in id order, exactly once.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Inner>,
    room: Arc<Room>,
    own: Option<Origin>,
    /// The highest id delivered (or skipped as the client's own).
    delivered: u64,
    /// Ids up to here may have to be read from the store.
    fetch_upto: u64,
    /// Taken from the ring or the store, not yet delivered.
    backlog: VecDeque<Arc<Relayed>>,
    report_gaps: bool,
    pending_gap: Option<(u64, u64)>,
    newest_at_start: u64,
    /// When the history read first came back incomplete (kept across
    /// cancelled receives, so the patience is the subscription's).
    incomplete_since: Option<tokio::time::Instant>,
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
        Some(Delivery::Message(relayed))
    }

    /// Reads the next page of ids up to `fetch_upto` from the store.
    async fn fetch(&mut self) -> Result<(), Closed> {
        let page = loop {
            let read = self
                .hub
                .log
                .range(self.room.id, self.delivered, self.fetch_upto, PAGE)
                .await;
            match read {
                Ok(page) => {
                    self.incomplete_since = None;
                    break page;
                }
                Err(StoreError::Incomplete(why)) => {
                    let since = *self
                        .incomplete_since
                        .get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= READ_PATIENCE {
                        self.incomplete_since = None;
                        return Err(Closed::Store(StoreError::Unavailable(format!(
                            "this replica cannot read the room's complete history yet ({why}); try again"
                        ))));
                    }
                    tracing::debug!(room = %self.room.name, %why, "history page incomplete; asking again");
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
        if first.message.id > self.delivered + 1 {
            self.skip_to(first.message.id);
        }
        let room = &self.room.name;
        self.backlog.extend(page.into_iter().map(|mut stored| {
            stored.message.room = room.to_string();
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
            Delivery::Message(relayed) => relayed.decode().expect("decodes").message,
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
            let Ok(Delivery::Message(got)) = sub.recv().await else {
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
                    Delivery::Message(relayed) => got.push(relayed.id()),
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
        let mut recent = hub.subscribe(&general, Start::Recent, None);
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
