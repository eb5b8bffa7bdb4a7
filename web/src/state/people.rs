//! Who is here and who is typing: the model the stream's `Presence` and
//! `Typing` events keep, and the notices this user's own typing sends (at
//! most one every 3 s). The views of it are in `components::people`.
//!
//! The first `Presence` after each `Ready` is the whole list; later ones say
//! only who joined or left, and those become quiet lines in the
//! conversation.

use chat_proto::{Presence, Typing};
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::browser::time;
use crate::net::api;
use crate::state::timeline::Timeline;

/// How often a still-typing user repeats the notice; the server drops it
/// after 6 s without one.
const TYPING_EVERY_MS: f64 = 3_000.0;

#[derive(Clone, Copy)]
pub struct People {
    /// Everyone present, sorted as the server sorts (by name).
    pub online: RwSignal<Vec<String>>,
    /// Who is typing now, in the order they started (this user excluded).
    pub typing: RwSignal<Vec<String>>,
    /// The next `Presence` is a whole list (a stream has just started).
    fresh: StoredValue<bool>,
}

impl People {
    pub fn new() -> Self {
        Self {
            online: RwSignal::new(Vec::new()),
            typing: RwSignal::new(Vec::new()),
            fresh: StoredValue::new(true),
        }
    }

    /// A new stream is live: its first `Presence` replaces the list, and
    /// typing notices from before it may never be taken back.
    pub fn restart(&self) {
        self.fresh.set_value(true);
        self.typing.set(Vec::new());
    }

    /// A `Presence` event, seen by the user called `me`.
    pub fn presence(&self, presence: Presence, timeline: Timeline, me: &str) {
        let Presence {
            online,
            joined,
            left,
        } = presence;
        if self.fresh.get_value() || !online.is_empty() {
            // A whole list: at the start, or after the stream fell behind.
            self.fresh.set_value(false);
            self.online.set(online);
        }
        for name in joined {
            let added = self
                .online
                .try_update(|list| match list.binary_search(&name) {
                    Ok(_) => false,
                    Err(at) => {
                        list.insert(at, name.clone());
                        true
                    }
                });
            if added == Some(true) && name != me {
                timeline.note_presence(&format!("{name} joined"));
            }
        }
        for name in left {
            let removed = self.online.try_update(|list| {
                let before = list.len();
                list.retain(|n| *n != name);
                list.len() != before
            });
            self.stopped_typing(&name);
            if removed == Some(true) && name != me {
                timeline.note_presence(&format!("{name} left"));
            }
        }
    }

    /// A `Typing` event; this user's own are not shown back to them.
    pub fn typing(&self, typing: Typing, me: &str) {
        if typing.username == me {
            return;
        }
        if typing.typing {
            if !self.typing.with_untracked(|t| t.contains(&typing.username)) {
                self.typing.update(|t| t.push(typing.username));
            }
        } else {
            self.stopped_typing(&typing.username);
        }
    }

    /// Everyone present, in the order people read a list of names: the
    /// server's is by code point, which puts "ada" after "Zoe" (ASCII case
    /// only: Unicode's case tables would cost the bundle ~10 KB).
    pub fn shown(&self) -> Vec<String> {
        let mut names = self.online.get();
        names.sort_by_cached_key(|name| name.to_ascii_lowercase());
        names
    }

    /// `name` sent a message (or left): the line drops them at once.
    pub fn stopped_typing(&self, name: &str) {
        if self.typing.with_untracked(|t| t.iter().any(|n| n == name)) {
            self.typing.update(|t| t.retain(|n| n != name));
        }
    }
}

/// This user's typing, told to the others: on while the draft has text
/// (repeated every 3 s of typing), off when it is emptied or sent.
#[derive(Clone, Copy)]
pub struct TypingNotices {
    /// When "typing" was last sent (0: it is off).
    last_sent: StoredValue<f64>,
    /// The room typed in.
    room: RwSignal<String>,
}

impl TypingNotices {
    pub fn new(room: RwSignal<String>) -> Self {
        Self {
            last_sent: StoredValue::new(0.0),
            room,
        }
    }

    /// The draft changed; `has_text` says whether anything is left in it.
    pub fn draft_changed(&self, has_text: bool) {
        let last = self.last_sent.get_value();
        let now = time::now_ms() as f64;
        if has_text && now - last >= TYPING_EVERY_MS {
            self.last_sent.set_value(now);
            spawn_local(api::set_typing(true, self.room.get_untracked()));
        } else if !has_text && last > 0.0 {
            self.last_sent.set_value(0.0);
            spawn_local(api::set_typing(false, self.room.get_untracked()));
        }
    }

    /// A message went out: the server ends the notice when it relays it.
    pub fn sent(&self) {
        self.last_sent.set_value(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_snapshot_replaces_the_list_and_changes_add_quiet_lines() {
        let people = People::new();
        let timeline = Timeline::new();
        let presence = |online: &[&str], joined: &[&str], left: &[&str]| Presence {
            online: names(online),
            joined: names(joined),
            left: names(left),
        };
        people.presence(presence(&["ada", "me"], &[], &[]), timeline, "me");
        assert_eq!(people.online.get_untracked(), names(&["ada", "me"]));
        assert!(timeline.is_empty_untracked(), "the snapshot adds no lines");

        people.typing(
            Typing {
                username: "ada".into(),
                typing: true,
            },
            "me",
        );
        people.presence(presence(&[], &["bob"], &["ada"]), timeline, "me");
        assert_eq!(people.online.get_untracked(), names(&["bob", "me"]));
        assert!(
            people.typing.get_untracked().is_empty(),
            "a leaver stops typing"
        );
        assert_eq!(timeline.texts(), ["bob joined", "ada left"]);

        // Joining twice, or this user's own join, adds nothing.
        people.presence(presence(&[], &["bob", "me"], &[]), timeline, "me");
        assert_eq!(timeline.texts().len(), 2);

        // After a reconnect, an empty list is still the whole list.
        people.restart();
        people.presence(presence(&[], &[], &[]), timeline, "me");
        assert!(people.online.get_untracked().is_empty());
    }

    #[test]
    fn own_typing_is_not_shown_back() {
        let people = People::new();
        people.typing(
            Typing {
                username: "me".into(),
                typing: true,
            },
            "me",
        );
        assert!(people.typing.get_untracked().is_empty());
    }
}
