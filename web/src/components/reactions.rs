//! A message's reactions as chips under it: the emoji and how many, pressed
//! when one of them is the user's, the first reactors' names in the tooltip
//! and the accessible name (which starts with what the chip shows, so a
//! voice user can say it); a click adds or takes back the user's own.

use chat_proto::Reaction;
use leptos::prelude::*;

use crate::state::acting::Acting;
use crate::state::entry::Entry;

#[component]
pub fn Reactions(entry: Entry) -> impl IntoView {
    let acting = expect_context::<Acting>();
    let reactions = Memo::new(move |_| entry.copy.with(|m| m.reactions.clone()));
    move || {
        let list = reactions.get();
        (!list.is_empty()).then(|| {
            let me = acting.me.get();
            let chips = list
                .into_iter()
                .map(|reaction| {
                    let mine = reaction.usernames.contains(&me);
                    let who = who_reacted(&reaction);
                    let label = format!("{} {}, {who}", reaction.emoji, reaction.count);
                    let entry = entry.clone();
                    let emoji = reaction.emoji.clone();
                    view! {
                        <button
                            class="reaction"
                            data-testid="reaction"
                            data-emoji=reaction.emoji.clone()
                            aria-pressed=if mine { "true" } else { "false" }
                            aria-label=label
                            title=who
                            on:click=move |_| acting.toggle_reaction(&entry, emoji.clone())
                        >
                            <span>{reaction.emoji.clone()}</span>
                            " "
                            <span class="count">{reaction.count}</span>
                        </button>
                    }
                })
                .collect_view();
            view! { <div class="reactions" data-testid="reactions">{chips}</div> }
        })
    }
}

/// "ada, bob and 3 others reacted with 👍".
fn who_reacted(reaction: &Reaction) -> String {
    let named = reaction.usernames.join(", ");
    let others = (reaction.count as usize).saturating_sub(reaction.usernames.len());
    let who = match others {
        0 => named,
        1 => format!("{named} and 1 other"),
        n => format!("{named} and {n} others"),
    };
    format!("{who} reacted with {}", reaction.emoji)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accessible_name_says_who_reacted_with_what() {
        let reaction = |count, names: &[&str]| Reaction {
            emoji: "👍".into(),
            count,
            usernames: names.iter().map(|n| (*n).to_owned()).collect(),
        };
        assert_eq!(
            who_reacted(&reaction(2, &["ada", "bob"])),
            "ada, bob reacted with 👍"
        );
        assert_eq!(
            who_reacted(&reaction(53, &["ada", "bob"])),
            "ada, bob and 51 others reacted with 👍"
        );
    }
}
