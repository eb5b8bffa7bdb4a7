//! What can be done to a message, from its row: a toolbar beside the bubble
//! (shown on hover, on keyboard focus, and from the "⋯" button on a touch
//! screen) with Reply, React, Edit (the user's own messages), Delete
//! (their own, and a moderator's on every message), Copy link and Report
//! (somebody else's), the reaction picker and the questions whether to delete (a
//! moderator gives a reason there) or why to report under the bubble, and
//! the box a message is edited in, in place.

use leptos::html;
use leptos::prelude::*;

use crate::browser::focus;
use crate::net::api;
use crate::state::acting::Acting;
use crate::state::entry::Entry;

/// The reactions the picker offers first.
const COMMON: [&str; 6] = ["👍", "❤️", "😂", "🎉", "😮", "🙏"];

/// `awake`: the row has been hovered or focused. The toolbar is built only
/// then, so a long history costs one button per message, not five.
#[component]
pub fn MessageActions(entry: Entry, awake: Signal<bool>) -> impl IntoView {
    let acting = expect_context::<Acting>();
    let key = entry.key;
    let own = entry.own;
    let open = RwSignal::new(false);
    let reply_entry = entry;
    view! {
        <button
            class="more"
            data-testid="message-more"
            aria-label="Message actions"
            aria-expanded=move || if open.get() { "true" } else { "false" }
            on:click=move |_| open.update(|o| *o = !*o)
        >
            "⋯"
        </button>
        {move || (awake.get() || open.get()).then(|| {
        let reply_entry = reply_entry.clone();
        let link_entry = reply_entry.clone();
        view! {
        <div class="msg-actions" class:open=move || open.get() role="toolbar" aria-label="Message actions">
            <button
                data-testid="action-reply"
                title="Reply"
                on:click=move |_| {
                    open.set(false);
                    acting.replying.set(Some(reply_entry.clone()));
                    focus::composer();
                }
            >
                "↩" <span class="action-label">"Reply"</span>
            </button>
            <button
                data-testid="action-react"
                title="React"
                aria-expanded=move || if acting.picking.get() == Some(key) { "true" } else { "false" }
                on:click=move |_| {
                    open.set(false);
                    acting.picking.update(|p| *p = if *p == Some(key) { None } else { Some(key) });
                }
            >
                "☺" <span class="action-label">"React"</span>
            </button>
            {own.then(|| view! {
                <button
                    data-testid="action-edit"
                    title="Edit"
                    on:click=move |_| {
                        open.set(false);
                        acting.editing.set(Some(key));
                    }
                >
                    "✎" <span class="action-label">"Edit"</span>
                </button>
            })}
            {move || (own || acting.moderator.get()).then(|| view! {
                <button
                    data-testid="action-delete"
                    class="danger"
                    title="Delete"
                    aria-expanded=move || if acting.confirming.get() == Some(key) { "true" } else { "false" }
                    on:click=move |_| {
                        open.set(false);
                        acting.picking.set(None);
                        acting.confirming.set(Some(key));
                    }
                >
                    "🗑" <span class="action-label">"Delete"</span>
                </button>
            })}
            <button
                data-testid="action-copy-link"
                title="Copy a link to this message"
                on:click={
                    let entry = link_entry.clone();
                    move |_| {
                        open.set(false);
                        acting.copy_link(&entry);
                    }
                }
            >
                "🔗" <span class="action-label">"Copy link"</span>
            </button>
            {(!own).then(|| view! {
                <button
                    data-testid="action-report"
                    title="Report to the moderators"
                    aria-expanded=move || if acting.reporting.get() == Some(key) { "true" } else { "false" }
                    on:click=move |_| {
                        open.set(false);
                        acting.picking.set(None);
                        acting.confirming.set(None);
                        acting.reporting.set(Some(key));
                    }
                >
                    "⚑" <span class="action-label">"Report"</span>
                </button>
            })}
        </div>
        }
        })}
    }
}

/// Under the bubble: "Delete this message?", with Cancel (where focus
/// starts: the safe answer; Escape too) and Delete.
#[component]
pub fn ConfirmDelete(entry: Entry) -> impl IntoView {
    let acting = expect_context::<Acting>();
    let cancel = NodeRef::<html::Button>::new();
    // Someone else's message: a moderator deletes it, and may say why.
    let moderating = !entry.own;
    let author = entry.copy.with_untracked(|m| m.username.clone());
    let reason = RwSignal::new(String::new());
    Effect::new(move |_| {
        if let Some(button) = cancel.get() {
            let _ = button.focus();
        }
    });
    let question = format!("confirm-delete-{}", entry.key);
    let labelled_by = question.clone();
    let close = move || {
        acting.confirming.set(None);
        focus::composer();
    };
    view! {
        <div class="picker-row">
            <div
                class="picker confirm"
                role="alertdialog"
                aria-labelledby=labelled_by
                data-testid="confirm-delete"
                on:keydown=move |ev| {
                    if ev.key() == "Escape" {
                        ev.stop_propagation();
                        close();
                    }
                }
            >
                <span id=question>
                    {if moderating {
                        format!("Delete {author}'s message as a moderator? This can't be undone.")
                    } else {
                        "Delete this message? This can't be undone.".to_owned()
                    }}
                </span>
                {moderating.then(|| view! {
                    <input
                        class="reason"
                        data-testid="delete-reason"
                        aria-label="Reason (optional, shown to everyone)"
                        placeholder="Reason (optional)"
                        maxlength="200"
                        prop:value=move || reason.get()
                        on:input=move |ev| reason.set(event_target_value(&ev))
                    />
                })}
                <button
                    node_ref=cancel
                    class="secondary"
                    data-testid="confirm-delete-cancel"
                    on:click=move |_| close()
                >
                    "Cancel"
                </button>
                <button
                    class="primary danger"
                    data-testid="confirm-delete-yes"
                    on:click=move |_| {
                        acting.delete(&entry, reason.get_untracked().trim().to_owned());
                        close();
                    }
                >
                    "Delete"
                </button>
            </div>
        </div>
    }
}

/// Under the bubble: "Report this message to the moderators?", with a
/// reason, Cancel (where focus starts; Escape too) and Report.
#[component]
pub fn ConfirmReport(entry: Entry) -> impl IntoView {
    let acting = expect_context::<Acting>();
    let reason_box = NodeRef::<html::Input>::new();
    let author = entry.copy.with_untracked(|m| m.username.clone());
    let reason = RwSignal::new(String::new());
    Effect::new(move |_| {
        if let Some(input) = reason_box.get() {
            let _ = input.focus();
        }
    });
    let question = format!("confirm-report-{}", entry.key);
    let labelled_by = question.clone();
    let close = move || {
        acting.reporting.set(None);
        focus::composer();
    };
    let send = move || {
        acting.report(&entry, reason.get_untracked().trim().to_owned());
        close();
    };
    view! {
        <div class="picker-row">
            <div
                class="picker confirm"
                role="alertdialog"
                aria-labelledby=labelled_by
                data-testid="confirm-report"
                on:keydown=move |ev| {
                    if ev.key() == "Escape" {
                        ev.stop_propagation();
                        close();
                    }
                }
            >
            // A form, so Enter in the reason reports.
            <form class="confirm-form" on:submit=move |ev| {
                ev.prevent_default();
                send();
            }>
                <span id=question>
                    {format!("Report {author}'s message to the moderators?")}
                </span>
                <input
                    node_ref=reason_box
                    class="reason"
                    data-testid="report-reason"
                    aria-label="Why? (optional, only moderators see it)"
                    placeholder="Why? (optional)"
                    maxlength="200"
                    prop:value=move || reason.get()
                    on:input=move |ev| reason.set(event_target_value(&ev))
                />
                <button
                    type="button"
                    class="secondary"
                    data-testid="confirm-report-cancel"
                    on:click=move |_| close()
                >
                    "Cancel"
                </button>
                <button type="submit" class="primary" data-testid="confirm-report-yes">
                    "Report"
                </button>
            </form>
            </div>
        </div>
    }
}

/// A few common reactions, and a box for any other emoji.
#[component]
pub fn Picker(entry: Entry) -> impl IntoView {
    let acting = expect_context::<Acting>();
    let other = RwSignal::new(String::new());
    let first = NodeRef::<html::Button>::new();
    Effect::new(move |_| {
        if let Some(button) = first.get() {
            let _ = button.focus();
        }
    });
    let close = move || acting.picking.set(None);
    let pick = {
        let entry = entry.clone();
        move |emoji: String| {
            acting.toggle_reaction(&entry, emoji);
            acting.picking.set(None);
        }
    };
    let pick_other = pick.clone();
    view! {
        <div class="picker-row">
        <div
            class="picker"
            role="group"
            aria-label="Pick a reaction"
            data-testid="reaction-picker"
            on:keydown=move |ev| {
                if ev.key() == "Escape" {
                    ev.stop_propagation();
                    close();
                }
            }
        >
            {COMMON
                .iter()
                .enumerate()
                .map(|(at, emoji)| {
                    let pick = pick.clone();
                    let node = if at == 0 { first } else { NodeRef::new() };
                    view! {
                        <button
                            node_ref=node
                            class="pick"
                            data-testid="pick-emoji"
                            aria-label=format!("React with {emoji}")
                            on:click=move |_| pick(emoji.to_string())
                        >
                            {*emoji}
                        </button>
                    }
                })
                .collect_view()}
            <form on:submit=move |ev| {
                ev.prevent_default();
                let emoji = other.get_untracked().trim().to_owned();
                if !emoji.is_empty() {
                    pick_other(emoji);
                }
            }>
                <input
                    class="pick-other"
                    data-testid="pick-other"
                    aria-label="Any emoji"
                    placeholder="Any emoji"
                    maxlength="16"
                    prop:value=move || other.get()
                    on:input=move |ev| other.set(event_target_value(&ev))
                />
            </form>
        </div>
        </div>
    }
}

/// The message's text in a box to change it: Enter saves, Shift+Enter is
/// a new line, Escape cancels.
#[component]
pub fn EditBox(entry: Entry) -> impl IntoView {
    let acting = expect_context::<Acting>();
    let text = RwSignal::new(entry.copy.with_untracked(|m| m.message.clone()));
    let saving = RwSignal::new(false);
    let input = NodeRef::<html::Textarea>::new();
    Effect::new(move |_| {
        if let Some(input) = input.get() {
            let _ = input.focus();
            let end = input.value().len() as u32;
            let _ = input.set_selection_range(end, end);
        }
    });
    let cancel = move || {
        acting.editing.set(None);
        focus::composer();
    };
    let save = move || {
        let new = text.get_untracked();
        let unchanged = entry.copy.with_untracked(|m| m.message == new.trim());
        if unchanged {
            cancel();
            return;
        }
        if let Err(why) = api::validate_message(&new) {
            let why = if why.is_empty() {
                "A message can't be empty: delete it instead.".to_owned()
            } else {
                why
            };
            acting.error.set(Some(why));
            return;
        }
        saving.set(true);
        acting.save_edit(&entry, new, move |saved| {
            saving.try_set(false);
            if saved {
                acting.editing.try_set(None);
                focus::composer();
            }
        });
    };
    view! {
        <div class="edit-box">
            <textarea
                node_ref=input
                data-testid="edit-input"
                aria-label="Edit message"
                rows="2"
                prop:value=move || text.get()
                disabled=move || saving.get()
                on:input=move |ev| text.set(event_target_value(&ev))
                on:keydown=move |ev| {
                    if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
                        ev.prevent_default();
                        save();
                    } else if ev.key() == "Escape" {
                        ev.prevent_default();
                        ev.stop_propagation();
                        cancel();
                    }
                }
            ></textarea>
            <div class="edit-hint">
                "Enter to save, Escape to cancel"
            </div>
        </div>
    }
}
