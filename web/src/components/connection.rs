//! What the page says about its connection: a quiet dot in the header, and
//! a banner while it is not live. The state is kept by `feed`.

use leptos::prelude::*;

use crate::feed::{ConnState, Connection};

/// Says plainly when the chat is not live (quiet while it is): the page
/// keeps trying, and what is written meanwhile is sent once it is back.
#[component]
pub fn ConnectionBanner(connection: Connection) -> impl IntoView {
    let text = move || {
        let offline = web_sys::window().is_some_and(|w| !w.navigator().on_line());
        if offline {
            return "You're offline. The chat reconnects when the network is back.".to_owned();
        }
        match connection.detail.get() {
            Some(why) => format!("Reconnecting… ({why})"),
            None => "Reconnecting…".to_owned(),
        }
    };
    view! {
        <Show when=move || connection.state.get() == ConnState::Reconnecting>
            <div class="banner warn" role="status" data-testid="connection-banner">
                <span class="spinner" aria-hidden="true"></span>
                <span>{text}</span>
            </div>
        </Show>
    }
}

/// The coloured dot for the connection state (the word is for screen
/// readers and the tooltip; the banner speaks up when it matters).
#[component]
pub fn ConnectionBadge(connection: Connection) -> impl IntoView {
    let word = move || connection.state.get().as_str();
    view! {
        <div
            class="status"
            data-testid="connection-status"
            data-state=word
            title=move || connection.detail.get().unwrap_or_default()
            role="status"
        >
            <span class="dot" aria-hidden="true"></span>
            <span class="status-word">{word}</span>
        </div>
    }
}
