//! What a room's log holds: entries, each with the room's next id and a
//! kind. Today the only kind is a chat message; the kinds to come (an edit,
//! a deletion, a reaction, each pointing at an earlier id) are added here,
//! and the hub, the ring and the wire encoder carry them unchanged: they
//! only ever see an entry's id and the [`Event`] it goes out as.

use chat_proto::{ChatMessage, Event};

/// One entry of a room's log.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A chat message, as the room's subscribers see it.
    Message(ChatMessage),
}

impl Entry {
    /// Its id: its place in the room's one sequence of ids.
    pub fn id(&self) -> u64 {
        match self {
            Self::Message(message) => message.id,
        }
    }

    /// Names the room it belongs to (logs read entries back without it).
    pub fn set_room(&mut self, room: &str) {
        match self {
            Self::Message(message) => room.clone_into(&mut message.room),
        }
    }

    /// The bytes of text it carries: what a history page's budget counts.
    pub fn text_len(&self) -> usize {
        match self {
            Self::Message(m) => m.username.len() + m.message.len() + m.nonce.len(),
        }
    }

    /// The `ChatEvent` it goes out to subscribers as.
    pub fn into_event(self) -> Event {
        match self {
            Self::Message(message) => Event::Message(message),
        }
    }
}
