//! Choosing a name: a dialog that claims it with `Join`, asked on the first
//! visit (a reload keeps the session, see `net::session`) and from the
//! header to change it. A name somebody else holds gets a plain message and
//! a suggestion. A moderator's name needs the moderator key: the field for
//! it opens when the server says the name is reserved.

use leptos::html;
use leptos::prelude::*;
use leptos::task::spawn_local;
use tonic::{Code, Status};

use crate::browser::focus;
use crate::net::api::{self, Joined};

/// Why a name could not be had, and another to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub suggestion: Option<String>,
    /// The name is a moderator's: the key would open it.
    pub reserved: bool,
}

impl Refusal {
    /// What to tell the user when `Join` for `name` failed with `status`.
    pub fn of(name: &str, status: &Status) -> Self {
        match status.code() {
            Code::AlreadyExists => Self {
                reason: format!("{} is taken: someone else is using that name.", name.trim()),
                suggestion: suggest(name),
                reserved: false,
            },
            Code::PermissionDenied => Self {
                reason: format!(
                    "{} is a moderator's name: enter the moderator key to use it.",
                    name.trim()
                ),
                suggestion: None,
                reserved: true,
            },
            _ => Self {
                reason: api::readable(status),
                suggestion: None,
                reserved: false,
            },
        }
    }
}

/// The name with a number after it, if that is still a valid name.
fn suggest(name: &str) -> Option<String> {
    let number = 2 + (js_sys::Math::random() * 98.0) as u32;
    api::validate_name(&format!("{}{number}", name.trim())).ok()
}

/// A dialog asking for a name. `on_cancel` is offered only when there is a
/// name to go back to; `refused` is shown at once (a name the page tried by
/// itself and could not have).
///
/// Focus starts in the name field; joining moves it to the composer, and
/// cancelling (the button, or Escape) back to what opened the dialog.
#[component]
pub fn NamePrompt(
    initial: String,
    refused: Option<Refusal>,
    on_joined: Callback<Joined>,
    on_cancel: Option<Callback<()>>,
) -> impl IntoView {
    let first_visit = on_cancel.is_none();
    let current = initial.clone();
    let draft = RwSignal::new(initial);
    // A reserved name (a moderator's) asks for the key at once.
    let show_key = RwSignal::new(refused.as_ref().is_some_and(|r: &Refusal| r.reserved));
    let error = RwSignal::new(refused);
    let key = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    // What had focus when the dialog opened (before the field takes it).
    let opener = StoredValue::new_local(document().active_element());
    let on_cancel = on_cancel.map(|cancel| {
        Callback::new(move |()| {
            focus::restore(opener.get_value());
            cancel.run(());
        })
    });
    let input_ref = NodeRef::<html::Input>::new();
    let key_ref = NodeRef::<html::Input>::new();
    key_ref.on_load(|input| {
        let _ = input.focus();
    });
    input_ref.on_load(|input| {
        let _ = input.focus();
        input.select();
    });

    let claim = move |name: String| {
        busy.set(true);
        spawn_local(async move {
            let key = if show_key.get_untracked() {
                key.get_untracked()
            } else {
                String::new()
            };
            match api::join(&name, "", &key).await {
                Ok(joined) => {
                    focus::composer();
                    on_joined.run(joined);
                }
                Err(status) => {
                    let refusal = Refusal::of(&name, &status);
                    let reserved = refusal.reserved;
                    error.set(Some(refusal));
                    // The button was disabled while asking: focus goes to
                    // what is missing, the key (focused as its field
                    // appears) or another name (the error describes it).
                    if reserved && show_key.get_untracked() {
                        if let Some(input) = key_ref.get_untracked() {
                            let _ = input.focus();
                            input.select();
                        }
                    } else if reserved {
                        show_key.set(true);
                    } else if let Some(input) = input_ref.get_untracked() {
                        let _ = input.focus();
                    }
                }
            }
            busy.set(false);
        });
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        match api::validate_name(&draft.get_untracked()) {
            // The name this tab holds already (in any ASCII case): nothing
            // to claim (Join would say it is taken: by this very tab).
            Ok(name) if on_cancel.is_some() && name.eq_ignore_ascii_case(&current) => {
                on_cancel.inspect(|cancel| cancel.run(()));
            }
            Ok(name) => claim(name),
            Err(reason) => error.set(Some(Refusal {
                reason,
                suggestion: None,
                reserved: false,
            })),
        }
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        focus::keep_tab_inside(&ev);
        if ev.key() == "Escape"
            && let Some(cancel) = on_cancel
        {
            cancel.run(());
        }
    };
    let count = move || draft.with(|d| d.trim().chars().count());

    view! {
        <div class="overlay" on:keydown=on_keydown>
            <div
                class="card name-card"
                role="dialog"
                aria-modal="true"
                aria-labelledby="name-title"
                data-testid="name-dialog"
            >
                // A heading of level 1: while the dialog is open, the page
                // behind it (and its own heading) is inert.
                <form on:submit=submit>
                    <h1 id="name-title">
                        {if first_visit { "Welcome! What's your name?" } else { "Change your name" }}
                    </h1>
                    <p class="muted">"Everyone in the chat sees it next to your messages."</p>
                    <input
                        node_ref=input_ref
                        data-testid="name-input"
                        type="text"
                        name="username"
                        autocomplete="nickname"
                        placeholder="Your name"
                        aria-label="Your name"
                        aria-invalid=move || if error.with(Option::is_some) { "true" } else { "false" }
                        aria-describedby="name-error"
                        prop:value=move || draft.get()
                        on:input=move |ev| {
                            draft.set(event_target_value(&ev));
                            error.set(None);
                        }
                    />
                    <div class="field-hint">
                        <span class="error" id="name-error" role="alert" data-testid="name-error">
                            {move || error.get().map(|refusal| view! {
                                {refusal.reason}
                                {refusal.suggestion.map(|name| view! {
                                    " "
                                    <button
                                        type="button"
                                        class="link"
                                        data-testid="name-suggestion"
                                        on:click=move |_| claim(name.clone())
                                    >
                                        {format!("Be {name}?")}
                                    </button>
                                })}
                            })}
                        </span>
                        <span
                            class="counter"
                            class:over=move || { count() > api::MAX_NAME_CHARS }
                        >
                            {move || format!("{}/{}", count(), api::MAX_NAME_CHARS)}
                        </span>
                    </div>
                    // Only a moderator's name asks for the key (the server
                    // says it is reserved): everyone else never sees it.
                    <Show when=move || show_key.get()>
                        <label class="key-field">
                            <span>"Moderator key"</span>
                            <input
                                node_ref=key_ref
                                data-testid="key-input"
                                type="password"
                                name="key"
                                autocomplete="current-password"
                                prop:value=move || key.get()
                                on:input=move |ev| {
                                    key.set(event_target_value(&ev));
                                    error.set(None);
                                }
                            />
                        </label>
                    </Show>
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
                            disabled=move || busy.get() || draft.with(|d| d.trim().is_empty())
                        >
                            {if first_visit { "Join chat" } else { "Save" }}
                        </button>
                    </div>
                </form>
            </div>
        </div>
    }
}
