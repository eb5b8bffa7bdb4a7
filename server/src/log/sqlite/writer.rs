//! The SQLite log's one writer thread: it takes every job waiting in its
//! queue, numbers the messages and changes room by room (a change is first
//! checked against its message, see [`super::changes`]), writes them all in
//! one transaction (one fsync per batch), prunes what retention no longer
//! keeps, and only then hands the batch to the hub and acknowledges the
//! senders.

use std::collections::HashMap;
use std::time::Instant;

use chat_proto::ChatMessage;
use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};

use super::changes::{self, Outcome};
use super::{MAX_BATCH, PRUNE_EVERY};
use crate::log::{
    ChangeRequest, Changed, Committed, Entry, LogError, OnCommit, Retention, RoomId, RoomRow,
    Stored, StreamFailure, now_millis,
};
use crate::metrics::Metrics;
use crate::search::index::{self, Keys};

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
    /// What the search index holds of it.
    pub(super) words: index::Words,
    pub(super) ack: Ack,
}

/// A change waiting for the writer.
pub(super) struct PendingChange {
    pub(super) room: RoomId,
    pub(super) request: ChangeRequest,
    pub(super) reply: oneshot::Sender<Result<Changed, LogError>>,
}

/// One write of a batch, in queue order.
pub(super) enum Write {
    Message(Pending),
    Change(PendingChange),
}

impl Write {
    fn room(&self) -> RoomId {
        match self {
            Self::Message(pending) => pending.room,
            Self::Change(pending) => pending.room,
        }
    }
}

/// What the writer is asked to do.
pub(super) enum Job {
    Store(Pending),
    Change(PendingChange),
    CreateRoom {
        name: String,
        topic: String,
        reply: oneshot::Sender<Result<RoomRow, LogError>>,
    },
    /// Index a slice of the history from before search (see `search`).
    Backfill {
        reply: oneshot::Sender<Result<Backfilled, LogError>>,
    },
}

/// What one slice of indexing the history from before search did (see
/// `search`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Backfilled {
    pub(super) indexed: u64,
    /// Nothing is left to index.
    pub(super) done: bool,
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
                    Job::Store(pending) => batch.push(Write::Message(pending)),
                    Job::Change(pending) => batch.push(Write::Change(pending)),
                    // After what came before it, so ids stay in queue order.
                    Job::CreateRoom { name, topic, reply } => {
                        self.commit(&mut batch);
                        let _ = reply.send(self.create_room(&name, &topic));
                    }
                    Job::Backfill { reply } => {
                        self.commit(&mut batch);
                        let _ = reply.send(self.backfill());
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
            last_message_id: 0,
        })
    }

    pub(super) fn commit(&mut self, batch: &mut Vec<Write>) {
        if batch.is_empty() {
            return;
        }
        let timestamp = now_millis().max(self.last_timestamp);
        let started = Instant::now();
        match self.write(batch, timestamp) {
            Ok((written, oldest_kept)) => {
                self.metrics
                    .stored(batch.len() as u64, started.elapsed().as_secs_f64());
                self.last_timestamp = timestamp;
                // Per room, in the order rooms first appear in the batch.
                let mut rooms: Vec<Committed> = Vec::new();
                let mut acks = Vec::with_capacity(batch.len());
                let mut answers = Vec::new();
                for (write, done) in batch.drain(..).zip(written) {
                    let room = write.room();
                    let (stored, rewritten) = match (write, done) {
                        (Write::Message(pending), Done::Message(id)) => {
                            self.next_ids.insert(room, id);
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
                            (Some(stored), Vec::new())
                        }
                        (Write::Change(pending), Done::Change(outcome)) => {
                            answers.push((pending.reply, outcome.answer()));
                            match outcome {
                                Outcome::Stored { change, rewritten } => {
                                    self.next_ids.insert(room, change.id);
                                    let stored = Stored {
                                        origin: None,
                                        entry: Entry::Change(change),
                                    };
                                    (Some(stored), rewritten)
                                }
                                Outcome::AlreadySo { .. } | Outcome::Refused(_) => {
                                    (None, Vec::new())
                                }
                            }
                        }
                        // `write` answers each write with its own kind.
                        _ => (None, Vec::new()),
                    };
                    let Some(stored) = stored else { continue };
                    let committed = match rooms.iter().position(|c| c.room == room) {
                        Some(at) => &mut rooms[at],
                        None => {
                            rooms.push(Committed {
                                room,
                                entries: Vec::new(),
                                oldest_kept: None,
                                rewritten: Vec::new(),
                            });
                            let last = rooms.len() - 1;
                            &mut rooms[last]
                        }
                    };
                    committed.entries.push(stored);
                    for entry in rewritten {
                        // Each entry once, as the batch left it.
                        committed.rewritten.retain(|e| e.id() != entry.id());
                        committed.rewritten.push(entry);
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
                for (reply, answer) in answers {
                    let _ = reply.send(answer);
                }
            }
            Err(err) => {
                error!(error = %err, writes = batch.len(), "could not store messages");
                let reason = err.to_string();
                for write in batch.drain(..) {
                    match write {
                        Write::Message(Pending {
                            ack: Ack::Reply(ack),
                            ..
                        }) => {
                            let _ = ack.send(Err(reason.clone()));
                        }
                        Write::Message(Pending {
                            ack: Ack::Stream(failure),
                            ..
                        }) => {
                            failure.send_replace(Some(reason.clone()));
                        }
                        Write::Change(pending) => {
                            let _ = pending.reply.send(Err(LogError::Write(reason.clone())));
                        }
                    }
                }
            }
        }
    }

    /// Writes the batch in one transaction, numbering what is stored room
    /// by room; returns what became of each write, in order, and for each
    /// room retention ran on, the oldest id still stored.
    fn write(
        &mut self,
        batch: &[Write],
        timestamp: i64,
    ) -> Result<(Vec<Done>, HashMap<RoomId, u64>), LogError> {
        let prune = self.pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
        let mut oldest_kept = HashMap::new();
        // Each room's newest id and newest message id in this batch.
        let mut newest: HashMap<RoomId, (u64, Option<u64>)> = HashMap::new();
        let mut done = Vec::with_capacity(batch.len());
        // Immediate: the write lock is taken (waiting out another writer,
        // as the busy timeout allows) before the first read. A deferred
        // transaction that reads first cannot wait for it: its snapshot
        // would be stale, and the first write would fail as locked.
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let next_ids = &self.next_ids;
            let mut next_id = |room: RoomId| {
                let last = newest
                    .entry(room)
                    .or_insert_with(|| (next_ids.get(&room).copied().unwrap_or(0), None));
                last.0 += 1;
                last.0
            };
            let mut insert = transaction.prepare_cached(
                "INSERT INTO messages (room, id, username, message, timestamp, nonce, origin,
                                       reply_to, search_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            // The batch's messages share one timestamp: their places in the
            // search index are one probe and a count.
            let mut next_seq = None;
            for write in batch {
                match write {
                    Write::Message(pending) => {
                        let m = &pending.message;
                        let id = next_id(pending.room);
                        let seq = match next_seq {
                            Some(seq) => seq,
                            None => index::free_seq(&transaction, timestamp)?,
                        };
                        next_seq = Some(seq + 1);
                        insert.execute(params![
                            pending.room,
                            id,
                            m.username,
                            m.message,
                            timestamp,
                            m.nonce,
                            pending.origin,
                            m.reply_to,
                            seq,
                        ])?;
                        index::insert(&transaction, seq, pending.room, id, &pending.words)?;
                        done.push(Done::Message(id));
                    }
                    Write::Change(pending) => {
                        let outcome = changes::apply(
                            &transaction,
                            pending.room,
                            &pending.request,
                            || next_id(pending.room),
                            timestamp,
                        )?;
                        done.push(Done::Change(outcome));
                    }
                }
            }
            drop(insert);
            for (write, done) in batch.iter().zip(&done) {
                if let (Write::Message(pending), Done::Message(id)) = (write, done)
                    && let Some(last) = newest.get_mut(&pending.room)
                {
                    last.1 = Some(*id);
                }
            }
            let mut update = transaction.prepare_cached(
                "UPDATE rooms SET last_id = ?2,
                                  last_message_id = coalesce(?3, last_message_id)
                 WHERE id = ?1",
            )?;
            for (&room, &(last_id, last_message_id)) in &newest {
                update.execute(params![room, last_id, last_message_id])?;
            }
            if prune {
                // Rooms written to now; with age retention every room, since
                // time passes for quiet ones too.
                let rooms: Vec<(RoomId, u64)> = match self.retention {
                    Retention::Count(_) => {
                        newest.iter().map(|(&r, &(last, _))| (r, last)).collect()
                    }
                    Retention::Age(_) => self
                        .next_ids
                        .iter()
                        .map(|(&room, &last)| (room, newest.get(&room).map_or(last, |&(id, _)| id)))
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
        Ok((done, oldest_kept))
    }
}

/// What one write of a batch came to.
enum Done {
    /// A message, stored with this id.
    Message(u64),
    Change(Outcome),
}

/// Deletes what `retention` no longer keeps of `room` and returns the oldest
/// id kept there. Ids and timestamps both grow, so what goes is always a
/// prefix of the room's ids (a range delete on the key), and with it the
/// changes to what went, wherever they are.
pub(super) fn prune_old(
    connection: &Connection,
    retention: Retention,
    room: RoomId,
    last_id: u64,
) -> rusqlite::Result<u64> {
    let cutoff = match retention {
        Retention::Count(keep) => count_cutoff(connection, room, last_id, keep)?,
        Retention::Age(age) => {
            let cutoff =
                now_millis().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
            connection
                .prepare_cached(
                    "SELECT coalesce(
                         (SELECT id FROM messages WHERE room = ?1 AND timestamp >= ?2
                          ORDER BY id LIMIT 1),
                         ?3)",
                )?
                .query_row(params![room, cutoff, last_id + 1], |row| row.get(0))?
        }
    };
    // The index first: it finds what goes through the messages' rows.
    index::remove_before(connection, Keys::InMessages, room, cutoff)?;
    let deleted = connection
        .prepare_cached("DELETE FROM messages WHERE room = ?1 AND id < ?2")?
        .execute(params![room, cutoff])?;
    if deleted > 0 {
        connection
            .prepare_cached("DELETE FROM messages WHERE room = ?1 AND kind != 0 AND target < ?2")?
            .execute(params![room, cutoff])?;
        connection
            .prepare_cached("DELETE FROM reactors WHERE room = ?1 AND target < ?2")?
            .execute(params![room, cutoff])?;
        debug!(deleted, room, "retention removed old messages");
    }
    connection
        .prepare_cached("SELECT coalesce(min(id), ?2) FROM messages WHERE room = ?1")?
        .query_row(params![room, last_id + 1], |row| row.get(0))
}

/// The first id to keep so that the newest `keep` messages stay: `keep`
/// ids back from the newest, and one further back for each change among
/// them (counted on the changes' own index, so rooms without changes pay
/// one index probe).
fn count_cutoff(
    connection: &Connection,
    room: RoomId,
    last_id: u64,
    keep: u64,
) -> rusqlite::Result<u64> {
    let mut count_changes = connection.prepare_cached(
        "SELECT count(*) FROM messages WHERE room = ?1 AND kind != 0 AND id >= ?2",
    )?;
    let mut changes = 0;
    loop {
        let cutoff = (last_id + 1).saturating_sub(keep + changes).max(1);
        let counted: u64 = count_changes.query_row(params![room, cutoff], |row| row.get(0))?;
        if counted == changes || cutoff == 1 {
            return Ok(cutoff);
        }
        changes = counted;
    }
}
