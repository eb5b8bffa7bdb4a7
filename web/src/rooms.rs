//! Rooms: which one is open (its address is `#/room/NAME`, so links and
//! the back button work), what each has that this user has not seen (from
//! the one stream's `RoomActivity` events and the last id seen of each room,
//! kept in local storage), the room list, and the dialog that creates one.

use std::collections::HashMap;

use chat_proto::rules::{self, GENERAL};
use leptos::html;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;

use crate::api::{self, RoomInfo};
use crate::focus;

const SEEN_KEY: &str = "chat.seen.";

#[derive(Clone, Copy)]
pub struct Rooms {
    pub list: RwSignal<Vec<RoomInfo>>,
    /// The open room.
    pub current: RwSignal<String>,
    /// The newest id seen of each room, as stored.
    seen: RwSignal<HashMap<String, u64>>,
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// The room an address names (`#/room/NAME`), if it is a room name.
pub fn room_in(hash: &str) -> Option<String> {
    let name = hash.strip_prefix("#/room/")?;
    rules::room(name).ok()
}

fn current_hash() -> String {
    web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .unwrap_or_default()
}

impl Rooms {
    pub fn new() -> Self {
        let rooms = Self {
            list: RwSignal::new(vec![RoomInfo {
                name: GENERAL.to_owned(),
                topic: String::new(),
                last_id: 0,
            }]),
            current: RwSignal::new(room_in(&current_hash()).unwrap_or_else(|| GENERAL.to_owned())),
            seen: RwSignal::new(HashMap::new()),
        };
        // The address follows the open room, and the open room the address
        // (a link, the back and forward buttons).
        let _ = window_event_listener(leptos::ev::hashchange, move |_| {
            if let Some(room) = room_in(&current_hash())
                && room != rooms.current.get_untracked()
            {
                rooms.current.set(room);
            }
        });
        rooms
    }

    /// Opens `room` (a new history entry, so Back returns).
    pub fn open(&self, room: &str) {
        if let Some(window) = web_sys::window() {
            let _ = window.location().set_hash(&format!("/room/{room}"));
        }
        self.current.set(room.to_owned());
    }

    /// Fetches the room list.
    pub fn refresh(&self) {
        let list = self.list;
        spawn_local(async move {
            if let Ok(rooms) = api::list_rooms().await {
                list.set(rooms);
            }
        });
    }

    /// The other rooms, for the stream to watch.
    pub fn others(&self) -> Vec<String> {
        let current = self.current.get_untracked();
        self.list.with_untracked(|l| {
            l.iter()
                .map(|r| r.name.clone())
                .filter(|n| *n != current)
                .collect()
        })
    }

    /// A room's newest id, from its activity or a message in it.
    pub fn activity(&self, room: &str, last_id: u64) {
        let known = self
            .list
            .with_untracked(|l| l.iter().find(|r| r.name == room).map(|r| r.last_id));
        match known {
            Some(id) if id >= last_id => {}
            Some(_) => self.list.update(|l| {
                if let Some(r) = l.iter_mut().find(|r| r.name == room) {
                    r.last_id = last_id;
                }
            }),
            // A room made since the list was read.
            None => self.refresh(),
        }
    }

    /// The user has seen `room` up to `id`.
    pub fn saw(&self, room: &str, id: u64) {
        if self.seen_of(room) >= id {
            return;
        }
        self.seen.update(|s| {
            s.insert(room.to_owned(), id);
        });
        if let Some(storage) = storage() {
            let _ = storage.set_item(&format!("{SEEN_KEY}{room}"), &id.to_string());
        }
    }

    /// The newest id of `room` this user has seen (untracked).
    pub fn seen(&self, room: &str) -> u64 {
        self.seen_of(room)
    }

    fn seen_of(&self, room: &str) -> u64 {
        if let Some(id) = self.seen.with_untracked(|s| s.get(room).copied()) {
            return id;
        }
        let stored = storage()
            .and_then(|s| s.get_item(&format!("{SEEN_KEY}{room}")).ok().flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.seen.update_untracked(|s| {
            s.insert(room.to_owned(), stored);
        });
        stored
    }

    /// Messages in `room` this user has not seen (tracked).
    pub fn unread(&self, room: &RoomInfo) -> u64 {
        self.seen.track();
        room.last_id.saturating_sub(self.seen_of(&room.name))
    }

    /// Unread messages in every room but the open one (tracked).
    pub fn total_unread(&self) -> u64 {
        let current = self.current.get();
        self.list.with(|l| {
            l.iter()
                .filter(|r| r.name != current)
                .map(|r| self.unread(r))
                .sum()
        })
    }

    /// The open room's topic (tracked).
    pub fn topic(&self) -> String {
        let current = self.current.get();
        self.list.with(|l| {
            l.iter()
                .find(|r| r.name == current)
                .map(|r| r.topic.clone())
                .unwrap_or_default()
        })
    }
}

/// The button that opens the room drawer (in the header).
const DRAWER_TOGGLE: &str = "[aria-controls=room-list]";

/// The room list: each room with its unread count, the open one marked. On
/// a phone it is a drawer: opening it moves focus into it (to the open
/// room), Escape closes it and gives focus back to its button, and going to
/// a room closes it and focuses the composer.
#[component]
pub fn RoomList(rooms: Rooms, open: RwSignal<bool>, creating: RwSignal<bool>) -> impl IntoView {
    Effect::new(move |was_open: Option<bool>| {
        let is_open = open.get();
        if is_open && was_open == Some(false) {
            request_animation_frame(|| {
                // The open room's link (else the first there is).
                let first = ["#room-list a[aria-current=page]", "#room-list a"]
                    .into_iter()
                    .find_map(|selector| document().query_selector(selector).ok().flatten());
                if let Some(first) = first.and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok()) {
                    let _ = first.focus();
                }
            });
        }
        is_open
    });
    // Another room (a link, a new room, Back): the drawer has done its job.
    Effect::new(move |was: Option<String>| {
        let room = rooms.current.get();
        if was.is_some_and(|was| was != room) {
            open.set(false);
        }
        room
    });
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape" && open.get_untracked() {
            focus::close_drawer(open, DRAWER_TOGGLE);
        }
    };
    view! {
        <nav
            class="rooms"
            class:open=move || open.get()
            id="room-list"
            aria-label="Rooms"
            data-testid="room-list"
            on:keydown=on_keydown
        >
            <div class="rooms-head">
                <h2>"Rooms"</h2>
                <button
                    class="new-room"
                    data-testid="new-room"
                    aria-label="Create a room"
                    title="Create a room"
                    on:click=move |_| creating.set(true)
                >
                    "+"
                </button>
            </div>
            <ul>
                <For
                    each=move || rooms.list.get()
                    key=|room| (room.name.clone(), room.last_id)
                    children=move |room| {
                        let name = room.name.clone();
                        let here = Signal::derive({
                            let name = name.clone();
                            move || rooms.current.with(|c| *c == name)
                        });
                        let unread =
                            Signal::derive(move || if here.get() { 0 } else { rooms.unread(&room) });
                        let go = name.clone();
                        view! {
                            <li>
                                <a
                                    href=format!("#/room/{name}")
                                    class="room"
                                    class:current=move || here.get()
                                    class:unread=move || { unread.get() > 0 }
                                    aria-current=move || here.get().then_some("page")
                                    data-testid="room"
                                    data-room=name.clone()
                                    on:click=move |ev| {
                                        ev.prevent_default();
                                        rooms.open(&go);
                                        open.set(false);
                                        focus::composer();
                                    }
                                >
                                    <span class="hash" aria-hidden="true">"#"</span>
                                    <span class="room-name">{name.clone()}</span>
                                    <Show when=move || { unread.get() > 0 }>
                                        <span class="badge" data-testid="unread">{move || unread.get()}</span>
                                    </Show>
                                </a>
                            </li>
                        }
                    }
                />
            </ul>
        </nav>
    }
}

/// A dialog that creates a room and opens it. Focus starts in the name
/// field; a new room gets it in its composer, and cancelling (the button, or
/// Escape) gives it back to what opened the dialog.
#[component]
pub fn CreateRoom(rooms: Rooms, on_close: Callback<()>) -> impl IntoView {
    // What had focus when the dialog opened (before the field takes it).
    let opener = StoredValue::new_local(document().active_element());
    let cancel = move || {
        focus::restore(opener.get_value());
        on_close.run(());
    };
    let name = RwSignal::new(String::new());
    let topic = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let input_ref = NodeRef::<html::Input>::new();
    input_ref.on_load(|input| {
        let _ = input.focus();
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        let wanted = name.get_untracked().trim().to_owned();
        if let Err(reason) = rules::room(&wanted) {
            error.set(Some(reason.to_string()));
            return;
        }
        busy.set(true);
        spawn_local(async move {
            match api::create_room(&wanted, &topic.get_untracked()).await {
                Ok(room) => {
                    let opened = room.name.clone();
                    rooms.list.update(|l| {
                        l.push(room);
                        l.sort_by(|a, b| a.name.cmp(&b.name));
                    });
                    rooms.open(&opened);
                    focus::composer();
                    on_close.run(());
                }
                Err(status) => {
                    error.set(Some(api::readable(&status)));
                    // The button was disabled while asking: focus is back
                    // in the field, which the error describes.
                    if let Some(input) = input_ref.get_untracked() {
                        let _ = input.focus();
                    }
                }
            }
            busy.set(false);
        });
    };
    let invalid = move || error.with(Option::is_some);
    view! {
        <div
            class="overlay"
            on:keydown=move |ev| {
                focus::keep_tab_inside(&ev);
                if ev.key() == "Escape" {
                    cancel();
                }
            }
        >
            <div
                class="card"
                role="dialog"
                aria-modal="true"
                aria-labelledby="create-room-title"
                data-testid="create-room-dialog"
            >
                // A heading of level 1: while the dialog is open, the page
                // behind it (and its own heading) is inert.
                <form on:submit=submit>
                    <h1 id="create-room-title">"Create a room"</h1>
                    <p class="muted">"Lower-case letters, digits, - and _."</p>
                    <input
                        node_ref=input_ref
                        data-testid="room-name-input"
                        type="text"
                        placeholder="e.g. design"
                        aria-label="Room name"
                        maxlength="32"
                        aria-invalid=move || invalid().then_some("true")
                        aria-describedby=move || invalid().then_some("room-error")
                        prop:value=move || name.get()
                        on:input=move |ev| {
                            name.set(event_target_value(&ev));
                            error.set(None);
                        }
                    />
                    <input
                        data-testid="room-topic-input"
                        type="text"
                        placeholder="Topic (optional)"
                        aria-label="Topic"
                        maxlength="200"
                        prop:value=move || topic.get()
                        on:input=move |ev| topic.set(event_target_value(&ev))
                    />
                    <div class="field-hint">
                        <span class="error" id="room-error" role="alert" data-testid="room-error">
                            {move || error.get()}
                        </span>
                    </div>
                    <div class="actions">
                        <button type="button" class="secondary" on:click=move |_| cancel()>
                            "Cancel"
                        </button>
                        <button
                            type="submit"
                            class="primary"
                            data-testid="room-create"
                            disabled=move || busy.get() || name.with(|n| n.trim().is_empty())
                        >
                            "Create"
                        </button>
                    </div>
                </form>
            </div>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_rooms() {
        assert_eq!(room_in("#/room/dev"), Some("dev".into()));
        assert_eq!(room_in("#/room/Dev"), Some("dev".into()));
        assert_eq!(room_in("#/room/"), Some("general".into()));
        assert_eq!(room_in("#/room/no such"), None);
        assert_eq!(room_in("#/elsewhere"), None);
        assert_eq!(room_in(""), None);
    }
}
