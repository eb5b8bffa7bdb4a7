//! The conversation's model: every message seen in a room, in order, each
//! shown once, and what the reader has seen of them. The list that shows it
//! is `components::message_list`; one row is a `state::entry::Entry`.
//!
//! The user's own messages are added the moment they are sent (faded while
//! sending) and reconciled with the stored copy on the Subscribe stream (by
//! nonce, or by the id the `Send` reply gave) and with the reply, whichever
//! comes first, so a message is never shown twice. Messages from the stream
//! are taken in id order and an id already seen is ignored, so resuming
//! after a reconnect (from the last id) leaves no hole and no double.
//!
//! Changes to earlier messages (edits, deletions, reactions) share the
//! room's ids and are applied to the row's copy by `chat_proto::state`'s
//! rule: only a change newer than the copy counts, so seeing one twice, or
//! a message again in a newer state, changes nothing twice.

use std::sync::Arc;

use chat_proto::{Change, ChangeKind, ChatMessage, state};
use leptos::prelude::*;

use crate::browser::time;
use crate::state::entry::{Delivery, Entry, mark_delivered, regroup};

/// Rows kept in memory. New ones push the oldest out (scrolling back reads
/// them again); older pages read while scrolling back push the newest out,
/// and the list then no longer reaches the live end until the reader jumps
/// back to it (see [`Timeline::prepend`]).
const MAX_ENTRIES: usize = 1_000;
/// Keys below this are for rows read while scrolling back (counting down),
/// keys above it for rows as they come (counting up): a row's key says
/// which came later, as `others_after` needs.
const KEYS_FROM: u64 = 1 << 40;
/// How much of a message screen readers are told as it arrives.
const ANNOUNCED_CHARS: usize = 300;

/// Every message seen in a room since the page loaded, oldest first.
#[derive(Clone, Copy, PartialEq)]
pub struct Timeline {
    /// The room it shows.
    room: StoredValue<Arc<str>>,
    entries: RwSignal<Vec<Entry>>,
    /// The newest id received on the stream (a message's or a change's):
    /// where a reconnect resumes.
    last_id: StoredValue<u64>,
    /// The row the "new messages" line goes above, if any.
    pub marker: RwSignal<Option<u64>>,
    /// Messages after this id are new to the reader (0: all are).
    unread_after: StoredValue<u64>,
    /// What screen readers are told last (a message as it arrives).
    pub announcement: RwSignal<String>,
    /// Older pages pushed the newest rows out: the list does not reach the
    /// live end, and new messages are not added until it does again.
    detached: RwSignal<bool>,
    /// The newest message id the stream told of (a detached list's target).
    newest_message: StoredValue<u64>,
}

impl Timeline {
    #[cfg(test)]
    pub fn new() -> Self {
        Self::of_room("general")
    }

    /// An empty timeline of `room`.
    pub fn of_room(room: &str) -> Self {
        Self {
            room: StoredValue::new(room.into()),
            entries: RwSignal::new(Vec::new()),
            last_id: StoredValue::new(0),
            marker: RwSignal::new(None),
            unread_after: StoredValue::new(0),
            announcement: RwSignal::new(String::new()),
            detached: RwSignal::new(false),
            newest_message: StoredValue::new(0),
        }
    }

    /// Starts the stream after `id` instead of with the recent history.
    pub fn resume_after(&self, id: u64) {
        self.last_id.set_value(id);
    }

    /// The reader has seen the room up to `id`: the "new messages" line goes
    /// above the first message after it.
    pub fn seen_up_to(&self, id: u64) {
        self.unread_after.set_value(id);
    }

    /// Tells screen readers about a message that has just arrived.
    pub fn announce(&self, entry: &Entry) {
        let text: String = entry.text.chars().take(ANNOUNCED_CHARS).collect();
        self.announcement.set(format!("{}: {text}", entry.author));
    }

    /// The first row after `key` by someone else.
    pub fn first_other_after(&self, key: u64) -> Option<u64> {
        self.entries.with_untracked(|e| {
            e.iter()
                .find(|e| e.key > key && !e.own && e.is_message())
                .map(|e| e.key)
        })
    }

    /// The newest id received on the stream (0 before any).
    pub fn last_id(&self) -> u64 {
        self.last_id.get_value()
    }

    /// All rows (tracked).
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.get()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.with(Vec::is_empty)
    }

    /// The key of the newest row, or 0 (tracked): grows with every new row.
    pub fn last_key(&self) -> u64 {
        self.entries.with(|e| e.last().map_or(0, |e| e.key))
    }

    /// The key of the newest row, or 0 (untracked).
    pub fn last_key_untracked(&self) -> u64 {
        self.entries
            .with_untracked(|e| e.last().map_or(0, |e| e.key))
    }

    /// Whether the newest row is one of ours still being sent (untracked).
    pub fn newest_is_own_sending(&self) -> bool {
        self.entries.with_untracked(|e| {
            e.last()
                .is_some_and(|e| e.own && e.delivery.get_untracked() == Delivery::Sending)
        })
    }

    /// How many rows after `key` came from someone else (untracked).
    pub fn others_after(&self, key: u64) -> usize {
        self.entries.with_untracked(|e| {
            e.iter()
                .filter(|e| e.key > key && !e.own && !e.notice)
                .count()
        })
    }

    fn push(
        &self,
        author: &str,
        text: &str,
        own: bool,
        nonce: &str,
        time: i64,
        delivery: Delivery,
    ) -> Entry {
        if own {
            self.caught_up();
        }
        self.append(Entry {
            own,
            nonce: nonce.into(),
            ..Entry::new(self.take_key(), author, text, time, delivery)
        })
    }

    /// The user wrote (here or in another tab): they have read what came
    /// before, so the "new messages" line goes.
    fn caught_up(&self) {
        if self.marker.get_untracked().is_some() {
            self.marker.set(None);
        }
    }

    fn take_key(&self) -> u64 {
        // Unique across rooms too: a list shown in place of another's must
        // not take its rows for its own.
        thread_local!(static NEXT: std::cell::Cell<u64> = const { std::cell::Cell::new(KEYS_FROM) });
        NEXT.with(|next| next.replace(next.get() + 1))
    }

    /// A key below every row's so far: for a row read while scrolling back.
    fn take_older_key(&self) -> u64 {
        thread_local!(static NEXT: std::cell::Cell<u64> = const { std::cell::Cell::new(KEYS_FROM - 1) });
        NEXT.with(|next| next.replace(next.get() - 1))
    }

    fn append(&self, entry: Entry) -> Entry {
        self.entries.update(|entries| {
            entries.push(entry.clone());
            if entries.len() > MAX_ENTRIES {
                let excess = entries.len() - MAX_ENTRIES;
                entries.drain(..excess);
                // The new first row starts its day and group.
                regroup(entries, 0);
            } else {
                regroup(entries, entries.len() - 1);
            }
        });
        entry
    }

    /// Shows a message of ours (answering message `reply_to`, or 0) right
    /// away, before the server has it.
    pub fn push_own(&self, author: &str, text: &str, nonce: &str, reply_to: u64) -> Entry {
        self.caught_up();
        let entry = Entry {
            own: true,
            nonce: nonce.into(),
            room: self.room.get_value(),
            ..Entry::new(
                self.take_key(),
                author,
                text,
                time::now_ms(),
                Delivery::Sending,
            )
        };
        entry.copy.update(|copy| copy.reply_to = reply_to);
        self.append(entry)
    }

    /// The room it shows.
    pub fn room(&self) -> Arc<str> {
        self.room.get_value()
    }

    /// The row of ours this stored message is, matched by nonce or id.
    fn find_own(&self, message: &ChatMessage) -> Option<Entry> {
        let by_nonce = |e: &Entry| !message.nonce.is_empty() && *e.nonce == *message.nonce;
        let by_id = |e: &Entry| message.id != 0 && e.id.get_untracked() == message.id;
        self.entries.with_untracked(|e| {
            e.iter()
                .rev()
                .find(|e| e.own && !e.notice && (by_nonce(e) || by_id(e)))
                .cloned()
        })
    }

    /// A message from the Subscribe stream, for a user called `me`: one seen
    /// already (ignored), the stored copy of one of ours (then it is
    /// delivered, with the server's time), or a new row, returned when it
    /// is someone else's.
    pub fn receive(&self, message: ChatMessage, me: &str) -> Option<Entry> {
        if message.id > self.newest_message.get_value() {
            self.newest_message.set_value(message.id);
        }
        if self.detached.get_untracked() && self.find_own(&message).is_none() {
            // Read back in full when the reader returns to the live end.
            self.last_id
                .set_value(self.last_id.get_value().max(message.id));
            return None;
        }
        if message.id != 0 {
            if message.id <= self.last_id.get_value() {
                // Seen already; maybe now in a newer state.
                if let Some(entry) = self.by_id(message.id) {
                    entry.copy.update(|copy| {
                        state::refresh(copy, message);
                    });
                }
                return None;
            }
            self.last_id.set_value(message.id);
        }
        if let Some(entry) = self.find_own(&message) {
            entry.id.set(message.id);
            mark_delivered(&entry, message.timestamp);
            entry.copy.set(message);
            return None;
        }
        let own = message.username == me;
        let entry = self.push(
            &message.username,
            &message.message,
            own,
            "",
            message.timestamp,
            Delivery::Delivered,
        );
        entry.id.set(message.id);
        entry.copy.set(message.clone());
        let unread_after = self.unread_after.get_value();
        if !own
            && unread_after > 0
            && message.id > unread_after
            && self.marker.get_untracked().is_none()
        {
            self.marker.set(Some(entry.key));
        }
        (!own).then_some(entry)
    }

    /// A change to an earlier message: applied to its row, if the room's
    /// list still has it.
    pub fn apply(&self, change: &Change) {
        if change.id > self.last_id.get_value() {
            self.last_id.set_value(change.id);
        }
        let Some(entry) = self.by_id(change.target) else {
            return;
        };
        let mut applied = false;
        entry
            .copy
            .update(|copy| applied = state::apply(copy, change));
        if applied && change.kind() == ChangeKind::ChangeDelete && change.by_moderator {
            entry.deleted_by_moderator.set(true);
        }
    }

    /// The key of the user's newest message the server has and that is not
    /// deleted (untracked): what Up arrow edits.
    pub fn last_own_stored(&self) -> Option<u64> {
        self.entries.with_untracked(|entries| {
            entries
                .iter()
                .rev()
                .find(|e| {
                    e.own && e.id.get_untracked() != 0 && !e.copy.with_untracked(|m| m.deleted)
                })
                .map(|e| e.key)
        })
    }

    /// The row of message `id`, if the list has it (untracked).
    pub fn by_id(&self, id: u64) -> Option<Entry> {
        if id == 0 {
            return None;
        }
        self.entries.with_untracked(|entries| {
            entries
                .iter()
                .rev()
                .find(|e| e.id.get_untracked() == id)
                .cloned()
        })
    }

    /// The server no longer has the messages after `after_id` and before
    /// `next_id`; if `next_id` is not after `after_id`, its history is not
    /// the one this page saw (a new database) and ids start over.
    pub fn gap(&self, after_id: u64, next_id: u64) {
        let text = if next_id <= after_id {
            "The server's history was reset; showing it from the start.".to_owned()
        } else {
            match next_id - after_id - 1 {
                1 => "1 earlier message is no longer available.".to_owned(),
                n => format!("{n} earlier messages are no longer available."),
            }
        };
        self.last_id.set_value(next_id.saturating_sub(1));
        self.append(Entry {
            notice: true,
            ..Entry::new(self.take_key(), "", &text, 0, Delivery::Delivered)
        });
    }

    /// A quiet line saying someone joined or left.
    pub fn note_presence(&self, text: &str) {
        self.append(Entry {
            notice: true,
            presence: true,
            ..Entry::new(self.take_key(), "", text, 0, Delivery::Delivered)
        });
    }

    /// The id of the oldest stored message in the list (0: none).
    pub fn first_id(&self) -> u64 {
        self.entries.with_untracked(|entries| {
            entries
                .iter()
                .map(|e| e.id.get_untracked())
                .find(|id| *id != 0)
                .unwrap_or(0)
        })
    }

    /// The id of the newest stored message in the list (0: none).
    pub fn last_message_id(&self) -> u64 {
        self.entries.with_untracked(|entries| {
            entries
                .iter()
                .rev()
                .map(|e| e.id.get_untracked())
                .find(|id| *id != 0)
                .unwrap_or(0)
        })
    }

    /// The newest message id the stream told of, shown or not.
    pub fn newest_message(&self) -> u64 {
        self.newest_message.get_value()
    }

    /// Whether the list no longer reaches the live end (tracked).
    pub fn is_detached(&self) -> bool {
        self.detached.get()
    }

    /// Older messages (oldest first, from `History`) go before the first
    /// row; those the list has are left out. Past [`MAX_ENTRIES`], the
    /// newest rows go, and the list is detached from the live end.
    pub fn prepend(&self, older: Vec<ChatMessage>, me: &str) {
        let first = self.first_id();
        let rows: Vec<Entry> = older
            .into_iter()
            .filter(|m| first == 0 || m.id < first)
            .rev()
            .map(|message| self.history_row(message, me))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if rows.is_empty() {
            return;
        }
        let mut dropped = false;
        self.entries.update(|entries| {
            entries.splice(0..0, rows);
            if entries.len() > MAX_ENTRIES {
                entries.truncate(MAX_ENTRIES);
                dropped = true;
            }
            regroup(entries, 0);
        });
        if dropped {
            self.detached.set(true);
        }
    }

    /// The list becomes `page` (oldest first, from `History`), whatever it
    /// showed before: the live end again if `live` (the page has the
    /// newest message), else detached from it.
    pub fn restart_from(&self, page: Vec<ChatMessage>, me: &str, live: bool) {
        let rows: Vec<Entry> = page
            .into_iter()
            .map(|message| self.history_row(message, me))
            .collect();
        if let Some(last) = rows.last() {
            let id = last.id.get_untracked();
            self.last_id.set_value(self.last_id.get_value().max(id));
        }
        self.marker.set(None);
        self.entries.update(|entries| {
            *entries = rows;
            regroup(entries, 0);
        });
        self.detached.set(!live);
    }

    /// A row for a stored message read from `History`, with a key below
    /// every row's so far.
    fn history_row(&self, message: ChatMessage, me: &str) -> Entry {
        let entry = Entry {
            own: message.username == me,
            room: self.room.get_value(),
            ..Entry::new(
                self.take_older_key(),
                &message.username,
                &message.message,
                message.timestamp,
                Delivery::Delivered,
            )
        };
        entry.id.set(message.id);
        entry.copy.set(message);
        entry
    }

    /// Drops a failed message the user gave up on.
    pub fn dismiss(&self, key: u64) {
        self.entries.update(|e| {
            e.retain(|e| e.key != key);
            regroup(e, 0);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::api;

    impl Timeline {
        pub fn is_empty_untracked(&self) -> bool {
            self.entries.with_untracked(Vec::is_empty)
        }

        pub fn rows(&self) -> Vec<Entry> {
            self.entries.get_untracked()
        }

        pub fn texts(&self) -> Vec<String> {
            self.entries
                .with_untracked(|e| e.iter().map(|e| e.text.to_string()).collect())
        }

        fn receive_under_another_name(&self, message: ChatMessage) {
            self.receive(message, "someone");
        }
    }

    fn own(timeline: &Timeline, text: &str, nonce: &str) -> Entry {
        timeline.push("me", text, true, nonce, 1, Delivery::Sending)
    }

    fn echo(text: &str, nonce: &str, timestamp: i64) -> ChatMessage {
        ChatMessage {
            username: "me".into(),
            message: text.into(),
            timestamp,
            nonce: nonce.into(),
            ..ChatMessage::default()
        }
    }

    fn stored(id: u64, author: &str, text: &str) -> ChatMessage {
        ChatMessage {
            username: author.into(),
            message: text.into(),
            timestamp: 1,
            id,
            ..ChatMessage::default()
        }
    }

    #[test]
    fn the_echo_of_an_own_message_delivers_it_instead_of_adding_a_row() {
        let timeline = Timeline::new();
        let entry = own(&timeline, "hi", "n1");
        timeline.receive_under_another_name(echo("hi", "n1", 42));
        timeline.receive_under_another_name(echo("hi", "n1", 42));
        let entries = timeline.entries.get_untracked();
        assert_eq!(entries.len(), 1);
        assert_eq!(entry.delivery.get_untracked(), Delivery::Delivered);
        assert_eq!(entry.time.get_untracked(), 42);
    }

    #[test]
    fn messages_from_others_are_added_even_with_a_nonce() {
        let timeline = Timeline::new();
        own(&timeline, "hi", "n1");
        timeline.receive_under_another_name(echo("hello", "", 5));
        timeline.receive_under_another_name(echo("hey", "someone-elses", 6));
        let entries = timeline.entries.get_untracked();
        assert_eq!(entries.len(), 3);
        assert!(!entries[1].own && !entries[2].own);
        assert_eq!(timeline.others_after(entries[0].key), 2);
    }

    #[test]
    fn the_reply_and_the_echo_agree_in_either_order() {
        let timeline = Timeline::new();
        let entry = own(&timeline, "hi", "n1");
        mark_delivered(&entry, 42);
        timeline.receive_under_another_name(echo("hi", "n1", 42));
        assert_eq!(timeline.entries.get_untracked().len(), 1);
        assert_eq!(entry.delivery.get_untracked(), Delivery::Delivered);
    }

    #[test]
    fn a_late_echo_rescues_a_failed_message_and_dismiss_removes_one() {
        let timeline = Timeline::new();
        let entry = own(&timeline, "hi", "n1");
        entry.delivery.set(Delivery::Failed(api::Failure {
            reason: "lost".into(),
            retryable: true,
            too_fast: false,
            muted_until: None,
            slow_wait_ms: None,
        }));
        timeline.receive_under_another_name(echo("hi", "n1", 7));
        assert_eq!(entry.delivery.get_untracked(), Delivery::Delivered);
        timeline.dismiss(entry.key);
        assert!(timeline.entries.get_untracked().is_empty());
    }

    #[test]
    fn ids_already_seen_are_ignored_so_a_resumed_stream_adds_no_doubles() {
        let timeline = Timeline::new();
        for id in [1, 2, 3, 2, 3, 4] {
            timeline.receive(stored(id, "bob", &format!("m{id}")), "me");
        }
        let texts: Vec<_> = timeline
            .entries
            .get_untracked()
            .iter()
            .map(|e| e.text.to_string())
            .collect();
        assert_eq!(texts, ["m1", "m2", "m3", "m4"]);
        assert_eq!(timeline.last_id(), 4);
    }

    #[test]
    fn an_own_message_is_matched_by_the_id_its_reply_gave() {
        let timeline = Timeline::new();
        let entry = own(&timeline, "hi", "n-lost");
        entry.id.set(9);
        timeline.receive(stored(9, "me", "hi"), "me");
        assert_eq!(timeline.entries.get_untracked().len(), 1);
        assert_eq!(entry.delivery.get_untracked(), Delivery::Delivered);
        // From the history after a reload: our name, so shown as ours.
        timeline.receive(stored(10, "me", "earlier"), "me");
        assert!(timeline.entries.get_untracked()[1].own);
    }

    #[test]
    fn a_gap_adds_a_notice_and_moves_the_resume_point() {
        let timeline = Timeline::new();
        timeline.receive(stored(3, "bob", "m3"), "me");
        timeline.gap(3, 8);
        assert_eq!(timeline.last_id(), 7);
        timeline.receive(stored(8, "bob", "m8"), "me");
        let entries = timeline.entries.get_untracked();
        assert!(entries[1].notice);
        assert_eq!(
            &*entries[1].text,
            "4 earlier messages are no longer available."
        );
        // A reset history: ids start over, and are taken again.
        timeline.gap(8, 1);
        timeline.receive(stored(1, "bob", "fresh"), "me");
        assert_eq!(
            &*timeline.entries.get_untracked().last().expect("row").text,
            "fresh"
        );
    }

    #[test]
    fn the_new_messages_line_goes_above_the_first_unseen_message_by_others() {
        let owner = Owner::new();
        owner.set();
        let timeline = Timeline::new();
        timeline.seen_up_to(2);
        for (id, author) in [(1, "bob"), (2, "bob"), (3, "me"), (4, "bob"), (5, "bob")] {
            timeline.receive(stored(id, author, "x"), "me");
        }
        let key_of = |id| {
            timeline
                .entries
                .with_untracked(|e| e.iter().find(|e| e.id.get_untracked() == id).map(|e| e.key))
        };
        assert_eq!(timeline.marker.get_untracked(), key_of(4));
        // Writing means the reader has caught up.
        own(&timeline, "hi", "n1");
        assert_eq!(timeline.marker.get_untracked(), None);
    }

    #[test]
    fn old_rows_are_dropped_past_the_cap() {
        let timeline = Timeline::new();
        for i in 0..(MAX_ENTRIES + 5) {
            timeline.receive_under_another_name(echo(&i.to_string(), "", 1));
        }
        let entries = timeline.entries.get_untracked();
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert_eq!(&*entries[0].text, "5");
    }

    #[test]
    fn older_pages_go_first_and_past_the_cap_push_the_newest_out_until_the_live_end_is_back() {
        let owner = Owner::new();
        owner.set();
        let timeline = Timeline::new();
        for id in 901..=1_000 {
            timeline.receive(stored(id, "bob", &id.to_string()), "me");
        }
        let newest_key = timeline.last_key_untracked();
        // A page that overlaps what the list has: only the older ones go in.
        let page = |ids: std::ops::RangeInclusive<u64>| {
            ids.map(|id| stored(id, if id % 2 == 0 { "me" } else { "bob" }, &id.to_string()))
                .collect::<Vec<_>>()
        };
        timeline.prepend(page(851..=905), "me");
        assert_eq!(timeline.first_id(), 851);
        assert_eq!(timeline.rows().len(), 150);
        assert!(timeline.rows()[1].own, "852 is the user's own");
        // Older rows are not "after" anything the reader saw.
        assert_eq!(timeline.others_after(newest_key), 0);
        assert!(!timeline.is_detached());

        // Past the cap, the newest go and the list lets go of the live end.
        for from in (1..=850u64).rev().step_by(100) {
            let to = from.saturating_sub(99).max(1);
            timeline.prepend(page(to..=from), "me");
        }
        assert_eq!(timeline.rows().len(), MAX_ENTRIES);
        assert_eq!(timeline.first_id(), 1);
        assert_eq!(timeline.last_message_id(), 1_000);
        timeline.prepend(page(1..=1), "me");
        assert!(!timeline.is_detached(), "exactly the cap: all of it fits");
        let cap_test = Timeline::new();
        for id in 1_001..=1_950 {
            cap_test.receive(stored(id, "bob", "x"), "me");
        }
        cap_test.prepend(page(901..=1_000), "me");
        assert!(cap_test.is_detached());
        assert_eq!(cap_test.rows().len(), MAX_ENTRIES);
        assert_eq!(cap_test.first_id(), 901);
        assert_eq!(cap_test.last_message_id(), 1_900, "the newest 50 went");
        // While detached, new messages wait to be read back.
        cap_test.receive(stored(1_951, "bob", "live"), "me");
        assert_eq!(cap_test.last_message_id(), 1_900);
        assert_eq!(cap_test.newest_message(), 1_951);
        // The live end again: the newest page, and what comes next.
        cap_test.restart_from(page(1_902..=1_951), "me", true);
        assert!(!cap_test.is_detached());
        assert_eq!(cap_test.rows().len(), 50);
        cap_test.receive(stored(1_952, "bob", "next"), "me");
        assert_eq!(cap_test.last_message_id(), 1_952);
    }
}
