//! Desktop notifications for messages that mention the user while the tab
//! is hidden. Off until the user turns them on with the bell in the header:
//! the browser's permission prompt comes only from that click, never on its
//! own. The choice is remembered in local storage.

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Notification, NotificationOptions, NotificationPermission};

use crate::messages::Entry;
use crate::rich;

const STORE_KEY: &str = "chat.notify";

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

fn granted() -> bool {
    Notification::permission() == NotificationPermission::Granted
}

/// Whether the user turned notifications on (and the browser still allows
/// them).
fn enabled() -> bool {
    granted()
        && storage()
            .and_then(|s| s.get_item(STORE_KEY).ok().flatten())
            .is_some_and(|v| v == "on")
}

fn remember(on: bool) {
    if let Some(store) = storage() {
        let _ = store.set_item(STORE_KEY, if on { "on" } else { "off" });
    }
}

/// Shows a notification for `entry` (just arrived in `room`) if it mentions
/// `me`, the tab is hidden and the user wants them.
pub fn mention(entry: &Entry, me: &str, room: &str) {
    let hidden = web_sys::window()
        .and_then(|w| w.document())
        .is_some_and(|d| d.hidden());
    if !hidden || !rich::mentions(&entry.text, me) || !enabled() {
        return;
    }
    let options = NotificationOptions::new();
    options.set_body(&entry.text);
    // One per room: a newer mention replaces the older one.
    options.set_tag(room);
    let _ = Notification::new_with_options(&format!("{} in #{room}", entry.author), &options);
}

/// The bell that turns mention notifications on and off.
#[component]
pub fn NotifyToggle() -> impl IntoView {
    let on = RwSignal::new(enabled());
    let toggle = move |_| {
        if on.get_untracked() {
            remember(false);
            on.set(false);
            return;
        }
        spawn_local(async move {
            if !granted()
                && let Ok(asked) = Notification::request_permission()
            {
                let _ = JsFuture::from(asked).await;
            }
            let allowed = granted();
            remember(allowed);
            on.set(allowed);
        });
    };
    let label = move || {
        if on.get() {
            "Notifications for mentions: on"
        } else {
            "Notify me when someone mentions my name"
        }
    };
    view! {
        <button
            class="icon-button notify"
            data-testid="notify-toggle"
            aria-pressed=move || if on.get() { "true" } else { "false" }
            aria-label=label
            title=label
            on:click=toggle
        >
            <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
                <path
                    fill="currentColor"
                    d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2z"
                />
            </svg>
        </button>
    }
}
