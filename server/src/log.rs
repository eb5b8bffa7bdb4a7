//! The seam between the hub and where messages live: one ordered log per
//! room.
//!
//! A [`RoomLog`] appends a message and gives it the room's next id, reads a
//! range of ids back, and hands every committed batch to the hub (the
//! [`OnCommit`] callback it was opened with) in id order, whoever wrote it.
//! The hub fans out and never knows which log it has: the embedded SQLite
//! [`crate::store::Store`] for one machine, or [`crate::nats::NatsLog`], where
//! each room is a JetStream stream shared by every replica.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use chat_proto::ChatMessage;
use futures_util::future::BoxFuture;

pub use crate::store::{
    Committed, OnCommit, RoomId, RoomRow, StoreError as LogError, Stored, StreamFailure,
};

/// One ordered, durable log per room.
pub trait RoomLog: fmt::Debug + Send + Sync + 'static {
    /// The rooms the log had when it opened.
    fn rooms_at_open(&self) -> Vec<RoomRow>;

    /// The room called `name`, if it exists now (another replica may have
    /// created it since the log opened).
    fn find_room(&self, name: &str) -> BoxFuture<'_, Result<Option<RoomRow>, LogError>>;

    /// Every room that exists now.
    fn list_rooms(&self) -> BoxFuture<'_, Result<Vec<RoomRow>, LogError>>;

    /// The newest id in `room` that the hub has been handed, moved before
    /// the batch is handed on.
    fn last_id(&self, room: RoomId) -> Option<Arc<AtomicU64>>;

    /// The newest id the room has anywhere (on another replica's side of a
    /// shared log, it may be ahead of [`RoomLog::last_id`] for a moment).
    fn newest(&self, room: RoomId) -> BoxFuture<'_, Result<u64, LogError>>;

    /// Creates a room ([`LogError::RoomExists`] if there is one).
    fn create_room<'a>(
        &'a self,
        name: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<RoomRow, LogError>>;

    /// Stores `message` and returns it with its id and timestamp once it is
    /// durable.
    fn append(
        &self,
        room: RoomId,
        message: ChatMessage,
    ) -> BoxFuture<'_, Result<ChatMessage, LogError>>;

    /// Queues `message` from connection `origin` without waiting for it to
    /// be durable; a failure is reported to `failure`.
    fn append_from<'a>(
        &'a self,
        room: RoomId,
        origin: u64,
        message: ChatMessage,
        failure: &'a StreamFailure,
    ) -> BoxFuture<'a, Result<(), LogError>>;

    /// Messages of `room` with `after < id <= upto`, oldest first, at most
    /// `limit` (and a bounded number of bytes). Never a page with a hole
    /// that retention did not make: a shared log whose copy is behind says
    /// [`LogError::Incomplete`] instead, and the reader asks again.
    fn range(
        &self,
        room: RoomId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Stored>, LogError>>;

    /// Whether the log takes writes right now (health checks report it).
    fn is_available(&self) -> bool {
        true
    }

    /// Read connections open right now (SQLite; 0 elsewhere).
    fn open_readers(&self) -> usize {
        0
    }
}
