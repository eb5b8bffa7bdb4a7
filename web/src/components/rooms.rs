//! The rooms views: the room list (a drawer on a phone) and the dialog that
//! creates a room. What they show is `state::rooms`.

use chat_proto::rules;
use leptos::html;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;

use crate::browser::focus;
use crate::net::api;
use crate::state::rooms::Rooms;

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
