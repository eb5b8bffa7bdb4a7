//! Changes to stored messages, made by the writer inside its batch's
//! transaction: a change is checked against the message's row as it
//! stands (so two changes to one message are judged one after the other),
//! stored as a row of its own with the room's next id, and folded into the
//! message's row (`chat_proto::state::apply`), which always holds the
//! message's current state.
//!
//! A deletion erases: the message's text, the text of each of its edits
//! and its reactors are overwritten in place, and the connection runs with
//! `secure_delete`, so the freed bytes are zeroed in the file too.

use chat_proto::{Change, ChangeKind, ChatMessage, Reaction, state};
use prost::Message;
use rusqlite::{OptionalExtension, Row, Transaction, params};

use crate::log::judge::{Standing, Verdict, judge};
use crate::log::{ChangeRequest, Changed, Entry, LogError, Refusal, RoomId};
use crate::search::index::{self, Keys};

/// The columns an entry is read back from, in the order [`entry`] reads
/// them (the origin, for the hub, comes last).
pub(super) const ENTRY_COLUMNS: &str = "id, kind, username, message, timestamp, nonce, \
     reply_to, edited_at, deleted, state_id, reactions, target, emoji, reason, by_moderator, origin";

/// A message's reactions as its row keeps them.
#[derive(Clone, PartialEq, Message)]
struct Reactions {
    #[prost(message, repeated, tag = "1")]
    list: Vec<Reaction>,
}

pub(super) fn encode_reactions(reactions: &[Reaction]) -> Option<Vec<u8>> {
    (!reactions.is_empty()).then(|| {
        Reactions {
            list: reactions.to_vec(),
        }
        .encode_to_vec()
    })
}

/// The entry in a row selected with [`ENTRY_COLUMNS`].
pub(super) fn entry(row: &Row<'_>) -> rusqlite::Result<Entry> {
    let kind: i32 = row.get(1)?;
    if kind == 0 {
        let reactions: Option<Vec<u8>> = row.get(10)?;
        return Ok(Entry::Message(ChatMessage {
            id: row.get(0)?,
            username: row.get(2)?,
            message: row.get(3)?,
            timestamp: row.get(4)?,
            nonce: row.get(5)?,
            room: String::new(),
            reply_to: row.get(6)?,
            edited_at: row.get(7)?,
            deleted: row.get(8)?,
            state_id: row.get(9)?,
            // A row this build wrote; an unreadable one shows none.
            reactions: reactions
                .and_then(|bytes| Reactions::decode(bytes.as_slice()).ok())
                .map(|r| r.list)
                .unwrap_or_default(),
        }));
    }
    Ok(Entry::Change(Change {
        id: row.get(0)?,
        room: String::new(),
        target: row.get(11)?,
        username: row.get(2)?,
        timestamp: row.get(4)?,
        kind,
        message: row.get(3)?,
        emoji: row.get(12)?,
        by_moderator: row.get(14)?,
        reason: row.get(13)?,
    }))
}

/// What became of one change in the writer's batch.
pub(super) enum Outcome {
    /// Stored with the next id; the entries it rewrote, as they are now
    /// (the message, and a deleted message's erased edits).
    Stored {
        change: Change,
        rewritten: Vec<Entry>,
    },
    AlreadySo {
        id: u64,
        timestamp: i64,
    },
    Refused(Refusal),
}

/// Checks `request` against its message in `room`, and stores it with the
/// id `next_id` gives (asked only if it is stored) at `timestamp`.
pub(super) fn apply(
    tx: &Transaction<'_>,
    room: RoomId,
    request: &ChangeRequest,
    next_id: impl FnOnce() -> u64,
    timestamp: i64,
) -> Result<Outcome, LogError> {
    let target = request.target;
    let found = tx
        .prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM messages WHERE room = ?1 AND id = ?2"
        ))?
        .query_row(params![room, target], entry)
        .optional()?;
    let mut message = match found {
        None => return Ok(Outcome::Refused(Refusal::NotFound(target))),
        Some(Entry::Change(_)) => return Ok(Outcome::Refused(Refusal::NotAMessage(target))),
        Some(Entry::Message(message)) => message,
    };
    let kind = request.kind;
    let mut rows = Rows { tx, room, target };
    match judge(request, &message, &mut rows)? {
        Verdict::Store => {}
        Verdict::AlreadySo { id, timestamp } => return Ok(Outcome::AlreadySo { id, timestamp }),
        Verdict::Refused(refusal) => return Ok(Outcome::Refused(refusal)),
    }

    let mut change = Change {
        id: next_id(),
        room: String::new(),
        target,
        username: request.username.clone(),
        timestamp,
        kind: kind as i32,
        message: request.message.clone(),
        emoji: request.emoji.clone(),
        by_moderator: request.by_moderator,
        reason: request.reason.clone(),
    };
    if kind != ChangeKind::ChangeEdit {
        change.message.clear();
    }
    tx.prepare_cached(
        "INSERT INTO messages (room, id, kind, target, username, message, timestamp, nonce,
                               emoji, reason, by_moderator)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        room,
        change.id,
        change.kind,
        target,
        change.username,
        change.message,
        timestamp,
        if kind == ChangeKind::ChangeEdit {
            request.nonce.as_str()
        } else {
            ""
        },
        change.emoji,
        change.reason,
        change.by_moderator,
    ])?;
    let mut rewritten = Vec::new();
    match kind {
        ChangeKind::ChangeReact => {
            tx.prepare_cached(
                "INSERT INTO reactors (room, target, emoji, username) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![room, target, request.emoji, request.username])?;
        }
        ChangeKind::ChangeUnreact => {
            tx.prepare_cached(
                "DELETE FROM reactors
                 WHERE room = ?1 AND target = ?2 AND emoji = ?3 AND username = ?4",
            )?
            .execute(params![room, target, request.emoji, request.username])?;
        }
        ChangeKind::ChangeDelete => {
            // Gone everywhere: the edits keep their ids, not their text.
            tx.prepare_cached(
                "UPDATE messages SET message = '', nonce = ''
                 WHERE room = ?1 AND target = ?2 AND kind = ?3",
            )?
            .execute(params![room, target, ChangeKind::ChangeEdit as i32])?;
            tx.prepare_cached("DELETE FROM reactors WHERE room = ?1 AND target = ?2")?
                .execute(params![room, target])?;
            let mut edits = tx.prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM messages WHERE room = ?1 AND target = ?2 AND kind = ?3"
            ))?;
            for erased in
                edits.query_map(params![room, target, ChangeKind::ChangeEdit as i32], entry)?
            {
                rewritten.push(erased?);
            }
        }
        _ => {}
    }
    state::apply(&mut message, &change);
    // The index follows the text: an edit's new words replace the old,
    // and a deleted message is found no more.
    match kind {
        // Not in yet: the history from before search is still being
        // indexed, and will be in its current state.
        ChangeKind::ChangeEdit => {
            index::reindex(tx, Keys::InMessages, room, target, &message.message)?;
        }
        ChangeKind::ChangeDelete => index::remove(tx, Keys::InMessages, room, target)?,
        _ => {}
    }
    tx.prepare_cached(
        "UPDATE messages SET message = ?3, edited_at = ?4, deleted = ?5, state_id = ?6,
                             reactions = ?7
         WHERE room = ?1 AND id = ?2",
    )?
    .execute(params![
        room,
        target,
        message.message,
        message.edited_at,
        message.deleted,
        message.state_id,
        encode_reactions(&message.reactions),
    ])?;
    rewritten.push(Entry::Message(message));
    Ok(Outcome::Stored { change, rewritten })
}

/// What the rows say of message `target`, for [`judge`].
struct Rows<'a, 'tx> {
    tx: &'a Transaction<'tx>,
    room: RoomId,
    target: u64,
}

impl Standing for Rows<'_, '_> {
    fn deletion(&mut self) -> Result<(u64, i64), LogError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT id, timestamp FROM messages
                 WHERE room = ?1 AND target = ?2 AND kind = ?3 ORDER BY id LIMIT 1",
            )?
            .query_row(
                params![self.room, self.target, ChangeKind::ChangeDelete as i32],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?)
    }

    fn edit_with_nonce(&mut self, nonce: &str) -> Result<Option<(u64, i64)>, LogError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT id, timestamp FROM messages
                 WHERE room = ?1 AND target = ?2 AND kind = ?3 AND nonce = ?4",
            )?
            .query_row(
                params![self.room, self.target, ChangeKind::ChangeEdit as i32, nonce],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?)
    }

    fn has_reacted(&mut self, emoji: &str, username: &str) -> Result<bool, LogError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM reactors
                 WHERE room = ?1 AND target = ?2 AND emoji = ?3 AND username = ?4)",
            )?
            .query_row(params![self.room, self.target, emoji, username], |row| {
                row.get(0)
            })?)
    }
}

impl Outcome {
    /// What the change's caller hears (a refusal is an error).
    pub(super) fn answer(&self) -> Result<Changed, LogError> {
        match self {
            Self::Stored { change, .. } => Ok(Changed::Stored(change.clone())),
            Self::AlreadySo { id, timestamp } => Ok(Changed::AlreadySo {
                id: *id,
                timestamp: *timestamp,
            }),
            Self::Refused(refusal) => Err(refusal.clone().into()),
        }
    }
}
