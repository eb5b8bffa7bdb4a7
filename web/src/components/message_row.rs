//! One row of the conversation as the reader sees it: a message bubble
//! (with its author's name, avatar and time at the start of a run, a day
//! separator above the first of a day, its delivery state, and Retry, Edit
//! or Dismiss when it was not sent), or a notice. A stored message shows
//! what it answers, "(edited)", its reactions, or that it was deleted, and
//! offers what can be done to it (`message_actions`).

use leptos::prelude::*;

use crate::browser::time;
use crate::components::message_actions::{
    ConfirmDelete, ConfirmReport, EditBox, MessageActions, Picker,
};
use crate::components::reactions::Reactions;
use crate::components::reply::ReplyQuote;
use crate::state::acting::Acting;
use crate::state::entry::{Delivery, Entry, deliver};
use crate::state::rich::{self, Piece};
use crate::state::timeline::Timeline;

#[component]
pub fn MessageRow(entry: Entry, timeline: Timeline, draft: RwSignal<String>) -> impl IntoView {
    if entry.presence {
        // No status role of its own (unlike other notices): comings and
        // goings are not alerts, and the online list says who is here.
        return view! {
            <li class="notice presence" data-testid="presence-line">{entry.text.to_string()}</li>
        }
        .into_any();
    }
    if entry.notice {
        return view! {
            <li class="notice" data-testid="notice" role="status">{entry.text.to_string()}</li>
        }
        .into_any();
    }
    let Entry {
        key,
        author,
        own,
        time,
        delivery,
        starts_group,
        starts_day,
        id,
        copy,
        deleted_by_moderator,
        ..
    } = entry.clone();
    let acting = expect_context::<Acting>();
    // What the bubble shows; a reaction does not re-render the text.
    let shown = Memo::new(move |_| copy.with(|m| (m.deleted, m.message.clone(), m.edited_at)));
    let reply_to = Memo::new(move |_| copy.with(|m| m.reply_to));
    let editing = move || acting.editing.get() == Some(key);
    let body = {
        let entry = entry.clone();
        move || {
            let (deleted, text, _) = shown.get();
            if deleted {
                let words = if deleted_by_moderator.get() {
                    "This message was deleted by a moderator."
                } else {
                    "This message was deleted."
                };
                view! { <span class="deleted" data-testid="message-deleted">{words}</span> }
                    .into_any()
            } else if editing() {
                view! { <EditBox entry=entry.clone() /> }.into_any()
            } else {
                rich_text(&text)
            }
        }
    };
    let edited = move || {
        let (deleted, _, edited_at) = shown.get();
        (edited_at > 0 && !deleted).then(|| {
            let when = time::stamp(edited_at).full;
            view! {
                <span class="edited" data-testid="message-edited" title=format!("Edited {when}")>
                    "(edited)"
                </span>
            }
        })
    };
    // Only a stored message that is still there can be answered or changed.
    let actionable = move || id.get() != 0 && !shown.with(|s| s.0);
    // Hovered or focused once: its actions are built from then on.
    let awake = RwSignal::new(false);
    let wake = move || {
        if !awake.get_untracked() {
            awake.set(true);
        }
    };
    let actions = {
        let entry = entry.clone();
        move || {
            actionable()
                .then(|| view! { <MessageActions entry=entry.clone() awake=awake.into() /> })
        }
    };
    let picker = {
        let entry = entry.clone();
        move || {
            (actionable() && acting.picking.get() == Some(key))
                .then(|| view! { <Picker entry=entry.clone() /> })
        }
    };
    let confirm = {
        let entry = entry.clone();
        move || {
            (actionable() && acting.confirming.get() == Some(key))
                .then(|| view! { <ConfirmDelete entry=entry.clone() /> })
        }
    };
    let report = {
        let entry = entry.clone();
        move || {
            (actionable() && acting.reporting.get() == Some(key))
                .then(|| view! { <ConfirmReport entry=entry.clone() /> })
        }
    };
    let quote = move || {
        let to = reply_to.get();
        (to != 0).then(|| view! { <ReplyQuote timeline id=to /> })
    };
    let day = move || {
        starts_day.get().then(|| {
            view! { <li class="day" data-testid="day-separator"><span>{time::day_label(time.get())}</span></li> }
        })
    };
    let marker = move || {
        (timeline.marker.get() == Some(key)).then(|| {
            view! { <li class="unread-marker" data-testid="unread-marker"><span>"New messages"</span></li> }
        })
    };
    let stamp = Memo::new(move |_| time::stamp(time.get()));
    let state = move || match delivery.get() {
        Delivery::Sending => "sending",
        Delivery::Delivered => "delivered",
        Delivery::Failed(_) => "failed",
    };
    let error = move || match delivery.get() {
        Delivery::Failed(failure) => Some(failure),
        _ => None,
    };
    // Held back by the server's rate limit: shown calmly, not as an error.
    let too_fast = move || delivery.with(|d| matches!(d, Delivery::Failed(f) if f.too_fast));
    let hue = name_hue(&author);
    // Uppercased by CSS: Rust's Unicode case tables would cost ~10 KB.
    let initial = author.chars().next().map(String::from).unwrap_or_default();

    view! {
        {day}
        {marker}
        <li
            class="msg"
            on:mouseenter=move |_| wake()
            on:focusin=move |_| wake()
            id=move || (id.get() != 0).then(|| format!("msg-{}", id.get()))
            class:own=own
            class:deleted=move || shown.with(|s| s.0)
            class:cont=move || !starts_group.get()
            data-testid="message"
            data-own=if own { "true" } else { "false" }
            data-state=state
            data-failure=move || too_fast().then_some("too-fast")
            style=format!("--hue: {hue}")
        >
            {(!own).then(|| view! { <span class="avatar" aria-hidden="true">{initial}</span> })}
            <div class="bubble">
                <div class="meta">
                    // Own bubbles do not repeat the user's name; a
                    // continuation names its author for screen readers only.
                    {if own {
                        view! { <span class="sr-only">"You"</span> }.into_any()
                    } else {
                        view! {
                            <span class="author" data-testid="message-author">
                                {author.to_string()}
                            </span>
                        }
                        .into_any()
                    }}
                    <time
                        data-testid="message-time"
                        datetime=move || stamp.with(|s| s.iso.clone())
                        title=move || stamp.with(|s| s.full.clone())
                    >
                        {move || stamp.with(|s| s.short.clone())}
                    </time>
                    {own.then(|| view! {
                        <span class="tick" role="img" aria-label=state title=state>
                            {move || match delivery.get() {
                                Delivery::Sending => "○",
                                Delivery::Delivered => "✓",
                                Delivery::Failed(_) => "!",
                            }}
                        </span>
                    })}
                </div>
                {quote}
                <div class="text" data-testid="message-text">{body}</div>
                {edited}
                <Reactions entry=entry.clone() />
                {actions}
            </div>
            {picker}
            {confirm}
            {report}
            {move || error().map(|failure| {
                let retry_entry = entry.clone();
                let text = entry.text.clone();
                // Retry resends the same text; a refusal of the text itself
                // offers Edit instead: back into the composer (unless the
                // user has started another message), and off the list.
                let action = if failure.retryable {
                    view! {
                        <button
                            class="link"
                            data-testid="retry-button"
                            on:click=move |_| deliver(retry_entry.clone(), move |failure| acting.note_refusal(failure))
                        >
                            "Retry"
                        </button>
                    }
                    .into_any()
                } else {
                    view! {
                        <button
                            class="link"
                            data-testid="edit-button"
                            on:click=move |_| {
                                if draft.with_untracked(|d| d.trim().is_empty()) {
                                    draft.set(text.to_string());
                                }
                                timeline.dismiss(key);
                            }
                        >
                            "Edit"
                        </button>
                    }
                    .into_any()
                };
                // Sending too fast is no fault of the message: a polite
                // status in the server's (reworded) words, then Retry.
                let (role, prefix) = if failure.too_fast {
                    ("status", "")
                } else {
                    ("alert", "Not sent: ")
                };
                view! {
                    <div class="send-error" class:too-fast=failure.too_fast role=role>
                        <span>
                            {prefix} <span data-testid="send-error">{failure.reason}</span>
                        </span>
                        {action}
                        <button
                            class="link"
                            data-testid="dismiss-button"
                            on:click=move |_| timeline.dismiss(key)
                        >
                            "Dismiss"
                        </button>
                    </div>
                }
            })}
        </li>
    }
    .into_any()
}

/// A message's text with its links and code (see [`rich`]), all as text.
fn rich_text(text: &str) -> AnyView {
    let pieces = rich::pieces(text);
    if let [Piece::Text(plain)] = pieces.as_slice() {
        return plain.clone().into_any();
    }
    pieces
        .into_iter()
        .map(|piece| match piece {
            Piece::Text(text) => text.into_any(),
            Piece::Link(url) => {
                let label = url.clone();
                view! { <a href=url target="_blank" rel="noopener noreferrer">{label}</a> }
            }
            .into_any(),
            Piece::Code(code) => view! { <code>{code}</code> }.into_any(),
            Piece::Block(code) => view! { <pre><code>{code}</code></pre> }.into_any(),
        })
        .collect::<Vec<_>>()
        .into_any()
}

/// A stable colour per name, so people are easy to tell apart (here and in
/// the online list).
pub fn name_hue(name: &str) -> u32 {
    name.chars()
        .fold(7u32, |h, c| h.wrapping_mul(31).wrapping_add(c as u32))
        % 360
}
