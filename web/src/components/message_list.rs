//! The scrolling conversation: the rows of a room's timeline, the
//! jump-to-latest button, and what screen readers are told. Reaching the
//! top reads the page before (`state::past`), keeping the reader's place,
//! until "This is the start of #room".
//!
//! The list sticks to the bottom only while the reader is there; someone
//! scrolled up to read is never yanked down, and gets a jump-to-latest
//! button with a count, and a "new messages" line above the first one they
//! have not seen. Screen readers hear messages as they arrive, never the
//! history (see [`Timeline::announce`]).

use leptos::html;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

use crate::browser::scroll::show_message;
use crate::components::message_row::MessageRow;
use crate::state::past::{Older, Past};
use crate::state::timeline::Timeline;

/// How close to the bottom (in CSS pixels) still counts as "at the bottom".
const STICK_THRESHOLD_PX: i32 = 64;
/// How close to the top (in CSS pixels) reads the page before.
const LOAD_OLDER_PX: i32 = 400;

/// The scrolling conversation with its jump-to-latest button.
#[component]
pub fn MessageList(
    timeline: Timeline,
    draft: RwSignal<String>,
    /// The user's name: rows read back under it are their own.
    name: Signal<String>,
    /// The message the address points at: shown, reading its page if the
    /// list does not have it.
    target: Signal<Option<u64>>,
) -> impl IntoView {
    let list_ref = NodeRef::<html::Div>::new();
    let past = Past::new();
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
        seen_key.set(timeline.last_key_untracked());
    };

    // The page before the first row goes above it; the row the reader sees
    // at the top stays where it is (its bottom edge: the row above it may
    // take over its name and avatar as they join one group).
    let load_older = move || {
        let Some(list) = list_ref.get_untracked() else {
            return;
        };
        if !past.wants_older(&timeline) {
            return;
        }
        let anchor = top_row(&list);
        past.load_older(timeline, name.get_untracked(), move || {
            request_animation_frame(move || {
                if let Some(list) = list_ref.get_untracked()
                    && let Some((id, was)) = anchor
                    && let Some(now) = bottom_of(&id)
                {
                    list.set_scroll_top(list.scroll_top() + (now - was).round() as i32);
                }
            });
        });
    };
    Effect::new(move |_| {
        let Some(id) = target.get() else {
            return;
        };
        if timeline.by_id(id).is_some() {
            request_animation_frame(move || show_message(id));
            return;
        }
        // Reading the past: new rows must not pull the list to the bottom.
        stuck.set(false);
        past.open_around(timeline, id, name.get_untracked(), move || {
            request_animation_frame(move || show_message(id));
        });
    });
    let jump_to_latest = move || {
        if timeline.is_detached() {
            past.back_to_latest(timeline, name.get_untracked(), move || {
                request_animation_frame(scroll_to_bottom);
            });
        } else {
            scroll_to_bottom();
        }
    };

    let on_scroll = move |_| {
        let Some(list) = list_ref.get_untracked() else {
            return;
        };
        let top = list.scroll_top();
        if top < LOAD_OLDER_PX {
            load_older();
        }
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
        if stuck.get_untracked() || timeline.newest_is_own_sending() {
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
                <Show when=move || !timeline.is_empty()>
                    <HistoryEdge past room=timeline.room().to_string() load=Callback::new(move |()| load_older()) />
                </Show>
                <ol class="messages">
                    <For
                        each=move || timeline.entries()
                        key=|entry| entry.key
                        children=move |entry| view! { <MessageRow entry timeline draft /> }
                    />
                </ol>
            </div>
            <Show when=move || !stuck.get() || timeline.is_detached()>
                <button
                    class="new-pill"
                    data-testid="jump-latest"
                    on:click=move |_| jump_to_latest()
                >
                    // A list in the past counts nothing: the latest is elsewhere.
                    {move || match if timeline.is_detached() { 0 } else { unseen.get() } {
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

/// The first stored row the reader sees at the top of `list`: its element
/// id and where its bottom edge is in the list (the list is the rows'
/// offset parent, so these do not move as it scrolls).
fn top_row(list: &web_sys::HtmlElement) -> Option<(String, f64)> {
    let rows = list.query_selector(".messages").ok()??.children();
    let seen_from = f64::from(list.scroll_top());
    (0..rows.length())
        .filter_map(|i| rows.item(i)?.dyn_into::<web_sys::HtmlElement>().ok())
        .filter(|row| row.id().starts_with("msg-"))
        .map(|row| (row.id(), bottom(&row)))
        .find(|(_, bottom)| *bottom > seen_from)
}

/// Where the bottom edge of the row with element id `id` is in the list.
fn bottom_of(id: &str) -> Option<f64> {
    let row = document()
        .get_element_by_id(id)?
        .dyn_into::<web_sys::HtmlElement>()
        .ok()?;
    Some(bottom(&row))
}

fn bottom(row: &web_sys::HtmlElement) -> f64 {
    f64::from(row.offset_top() + row.offset_height())
}

/// The top of the list: what is known of the messages before it.
#[component]
fn HistoryEdge(past: Past, room: String, load: Callback<()>) -> impl IntoView {
    view! {
        <div class="history-edge" data-testid="history-edge">
            {move || match (past.older.get(), past.error.get()) {
                (Older::Start, _) => view! {
                    <p class="history-start" data-testid="history-start">
                        {format!("This is the start of #{room}.")}
                    </p>
                }
                .into_any(),
                (Older::Loading, _) => view! {
                    <p class="history-loading">"Loading earlier messages…"</p>
                }
                .into_any(),
                (_, error) => view! {
                    {error.map(|why| view! { <p class="history-error" role="alert">{why}</p> })}
                    <button class="link" data-testid="load-older" on:click=move |_| load.run(())>
                        "Load earlier messages"
                    </button>
                }
                .into_any(),
            }}
        </div>
    }
}
