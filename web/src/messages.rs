//! The conversation: a timeline model and the scrolling list that shows it.
//!
//! The user's own messages are added the moment they are sent (faded while
//! sending) and reconciled with the stored copy on the Subscribe stream (by
//! nonce, or by the id the `Send` reply gave) and with the reply, whichever
//! comes first, so a message is never shown twice. Messages from the stream
//! are taken in id order and an id already seen is ignored, so resuming
//! after a reconnect (from the last id) leaves no hole and no double.
//!
//! Rows from one person within a few minutes form a group under one name,
//! time and avatar, and each day starts with a separator. The list sticks
//! to the bottom only while the reader is there; someone scrolled up to read
//! is never yanked down, and gets a jump-to-latest button with a count, and
//! a "new messages" line above the first one they have not seen. Screen
//! readers hear messages as they arrive, never the history (see
//! [`Timeline::announce`]).

use std::sync::Arc;

use chat_proto::ChatMessage;
use leptos::html;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

use crate::rich::{self, Piece};
use crate::{api, time};

/// Messages kept in memory; older ones scroll away for good.
const MAX_ENTRIES: usize = 1_000;
/// How much of a message screen readers are told as it arrives.
const ANNOUNCED_CHARS: usize = 300;
/// How close to the bottom (in CSS pixels) still counts as "at the bottom".
const STICK_THRESHOLD_PX: i32 = 64;
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
#[derive(Clone)]
pub struct Entry {
    /// Local identity for keyed rendering; never sent anywhere.
    pub key: u64,
    pub author: Arc<str>,
    pub text: Arc<str>,
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
    fn new(key: u64, author: &str, text: &str, time: i64, delivery: Delivery) -> Self {
        Self {
            key,
            author: author.into(),
            text: text.into(),
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

    fn is_message(&self) -> bool {
        !self.notice
    }
}

/// The local day of a time, to find where days change; natively (in unit
/// tests) the UTC day.
fn day_of(ms: i64) -> u32 {
    #[cfg(target_arch = "wasm32")]
    return time::day_key(ms);
    #[cfg(not(target_arch = "wasm32"))]
    return (ms / 86_400_000) as u32;
}

/// Marks where groups and days start in `rows`, from `from` on (the rows
/// before it are as they were).
fn regroup(rows: &[Entry], from: usize) {
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

/// Every message seen in a room since the page loaded, oldest first.
#[derive(Clone, Copy, PartialEq)]
pub struct Timeline {
    /// The room it shows.
    room: StoredValue<Arc<str>>,
    entries: RwSignal<Vec<Entry>>,
    /// The newest id received on the stream: where a reconnect resumes.
    last_id: StoredValue<u64>,
    /// The row the "new messages" line goes above, if any.
    pub marker: RwSignal<Option<u64>>,
    /// Messages after this id are new to the reader (0: all are).
    unread_after: StoredValue<u64>,
    /// What screen readers are told last (a message as it arrives).
    pub announcement: RwSignal<String>,
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
        thread_local!(static NEXT: std::cell::Cell<u64> = const { std::cell::Cell::new(1) });
        NEXT.with(|next| next.replace(next.get() + 1))
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

    /// Shows a message of ours right away, before the server has it.
    pub fn push_own(&self, author: &str, text: &str, nonce: &str) -> Entry {
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
        if message.id != 0 {
            if message.id <= self.last_id.get_value() {
                return None;
            }
            self.last_id.set_value(message.id);
        }
        if let Some(entry) = self.find_own(&message) {
            entry.id.set(message.id);
            mark_delivered(&entry, message.timestamp);
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

    /// Drops a failed message the user gave up on.
    pub fn dismiss(&self, key: u64) {
        self.entries.update(|e| {
            e.retain(|e| e.key != key);
            regroup(e, 0);
        });
    }
}

/// Marks an own row delivered. The `try_` calls: a reply may come after the
/// user left the room, when the row (and its signals) are gone.
fn mark_delivered(entry: &Entry, timestamp: i64) {
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
pub fn deliver(entry: Entry) {
    entry.delivery.set(Delivery::Sending);
    spawn_local(async move {
        let message = ChatMessage {
            username: entry.author.to_string(),
            message: entry.text.to_string(),
            nonce: entry.nonce.to_string(),
            room: entry.room.to_string(),
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
                entry.delivery.try_set(Delivery::Failed(failure));
            }
        }
    });
}

/// The scrolling conversation with its jump-to-latest button.
#[component]
pub fn MessageList(timeline: Timeline, draft: RwSignal<String>) -> impl IntoView {
    let list_ref = NodeRef::<html::Div>::new();
    // Whether the reader is at (or near) the bottom; only scrolling changes it.
    let stuck = RwSignal::new(true);
    // The newest row the reader has seen, for counting unseen ones.
    let seen_key = RwSignal::new(0u64);
    let unseen = RwSignal::new(0usize);
    // scrollTop at the last scroll event, to tell which way the reader went.
    let last_top = StoredValue::new(0);

    let scroll_to_bottom = move || {
        // A frame or a resize may come after the room's list is gone.
        if stuck.try_get_untracked().is_none() {
            return;
        }
        if let Some(list) = list_ref.get_untracked() {
            list.set_scroll_top(list.scroll_height());
        }
        stuck.set(true);
        unseen.set(0);
        seen_key.set(
            timeline
                .entries
                .with_untracked(|e| e.last().map_or(0, |e| e.key)),
        );
    };

    let on_scroll = move |_| {
        let Some(list) = list_ref.get_untracked() else {
            return;
        };
        let top = list.scroll_top();
        let moved_up = top < last_top.get_value();
        last_top.set_value(top);
        let gap = list.scroll_height() - top - list.client_height();
        if gap <= STICK_THRESHOLD_PX {
            if !stuck.get_untracked() {
                stuck.set(true);
            }
            if unseen.get_untracked() > 0 {
                scroll_to_bottom();
            }
        } else if moved_up && stuck.get_untracked() {
            // Only the reader scrolling up lets go of the bottom: rows
            // arriving between our own scroll and its event also leave a
            // gap, and must not.
            stuck.set(false);
        }
    };

    // New rows: follow them if the reader is at the bottom or just sent one
    // (sending means "I'm here"), otherwise count them for the pill. Runs
    // after the rows are in the DOM.
    Effect::new(move |_| {
        timeline.last_key();
        let newest_is_own_sending = timeline.entries.with_untracked(|e| {
            e.last()
                .is_some_and(|e| e.own && e.delivery.get_untracked() == Delivery::Sending)
        });
        if stuck.get_untracked() || newest_is_own_sending {
            request_animation_frame(scroll_to_bottom);
        } else {
            let seen = seen_key.get_untracked();
            let count = timeline.others_after(seen);
            // The line goes above the first message the reader missed.
            if count > 0 && unseen.get_untracked() == 0 {
                timeline.marker.set(timeline.first_other_after(seen));
            }
            unseen.set(count);
        }
    });

    // Keep the bottom in view when the list itself changes size (window
    // resize, the composer growing, a phone keyboard opening).
    list_ref.on_load(move |list| {
        let on_resize = Closure::<dyn FnMut()>::new(move || {
            // `None` once this room's list is gone (the observer outlives it).
            if stuck.try_get_untracked() == Some(true) {
                scroll_to_bottom();
            }
        });
        if let Ok(observer) = web_sys::ResizeObserver::new(on_resize.as_ref().unchecked_ref()) {
            observer.observe(&list);
            // Kept for the page's life: once the list is gone it sees nothing.
            on_resize.forget();
            std::mem::forget(observer);
        }
    });

    view! {
        <div class="timeline-wrap">
            <div
                class="timeline"
                node_ref=list_ref
                on:scroll=on_scroll
                data-testid="message-list"
                data-room=timeline.room().to_string()
                // A log, but not a live one: the history would be read out
                // on every load. Arrivals go to the announcer below.
                role="log"
                aria-live="off"
                aria-label="Messages"
                tabindex="0"
            >
                <Show when=move || timeline.is_empty()>
                    <div class="empty">
                        <svg class="empty-icon" viewBox="0 0 24 24" width="44" height="44" aria-hidden="true">
                            <path
                                fill="currentColor"
                                d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2zm3 6a1.25 1.25 0 1 0 0 2.5A1.25 1.25 0 0 0 7 10zm5 0a1.25 1.25 0 1 0 0 2.5 1.25 1.25 0 0 0 0-2.5zm5 0a1.25 1.25 0 1 0 0 2.5 1.25 1.25 0 0 0 0-2.5z"
                            />
                        </svg>
                        <p>"No messages yet."</p>
                        <p class="muted">"Say hello; everyone here will see it."</p>
                    </div>
                </Show>
                <ol class="messages">
                    <For
                        each=move || timeline.entries()
                        key=|entry| entry.key
                        children=move |entry| view! { <MessageRow entry timeline draft /> }
                    />
                </ol>
            </div>
            <Show when=move || !stuck.get()>
                <button
                    class="new-pill"
                    data-testid="jump-latest"
                    on:click=move |_| scroll_to_bottom()
                >
                    {move || match unseen.get() {
                        0 => "Jump to latest ↓".to_owned(),
                        1 => "1 new message ↓".to_owned(),
                        n => format!("{n} new messages ↓"),
                    }}
                </button>
            </Show>
            <div class="sr-only" aria-live="polite" data-testid="announcer">
                {move || timeline.announcement.get()}
            </div>
        </div>
    }
}

#[component]
fn MessageRow(entry: Entry, timeline: Timeline, draft: RwSignal<String>) -> impl IntoView {
    if entry.presence {
        // No status role of its own (unlike other notices): comings and
        // goings are not alerts, and the online list says who is here.
        return view! {
            <li class="notice presence" data-testid="presence-line">{entry.text.to_string()}</li>
        }
        .into_any();
    }
    if entry.notice {
        return view! {
            <li class="notice" data-testid="notice" role="status">{entry.text.to_string()}</li>
        }
        .into_any();
    }
    let Entry {
        key,
        author,
        text,
        own,
        time,
        delivery,
        starts_group,
        starts_day,
        ..
    } = entry.clone();
    let day = move || {
        starts_day.get().then(|| {
            view! { <li class="day" data-testid="day-separator"><span>{time::day_label(time.get())}</span></li> }
        })
    };
    let marker = move || {
        (timeline.marker.get() == Some(key)).then(|| {
            view! { <li class="unread-marker" data-testid="unread-marker"><span>"New messages"</span></li> }
        })
    };
    let stamp = Memo::new(move |_| time::stamp(time.get()));
    let state = move || match delivery.get() {
        Delivery::Sending => "sending",
        Delivery::Delivered => "delivered",
        Delivery::Failed(_) => "failed",
    };
    let error = move || match delivery.get() {
        Delivery::Failed(failure) => Some(failure),
        _ => None,
    };
    // Held back by the server's rate limit: shown calmly, not as an error.
    let too_fast = move || delivery.with(|d| matches!(d, Delivery::Failed(f) if f.too_fast));
    let hue = name_hue(&author);
    // Uppercased by CSS: Rust's Unicode case tables would cost ~10 KB.
    let initial = author.chars().next().map(String::from).unwrap_or_default();

    view! {
        {day}
        {marker}
        <li
            class="msg"
            class:own=own
            class:cont=move || !starts_group.get()
            data-testid="message"
            data-own=if own { "true" } else { "false" }
            data-state=state
            data-failure=move || too_fast().then_some("too-fast")
            style=format!("--hue: {hue}")
        >
            {(!own).then(|| view! { <span class="avatar" aria-hidden="true">{initial}</span> })}
            <div class="bubble">
                <div class="meta">
                    // Own bubbles do not repeat the user's name; a
                    // continuation names its author for screen readers only.
                    {if own {
                        view! { <span class="sr-only">"You"</span> }.into_any()
                    } else {
                        view! {
                            <span class="author" data-testid="message-author">
                                {author.to_string()}
                            </span>
                        }
                        .into_any()
                    }}
                    <time
                        data-testid="message-time"
                        datetime=move || stamp.with(|s| s.iso.clone())
                        title=move || stamp.with(|s| s.full.clone())
                    >
                        {move || stamp.with(|s| s.short.clone())}
                    </time>
                    {own.then(|| view! {
                        <span class="tick" role="img" aria-label=state title=state>
                            {move || match delivery.get() {
                                Delivery::Sending => "○",
                                Delivery::Delivered => "✓",
                                Delivery::Failed(_) => "!",
                            }}
                        </span>
                    })}
                </div>
                <div class="text" data-testid="message-text">{rich_text(&text)}</div>
            </div>
            {move || error().map(|failure| {
                let retry_entry = entry.clone();
                let text = entry.text.clone();
                // Retry resends the same text; a refusal of the text itself
                // offers Edit instead: back into the composer (unless the
                // user has started another message), and off the list.
                let action = if failure.retryable {
                    view! {
                        <button
                            class="link"
                            data-testid="retry-button"
                            on:click=move |_| deliver(retry_entry.clone())
                        >
                            "Retry"
                        </button>
                    }
                    .into_any()
                } else {
                    view! {
                        <button
                            class="link"
                            data-testid="edit-button"
                            on:click=move |_| {
                                if draft.with_untracked(|d| d.trim().is_empty()) {
                                    draft.set(text.to_string());
                                }
                                timeline.dismiss(key);
                            }
                        >
                            "Edit"
                        </button>
                    }
                    .into_any()
                };
                // Sending too fast is no fault of the message: a polite
                // status in the server's (reworded) words, then Retry.
                let (role, prefix) = if failure.too_fast {
                    ("status", "")
                } else {
                    ("alert", "Not sent: ")
                };
                view! {
                    <div class="send-error" class:too-fast=failure.too_fast role=role>
                        <span>
                            {prefix} <span data-testid="send-error">{failure.reason}</span>
                        </span>
                        {action}
                        <button
                            class="link"
                            data-testid="dismiss-button"
                            on:click=move |_| timeline.dismiss(key)
                        >
                            "Dismiss"
                        </button>
                    </div>
                }
            })}
        </li>
    }
    .into_any()
}

/// A message's text with its links and code (see [`rich`]), all as text.
fn rich_text(text: &str) -> AnyView {
    let pieces = rich::pieces(text);
    if let [Piece::Text(plain)] = pieces.as_slice() {
        return plain.clone().into_any();
    }
    pieces
        .into_iter()
        .map(|piece| match piece {
            Piece::Text(text) => text.into_any(),
            Piece::Link(url) => {
                let label = url.clone();
                view! { <a href=url target="_blank" rel="noopener noreferrer">{label}</a> }
            }
            .into_any(),
            Piece::Code(code) => view! { <code>{code}</code> }.into_any(),
            Piece::Block(code) => view! { <pre><code>{code}</code></pre> }.into_any(),
        })
        .collect::<Vec<_>>()
        .into_any()
}

/// A stable colour per name, so people are easy to tell apart.
pub fn name_hue(name: &str) -> u32 {
    name.chars()
        .fold(7u32, |h, c| h.wrapping_mul(31).wrapping_add(c as u32))
        % 360
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Timeline {
        pub fn is_empty_untracked(&self) -> bool {
            self.entries.with_untracked(Vec::is_empty)
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
    fn runs_by_one_person_group_and_days_and_notices_break_them() {
        let owner = Owner::new();
        owner.set();
        let timeline = Timeline::new();
        let minute = 60_000;
        let day = 86_400_000;
        let at = |id, author: &str, time| ChatMessage {
            timestamp: time,
            ..stored(id, author, "x")
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
            timeline.entries.with_untracked(|e| {
                e.iter()
                    .map(|e| (e.starts_group.get_untracked(), e.starts_day.get_untracked()))
                    .collect::<Vec<_>>()
            })
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
        let first = timeline.entries.with_untracked(|e| e[0].key);
        timeline.dismiss(first);
        assert_eq!(flags(&timeline)[0], (true, true));
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
}
