//! What a room's log holds: entries, each with the room's next id and a
//! kind: a chat message, or a change to an earlier message (an edit, a
//! deletion, a reaction added or taken back) that points at it. The hub,
//! the ring and the wire encoder carry them unchanged: they only ever see
//! an entry's id and the [`Event`] it goes out as.
//!
//! A message is read back in its current state (see `chat_proto::state`):
//! every change up to its `state_id` folded in.

use chat_proto::{Change, ChatMessage, Event};

/// One entry of a room's log.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A chat message, as the room's subscribers see it.
    Message(ChatMessage),
    /// A change to an earlier message of the room.
    Change(Change),
}

impl Entry {
    /// Its id: its place in the room's one sequence of ids.
    pub fn id(&self) -> u64 {
        match self {
            Self::Message(message) => message.id,
            Self::Change(change) => change.id,
        }
    }

    /// Names the room it belongs to (logs read entries back without it).
    pub fn set_room(&mut self, room: &str) {
        match self {
            Self::Message(message) => room.clone_into(&mut message.room),
            Self::Change(change) => room.clone_into(&mut change.room),
        }
    }

    /// The bytes of text it carries: what a history page's budget counts.
    pub fn text_len(&self) -> usize {
        match self {
            Self::Message(m) => {
                m.username.len()
                    + m.message.len()
                    + m.nonce.len()
                    + m.reactions
                        .iter()
                        .map(|r| r.emoji.len() + r.usernames.iter().map(String::len).sum::<usize>())
                        .sum::<usize>()
            }
            Self::Change(c) => c.username.len() + c.message.len() + c.emoji.len() + c.reason.len(),
        }
    }

    /// The `ChatEvent` it goes out to subscribers as.
    pub fn into_event(self) -> Event {
        match self {
            Self::Message(message) => Event::Message(message),
            Self::Change(change) => Event::Change(change),
        }
    }
}
