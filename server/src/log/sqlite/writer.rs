//! The SQLite log's one writer thread: it takes every job waiting in its
//! queue, numbers the messages room by room, writes them all in one
//! transaction (one fsync per batch), prunes what retention no longer keeps,
//! and only then hands the batch to the hub and acknowledges the senders.

use std::collections::HashMap;
use std::time::Instant;

use chat_proto::ChatMessage;
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};

use super::{MAX_BATCH, PRUNE_EVERY};
use crate::log::{
    Committed, Entry, LogError, OnCommit, Retention, RoomId, RoomRow, Stored, StreamFailure,
    now_millis,
};
use crate::metrics::Metrics;

/// Who hears how storing a message went.
pub(super) enum Ack {
    /// A unary `Send`, waiting for its id.
    Reply(oneshot::Sender<Result<ChatMessage, String>>),
    /// A `ChatStream`, which does not wait but must hear of a failure.
    Stream(StreamFailure),
}

pub(super) struct Pending {
    pub(super) room: RoomId,
    pub(super) origin: Option<u64>,
    pub(super) message: ChatMessage,
    pub(super) ack: Ack,
}

/// What the writer is asked to do.
pub(super) enum Job {
    Store(Pending),
    CreateRoom {
        name: String,
        topic: String,
        reply: oneshot::Sender<Result<RoomRow, LogError>>,
    },
}

pub(super) struct Writer {
    pub(super) connection: Connection,
    pub(super) retention: Retention,
    /// Each room's newest id given (the hub's count, moved as it takes
    /// each batch, is behind it only inside a commit).
    pub(super) next_ids: HashMap<RoomId, u64>,
    /// Timestamps never go backwards, even if the clock does, so that age
    /// retention can delete a prefix of ids.
    pub(super) last_timestamp: i64,
    pub(super) on_commit: OnCommit,
    pub(super) pruned_at: Option<Instant>,
    pub(super) metrics: Metrics,
}

impl Writer {
    pub(super) fn run(mut self, mut inbox: mpsc::Receiver<Job>) {
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

    pub(super) fn create_room(&mut self, name: &str, topic: &str) -> Result<RoomRow, LogError> {
        let inserted = self.connection.execute(
            "INSERT INTO rooms (name, topic, created) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO NOTHING",
            params![name, topic, now_millis()],
        )?;
        if inserted == 0 {
            return Err(LogError::RoomExists(name.to_owned()));
        }
        let id = self.connection.last_insert_rowid();
        self.next_ids.insert(id, 0);
        Ok(RoomRow {
            id,
            name: name.to_owned(),
            topic: topic.to_owned(),
            last_id: 0,
        })
    }

    /// The id each message of `batch` gets, in order: the next of its room.
    pub(super) fn number(&self, batch: &[Pending]) -> Vec<u64> {
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

    pub(super) fn commit(&mut self, batch: &mut Vec<Pending>) {
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
                        entry: Entry::Message(message),
                    };
                    match rooms.iter_mut().find(|c| c.room == pending.room) {
                        Some(committed) => committed.entries.push(stored),
                        None => rooms.push(Committed {
                            room: pending.room,
                            entries: vec![stored],
                            oldest_kept: None,
                        }),
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
    pub(super) fn write(
        &mut self,
        batch: &[Pending],
        ids: &[u64],
        timestamp: i64,
    ) -> Result<HashMap<RoomId, u64>, LogError> {
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
pub(super) fn prune_old(
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
