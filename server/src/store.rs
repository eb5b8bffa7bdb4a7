//! Durable history: every message is stored in SQLite before anyone sees it.
//!
//! One writer thread owns the write connection. It takes every message
//! waiting in its queue, gives each the next id, writes them all in one
//! transaction (group commit: one fsync per batch, however many senders),
//! and only then hands the batch to the hub to broadcast and acknowledges
//! the senders. So an acknowledged message is on disk, ids follow each
//! other without holes in the order everyone receives them, and a reader
//! that finds an id in the store knows every smaller one is there too
//! (unless retention removed it). Each room has its own ids (from 1, without
//! holes); one batch carries messages for any number of rooms, so a busy
//! server still pays one fsync per batch. Readers (history, catch-up) run on their
//! own connections, which WAL lets proceed alongside the writer: at most
//! [`MAX_READERS`] of them (more readers queue for one), each closed after
//! [`READER_IDLE`] unused, and each read returns a page bounded in bytes as
//! well as in messages, so no reader holds more than [`PAGE_BYTES`] of
//! history at a time however large the messages are.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chat_proto::ChatMessage;
use futures_util::future::BoxFuture;
use rusqlite::{Connection, OpenFlags, params};
use thiserror::Error;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tracing::{debug, error, info};

use crate::metrics::Metrics;

/// Messages a single transaction may carry.
const MAX_BATCH: usize = 1024;
/// Messages that may wait for the writer before senders are slowed down.
pub const QUEUE: usize = 8192;
/// How often retention runs at most.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// Read connections open at most; further readers wait for one.
pub const MAX_READERS: usize = 4;
/// A read connection unused this long is closed.
pub const READER_IDLE: Duration = Duration::from_secs(30);
/// Text (names, messages, nonces) one read returns at most, beyond its first
/// message: 16 of the largest messages.
pub const PAGE_BYTES: usize = 64 * 1024;

/// Schema changes, applied in order at start-up; `PRAGMA user_version`
/// records how many have run. Only ever append.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE messages (
        id        INTEGER PRIMARY KEY,
        username  TEXT    NOT NULL,
        message   TEXT    NOT NULL,
        timestamp INTEGER NOT NULL,
        nonce     TEXT    NOT NULL DEFAULT '',
        origin    INTEGER
    );
    -- The highest id ever given, kept even if retention deletes every row,
    -- so ids are never reused.
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (key, value) VALUES ('last_id', 0);
",
    "
    -- Rooms: every message belongs to one, and ids are per room. What was
    -- there before rooms moves into general, ids unchanged.
    CREATE TABLE rooms (
        id      INTEGER PRIMARY KEY,
        name    TEXT    NOT NULL UNIQUE,
        topic   TEXT    NOT NULL DEFAULT '',
        created INTEGER NOT NULL,
        -- The highest id ever given in the room, kept even if retention
        -- deletes every row, so ids are never reused.
        last_id INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO rooms (id, name, topic, created, last_id)
        SELECT 1, 'general', '', 0, value FROM meta WHERE key = 'last_id';
    CREATE TABLE room_messages (
        room      INTEGER NOT NULL REFERENCES rooms (id),
        id        INTEGER NOT NULL,
        username  TEXT    NOT NULL,
        message   TEXT    NOT NULL,
        timestamp INTEGER NOT NULL,
        nonce     TEXT    NOT NULL DEFAULT '',
        origin    INTEGER,
        PRIMARY KEY (room, id)
    ) WITHOUT ROWID;
    INSERT INTO room_messages (room, id, username, message, timestamp, nonce, origin)
        SELECT 1, id, username, message, timestamp, nonce, origin FROM messages;
    DROP TABLE messages;
    ALTER TABLE room_messages RENAME TO messages;
    DROP TABLE meta;
",
];

/// A room's number in the database.
pub type RoomId = i64;

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    pub id: RoomId,
    pub name: String,
    pub topic: String,
    /// The newest id given in the room (0 if none yet).
    pub last_id: u64,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "the database was written by a newer version (schema {found}, this build knows {known})"
    )]
    TooNew { found: usize, known: usize },
    #[error("could not store the message: {0}")]
    Write(String),
    #[error("could not start the store's writer thread: {0}")]
    Thread(std::io::Error),
    #[error("the message store has stopped")]
    Stopped,
    #[error("a database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the room {0} exists already")]
    RoomExists(String),
    /// A shared log (NATS) cannot be reached; the write was not made.
    #[error("the message log is unavailable: {0}")]
    Unavailable(String),
    /// A read came back with a hole or short (the copy that served it is
    /// behind the log's leader): nothing of it is served, and it may be
    /// asked again.
    #[error("the message log could not be read whole yet: {0}")]
    Incomplete(String),
}

/// Milliseconds since the Unix epoch: the clock messages are stamped with.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    /// Nothing survives the process (`--db :memory:`).
    Memory,
}

impl FromStr for Location {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == ":memory:" {
            Self::Memory
        } else {
            Self::File(PathBuf::from(s))
        })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Memory => f.write_str(":memory:"),
        }
    }
}

/// How much history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// The newest N messages.
    Count(u64),
    /// Messages younger than this.
    Age(Duration),
}

impl FromStr for Retention {
    type Err = String;
    /// `100000` (messages) or an age: `90s`, `30m`, `12h`, `30d`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || {
            format!(
                "`{s}` is neither a message count (like 100000) nor an age (like 30d, 12h, 30m, 90s)"
            )
        };
        if let Ok(count) = s.parse::<u64>() {
            return if count == 0 {
                Err("retention must keep at least 1 message".into())
            } else {
                Ok(Self::Count(count))
            };
        }
        let split = s.len().checked_sub(1).ok_or_else(bad)?;
        let (number, unit) = s.split_at(split);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        match number.checked_mul(seconds) {
            Some(secs) if secs > 0 => Ok(Self::Age(Duration::from_secs(secs))),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Age(age) => write!(f, "{}s", age.as_secs()),
        }
    }
}

/// A stored message: `message.id` is set, `origin` is the connection it came
/// from (see [`crate::hub::Origin`]), if it came over `ChatStream`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub origin: Option<u64>,
    pub message: ChatMessage,
}

/// Called by the writer with each committed batch, in id order, before the
/// senders are acknowledged.
pub type OnCommit = Box<dyn Fn(Committed) + Send>;

/// A room's part of a committed batch, as the writer hands it on.
#[derive(Debug)]
pub struct Committed {
    pub room: RoomId,
    pub messages: Vec<Stored>,
    /// If retention ran with this batch: the oldest id still stored, so
    /// copies of older messages held elsewhere can be let go too.
    pub oldest_kept: Option<u64>,
}

/// Where a `ChatStream` learns that a message it queued could not be
/// stored: the writer puts the reason here.
pub type StreamFailure = Arc<watch::Sender<Option<String>>>;

/// Who hears how storing a message went.
enum Ack {
    /// A unary `Send`, waiting for its id.
    Reply(oneshot::Sender<Result<ChatMessage, String>>),
    /// A `ChatStream`, which does not wait but must hear of a failure.
    Stream(StreamFailure),
}

struct Pending {
    room: RoomId,
    origin: Option<u64>,
    message: ChatMessage,
    ack: Ack,
}

/// What the writer is asked to do.
enum Job {
    Store(Pending),
    CreateRoom {
        name: String,
        topic: String,
        reply: oneshot::Sender<Result<RoomRow, StoreError>>,
    },
}

/// Each room's newest id, as the writer commits them.
type LastIds = Arc<RwLock<HashMap<RoomId, Arc<AtomicU64>>>>;

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    queue: mpsc::Sender<Job>,
    readers: Arc<Readers>,
    last_ids: LastIds,
    /// The rooms as they were when the store opened.
    rooms_at_open: Arc<Vec<RoomRow>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.readers.location)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating and migrating as needed) the database and starts the
    /// writer thread, which calls `on_commit` with every committed batch.
    pub fn open(
        location: Location,
        retention: Retention,
        metrics: Metrics,
        on_commit: OnCommit,
    ) -> Result<Self, StoreError> {
        let readers = Arc::new(Readers::new(location, metrics.clone()));
        let mut connection = readers.open(false)?;
        migrate(&mut connection)?;
        let rooms = read_rooms(&connection)?;
        let last_timestamp: i64 = connection.query_row(
            "SELECT coalesce(max(timestamp), 0) FROM messages",
            [],
            |row| row.get(0),
        )?;
        info!(db = %readers.location, rooms = rooms.len(), "message store open");
        let last_ids: LastIds = Arc::new(RwLock::new(
            rooms
                .iter()
                .map(|r| (r.id, Arc::new(AtomicU64::new(r.last_id))))
                .collect(),
        ));
        let (queue, inbox) = mpsc::channel(QUEUE);
        let writer = Writer {
            connection,
            retention,
            last_ids: Arc::clone(&last_ids),
            next_ids: rooms.iter().map(|r| (r.id, r.last_id)).collect(),
            last_timestamp,
            on_commit,
            pruned_at: None,
            metrics,
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(inbox))
            .map_err(StoreError::Thread)?;
        Readers::close_idle_ones(&readers);
        Ok(Self {
            queue,
            readers,
            last_ids,
            rooms_at_open: Arc::new(rooms),
        })
    }

    /// The rooms there were when the store opened, by id.
    pub fn rooms_at_open(&self) -> &[RoomRow] {
        &self.rooms_at_open
    }

    /// The newest committed id in `room`, live: the writer moves it before
    /// it hands the batch on. Everything up to it is stored (or pruned) and
    /// has been, or is being, broadcast.
    pub fn last_id(&self, room: RoomId) -> Option<Arc<AtomicU64>> {
        let ids = self.last_ids.read().unwrap_or_else(|e| e.into_inner());
        ids.get(&room).cloned()
    }

    /// Creates a room (after every message queued before it).
    pub async fn create_room(&self, name: &str, topic: &str) -> Result<RoomRow, StoreError> {
        let (reply, replied) = oneshot::channel();
        self.queue
            .send(Job::CreateRoom {
                name: name.to_owned(),
                topic: topic.to_owned(),
                reply,
            })
            .await
            .map_err(|_| StoreError::Stopped)?;
        replied.await.map_err(|_| StoreError::Stopped)?
    }

    /// Stores `message` in `room` and returns it with its id and timestamp
    /// once it is committed.
    pub async fn append(
        &self,
        room: RoomId,
        message: ChatMessage,
    ) -> Result<ChatMessage, StoreError> {
        let (ack, acked) = oneshot::channel();
        self.enqueue(room, None, message, Ack::Reply(ack)).await?;
        match acked.await {
            Ok(Ok(stored)) => Ok(stored),
            Ok(Err(reason)) => Err(StoreError::Write(reason)),
            Err(_) => Err(StoreError::Stopped),
        }
    }

    /// Queues `message` from connection `origin` without waiting for it to be
    /// committed; waits only while the writer's queue is full, which slows a
    /// sender down to what the store can take. If it cannot be stored, the
    /// reason goes to `failure`.
    pub async fn append_from(
        &self,
        room: RoomId,
        origin: u64,
        message: ChatMessage,
        failure: &StreamFailure,
    ) -> Result<(), StoreError> {
        self.enqueue(
            room,
            Some(origin),
            message,
            Ack::Stream(Arc::clone(failure)),
        )
        .await
    }

    async fn enqueue(
        &self,
        room: RoomId,
        origin: Option<u64>,
        message: ChatMessage,
        ack: Ack,
    ) -> Result<(), StoreError> {
        self.queue
            .send(Job::Store(Pending {
                room,
                origin,
                message,
                ack,
            }))
            .await
            .map_err(|_| StoreError::Stopped)?;
        self.readers
            .metrics
            .store_queue(QUEUE - self.queue.capacity());
        Ok(())
    }

    /// Stored messages of `room` with `after < id <= upto`, oldest first:
    /// at most `limit` of them, and no more text than [`PAGE_BYTES`] after
    /// the first. Waits for a free read connection if all [`MAX_READERS`]
    /// are busy. The messages' `room` is left empty.
    pub async fn range(
        &self,
        room: RoomId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        if upto <= after || limit == 0 {
            return Ok(Vec::new());
        }
        let permit = Arc::clone(&self.readers.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Stopped)?;
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            readers.range(room, after, upto, limit)
        })
        .await?
    }

    /// Read connections open right now (for tests and metrics).
    pub fn open_readers(&self) -> usize {
        self.readers.open.load(Ordering::SeqCst)
    }
}

/// The embedded log: every room in one SQLite database, written by this
/// process alone, so the hub knows every room and every id as it is made.
impl crate::log::RoomLog for Store {
    fn rooms_at_open(&self) -> Vec<RoomRow> {
        self.rooms_at_open.to_vec()
    }

    fn find_room(&self, _name: &str) -> BoxFuture<'_, Result<Option<RoomRow>, StoreError>> {
        // Rooms are only created through this process: the hub has them all.
        Box::pin(async { Ok(None) })
    }

    fn list_rooms(&self) -> BoxFuture<'_, Result<Vec<RoomRow>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn last_id(&self, room: RoomId) -> Option<Arc<AtomicU64>> {
        Store::last_id(self, room)
    }

    fn newest(&self, room: RoomId) -> BoxFuture<'_, Result<u64, StoreError>> {
        let newest = Store::last_id(self, room).map_or(0, |id| id.load(Ordering::SeqCst));
        Box::pin(async move { Ok(newest) })
    }

    fn create_room<'a>(
        &'a self,
        name: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<RoomRow, StoreError>> {
        Box::pin(Store::create_room(self, name, topic))
    }

    fn append(
        &self,
        room: RoomId,
        message: ChatMessage,
    ) -> BoxFuture<'_, Result<ChatMessage, StoreError>> {
        Box::pin(Store::append(self, room, message))
    }

    fn append_from<'a>(
        &'a self,
        room: RoomId,
        origin: u64,
        message: ChatMessage,
        failure: &'a StreamFailure,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Store::append_from(self, room, origin, message, failure))
    }

    fn range(
        &self,
        room: RoomId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>> {
        Box::pin(Store::range(self, room, after, upto, limit))
    }

    fn open_readers(&self) -> usize {
        Store::open_readers(self)
    }
}

/// Read connections, opened on demand, reused, and closed when idle.
struct Readers {
    location: Location,
    /// A `:memory:` database shared by this process's connections.
    memory_name: String,
    /// Unused connections, each with when it was last used.
    idle: Mutex<Vec<(Connection, Instant)>>,
    /// One per connection that may be open.
    permits: Arc<Semaphore>,
    /// Connections open, idle or in use.
    open: AtomicUsize,
    metrics: Metrics,
}

impl Readers {
    fn new(location: Location, metrics: Metrics) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let memory_name = format!(
            "file:/chat-{}-{}?vfs=memdb",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self {
            location,
            memory_name,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(MAX_READERS)),
            open: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Closes connections unused for [`READER_IDLE`], now and every few
    /// seconds for as long as the store exists (needs a tokio runtime;
    /// without one, idle connections are closed as readers come and go).
    fn close_idle_ones(readers: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let readers = Arc::downgrade(readers);
        runtime.spawn(async move {
            let mut every = tokio::time::interval(READER_IDLE / 4);
            loop {
                every.tick().await;
                let Some(readers) = readers.upgrade() else {
                    return;
                };
                readers.prune_idle();
            }
        });
    }

    fn prune_idle(&self) {
        let closed = match self.idle.lock() {
            Ok(mut idle) => {
                let before = idle.len();
                idle.retain(|(_, since)| since.elapsed() < READER_IDLE);
                before - idle.len()
            }
            Err(_) => 0,
        };
        if closed > 0 {
            debug!(closed, "closed idle database readers");
            let open = self.open.fetch_sub(closed, Ordering::SeqCst) - closed;
            self.metrics.store_readers(open);
        }
    }

    fn open(&self, read_only: bool) -> Result<Connection, StoreError> {
        let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        flags |= if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        };
        let connection = match &self.location {
            Location::File(path) => {
                let c = Connection::open_with_flags(path, flags)?;
                if !read_only {
                    c.pragma_update(None, "journal_mode", "WAL")?;
                }
                c
            }
            Location::Memory => Connection::open_with_flags(&self.memory_name, flags)?,
        };
        // An acknowledged message must survive a crash or power loss: fsync
        // on every commit (one per batch, so it stays cheap).
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.busy_timeout(Duration::from_secs(5))?;
        Ok(connection)
    }

    /// Called holding a permit, so at most [`MAX_READERS`] connections exist.
    fn range(
        &self,
        room: RoomId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let connection = match idle {
            Some((c, _)) => c,
            None => {
                let c = self.open(true)?;
                let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
                self.metrics.store_readers(open);
                c
            }
        };
        let rows = read_range(&connection, room, after, upto, limit);
        if let Ok(mut idle) = self.idle.lock() {
            idle.push((connection, Instant::now()));
        }
        self.prune_idle();
        rows
    }
}

fn read_rooms(connection: &Connection) -> Result<Vec<RoomRow>, StoreError> {
    let mut statement =
        connection.prepare("SELECT id, name, topic, last_id FROM rooms ORDER BY id")?;
    let rows = statement.query_map([], |row| {
        Ok(RoomRow {
            id: row.get(0)?,
            name: row.get(1)?,
            topic: row.get(2)?,
            last_id: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn read_range(
    connection: &Connection,
    room: RoomId,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<Stored>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT id, username, message, timestamp, nonce, origin FROM messages
         WHERE room = ?1 AND id > ?2 AND id <= ?3 ORDER BY id LIMIT ?4",
    )?;
    let rows = statement.query_map(
        params![room, after, upto, i64::try_from(limit).unwrap_or(i64::MAX)],
        |row| {
            Ok(Stored {
                message: ChatMessage {
                    id: row.get(0)?,
                    username: row.get(1)?,
                    message: row.get(2)?,
                    timestamp: row.get(3)?,
                    nonce: row.get(4)?,
                    room: String::new(),
                },
                origin: row.get(5)?,
            })
        },
    )?;
    // Stepping stops at the byte budget: later rows are never read.
    let mut page = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let stored = row?;
        if !page.is_empty() && bytes >= PAGE_BYTES {
            break;
        }
        let m = &stored.message;
        bytes += m.username.len() + m.message.len() + m.nonce.len();
        page.push(stored);
    }
    Ok(page)
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let version: usize = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(sql)?;
        transaction.pragma_update(None, "user_version", index + 1)?;
        transaction.commit()?;
        info!(schema = index + 1, "database migrated");
    }
    Ok(())
}

struct Writer {
    connection: Connection,
    retention: Retention,
    /// Each room's newest committed id, for everyone else.
    last_ids: LastIds,
    /// Each room's newest id given, for the writer (ahead of `last_ids`
    /// only inside a commit).
    next_ids: HashMap<RoomId, u64>,
    /// Timestamps never go backwards, even if the clock does, so that age
    /// retention can delete a prefix of ids.
    last_timestamp: i64,
    on_commit: OnCommit,
    pruned_at: Option<Instant>,
    metrics: Metrics,
}

impl Writer {
    fn run(mut self, mut inbox: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // Ends when every Store handle is gone.
        while let Some(first) = inbox.blocking_recv() {
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Store(pending) => batch.push(pending),
                    // After what came before it, so ids stay in queue order.
                    Job::CreateRoom { name, topic, reply } => {
                        self.commit(&mut batch);
                        let _ = reply.send(self.create_room(&name, &topic));
                    }
                }
                if batch.len() < MAX_BATCH {
                    next = inbox.try_recv().ok();
                }
            }
            self.metrics.store_queue(inbox.len());
            self.commit(&mut batch);
        }
        debug!("store writer stopped");
    }

    fn create_room(&mut self, name: &str, topic: &str) -> Result<RoomRow, StoreError> {
        let inserted = self.connection.execute(
            "INSERT INTO rooms (name, topic, created) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO NOTHING",
            params![name, topic, now_millis()],
        )?;
        if inserted == 0 {
            return Err(StoreError::RoomExists(name.to_owned()));
        }
        let id = self.connection.last_insert_rowid();
        self.next_ids.insert(id, 0);
        self.last_ids
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::new(AtomicU64::new(0)));
        Ok(RoomRow {
            id,
            name: name.to_owned(),
            topic: topic.to_owned(),
            last_id: 0,
        })
    }

    /// The id each message of `batch` gets, in order: the next of its room.
    fn number(&self, batch: &[Pending]) -> Vec<u64> {
        let mut next = HashMap::new();
        batch
            .iter()
            .map(|pending| {
                let id = next
                    .entry(pending.room)
                    .or_insert_with(|| self.next_ids.get(&pending.room).copied().unwrap_or(0));
                *id += 1;
                *id
            })
            .collect()
    }

    fn commit(&mut self, batch: &mut Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let ids = self.number(batch);
        let timestamp = now_millis().max(self.last_timestamp);
        let started = Instant::now();
        match self.write(batch, &ids, timestamp) {
            Ok(oldest_kept) => {
                self.metrics
                    .stored(batch.len() as u64, started.elapsed().as_secs_f64());
                self.last_timestamp = timestamp;
                // Per room, in the order rooms first appear in the batch.
                let mut rooms: Vec<Committed> = Vec::new();
                let mut acks = Vec::with_capacity(batch.len());
                for (pending, id) in batch.drain(..).zip(ids) {
                    self.next_ids.insert(pending.room, id);
                    let message = ChatMessage {
                        id,
                        timestamp,
                        ..pending.message
                    };
                    if let Ack::Reply(ack) = pending.ack {
                        acks.push((ack, message.clone()));
                    }
                    let stored = Stored {
                        origin: pending.origin,
                        message,
                    };
                    match rooms.iter_mut().find(|c| c.room == pending.room) {
                        Some(committed) => committed.messages.push(stored),
                        None => rooms.push(Committed {
                            room: pending.room,
                            messages: vec![stored],
                            oldest_kept: None,
                        }),
                    }
                }
                {
                    let last_ids = self.last_ids.read().unwrap_or_else(|e| e.into_inner());
                    for committed in &rooms {
                        if let (Some(last), Some(id)) = (
                            last_ids.get(&committed.room),
                            self.next_ids.get(&committed.room),
                        ) {
                            last.store(*id, Ordering::SeqCst);
                        }
                    }
                }
                for mut committed in rooms {
                    committed.oldest_kept = oldest_kept.get(&committed.room).copied();
                    (self.on_commit)(committed);
                }
                for (ack, message) in acks {
                    // The sender may have gone; its message is stored anyway.
                    let _ = ack.send(Ok(message));
                }
            }
            Err(err) => {
                error!(error = %err, messages = batch.len(), "could not store messages");
                let reason = err.to_string();
                for pending in batch.drain(..) {
                    match pending.ack {
                        Ack::Reply(ack) => {
                            let _ = ack.send(Err(reason.clone()));
                        }
                        Ack::Stream(failure) => {
                            failure.send_replace(Some(reason.clone()));
                        }
                    }
                }
            }
        }
    }

    /// Inserts the batch with `ids`; returns, for each room retention ran
    /// on, the oldest id still stored.
    fn write(
        &mut self,
        batch: &[Pending],
        ids: &[u64],
        timestamp: i64,
    ) -> Result<HashMap<RoomId, u64>, StoreError> {
        let prune = self.pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
        let mut oldest_kept = HashMap::new();
        let mut newest: HashMap<RoomId, u64> = HashMap::new();
        let transaction = self.connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO messages (room, id, username, message, timestamp, nonce, origin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (pending, &id) in batch.iter().zip(ids) {
                let m = &pending.message;
                insert.execute(params![
                    pending.room,
                    id,
                    m.username,
                    m.message,
                    timestamp,
                    m.nonce,
                    pending.origin
                ])?;
                newest.insert(pending.room, id);
            }
            let mut update =
                transaction.prepare_cached("UPDATE rooms SET last_id = ?2 WHERE id = ?1")?;
            for (&room, &last_id) in &newest {
                update.execute(params![room, last_id])?;
            }
            if prune {
                // Rooms written to now; with age retention every room, since
                // time passes for quiet ones too.
                let rooms: Vec<(RoomId, u64)> = match self.retention {
                    Retention::Count(_) => newest.into_iter().collect(),
                    Retention::Age(_) => self
                        .next_ids
                        .iter()
                        .map(|(&room, &last)| (room, newest.get(&room).copied().unwrap_or(last)))
                        .collect(),
                };
                for (room, last_id) in rooms {
                    oldest_kept.insert(
                        room,
                        prune_old(&transaction, self.retention, room, last_id)?,
                    );
                }
            }
        }
        transaction.commit()?;
        if prune {
            self.pruned_at = Some(Instant::now());
        }
        Ok(oldest_kept)
    }
}

/// Deletes what `retention` no longer keeps of `room` and returns the oldest
/// id kept there. Ids and timestamps both grow, so what goes is always a
/// prefix of the room's ids: a range delete on the key.
fn prune_old(
    connection: &Connection,
    retention: Retention,
    room: RoomId,
    last_id: u64,
) -> rusqlite::Result<u64> {
    let deleted = match retention {
        Retention::Count(keep) => connection
            .prepare_cached("DELETE FROM messages WHERE room = ?1 AND id <= ?2")?
            .execute(params![room, last_id.saturating_sub(keep)])?,
        Retention::Age(age) => {
            let cutoff =
                now_millis().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
            connection
                .prepare_cached(
                    "DELETE FROM messages WHERE room = ?1 AND id < coalesce(
                         (SELECT id FROM messages WHERE room = ?1 AND timestamp >= ?2
                          ORDER BY id LIMIT 1),
                         ?3)",
                )?
                .execute(params![room, cutoff, last_id + 1])?
        }
    };
    if deleted > 0 {
        debug!(deleted, room, "retention removed old messages");
    }
    connection
        .prepare_cached("SELECT coalesce(min(id), ?2) FROM messages WHERE room = ?1")?
        .query_row(params![room, last_id + 1], |row| row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> ChatMessage {
        ChatMessage {
            username: "ada".into(),
            message: text.into(),
            ..ChatMessage::default()
        }
    }

    #[tokio::test]
    async fn ids_continue_across_reopening_and_retention_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let location = Location::File(dir.path().join("chat.db"));
        // Room for all three, however slowly they commit (retention runs
        // again after a second).
        let store = Store::open(
            location.clone(),
            Retention::Count(3),
            Metrics::new(),
            Box::new(|_| {}),
        )
        .expect("open");
        for text in ["a", "b", "c"] {
            store.append(1, message(text)).await.expect("stored");
        }
        assert_eq!(store.last_id(1).expect("general").load(Ordering::SeqCst), 3);
        drop(store);

        let store = Store::open(
            location,
            Retention::Count(1),
            Metrics::new(),
            Box::new(|_| {}),
        )
        .expect("reopen");
        assert_eq!(store.last_id(1).expect("general").load(Ordering::SeqCst), 3);
        assert_eq!(store.range(1, 0, 3, 10).await.expect("read").len(), 3);
        assert_eq!(store.append(1, message("d")).await.expect("stored").id, 4);
        // The first commit after opening applies retention.
        let kept = store.range(1, 0, 4, 10).await.expect("read");
        let texts: Vec<_> = kept.iter().map(|s| s.message.message.as_str()).collect();
        assert_eq!(texts, ["d"]);
    }

    #[tokio::test]
    async fn age_retention_deletes_older_messages_at_most_once_a_second() {
        let store = Store::open(
            Location::Memory,
            Retention::Age(Duration::from_millis(300)),
            Metrics::new(),
            Box::new(|_| {}),
        )
        .expect("open");
        let texts = |page: Vec<Stored>| -> Vec<String> {
            page.into_iter().map(|s| s.message.message).collect()
        };
        store.append(1, message("old")).await.expect("stored");
        tokio::time::sleep(PRUNE_EVERY + Duration::from_millis(100)).await;
        // A second on, this commit prunes: "old" is past the age.
        store.append(1, message("new")).await.expect("stored");
        assert_eq!(
            texts(store.range(1, 0, 2, 10).await.expect("read")),
            ["new"]
        );
        // 0.4 s on, "new" is past the age too, but retention runs at most
        // once a second: it stays for now.
        tokio::time::sleep(Duration::from_millis(400)).await;
        store.append(1, message("newer")).await.expect("stored");
        assert_eq!(
            texts(store.range(1, 0, 3, 10).await.expect("read")),
            ["new", "newer"]
        );
    }

    #[test]
    fn every_connection_fsyncs_each_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let readers = Readers::new(Location::File(dir.path().join("chat.db")), Metrics::new());
        for read_only in [false, true] {
            let connection = readers.open(read_only).expect("open");
            let synchronous: i64 = connection
                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                .expect("pragma");
            assert_eq!(synchronous, 2, "FULL (read_only: {read_only})");
            if !read_only {
                let mode: String = connection
                    .query_row("PRAGMA journal_mode", [], |row| row.get(0))
                    .expect("pragma");
                assert_eq!(mode, "wal");
            }
        }
    }

    #[tokio::test]
    async fn readers_are_capped_and_idle_ones_are_closed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let location = Location::File(dir.path().join("chat.db"));
        let store = Store::open(
            location,
            Retention::Count(100),
            Metrics::new(),
            Box::new(|_| {}),
        )
        .expect("open");
        store.append(1, message("a")).await.expect("stored");
        let reads = (0..50).map(|_| store.range(1, 0, 1, 10));
        for page in futures_util::future::join_all(reads).await {
            assert_eq!(page.expect("read").len(), 1);
        }
        let open = store.open_readers();
        assert!((1..=MAX_READERS).contains(&open), "{open} readers");
        // Pretend they were last used long ago.
        let long_ago = Instant::now()
            .checked_sub(READER_IDLE + Duration::from_secs(1))
            .expect("an earlier instant");
        for (_, since) in store.readers.idle.lock().expect("lock").iter_mut() {
            *since = long_ago;
        }
        store.readers.prune_idle();
        assert_eq!(store.open_readers(), 0);
    }

    #[tokio::test]
    async fn pages_are_bounded_in_bytes() {
        let store = Store::open(
            Location::Memory,
            Retention::Count(100),
            Metrics::new(),
            Box::new(|_| {}),
        )
        .expect("open");
        let big = "x".repeat(4_000);
        for _ in 0..50 {
            store.append(1, message(&big)).await.expect("stored");
        }
        let page = store.range(1, 0, 50, 512).await.expect("read");
        let bytes: usize = page.iter().map(|s| s.message.message.len()).sum();
        assert!(
            !page.is_empty() && bytes <= PAGE_BYTES + 4_100,
            "{bytes} bytes"
        );
        assert!(page.len() < 50);
    }

    #[tokio::test]
    async fn a_database_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("chat.db");
        Connection::open(&path)
            .and_then(|c| c.pragma_update(None, "user_version", 99))
            .expect("prepare");
        let refused = Store::open(
            Location::File(path),
            Retention::Count(1),
            Metrics::new(),
            Box::new(|_| {}),
        );
        assert!(matches!(refused, Err(StoreError::TooNew { found: 99, .. })));
    }
}
