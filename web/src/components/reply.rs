//! Replies: the one-line quote of the message a reply answers (above the
//! reply's text; a click shows the original, reading its page through a
//! link to it when the list does not have it),
//! and the line above the composer that says what the next message will
//! answer (Escape or ✕ cancels).

use leptos::prelude::*;

use crate::browser::scroll::show_message;
use crate::state::acting::Acting;
use crate::state::entry::Entry;
use crate::state::timeline::Timeline;

/// How much of the original a quote shows.
const QUOTED_CHARS: usize = 80;

/// "Ada: the start of the text", or why there is nothing to quote.
fn quote_of(original: Option<&Entry>) -> (String, String) {
    match original {
        None => (String::new(), "an earlier message".to_owned()),
        Some(entry) => entry.copy.with(|m| {
            let text = if m.deleted {
                "deleted message".to_owned()
            } else {
                let mut start: String = m.message.chars().take(QUOTED_CHARS).collect();
                if m.message.chars().count() > QUOTED_CHARS {
                    start.push('…');
                }
                start
            };
            (m.username.clone(), text)
        }),
    }
}

/// The quote above a reply's text.
#[component]
pub fn ReplyQuote(timeline: Timeline, id: u64) -> impl IntoView {
    let original = timeline.by_id(id);
    // Follows the original's edits and deletion.
    let quote = Memo::new(move |_| quote_of(original.as_ref()));
    view! {
        <button
            class="reply-quote"
            data-testid="reply-quote"
            aria-label=move || {
                let (author, text) = quote.get();
                if author.is_empty() { format!("Reply to {text}") } else { format!("Reply to {author}: {text}") }
            }
            on:click=move |_| {
                if document().get_element_by_id(&format!("msg-{id}")).is_some() {
                    show_message(id);
                } else if let Some(window) = web_sys::window() {
                    // Not in the list: the link to it reads its page.
                    let _ = window.location().set_hash(&format!("/room/{}/{id}", timeline.room()));
                }
            }
        >
            <span class="reply-author">{move || quote.get().0}</span>
            <span class="reply-text">{move || quote.get().1}</span>
        </button>
    }
}

/// What the next message will answer, above the composer.
#[component]
pub fn ReplyBanner() -> impl IntoView {
    let acting = expect_context::<Acting>();
    move || {
        acting.replying.get().map(|entry| {
            let (author, text) = quote_of(Some(&entry));
            view! {
                <div class="reply-banner" data-testid="reply-banner">
                    <span class="reply-to">
                        "Replying to " <strong>{author}</strong> ": " <span class="reply-text">{text}</span>
                    </span>
                    <button
                        class="link"
                        data-testid="reply-cancel"
                        aria-label="Cancel reply"
                        on:click=move |_| acting.replying.set(None)
                    >
                        "✕"
                    </button>
                </div>
            }
        })
    }
}
