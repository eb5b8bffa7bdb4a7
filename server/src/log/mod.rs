//! The seam between the hub and where a room's entries live: one ordered,
//! durable log per room, and the words every log shares.
//!
//! A [`RoomLog`] appends an entry and gives it the room's next id (ids have
//! no holes), reads a range of ids back, and hands every committed batch to
//! the hub (the [`OnCommit`] callback it was opened with) in id order,
//! whoever wrote it. The hub fans out and never knows which log it has: the
//! embedded SQLite one for one machine ([`sqlite`]), or the NATS JetStream
//! one ([`nats`]), where each room is a stream shared by every replica.
//! Neither implementation knows the other; both speak the words here: room
//! keys and rows, [`Entry`] and [`Stored`], [`Committed`], [`LogError`],
//! [`Retention`], the page budget and the clock.
//!
//! Entries are messages and changes to earlier messages ([`Entry`]). A
//! change is asked for with [`RoomLog::change`]: the log checks it against
//! the message as stored, in order with every other write, stores it, and
//! folds it into the message's state (`chat_proto::state`), so a message is
//! always read back, and handed on, in its current state.
//!
//! A room is *known* once the hub has it (its [`RoomRow`] came from
//! [`RoomLog::rooms_at_open`], [`RoomLog::find_room`],
//! [`RoomLog::list_rooms`] or [`RoomLog::create_room`]) and *followed*
//! once the hub asked [`RoomLog::follow`]: only then does the log hand the
//! room's batches over. On one machine following costs nothing; on NATS it
//! is a consumer of the room's stream.

pub mod entry;
pub mod judge;
pub mod nats;
pub mod sqlite;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_proto::{Change, ChangeKind, ChatMessage};
use futures_util::future::BoxFuture;
use thiserror::Error;
use tokio::sync::watch;

use crate::search::{Find, Found};

pub use entry::Entry;

/// Text (names, messages, nonces) one read returns at most, beyond its first
/// message: 16 of the largest messages.
pub const PAGE_BYTES: usize = 64 * 1024;

/// A room's number in its log (SQLite: the row's id; NATS: this process's
/// own count).
pub type RoomId = i64;

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    pub id: RoomId,
    pub name: String,
    pub topic: String,
    /// The newest id given in the room (0 if none yet).
    pub last_id: u64,
    /// The newest message's id (changes have ids too).
    pub last_message_id: u64,
}

/// Why a log could not do what it was asked.
#[derive(Debug, Error)]
pub enum LogError {
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
    /// The change cannot be made to the message as it stands.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Why a change was not made, judged against the message as stored.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Refusal {
    #[error("there is no message {0} in this room")]
    NotFound(u64),
    #[error("{0} is the id of a change, not of a message")]
    NotAMessage(u64),
    #[error("message {0} has been deleted")]
    Deleted(u64),
    #[error("message {0} has the most different reactions a message may have ({max})", max = chat_proto::rules::MAX_REACTIONS)]
    TooManyReactions(u64),
}

/// A change to make to message `target`, by `username`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRequest {
    pub target: u64,
    pub username: String,
    pub kind: ChangeKind,
    /// An edit's new text.
    pub message: String,
    /// An edit's nonce: a retried edit with the same one is stored once.
    pub nonce: String,
    /// A reaction's emoji.
    pub emoji: String,
    /// A deletion by someone other than the author.
    pub by_moderator: bool,
    /// A deletion's reason.
    pub reason: String,
}

/// What became of a [`ChangeRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    /// Stored with its id and timestamp.
    Stored(Change),
    /// Nothing was stored, since it is so already: a second deletion (the
    /// first's id and time), a reaction one has or one taken back that one
    /// does not have (id 0), an edit retried with its nonce (its id).
    AlreadySo { id: u64, timestamp: i64 },
}

/// Milliseconds since the Unix epoch: the clock messages are stamped with.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
        if let Ok(count) = s.parse::<u64>() {
            return if count == 0 {
                Err("retention must keep at least 1 message".into())
            } else {
                Ok(Self::Count(count))
            };
        }
        parse_age(s).map(Self::Age).map_err(|_| {
            format!(
                "`{s}` is neither a message count (like 100000) nor an age (like 30d, 12h, 30m, 90s)"
            )
        })
    }
}

/// An age as the flags take one: a whole number of seconds, minutes, hours
/// or days (`90s`, `30m`, `12h`, `30d`), more than zero.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not an age (like 30d, 12h, 30m, 90s)");
    let split = s.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = s.split_at_checked(split).ok_or_else(bad)?;
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match number.checked_mul(seconds) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(bad()),
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

/// A stored entry, with the connection it came from (the hub's `Origin`)
/// if it came over `ChatStream`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub origin: Option<u64>,
    pub entry: Entry,
}

impl Stored {
    /// Its id in the room's log.
    pub fn id(&self) -> u64 {
        self.entry.id()
    }
}

/// Called by the writer with each committed batch, in id order, before the
/// senders are acknowledged.
pub type OnCommit = Box<dyn Fn(Committed) + Send>;

/// A room's part of a committed batch, as the writer hands it on.
#[derive(Debug)]
pub struct Committed {
    pub room: RoomId,
    pub entries: Vec<Stored>,
    /// If retention ran with this batch: the oldest id still stored, so
    /// copies of older messages held elsewhere can be let go too.
    pub oldest_kept: Option<u64>,
    /// Entries handed on before that this batch rewrote, as they are now,
    /// for copies held elsewhere (the hub's ring): each message a change
    /// changed, in its new state, and a deleted message's edits, erased.
    pub rewritten: Vec<Entry>,
}

/// Where a `ChatStream` learns that a message it queued could not be
/// stored: the writer puts the reason here.
pub type StreamFailure = Arc<watch::Sender<Option<String>>>;

/// A room as the hub hands it to the log: its number in the log and its
/// name (what NATS names streams by).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomKey {
    pub id: RoomId,
    pub name: Arc<str>,
}

/// One ordered, durable log per room.
pub trait RoomLog: fmt::Debug + Send + Sync + 'static {
    /// The rooms the log had when it opened.
    fn rooms_at_open(&self) -> Vec<RoomRow>;

    /// The room called `name`, if it exists now (another replica may have
    /// created it since the log opened).
    fn find_room(&self, name: &str) -> BoxFuture<'_, Result<Option<RoomRow>, LogError>>;

    /// Every room that exists now.
    fn list_rooms(&self) -> BoxFuture<'_, Result<Vec<RoomRow>, LogError>>;

    /// Starts handing `room`'s committed batches to the hub (once per room;
    /// a no-op where every batch reaches the hub anyway). `handed` is the
    /// newest id the hub has been handed, which the hub moves as it takes
    /// each batch: where a follower resumes.
    fn follow(&self, room: &RoomKey, handed: Arc<AtomicU64>);

    /// The newest id the room has anywhere (on another replica's side of a
    /// shared log, it may be ahead of what this hub was handed for a moment).
    fn newest<'a>(&'a self, room: &'a RoomKey) -> BoxFuture<'a, Result<u64, LogError>>;

    /// Creates a room ([`LogError::RoomExists`] if there is one).
    fn create_room<'a>(
        &'a self,
        name: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<RoomRow, LogError>>;

    /// Stores `message` and returns it with its id and timestamp once it is
    /// durable.
    fn append<'a>(
        &'a self,
        room: &'a RoomKey,
        message: ChatMessage,
    ) -> BoxFuture<'a, Result<ChatMessage, LogError>>;

    /// Queues `message` from connection `origin` without waiting for it to
    /// be durable; a failure is reported to `failure`.
    fn append_from<'a>(
        &'a self,
        room: &'a RoomKey,
        origin: u64,
        message: ChatMessage,
        failure: &'a StreamFailure,
    ) -> BoxFuture<'a, Result<(), LogError>>;

    /// Checks `change` against message `change.target` as it stands, and
    /// stores it (and folds it into the message) or says why not.
    fn change<'a>(
        &'a self,
        room: &'a RoomKey,
        change: ChangeRequest,
    ) -> BoxFuture<'a, Result<Changed, LogError>>;

    /// The ids of the newest `count` messages of `room` (changes are not
    /// counted), oldest first: where a subscriber that asks for recent
    /// history starts.
    fn recent_messages<'a>(
        &'a self,
        room: &'a RoomKey,
        count: u64,
    ) -> BoxFuture<'a, Result<Vec<u64>, LogError>>;

    /// Entries of `room` with `after < id <= upto`, oldest first, at most
    /// `limit` (and [`PAGE_BYTES`] of text after the first). Never a page
    /// with a hole that retention did not make: a shared log whose copy is
    /// behind says [`LogError::Incomplete`] instead, and the reader asks
    /// again.
    fn range<'a>(
        &'a self,
        room: &'a RoomKey,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Stored>, LogError>>;

    /// The messages the search index finds for `find`, newest first (see
    /// `crate::search`): the SQLite log's own index, or a cluster
    /// replica's search file.
    fn search<'a>(&'a self, find: &'a Find) -> BoxFuture<'a, Result<Vec<Found>, LogError>>;

    /// Whether the log takes writes right now (health checks report it).
    fn is_available(&self) -> bool {
        true
    }

    /// Read connections open right now (SQLite; 0 elsewhere).
    fn open_readers(&self) -> usize {
        0
    }
}
