//! Reading a room's past by pages of messages (`History`), and through all
//! of it (a moderator's purge).
//!
//! A room's ids are shared by messages and changes, so a page of messages
//! is read from the log ([`crate::log::RoomLog::range`]) a window of ids at a time,
//! keeping the messages (the log serves them in their current state, a
//! deleted one as its tombstone) and leaving the changes. Memory stays
//! bounded by the window and the page, however long the room's past; the
//! reads go to the log's readers, never through the live fan-out.

use std::time::Duration;

use chat_proto::ChatMessage;

use super::{Hub, Room};
use crate::log::{Entry, LogError, Stored};

/// Ids read from the log in one go while looking for messages.
const WINDOW: u64 = 256;
/// A shared log whose copy is behind says so ([`LogError::Incomplete`]):
/// ask again after this long, this many times (as a subscriber does).
const BEHIND_RETRY: Duration = Duration::from_millis(200);
const BEHIND_TRIES: u32 = 75;

/// One page of a room's messages, oldest first.
#[derive(Debug, Default, PartialEq)]
pub struct Page {
    pub messages: Vec<ChatMessage>,
    /// Older messages are stored (false on the page with the room's first).
    pub more_before: bool,
    /// Newer messages are stored.
    pub more_after: bool,
}

/// What [`Hub::page_around`] found.
#[derive(Debug)]
pub enum Around {
    Page(Page),
    /// No such id is stored (never was, or retention removed it).
    NotStored,
    /// The id is a change's.
    NotAMessage,
}

impl Hub {
    /// Up to `limit` messages of `room` with ids below `before` (0: the
    /// newest), oldest first.
    pub async fn page_before(
        &self,
        room: &Room,
        before: u64,
        limit: usize,
    ) -> Result<Page, LogError> {
        let newest = room.last_id();
        let upto = match before {
            0 => newest,
            before => before.saturating_sub(1).min(newest),
        };
        let (messages, more_before) = self.messages_back(room, upto, limit).await?;
        Ok(Page {
            messages,
            more_before,
            more_after: before != 0 && room.last_message_id() >= before,
        })
    }

    /// Message `id` of `room` with up to `half` messages on each side
    /// (fewer at an edge, never made up from the other side), oldest first.
    pub async fn page_around(&self, room: &Room, id: u64, half: usize) -> Result<Around, LogError> {
        let message = match self.entry(room, id).await? {
            Some(Entry::Message(message)) => message,
            Some(Entry::Change(_)) => return Ok(Around::NotAMessage),
            None => return Ok(Around::NotStored),
        };
        let (mut messages, more_before) = self.messages_back(room, id - 1, half).await?;
        let (after, more_after) = self.messages_forward(room, id, half).await?;
        messages.push(message);
        messages.extend(after);
        Ok(Around::Page(Page {
            messages,
            more_before,
            more_after,
        }))
    }

    /// The ids of `room`'s messages (not deleted) that `pick` picks, oldest
    /// first, read through the whole stored history a page at a time (a
    /// moderator's purge: rare, and bounded by retention).
    pub async fn messages_where(
        &self,
        room: &Room,
        pick: impl Fn(&ChatMessage) -> bool,
    ) -> Result<Vec<u64>, LogError> {
        const PAGE: usize = 500;
        let upto = room.last_id();
        let (mut after, mut ids) = (0, Vec::new());
        while after < upto {
            let page = self.range_patiently(room, after, upto, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id();
            ids.extend(page.iter().filter_map(|stored| match &stored.entry {
                Entry::Message(message) if !message.deleted && pick(message) => Some(message.id),
                _ => None,
            }));
        }
        Ok(ids)
    }

    /// The newest `want` messages of `room` with ids up to `upto`, oldest
    /// first, and whether older ones are stored.
    async fn messages_back(
        &self,
        room: &Room,
        upto: u64,
        want: usize,
    ) -> Result<(Vec<ChatMessage>, bool), LogError> {
        // Where the stored past begins (retention may have moved it).
        let Some(oldest) = self
            .range_patiently(room, 0, upto, 1)
            .await?
            .first()
            .map(Stored::id)
        else {
            return Ok((Vec::new(), false));
        };
        let mut found: Vec<ChatMessage> = Vec::new();
        let mut upto = upto;
        while upto >= oldest {
            let after = upto.saturating_sub(WINDOW).max(oldest - 1);
            let mut window = self.messages_in(room, after, upto).await?;
            // Newest first from here, to stop as soon as there are enough.
            while let Some(message) = window.pop() {
                if found.len() == want {
                    found.reverse();
                    return Ok((found, true));
                }
                found.push(message);
            }
            upto = after;
        }
        found.reverse();
        Ok((found, false))
    }

    /// The oldest `want` messages of `room` with ids above `after`, and
    /// whether newer ones are stored.
    async fn messages_forward(
        &self,
        room: &Room,
        after: u64,
        want: usize,
    ) -> Result<(Vec<ChatMessage>, bool), LogError> {
        let newest = room.last_id();
        let (mut found, mut after) = (Vec::new(), after);
        while after < newest {
            let upto = after.saturating_add(WINDOW).min(newest);
            for message in self.messages_in(room, after, upto).await? {
                if found.len() == want {
                    return Ok((found, true));
                }
                found.push(message);
            }
            after = upto;
        }
        Ok((found, false))
    }

    /// The messages of `room` with `after < id <= upto` (a window: its
    /// changes are left out), oldest first.
    async fn messages_in(
        &self,
        room: &Room,
        after: u64,
        upto: u64,
    ) -> Result<Vec<ChatMessage>, LogError> {
        let mut messages = Vec::new();
        let mut from = after;
        // A page may stop short of the window (the log's bytes per page).
        while from < upto {
            let limit = usize::try_from(upto - from).unwrap_or(usize::MAX);
            let page = self.range_patiently(room, from, upto, limit).await?;
            let Some(last) = page.last() else { break };
            from = last.id();
            messages.extend(page.into_iter().filter_map(|stored| match stored.entry {
                Entry::Message(message) => Some(message),
                Entry::Change(_) => None,
            }));
        }
        Ok(messages)
    }

    /// [`crate::log::RoomLog::range`], asking again while a shared log's copy is behind.
    pub(super) async fn range_patiently(
        &self,
        room: &Room,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Stored>, LogError> {
        let mut tries = 0;
        loop {
            match self.inner.log.range(&room.key, after, upto, limit).await {
                Err(LogError::Incomplete(_)) if tries < BEHIND_TRIES => {
                    tries += 1;
                    tokio::time::sleep(BEHIND_RETRY).await;
                }
                read => return read,
            }
        }
    }
}
