//! The bell in the header that turns mention notifications on and off (see
//! `browser::notify`).

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::browser::notify;

/// The bell that turns mention notifications on and off.
#[component]
pub fn NotifyToggle() -> impl IntoView {
    let on = RwSignal::new(notify::enabled());
    let toggle = move |_| {
        if on.get_untracked() {
            notify::turn_off();
            on.set(false);
            return;
        }
        spawn_local(async move {
            on.set(notify::turn_on().await);
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
