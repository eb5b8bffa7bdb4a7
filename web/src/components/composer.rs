//! Writing a message: Enter sends, Shift+Enter starts a new line, the box
//! grows with its text, and a counter appears as the text nears the limit.
//! Sending adds the message to the timeline at once (see `state::timeline`).
//! Above the box: what the message answers, if it is a reply (Escape
//! cancels), why the last change to a message failed, and, in a room in
//! slow mode, how long until the user may send again (counting down). Up
//! arrow in an empty box edits the user's last message.

use leptos::html;
use leptos::prelude::*;

use crate::components::reply::ReplyBanner;
use crate::net::api::{self, MAX_MESSAGE_CHARS};
use crate::state::acting::Acting;
use crate::state::entry::deliver;
use crate::state::people::TypingNotices;
use crate::state::timeline::Timeline;

/// Characters from which the counter is shown.
const COUNTER_FROM: usize = MAX_MESSAGE_CHARS - 500;
/// Tallest the input grows before it scrolls, in CSS pixels.
const MAX_INPUT_PX: i32 = 200;

/// Keeps `waiting` at the whole seconds left until `until` (ms since the
/// epoch), one tick a second, while `until` is still the slow mode's end.
fn count_down(acting: Acting, until: f64, waiting: RwSignal<u64>) {
    let left = until - js_sys::Date::now();
    if left <= 0.0 {
        waiting.try_set(0);
        return;
    }
    let seconds = (left / 1000.0).ceil();
    waiting.try_set(seconds as u64);
    // The next whole second, when the number shown changes.
    let next = left - (seconds - 1.0) * 1000.0;
    set_timeout(
        move || {
            if acting.slow_until.try_get_untracked() == Some(until) {
                count_down(acting, until, waiting);
            }
        },
        std::time::Duration::from_millis(next.max(1.0) as u64),
    );
}

#[component]
pub fn Composer(
    timeline: Timeline,
    name: Signal<String>,
    draft: RwSignal<String>,
    typing: TypingNotices,
    /// The room's slow mode: seconds between one person's posts (0: off).
    slow: Signal<u32>,
) -> impl IntoView {
    let input_ref = NodeRef::<html::Textarea>::new();
    let acting = expect_context::<Acting>();
    let chars = Memo::new(move |_| draft.with(|d| d.trim().chars().count()));
    let verdict = Memo::new(move |_| draft.with(|d| api::validate_message(d)));
    let can_send = move || verdict.with(Result::is_ok);

    // Fit the box to its text (up to a limit, then it scrolls).
    let fit = move || {
        if let Some(input) = input_ref.get_untracked() {
            let style = web_sys::HtmlElement::style(&input);
            let _ = style.set_property("height", "auto");
            // scrollHeight leaves out the border, which `height` includes.
            let border = input.offset_height() - input.client_height();
            let height = (input.scroll_height() + border).min(MAX_INPUT_PX);
            let _ = style.set_property("height", &format!("{height}px"));
        }
    };

    // Slow mode: seconds until the user may send again, counted down.
    let waiting = RwSignal::new(0u64);
    Effect::new(move |_| count_down(acting, acting.slow_until.get(), waiting));

    let send = move || {
        let author = name.get_untracked();
        let Ok(text) = verdict.get_untracked() else {
            return;
        };
        if author.is_empty() {
            return; // still behind the name prompt
        }
        let reply_to = acting
            .replying
            .get_untracked()
            .map_or(0, |e| e.id.get_untracked());
        if waiting.get_untracked() > 0 {
            return; // slow mode: the countdown says when
        }
        let entry = timeline.push_own(&author, &text, &api::new_nonce(), reply_to);
        acting.replying.set(None);
        deliver(entry, move |failure| acting.note_refusal(failure));
        acting.posted_slowly(slow.get_untracked());
        typing.sent();
        draft.set(String::new());
        if let Some(input) = input_ref.get_untracked() {
            let _ = input.focus();
        }
    };

    // Text put here by the page (cleared after a send, or a refused message
    // brought back for editing): refit the box, and focus it to edit.
    Effect::new(move |_| {
        let has_text = draft.with(|d| !d.is_empty());
        request_animation_frame(move || {
            fit();
            if let Some(input) = input_ref.get_untracked()
                && has_text
            {
                let _ = input.focus();
            }
        });
    });

    // Muted for a while: posting comes back by itself when it ends; the
    // notice also offers to try again (a moderator may have lifted it).
    Effect::new(move |_| {
        if let Some(until) = acting.muted.with(|m| m.as_ref().map(|m| m.until))
            && until > 0
        {
            let left = (until as f64 - js_sys::Date::now()).max(0.0);
            set_timeout(
                move || {
                    if acting
                        .muted
                        .try_with_untracked(|m| m.as_ref().map(|m| m.until))
                        == Some(Some(until))
                    {
                        acting.muted.try_set(None);
                    }
                },
                std::time::Duration::from_millis(left as u64 + 500),
            );
        }
    });
    let is_muted = move || acting.muted.with(Option::is_some);
    let is_waiting = move || waiting.get() > 0;

    // Ready to type as soon as there is a name (on load, and after the name
    // prompt closes).
    Effect::new(move |_| {
        let has_name = name.with(|n| !n.is_empty());
        if let Some(input) = input_ref.get()
            && has_name
        {
            let _ = input.focus();
        }
    });

    view! {
        <form
            class="composer"
            on:submit=move |ev| {
                ev.prevent_default();
                send();
            }
        >
            <ReplyBanner />
            {move || acting.error.get().map(|why| view! {
                <div class="action-error" role="alert" data-testid="action-error">
                    <span>{why}</span>
                    <button class="link" aria-label="Dismiss" on:click=move |_| acting.error.set(None)>"✕"</button>
                </div>
            })}
            {move || acting.notice.get().map(|said| view! {
                <div class="action-notice" role="status" data-testid="action-notice">
                    <span>{said}</span>
                    <button class="link" aria-label="Dismiss" on:click=move |_| acting.notice.set(None)>"✕"</button>
                </div>
            })}
            {move || is_waiting().then(|| view! {
                <div class="slow-notice" role="status" data-testid="slow-countdown">
                    <span aria-hidden="true">"🐢"</span>
                    <span>
                        {move || format!(
                            "Slow mode: you can send again in {} s (one message every {} s here).",
                            waiting.get(),
                            slow.get(),
                        )}
                    </span>
                </div>
            })}
            {move || acting.muted.get().map(|muted| view! {
                <div class="muted-notice" role="status" data-testid="muted-notice">
                    <span aria-hidden="true">"🔇"</span>
                    <span>{muted.reason}</span>
                    // A moderator may lift it before it ends.
                    <button class="link" data-testid="muted-retry" on:click=move |_| acting.muted.set(None)>
                        "Try again"
                    </button>
                </div>
            })}
            <div class="composer-box">
                <textarea
                    prop:disabled=is_muted
                    node_ref=input_ref
                    data-testid="composer-input"
                    rows="1"
                    placeholder="Write a message…"
                    aria-label="Message"
                    enterkeyhint="send"
                    prop:value=move || draft.get()
                    on:input=move |ev| {
                        let text = event_target_value(&ev);
                        typing.draft_changed(!text.trim().is_empty());
                        draft.set(text);
                        fit();
                    }
                    on:keydown=move |ev| {
                        // Enter sends; Shift+Enter is a newline, and Enter
                        // that confirms an IME composition is not a send.
                        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
                            ev.prevent_default();
                            send();
                        } else if ev.key() == "Escape" && acting.replying.with_untracked(Option::is_some) {
                            ev.prevent_default();
                            acting.replying.set(None);
                        } else if ev.key() == "ArrowUp" && draft.with_untracked(String::is_empty) {
                            // Edit the last message of ours that is stored.
                            if let Some(last) = timeline.last_own_stored() {
                                ev.prevent_default();
                                acting.editing.set(Some(last));
                            }
                        }
                    }
                ></textarea>
                <button
                    type="submit"
                    class="send"
                    data-testid="send-button"
                    aria-label="Send"
                    title="Send (Enter)"
                    disabled=move || !can_send() || is_muted() || is_waiting()
                >
                    <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
                        <path fill="currentColor" d="M3.4 20.4 21 12 3.4 3.6 3.4 10l12.6 2-12.6 2z" />
                    </svg>
                </button>
            </div>
            <Show when=move || { chars.get() >= COUNTER_FROM || verdict.with(|v| matches!(v, Err(e) if !e.is_empty())) }>
                <div class="composer-hint" class:over=move || verdict.with(Result::is_err)>
                    <span>{move || verdict.get().err()}</span>
                    <span class="counter">
                        {move || format!("{} / {MAX_MESSAGE_CHARS}", chars.get())}
                    </span>
                </div>
            </Show>
        </form>
    }
}
