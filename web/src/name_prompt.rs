//! Choosing a name: asked on the first visit, remembered in localStorage so
//! a reload goes straight back into the chat, and changeable from the header.

use leptos::html;
use leptos::prelude::*;

use crate::api;

const STORAGE_KEY: &str = "chat.username";

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// The name saved by an earlier visit, if it is still a valid one.
pub fn load_name() -> Option<String> {
    let saved = storage()?.get_item(STORAGE_KEY).ok()??;
    api::validate_name(&saved).ok()
}

/// Remembers the name for the next visit (silently skipped where storage is
/// off, e.g. some private modes: the user is simply asked again).
pub fn save_name(name: &str) {
    if let Some(storage) = storage() {
        let _ = storage.set_item(STORAGE_KEY, name);
    }
}

/// A dialog asking for a name. `on_cancel` is offered only when there is a
/// name to go back to.
#[component]
pub fn NamePrompt(
    initial: String,
    on_done: Callback<String>,
    on_cancel: Option<Callback<()>>,
) -> impl IntoView {
    let first_visit = initial.is_empty();
    let draft = RwSignal::new(initial);
    let error = RwSignal::new(None::<String>);
    let input_ref = NodeRef::<html::Input>::new();
    input_ref.on_load(|input| {
        let _ = input.focus();
        input.select();
    });

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match api::validate_name(&draft.get_untracked()) {
            Ok(name) => on_done.run(name),
            Err(reason) => error.set(Some(reason)),
        }
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape"
            && let Some(cancel) = on_cancel
        {
            cancel.run(());
        }
    };
    let count = move || draft.with(|d| d.trim().chars().count());

    view! {
        <div class="overlay" on:keydown=on_keydown>
            <form
                class="card name-card"
                on:submit=submit
                role="dialog"
                aria-modal="true"
                aria-labelledby="name-title"
            >
                <h2 id="name-title">
                    {if first_visit { "Welcome! What's your name?" } else { "Change your name" }}
                </h2>
                <p class="muted">"Everyone in the chat sees it next to your messages."</p>
                <input
                    node_ref=input_ref
                    data-testid="name-input"
                    type="text"
                    name="username"
                    autocomplete="nickname"
                    placeholder="Your name"
                    aria-label="Your name"
                    aria-invalid=move || if error.get().is_some() { "true" } else { "false" }
                    prop:value=move || draft.get()
                    on:input=move |ev| {
                        draft.set(event_target_value(&ev));
                        error.set(None);
                    }
                />
                <div class="field-hint">
                    <span class="error" role="alert">{move || error.get()}</span>
                    <span
                        class="counter"
                        class:over=move || { count() > api::MAX_NAME_CHARS }
                    >
                        {move || format!("{}/{}", count(), api::MAX_NAME_CHARS)}
                    </span>
                </div>
                <div class="actions">
                    {on_cancel.map(|cancel| view! {
                        <button type="button" class="secondary" on:click=move |_| cancel.run(())>
                            "Cancel"
                        </button>
                    })}
                    <button
                        type="submit"
                        class="primary"
                        data-testid="name-submit"
                        disabled=move || draft.with(|d| d.trim().is_empty())
                    >
                        {if first_visit { "Join chat" } else { "Save" }}
                    </button>
                </div>
            </form>
        </div>
    }
}
