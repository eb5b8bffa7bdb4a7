//! What the user is doing to the messages of the open room: answering one
//! (the composer shows which), editing one of theirs in place, or picking
//! a reaction, and what went wrong with the last of these. One per room
//! view, shared through Leptos's context by the rows and the composer.
//!
//! The changes themselves go to the server ([`net::api`]); the rows change
//! when the stream brings the change back (`Timeline::apply`), the same way
//! for this tab as for everyone else.

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::browser::clipboard;
use crate::net::{api, moderation};
use crate::state::entry::Entry;
use crate::state::rooms;

#[derive(Clone, Copy)]
pub struct Acting {
    /// The user's name: their reactions are pressed.
    pub me: Signal<String>,
    /// The user moderates: they may delete anyone's message.
    pub moderator: Signal<bool>,
    /// The room the messages are in.
    room: StoredValue<String>,
    /// The message the next one sent answers.
    pub replying: RwSignal<Option<Entry>>,
    /// The row (by key) being edited in place.
    pub editing: RwSignal<Option<u64>>,
    /// The row (by key) whose reaction picker is open.
    pub picking: RwSignal<Option<u64>>,
    /// The row (by key) asking whether to delete its message.
    pub confirming: RwSignal<Option<u64>>,
    /// Why the last action failed, for a status line.
    pub error: RwSignal<Option<String>>,
    /// A moderator muted the user in this room: the composer says so.
    pub muted: RwSignal<Option<Muted>>,
    /// Slow mode: when the user may post here again (ms since the epoch).
    pub slow_until: RwSignal<f64>,
    /// The row (by key) asking why its message is reported.
    pub reporting: RwSignal<Option<u64>>,
    /// What the last action did, for a status line ("Reported").
    pub notice: RwSignal<Option<String>>,
}

/// What the composer shows while the user is muted.
#[derive(Clone, Debug, PartialEq)]
pub struct Muted {
    /// The server's words: where, until when, why.
    pub reason: String,
    /// When it ends (ms since the epoch); 0: when a moderator lifts it.
    pub until: i64,
}

impl Acting {
    pub fn new(room: &str, me: Signal<String>, moderator: Signal<bool>) -> Self {
        Self {
            me,
            moderator,
            room: StoredValue::new(room.to_owned()),
            replying: RwSignal::new(None),
            editing: RwSignal::new(None),
            picking: RwSignal::new(None),
            confirming: RwSignal::new(None),
            error: RwSignal::new(None),
            muted: RwSignal::new(None),
            slow_until: RwSignal::new(0.0),
            reporting: RwSignal::new(None),
            notice: RwSignal::new(None),
        }
    }

    /// Notes a refusal for being muted, or for posting again too soon in
    /// slow mode, if `failure` is one.
    pub fn note_refusal(self, failure: &api::Failure) {
        if let Some(until) = failure.muted_until {
            self.muted.try_set(Some(Muted {
                reason: failure.reason.clone(),
                until,
            }));
        }
        if let Some(wait) = failure.slow_wait_ms {
            self.slow_until.try_set(js_sys::Date::now() + wait as f64);
        }
    }

    /// The user posted in a room in slow mode (`seconds` between posts).
    pub fn posted_slowly(self, seconds: u32) {
        if seconds > 0 && !self.moderator.get_untracked() {
            self.slow_until
                .set(js_sys::Date::now() + f64::from(seconds) * 1000.0);
        }
    }

    /// Puts a link to `entry`'s message on the clipboard, and says so (or
    /// shows the link, if the browser would not take it).
    pub fn copy_link(self, entry: &Entry) {
        let link = rooms::link_to(&self.room.get_value(), entry.id.get_untracked());
        self.notice.set(None);
        self.error.set(None);
        spawn_local(async move {
            if clipboard::copy(&link).await {
                self.notice
                    .try_set(Some("Link to the message copied.".to_owned()));
            } else {
                self.error
                    .try_set(Some(format!("Could not copy the link; here it is: {link}")));
            }
        });
    }

    /// Reports `entry`'s message to the moderators, saying `reason`.
    pub fn report(self, entry: &Entry, reason: String) {
        let id = entry.id.get_untracked();
        self.notice.set(None);
        self.run(
            move |room| async move { moderation::report(&room, id, &reason).await },
            move |reported| {
                if reported {
                    self.notice
                        .try_set(Some("Reported to the moderators. Thank you.".to_owned()));
                }
            },
        );
    }

    /// Saves `text` as the new text of `entry`'s message; `done` hears
    /// whether it was taken.
    pub fn save_edit(self, entry: &Entry, text: String, done: impl FnOnce(bool) + 'static) {
        let id = entry.id.get_untracked();
        self.run(
            move |room| async move { api::edit(&room, id, &text).await },
            done,
        );
    }

    /// Deletes `entry`'s message (`reason`: a moderator's, may be empty).
    pub fn delete(self, entry: &Entry, reason: String) {
        let id = entry.id.get_untracked();
        self.run(
            move |room| async move { api::delete(&room, id, &reason).await },
            |_| {},
        );
    }

    /// Adds the user's reaction `emoji` to `entry`'s message, or takes it
    /// back if they have it.
    pub fn toggle_reaction(self, entry: &Entry, emoji: String) {
        let id = entry.id.get_untracked();
        let me = self.me.get_untracked();
        let mine = entry
            .copy
            .with_untracked(|m| chat_proto::state::reacted(m, &emoji, &me));
        self.run(
            move |room| async move { api::react(&room, id, &emoji, mine).await },
            |_| {},
        );
    }

    fn run<F, Fut>(self, call: F, done: impl FnOnce(bool) + 'static)
    where
        F: FnOnce(String) -> Fut + 'static,
        Fut: Future<Output = Result<(), api::Failure>> + 'static,
    {
        self.error.set(None);
        let room = self.room.get_value();
        spawn_local(async move {
            let result = call(room).await;
            // The room may have been left meanwhile.
            if let Err(failure) = &result {
                self.note_refusal(failure);
                self.error.try_set(Some(failure.reason.clone()));
            }
            done(result.is_ok());
        });
    }
}
