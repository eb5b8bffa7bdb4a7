//! One row of the conversation: a message or a notice, where runs and days
//! start, and (for the user's own messages) the way to the server.
//!
//! Rows from one person within a few minutes form a group under one name,
//! time and avatar, and each day starts with a separator. An own message is
//! shown at once, sent with `Send` in turn (again on Retry), and marked delivered by
//! the reply or by its stored copy on the stream (see `timeline`), whichever
//! comes first. A module of its own so that `timeline` is only about the
//! order of the rows and keeping each message once.

use std::sync::Arc;

use crate::net::api;
use crate::state::outbox;
use chat_proto::ChatMessage;
use leptos::prelude::*;

/// Rows from one person this close together share a name and a time.
const GROUP_WITHIN_MS: i64 = 5 * 60 * 1000;

/// Where one of our own messages is on its way to everyone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    Sending,
    Delivered,
    /// Refused or lost, with the reason for the user.
    Failed(api::Failure),
}

/// One row of the conversation. Cheap to clone: the text is shared and the
/// changing parts are signals, so updating a row re-renders only that row.
///
/// A message's `copy` is the server's copy as this page has it: changes
/// (edits, a deletion, reactions) are applied to it by the rule every
/// client shares (`chat_proto::state`), so it ends as the server's.
#[derive(Clone)]
pub struct Entry {
    /// Local identity for keyed rendering; never sent anywhere.
    pub key: u64,
    pub author: Arc<str>,
    /// The text the row was made with (sent, or first received); what is
    /// shown now is in `copy`.
    pub text: Arc<str>,
    /// The message as it stands (its id 0 until the server has it).
    pub copy: RwSignal<ChatMessage>,
    /// Deleted by a moderator, as the deletion said (a replayed tombstone
    /// does not tell).
    pub deleted_by_moderator: RwSignal<bool>,
    /// Sent by this user: from this tab (the nonce matched one of ours), or
    /// earlier under the same name (seen in the history).
    pub own: bool,
    /// A line from the app itself (like "messages are missing"), not a chat
    /// message.
    pub notice: bool,
    /// A notice that someone joined or left: quieter still.
    pub presence: bool,
    /// The server's id, once known (0 until then).
    pub id: RwSignal<u64>,
    /// Our nonce for own messages, empty otherwise.
    pub nonce: Arc<str>,
    /// The room it is in.
    pub room: Arc<str>,
    /// Milliseconds since the epoch: the server's time once known, the local
    /// send time until then.
    pub time: RwSignal<i64>,
    pub delivery: RwSignal<Delivery>,
    /// The first of a run of rows by one person: shows name and avatar.
    pub starts_group: RwSignal<bool>,
    /// The first message of a day: a date separator goes above it.
    pub starts_day: RwSignal<bool>,
}

impl Entry {
    /// A row by someone else, not yet matched to a server id.
    pub(super) fn new(key: u64, author: &str, text: &str, time: i64, delivery: Delivery) -> Self {
        Self {
            key,
            author: author.into(),
            text: text.into(),
            copy: RwSignal::new(ChatMessage {
                username: author.to_owned(),
                message: text.to_owned(),
                timestamp: time,
                ..ChatMessage::default()
            }),
            deleted_by_moderator: RwSignal::new(false),
            own: false,
            notice: false,
            presence: false,
            id: RwSignal::new(0),
            nonce: "".into(),
            room: "".into(),
            time: RwSignal::new(time),
            delivery: RwSignal::new(delivery),
            starts_group: RwSignal::new(true),
            starts_day: RwSignal::new(false),
        }
    }

    pub(super) fn is_message(&self) -> bool {
        !self.notice
    }
}

/// The local day of a time, to find where days change; natively (in unit
/// tests) the UTC day.
fn day_of(ms: i64) -> u32 {
    #[cfg(target_arch = "wasm32")]
    return crate::browser::time::day_key(ms);
    #[cfg(not(target_arch = "wasm32"))]
    return (ms / 86_400_000) as u32;
}

/// Marks where groups and days start in `rows`, from `from` on (the rows
/// before it are as they were).
pub(super) fn regroup(rows: &[Entry], from: usize) {
    for at in from..rows.len() {
        let entry = &rows[at];
        let before = at.checked_sub(1).map(|i| &rows[i]);
        let last_message = rows[..at].iter().rev().find(|e| e.is_message());
        let time = entry.time.get_untracked();
        let new_day = entry.is_message()
            && last_message.is_none_or(|m| day_of(m.time.get_untracked()) != day_of(time));
        let new_group = new_day
            || !entry.is_message()
            || before.is_none_or(|b| {
                !b.is_message()
                    || b.author != entry.author
                    || b.own != entry.own
                    || time - b.time.get_untracked() > GROUP_WITHIN_MS
            });
        if entry.starts_day.get_untracked() != new_day {
            entry.starts_day.set(new_day);
        }
        if entry.starts_group.get_untracked() != new_group {
            entry.starts_group.set(new_group);
        }
    }
}

/// Marks an own row delivered. The `try_` calls: a reply may come after the
/// user left the room, when the row (and its signals) are gone.
pub(super) fn mark_delivered(entry: &Entry, timestamp: i64) {
    if timestamp > 0 {
        entry.time.try_set(timestamp);
    }
    if entry
        .delivery
        .try_get_untracked()
        .is_some_and(|d| d != Delivery::Delivered)
    {
        entry.delivery.try_set(Delivery::Delivered);
    }
}

/// Sends (or re-sends) one of our rows and records the outcome on it (if
/// the row is still there: the user may switch rooms before the reply).
/// `refused` hears why, if it is refused (a mute, say). It goes after the
/// user's earlier messages have their answers (`outbox`), so the server
/// stores them in the order written.
pub fn deliver(entry: Entry, refused: impl FnOnce(&api::Failure) + 'static) {
    entry.delivery.set(Delivery::Sending);
    outbox::in_turn(async move {
        let message = ChatMessage {
            username: entry.author.to_string(),
            message: entry.text.to_string(),
            nonce: entry.nonce.to_string(),
            room: entry.room.to_string(),
            reply_to: entry.copy.with_untracked(|m| m.reply_to),
            ..ChatMessage::default()
        };
        match api::send(message).await {
            Ok(reply) => {
                if reply.id != 0 {
                    entry.id.try_set(reply.id);
                }
                mark_delivered(&entry, reply.timestamp);
            }
            // The echo may have beaten a lost reply; then it did arrive.
            Err(_) if entry.delivery.try_get_untracked() == Some(Delivery::Delivered) => {}
            Err(failure) => {
                refused(&failure);
                entry.delivery.try_set(Delivery::Failed(failure));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::timeline::Timeline;

    #[test]
    fn runs_by_one_person_group_and_days_and_notices_break_them() {
        let owner = Owner::new();
        owner.set();
        let timeline = Timeline::new();
        let minute = 60_000;
        let day = 86_400_000;
        let at = |id, author: &str, time| ChatMessage {
            username: author.into(),
            message: "x".into(),
            timestamp: time,
            id,
            ..ChatMessage::default()
        };
        for message in [
            at(1, "ada", day),
            at(2, "ada", day + minute),
            at(3, "bob", day + 2 * minute),
            at(4, "bob", day + 9 * minute),
            at(5, "bob", 2 * day + 9 * minute),
        ] {
            timeline.receive(message, "me");
        }
        timeline.note_presence("carol joined");
        timeline.receive(at(6, "bob", 2 * day + 10 * minute), "me");
        let flags = |timeline: &Timeline| {
            timeline
                .rows()
                .iter()
                .map(|e| (e.starts_group.get_untracked(), e.starts_day.get_untracked()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            flags(&timeline),
            [
                (true, true),   // ada, first of the day
                (false, false), // ada a minute later
                (true, false),  // bob
                (true, false),  // bob, but 7 minutes on
                (true, true),   // bob the next day
                (true, false),  // the notice
                (true, false),  // bob after the notice
            ]
        );
        // Dismissing the first of a run makes the next one its start.
        let first = timeline.rows()[0].key;
        timeline.dismiss(first);
        assert_eq!(flags(&timeline)[0], (true, true));
    }
}
