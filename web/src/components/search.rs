//! The header's search box: Ctrl+K (⌘K), or `/` outside a text field,
//! focuses it; results from every room come as the user types, in a
//! listbox the box controls (a combobox: the arrow keys move through the
//! results while focus stays in the box, Enter or a click opens one where
//! it was said, Escape closes them and a second Escape clears the box),
//! under a status line a screen reader hears: how many there are, or why
//! the server would not search. What it shows is `state::search`.

use leptos::html;
use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::browser::{focus, time};
use crate::state::rooms::Rooms;
use crate::state::search::{Hit, Said, Search, lead_in, marked};

/// What the shortcut's hint says: ⌘K on Apple's systems, Ctrl K elsewhere.
fn chord() -> &'static str {
    let apple = web_sys::window()
        .and_then(|w| w.navigator().user_agent().ok())
        .is_some_and(|agent| agent.contains("Mac") || agent.contains("iP"));
    if apple { "⌘K" } else { "Ctrl K" }
}

/// Whether keys typed now go into a text field (where `/` is a character).
fn typing_in_a_field() -> bool {
    document().active_element().is_some_and(|element| {
        element
            .matches("input, textarea, select, [contenteditable]:not([contenteditable=false])")
            .unwrap_or(false)
    })
}

/// The element id of result `n` (for `aria-activedescendant`).
fn option_id(n: usize) -> String {
    format!("search-hit-{n}")
}

/// Scrolls the results so that result `n` is in view.
fn reveal(n: usize) {
    let Some(option) = document()
        .get_element_by_id(&option_id(n))
        .and_then(|o| o.dyn_into::<web_sys::HtmlElement>().ok())
    else {
        return;
    };
    // The panel: the options' offset parent, and what scrolls.
    let Some(panel) = option.offset_parent() else {
        return;
    };
    let (top, bottom) = (
        option.offset_top(),
        option.offset_top() + option.offset_height(),
    );
    if top < panel.scroll_top() {
        panel.set_scroll_top(top);
    } else if bottom > panel.scroll_top() + panel.client_height() {
        panel.set_scroll_top(bottom - panel.client_height());
    }
}

#[component]
pub fn SearchBox(rooms: Rooms) -> impl IntoView {
    let search = Search::new();
    let text = RwSignal::new(String::new());
    let input = NodeRef::<html::Input>::new();

    let shortcut = window_event_listener(leptos::ev::keydown, move |ev| {
        let key = ev.key();
        let chord =
            (ev.ctrl_key() || ev.meta_key()) && !ev.alt_key() && key.eq_ignore_ascii_case("k");
        let slash =
            key == "/" && !ev.ctrl_key() && !ev.meta_key() && !ev.alt_key() && !typing_in_a_field();
        if !(chord || slash) || ev.default_prevented() {
            return;
        }
        let Some(input) = input.get_untracked() else {
            return;
        };
        // Behind an open dialog the page is inert: the box takes no focus,
        // and the key does what it otherwise would.
        let _ = input.focus();
        if document().active_element().as_ref() == Some(input.as_ref()) {
            ev.prevent_default();
            input.select();
        }
    });
    on_cleanup(move || shortcut.remove());

    Effect::new(move |_| {
        if let Some(n) = search.active.get() {
            request_animation_frame(move || reveal(n));
        }
    });

    // Opens result `n` through its link (`state::rooms` does the rest:
    // the room, the page around the message, scrolled to it and outlined).
    let open = move |n: usize| {
        let Some((room, id)) = search
            .hits
            .with_untracked(|hits| hits.get(n).map(|h| (h.message.room.clone(), h.message.id)))
        else {
            return;
        };
        search.close();
        let hash = format!("#/room/{room}/{id}");
        let location = window().location();
        if location.hash().ok().as_deref() == Some(hash.as_str()) {
            // The address already says so: no hashchange will come.
            rooms.target.set(Some(id));
        } else {
            let _ = location.set_hash(&hash);
        }
        focus::composer();
    };

    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        let showing = search.open.get_untracked();
        match ev.key().as_str() {
            "ArrowDown" | "ArrowUp" => {
                ev.prevent_default();
                if showing {
                    search.step(ev.key() == "ArrowDown");
                } else if search.said.with_untracked(|s| *s != Said::Nothing) {
                    search.open.set(true);
                }
            }
            "Enter" if showing && !ev.is_composing() => {
                ev.prevent_default();
                // Without a result chosen, the first: of this query's
                // results, not the last one's still shown.
                let searching = search.said.with_untracked(|s| *s == Said::Searching);
                match search.active.get_untracked() {
                    Some(n) => open(n),
                    None if !searching => open(0),
                    None => {}
                }
            }
            "Escape" if showing => {
                ev.prevent_default();
                search.close();
            }
            "Escape" if text.with_untracked(|t| !t.is_empty()) => {
                ev.prevent_default();
                text.set(String::new());
                search.look_for("");
            }
            // An empty box: back to writing.
            "Escape" => focus::composer(),
            _ => {}
        }
    };

    // Focus leaving the box and its results (not into them) hides them.
    let on_focusout = move |ev: leptos::ev::FocusEvent| {
        let within = ev
            .current_target()
            .and_then(|c| c.dyn_into::<web_sys::Node>().ok())
            .zip(
                ev.related_target()
                    .and_then(|t| t.dyn_into::<web_sys::Node>().ok()),
            )
            .is_some_and(|(search, to)| search.contains(Some(&to)));
        if !within {
            search.close();
        }
    };

    let load_more = move |_| {
        search.more(move |first| {
            search.active.set(Some(first));
            if let Some(input) = input.get_untracked() {
                let _ = input.focus();
            }
        });
    };

    let showing = move || search.open.get();
    view! {
        <div class="search" class:open=showing on:focusout=on_focusout>
            <svg class="search-icon" viewBox="0 0 24 24" width="18" height="18" aria-hidden="true">
                <path
                    fill="currentColor"
                    d="M10 3a7 7 0 0 1 5.6 11.2l5.1 5.1-1.4 1.4-5.1-5.1A7 7 0 1 1 10 3zm0 2a5 5 0 1 0 0 10 5 5 0 0 0 0-10z"
                />
            </svg>
            <input
                node_ref=input
                type="text"
                role="combobox"
                data-testid="search-input"
                aria-label="Search messages"
                placeholder="Search"
                autocomplete="off"
                spellcheck="false"
                enterkeyhint="search"
                maxlength="256"
                aria-autocomplete="list"
                aria-keyshortcuts="Control+K Meta+K /"
                aria-controls="search-results"
                aria-expanded=move || if showing() { "true" } else { "false" }
                aria-activedescendant=move || {
                    search.active.get().filter(|_| showing()).map(option_id)
                }
                prop:value=move || text.get()
                on:input=move |ev| {
                    let query = event_target_value(&ev);
                    search.look_for(&query);
                    text.set(query);
                }
                on:focus=move |_| {
                    if search.said.with_untracked(|s| *s != Said::Nothing) {
                        search.open.set(true);
                    }
                }
                on:keydown=on_keydown
            />
            <kbd class="search-hint" aria-hidden="true">{chord()}</kbd>
            <div class="search-panel" hidden=move || !showing() data-testid="search-panel">
                <p
                    class="search-said"
                    class:refused=move || search.said.with(|s| matches!(s, Said::Refused(_)))
                    role="status"
                    data-testid="search-status"
                >
                    {move || search.said.with(Said::words)}
                </p>
                <ul
                    id="search-results"
                    role="listbox"
                    aria-label="Search results"
                    data-testid="search-results"
                    hidden=move || search.hits.with(Vec::is_empty)
                >
                    <For
                        each=move || search.hits.get().into_iter().enumerate()
                        // After another search a place holds another
                        // message (ids are per room), or the same one as
                        // it now stands, or matched by other words.
                        key=|(n, Hit { message, terms })| {
                            (*n, message.room.clone(), message.id, message.state_id, terms.clone())
                        }
                        children=move |(n, hit)| {
                            let selected = move || search.active.get() == Some(n);
                            let (room, id) = (hit.message.room.clone(), hit.message.id);
                            view! {
                                <li
                                    id=option_id(n)
                                    role="option"
                                    class="hit"
                                    data-testid="search-hit"
                                    data-room=room
                                    data-id=id.to_string()
                                    aria-selected=move || if selected() { "true" } else { "false" }
                                    // Focus stays in the box.
                                    on:mousedown=|ev| ev.prevent_default()
                                    on:click=move |_| open(n)
                                >
                                    <HitView hit />
                                </li>
                            }
                        }
                    />
                </ul>
                <button
                    class="search-more secondary"
                    data-testid="search-more"
                    hidden=move || !search.has_more()
                    disabled=move || search.loading.get()
                    on:mousedown=|ev| ev.prevent_default()
                    on:click=load_more
                    on:keydown=move |ev| {
                        if ev.key() == "Escape" {
                            search.close();
                            if let Some(input) = input.get_untracked() {
                                let _ = input.focus();
                            }
                        }
                    }
                >
                    {move || if search.loading.get() { "Loading…" } else { "More results" }}
                </button>
            </div>
        </div>
    }
}

/// One result: where and by whom, when, and its text with what matched
/// marked (all of it as text).
#[component]
fn HitView(hit: Hit) -> impl IntoView {
    let Hit { message, terms } = hit;
    let stamp = time::stamp(message.timestamp);
    let when = format!("{} {}", time::day_label(message.timestamp), stamp.short);
    // A deleted message's text is gone from the index too: never a hit.
    let runs = marked(&message.message, &terms);
    let lead = lead_in(&runs).map(|lead| format!("…{lead}"));
    let skip = usize::from(lead.is_some());
    let text: Vec<_> = runs[skip..]
        .iter()
        .map(|&(run, mark)| {
            let run = run.to_owned();
            if mark {
                view! { <mark>{run}</mark> }.into_any()
            } else {
                run.into_any()
            }
        })
        .collect();
    view! {
        <div class="hit-meta">
            <span class="hit-room">"#" {message.room}</span>
            <span class="hit-author" data-testid="search-hit-author">{message.username}</span>
            <time datetime=stamp.iso title=stamp.full>{when}</time>
        </div>
        <div class="hit-text" data-testid="search-hit-text">{lead} {text}</div>
    }
}
