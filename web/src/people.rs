//! Who is here and who is typing: the model the stream's `Presence` and
//! `Typing` events keep, the online list, the "is typing" line, and the
//! notices this user's own typing sends (at most one every 3 s).
//!
//! The first `Presence` after each `Ready` is the whole list; later ones say
//! only who joined or left, and those become quiet lines in the
//! conversation.

use chat_proto::{Presence, Typing};
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;

use crate::api;
use crate::focus;
use crate::messages::{Timeline, name_hue};
use crate::time;

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

/// "ada is typing...", "ada and bob are typing...", or "several people are
/// typing..."; empty when nobody is.
pub fn typing_line(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => format!("{one} is typing..."),
        [one, two] => format!("{one} and {two} are typing..."),
        _ => "several people are typing...".to_owned(),
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

/// The button that opens the list of people (in the header).
const DRAWER_TOGGLE: &str = "[aria-controls=online-list]";

/// Everyone present, this user marked; on a phone it opens as a drawer:
/// opening it moves focus into it (to its close button), and closing it
/// (that button, or Escape) gives focus back to the button that opened it.
#[component]
pub fn OnlineList(people: People, me: Signal<String>, open: RwSignal<bool>) -> impl IntoView {
    let count = move || people.online.with(Vec::len);
    Effect::new(move |was_open: Option<bool>| {
        let is_open = open.get();
        if is_open && was_open == Some(false) {
            request_animation_frame(|| {
                let close = document()
                    .query_selector("#online-list .close-people")
                    .ok()
                    .flatten()
                    .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok());
                if let Some(close) = close {
                    let _ = close.focus();
                }
            });
        }
        is_open
    });
    let close = move || focus::close_drawer(open, DRAWER_TOGGLE);
    view! {
        <aside
            class="people"
            class:open=move || open.get()
            id="online-list"
            data-testid="online-list"
            aria-labelledby="people-title"
            // Reachable by Tab (and scrollable by keyboard) on wide screens,
            // where nothing in it takes focus.
            tabindex="0"
            on:keydown=move |ev| {
                if ev.key() == "Escape" && open.get_untracked() {
                    close();
                }
            }
        >
            <div class="people-head">
                <h2 id="people-title">
                    "Online " <span class="people-count">{count}</span>
                </h2>
                <button
                    class="close-people"
                    aria-label="Close the list of people online"
                    on:click=move |_| close()
                >
                    "✕"
                </button>
            </div>
            <ul>
                <For
                    each=move || people.shown()
                    key=|name| name.clone()
                    children=move |name| {
                        let own = me.with_untracked(|me| *me == name);
                        let initial = name.chars().next().map(String::from).unwrap_or_default();
                        view! {
                            <li data-testid="online-person" class:own=own>
                                <span class="avatar small" aria-hidden="true" style=format!("--hue: {}", name_hue(&name))>
                                    {initial}
                                </span>
                                <span class="person-name">{name.clone()}</span>
                                {own.then(|| view! { <span class="muted">" (you)"</span> })}
                            </li>
                        }
                    }
                />
            </ul>
        </aside>
    }
}

/// The header's count of people online; on a phone it opens the list.
#[component]
pub fn OnlineCount(people: People, open: RwSignal<bool>) -> impl IntoView {
    let count = move || people.online.with(Vec::len);
    view! {
        <button
            class="online-count"
            data-testid="online-count"
            aria-label=move || format!("{} online: show who", count())
            aria-expanded=move || if open.get() { "true" } else { "false" }
            aria-controls="online-list"
            on:click=move |_| open.update(|o| *o = !*o)
        >
            <svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true">
                <path
                    fill="currentColor"
                    d="M9 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zm0 2c-3.3 0-7 1.7-7 4v2h14v-2c0-2.3-3.7-4-7-4zm8-2a3 3 0 1 0 0-6 3 3 0 0 0 0 6zm1 2h-1.2c1.3 1 2.2 2.3 2.2 4v2h4v-2c0-2.2-2.7-3.8-5-4z"
                />
            </svg>
            <span>{count}</span>
        </button>
    }
}

/// The line above the composer saying who is typing.
#[component]
pub fn TypingLine(people: People) -> impl IntoView {
    view! {
        <div class="typing" data-testid="typing" aria-live="polite">
            {move || people.typing.with(|names| typing_line(names))}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn the_typing_line_names_one_or_two_and_counts_no_further() {
        assert_eq!(typing_line(&[]), "");
        assert_eq!(typing_line(&names(&["ada"])), "ada is typing...");
        assert_eq!(
            typing_line(&names(&["ada", "bob"])),
            "ada and bob are typing..."
        );
        assert_eq!(
            typing_line(&names(&["ada", "bob", "cy"])),
            "several people are typing..."
        );
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
