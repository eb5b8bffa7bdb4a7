//! The page: header (title, connection state, who you are), the
//! conversation, the composer pinned at the bottom, and the name prompt when
//! there is no name yet or the user wants another one.

use futures_util::future::AbortHandle;
use leptos::prelude::*;

use crate::composer::Composer;
use crate::connection::Connection;
use crate::messages::{MessageList, Timeline};
use crate::name_prompt::{NamePrompt, load_name, save_name};

#[component]
pub fn App() -> impl IntoView {
    let username = RwSignal::new(load_name());
    let renaming = RwSignal::new(false);
    let timeline = Timeline::new();
    let connection = Connection::new();
    // The composer's text; a refused message can be put back into it.
    let draft = RwSignal::new(String::new());

    // One subscription per name: a new name ends the old stream and starts
    // another (the conversation so far stays on screen).
    Effect::new(move |previous: Option<Option<AbortHandle>>| {
        if let Some(Some(handle)) = previous {
            handle.abort();
        }
        let name = username.get()?;
        Some(connection.start(name, timeline))
    });

    let name = Signal::derive(move || username.get().unwrap_or_default());
    let set_name = Callback::new(move |name: String| {
        save_name(&name);
        renaming.set(false);
        if username.get_untracked().as_deref() != Some(name.as_str()) {
            username.set(Some(name));
        }
    });
    let cancel_rename = Callback::new(move |()| renaming.set(false));

    view! {
        <div class="app">
            <header class="topbar">
                <div class="brand">
                    <svg class="logo" viewBox="0 0 24 24" width="26" height="26" aria-hidden="true">
                        <path
                            fill="currentColor"
                            d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"
                        />
                    </svg>
                    <h1>"Chat"</h1>
                </div>
                // Nothing is connecting until there is a name to connect as.
                <Show when=move || username.with(Option::is_some)>
                    <ConnectionBadge connection />
                    <button
                        class="me"
                        data-testid="change-name"
                        title="Change your name"
                        on:click=move |_| renaming.set(true)
                    >
                        <span class="me-label">"You are "</span>
                        <strong class="me-name">{move || name.get()}</strong>
                        <span class="edit" aria-hidden="true">"✎"</span>
                    </button>
                </Show>
            </header>
            {move || connection.refused.get().map(|reason| view! {
                <div class="banner" role="alert" data-testid="connection-error">
                    <span>"The server won't let you in: " {reason}</span>
                    <button class="link" on:click=move |_| renaming.set(true)>"Change name"</button>
                </div>
            })}
            <MessageList timeline draft />
            <Composer timeline name draft />
            {move || {
                let current = username.get();
                let asking = current.is_none() || renaming.get();
                asking.then(|| {
                    let has_name = current.is_some();
                    view! {
                        <NamePrompt
                            initial=current.unwrap_or_default()
                            on_done=set_name
                            on_cancel=has_name.then_some(cancel_rename)
                        />
                    }
                })
            }}
        </div>
    }
}

/// The coloured dot and word for the connection state.
#[component]
fn ConnectionBadge(connection: Connection) -> impl IntoView {
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
