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
//!
//! Changes to earlier messages (edits, deletions, reactions) go through
//! the same writer and the same transactions: each is checked against its
//! message's row, stored with the room's next id, and folded into that row,
//! which always holds the message's current state ([`changes`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat_proto::ChatMessage;
use futures_util::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};
use tracing::info;

mod changes;
mod readers;
mod schema;
mod search;
mod writer;

use changes::{ENTRY_COLUMNS, entry};
use readers::{Readers, read_range, recent_messages};
use schema::{migrate, read_rooms};
use writer::{Ack, Job, Pending, PendingChange, Writer};

use super::{
    ChangeRequest, Changed, Entry, LogError, OnCommit, Retention, RoomId, RoomKey, RoomLog,
    RoomRow, Stored, StreamFailure,
};
use crate::metrics::Metrics;
use crate::search::{Find, Found, index};

/// Messages a single transaction may carry.
pub(super) const MAX_BATCH: usize = 1024;
/// Messages that may wait for the writer before senders are slowed down.
pub const QUEUE: usize = 8192;
/// How often retention runs at most.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// Read connections open at most; further readers wait for one.
pub const MAX_READERS: usize = 4;
/// A read connection unused this long is closed.
pub const READER_IDLE: Duration = Duration::from_secs(30);

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

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    queue: mpsc::Sender<Job>,
    readers: Arc<Readers>,
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
    ) -> Result<Self, LogError> {
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
        let to_index: Option<u64> = connection
            .query_row(
                "SELECT (SELECT count(*) FROM search_backfill)
                      + (SELECT count(*) FROM messages m JOIN search_backfill b
                         ON m.room = b.room AND m.id < b.below AND m.kind = 0)",
                [],
                |row| row.get(0),
            )
            .optional()?;
        let (queue, inbox) = mpsc::channel(QUEUE);
        let writer = Writer {
            connection,
            retention,
            next_ids: rooms.iter().map(|r| (r.id, r.last_id)).collect(),
            last_timestamp,
            on_commit,
            pruned_at: None,
            metrics,
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(inbox))
            .map_err(LogError::Thread)?;
        Readers::close_idle_ones(&readers);
        if let (Some(total), Ok(runtime)) = (to_index, tokio::runtime::Handle::try_current())
            && total > 0
        {
            runtime.spawn(search::backfill(queue.clone(), total));
        }
        Ok(Self {
            queue,
            readers,
            rooms_at_open: Arc::new(rooms),
        })
    }

    /// The rooms there were when the store opened, by id.
    pub fn rooms_at_open(&self) -> &[RoomRow] {
        &self.rooms_at_open
    }

    /// Creates a room (after every message queued before it).
    pub async fn create_room(&self, name: &str, topic: &str) -> Result<RoomRow, LogError> {
        let (reply, replied) = oneshot::channel();
        self.queue
            .send(Job::CreateRoom {
                name: name.to_owned(),
                topic: topic.to_owned(),
                reply,
            })
            .await
            .map_err(|_| LogError::Stopped)?;
        replied.await.map_err(|_| LogError::Stopped)?
    }

    /// Stores `message` in `room` and returns it with its id and timestamp
    /// once it is committed.
    pub async fn append(
        &self,
        room: RoomId,
        message: ChatMessage,
    ) -> Result<ChatMessage, LogError> {
        let (ack, acked) = oneshot::channel();
        self.enqueue(room, None, message, Ack::Reply(ack)).await?;
        match acked.await {
            Ok(Ok(stored)) => Ok(stored),
            Ok(Err(reason)) => Err(LogError::Write(reason)),
            Err(_) => Err(LogError::Stopped),
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
    ) -> Result<(), LogError> {
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
    ) -> Result<(), LogError> {
        // Folded here, on the sender's task, so the writer only inserts.
        let words = index::Words::of(&message.username, &message.message);
        self.queue
            .send(Job::Store(Pending {
                room,
                origin,
                message,
                words,
                ack,
            }))
            .await
            .map_err(|_| LogError::Stopped)?;
        self.readers
            .metrics
            .store_queue(QUEUE - self.queue.capacity());
        Ok(())
    }

    /// Checks `request` against its message and stores it, in order with
    /// every write queued before it; answers once it is committed.
    pub async fn change(&self, room: RoomId, request: ChangeRequest) -> Result<Changed, LogError> {
        let (reply, replied) = oneshot::channel();
        self.queue
            .send(Job::Change(PendingChange {
                room,
                request,
                reply,
            }))
            .await
            .map_err(|_| LogError::Stopped)?;
        replied.await.map_err(|_| LogError::Stopped)?
    }

    /// The ids of the newest `count` messages of `room`, oldest first.
    pub async fn recent_messages(&self, room: RoomId, count: u64) -> Result<Vec<u64>, LogError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        self.read(move |connection| recent_messages(connection, room, count))
            .await
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
    ) -> Result<Vec<Stored>, LogError> {
        if upto <= after || limit == 0 {
            return Ok(Vec::new());
        }
        self.read(move |connection| read_range(connection, room, after, upto, limit))
            .await
    }

    /// The newest id committed in `room` (0 for a room it does not have).
    pub async fn newest(&self, room: RoomId) -> Result<u64, LogError> {
        self.read(move |connection| {
            let newest: Option<u64> = connection
                .query_row("SELECT last_id FROM rooms WHERE id = ?1", [room], |row| {
                    row.get(0)
                })
                .optional()?;
            Ok(newest.unwrap_or(0))
        })
        .await
    }

    /// Runs `read` on a read connection, waiting for a free one if all
    /// [`MAX_READERS`] are busy.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let permit = Arc::clone(&self.readers.permits)
            .acquire_owned()
            .await
            .map_err(|_| LogError::Stopped)?;
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            readers.with_connection(read)
        })
        .await?
    }

    /// What the search index finds (see `crate::search`).
    pub async fn search(&self, find: &Find) -> Result<Vec<Found>, LogError> {
        let find = find.clone();
        // The hits' rows in the same read: one trip to a reader, not one
        // per hit.
        self.read(move |connection| {
            let mut found = index::find(connection, &find)?;
            let mut read = connection.prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM messages
                 WHERE room = (SELECT id FROM rooms WHERE name = ?1) AND id = ?2"
            ))?;
            for hit in &mut found {
                hit.message = match read
                    .query_row(params![hit.room, hit.id], entry)
                    .optional()?
                {
                    Some(Entry::Message(message)) => Some(message),
                    _ => None,
                };
            }
            Ok(found)
        })
        .await
    }

    /// Read connections open right now (for tests and metrics).
    pub fn open_readers(&self) -> usize {
        self.readers.open.load(Ordering::SeqCst)
    }
}

/// The embedded log: every room in one SQLite database, written by this
/// process alone, so the hub knows every room and every id as it is made.
impl RoomLog for Store {
    fn rooms_at_open(&self) -> Vec<RoomRow> {
        self.rooms_at_open.to_vec()
    }

    fn find_room(&self, _name: &str) -> BoxFuture<'_, Result<Option<RoomRow>, LogError>> {
        // Rooms are only created through this process: the hub has them all.
        Box::pin(async { Ok(None) })
    }

    fn list_rooms(&self) -> BoxFuture<'_, Result<Vec<RoomRow>, LogError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Every batch of every room reaches the hub as it is committed.
    fn follow(&self, _room: &RoomKey, _handed: Arc<AtomicU64>) {}

    fn newest<'a>(&'a self, room: &'a RoomKey) -> BoxFuture<'a, Result<u64, LogError>> {
        Box::pin(Store::newest(self, room.id))
    }

    fn create_room<'a>(
        &'a self,
        name: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<RoomRow, LogError>> {
        Box::pin(Store::create_room(self, name, topic))
    }

    fn append<'a>(
        &'a self,
        room: &'a RoomKey,
        message: ChatMessage,
    ) -> BoxFuture<'a, Result<ChatMessage, LogError>> {
        Box::pin(Store::append(self, room.id, message))
    }

    fn append_from<'a>(
        &'a self,
        room: &'a RoomKey,
        origin: u64,
        message: ChatMessage,
        failure: &'a StreamFailure,
    ) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(Store::append_from(self, room.id, origin, message, failure))
    }

    fn change<'a>(
        &'a self,
        room: &'a RoomKey,
        change: ChangeRequest,
    ) -> BoxFuture<'a, Result<Changed, LogError>> {
        Box::pin(Store::change(self, room.id, change))
    }

    fn recent_messages<'a>(
        &'a self,
        room: &'a RoomKey,
        count: u64,
    ) -> BoxFuture<'a, Result<Vec<u64>, LogError>> {
        Box::pin(Store::recent_messages(self, room.id, count))
    }

    fn range<'a>(
        &'a self,
        room: &'a RoomKey,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Stored>, LogError>> {
        Box::pin(Store::range(self, room.id, after, upto, limit))
    }

    fn search<'a>(&'a self, find: &'a Find) -> BoxFuture<'a, Result<Vec<Found>, LogError>> {
        Box::pin(Store::search(self, find))
    }

    fn open_readers(&self) -> usize {
        Store::open_readers(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use crate::log::{Entry, PAGE_BYTES};

    fn text_of(stored: &Stored) -> &str {
        match &stored.entry {
            Entry::Message(message) => &message.message,
            Entry::Change(change) => &change.message,
        }
    }

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
        assert_eq!(store.newest(1).await.expect("newest"), 3);
        drop(store);

        let store = Store::open(
            location,
            Retention::Count(1),
            Metrics::new(),
            Box::new(|_| {}),
        )
        .expect("reopen");
        assert_eq!(store.newest(1).await.expect("newest"), 3);
        assert_eq!(store.range(1, 0, 3, 10).await.expect("read").len(), 3);
        assert_eq!(store.append(1, message("d")).await.expect("stored").id, 4);
        // The first commit after opening applies retention.
        let kept = store.range(1, 0, 4, 10).await.expect("read");
        let texts: Vec<_> = kept.iter().map(text_of).collect();
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
            page.iter().map(|s| text_of(s).to_owned()).collect()
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
        let bytes: usize = page.iter().map(|s| text_of(s).len()).sum();
        assert!(
            !page.is_empty() && bytes <= PAGE_BYTES + 4_100,
            "{bytes} bytes"
        );
        assert!(page.len() < 50);
    }

    /// A connection to a fresh in-memory database with the schema.
    fn migrated() -> Connection {
        let readers = Readers::new(Location::Memory, Metrics::new());
        let mut connection = readers.open(false).expect("open");
        migrate(&mut connection).expect("migrate");
        connection
    }

    fn ids(connection: &Connection) -> Vec<u64> {
        let mut statement = connection
            .prepare("SELECT id FROM messages WHERE room = 1 ORDER BY id")
            .expect("prepare");
        statement
            .query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("ids")
    }

    #[test]
    fn retention_keeps_the_newest_messages_and_the_changes_go_with_theirs() {
        let connection = migrated();
        // 1, 2, 4 and 7 are messages; 3 changes 1, 5 changes 2, 6 changes 4.
        for (id, target) in [(1, 0), (2, 0), (3, 1), (4, 0), (5, 2), (6, 4), (7, 0)] {
            connection
                .execute(
                    "INSERT INTO messages (room, id, kind, target, username, message, timestamp)
                     VALUES (1, ?1, ?2, ?3, 'ada', 'x', 0)",
                    rusqlite::params![id, i32::from(target != 0), target],
                )
                .expect("insert");
        }
        let oldest = writer::prune_old(&connection, Retention::Count(2), 1, 7).expect("prune");
        assert_eq!(oldest, 4, "the newest 2 messages are 4 and 7");
        assert_eq!(ids(&connection), [4, 6, 7], "5 changed a message that went");
    }

    #[test]
    fn a_database_from_before_changes_is_migrated_with_its_messages() {
        let readers = Readers::new(Location::Memory, Metrics::new());
        let mut connection = readers.open(false).expect("open");
        for sql in schema::MIGRATIONS[..2].iter().copied().flatten() {
            connection.execute_batch(sql).expect("old schema");
        }
        connection
            .pragma_update(None, "user_version", 2)
            .expect("version");
        connection
            .execute_batch(
                "INSERT INTO messages (room, id, username, message, timestamp) VALUES (1, 1, 'ada', 'old', 5);
                 UPDATE rooms SET last_id = 1 WHERE id = 1;",
            )
            .expect("an old message");
        migrate(&mut connection).expect("migrate");
        let rooms = read_rooms(&connection).expect("rooms");
        assert_eq!((rooms[0].last_id, rooms[0].last_message_id), (1, 1));
        let page = read_range(&connection, 1, 0, 1, 10).expect("read");
        let Entry::Message(message) = &page[0].entry else {
            panic!("a message");
        };
        assert_eq!(
            (message.message.as_str(), message.deleted, message.state_id),
            ("old", false, 0)
        );
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
        assert!(matches!(refused, Err(LogError::TooNew { found: 99, .. })));
    }
}
