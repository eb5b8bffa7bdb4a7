//! The people views: the online list (a drawer on a phone; for a
//! moderator, each person has a menu to mute them in the room or lift it),
//! the header's count that opens it, and the "is typing" line above the
//! composer. What they show is `state::people`.

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::browser::focus;
use crate::components::message_row::name_hue;
use crate::net::moderation;
use crate::state::people::People;

/// "ada is typing...", "ada and bob are typing...", or "several people are
/// typing..."; empty when nobody is.
fn typing_line(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => format!("{one} is typing..."),
        [one, two] => format!("{one} and {two} are typing..."),
        _ => "several people are typing...".to_owned(),
    }
}

/// The button that opens the list of people (in the header).
const DRAWER_TOGGLE: &str = "[aria-controls=online-list]";

/// Everyone present, this user marked; on a phone it opens as a drawer:
/// opening it moves focus into it (to its close button), and closing it
/// (that button, or Escape) gives focus back to the button that opened it.
#[component]
pub fn OnlineList(
    people: People,
    me: Signal<String>,
    open: RwSignal<bool>,
    /// The user moderates: each other person has a menu.
    moderator: Signal<bool>,
    /// The room open now, where a mute applies.
    room: Signal<String>,
) -> impl IntoView {
    let count = move || people.online.with(Vec::len);
    // Opening it (on a phone) moves focus to its close button.
    focus::into_drawer(open, "#online-list .close-people");
    let close = move || focus::close_drawer(open, DRAWER_TOGGLE);
    view! {
        <aside
            class="people"
            class:open=move || open.get()
            id="online-list"
            data-testid="online-list"
            aria-labelledby="people-title"
            // Reachable by Tab (and scrollable by keyboard) on wide screens,
            // where nothing in it takes focus.
            tabindex="0"
            on:keydown=move |ev| {
                if ev.key() == "Escape" && open.get_untracked() {
                    close();
                }
            }
        >
            <div class="people-head">
                <h2 id="people-title">
                    "Online " <span class="people-count">{count}</span>
                </h2>
                <button
                    class="close-people"
                    aria-label="Close the list of people online"
                    on:click=move |_| close()
                >
                    "✕"
                </button>
            </div>
            <ul>
                <For
                    each=move || people.shown()
                    key=|name| name.clone()
                    children=move |name| {
                        let own = me.with_untracked(|me| *me == name);
                        let initial = name.chars().next().map(String::from).unwrap_or_default();
                        view! {
                            <li data-testid="online-person" class:own=own>
                                <span class="avatar small" aria-hidden="true" style=format!("--hue: {}", name_hue(&name))>
                                    {initial}
                                </span>
                                <span class="person-name">{name.clone()}</span>
                                {own.then(|| view! { <span class="muted">" (you)"</span> })}
                                {move || (!own && moderator.get()).then(|| {
                                    view! { <ModerateMenu name=name.clone() room /> }
                                })}
                            </li>
                        }
                    }
                />
            </ul>
        </aside>
    }
}

/// How long a moderator can mute someone for from the list (0: until
/// lifted).
const MUTES: [(&str, u64); 4] = [
    ("10 minutes", 600),
    ("1 hour", 3_600),
    ("24 hours", 86_400),
    ("until lifted", 0),
];

/// What a moderator does to a person from the list.
#[derive(Clone, Copy)]
enum Action {
    /// In the open room, for this many seconds (0: until lifted).
    Mute(u64),
    /// The open room's mute.
    Lift,
    /// Everywhere, until lifted, with the addresses they used.
    Ban,
    /// Their messages of the last hour, in every room.
    Purge,
}

/// A moderator's menu on one person: mute them in this room for a while,
/// lift it, or ban them; what happened is said beside it.
#[component]
fn ModerateMenu(name: String, room: Signal<String>) -> impl IntoView {
    let open = RwSignal::new(false);
    let said = RwSignal::new(None::<String>);
    let label = format!("Moderate {name}");
    let act = {
        let name = name.clone();
        move |action: Action| {
            open.set(false);
            let name = name.clone();
            let room = room.get_untracked();
            let done = match action {
                Action::Lift => format!("{name} may post in #{room} again."),
                Action::Ban => format!("{name} is banned, and so is their address."),
                Action::Purge => String::new(),
                Action::Mute(0) => format!("{name} is muted in #{room} until lifted."),
                Action::Mute(seconds) => {
                    let words = MUTES
                        .iter()
                        .find(|(_, s)| *s == seconds)
                        .map_or("", |(words, _)| words);
                    format!("{name} is muted in #{room} for {words}.")
                }
            };
            spawn_local(async move {
                let result = match action {
                    Action::Mute(seconds) => moderation::mute(&room, &name, seconds).await,
                    Action::Lift => moderation::lift(&room, &name).await,
                    Action::Ban => moderation::ban(&name).await,
                    Action::Purge => moderation::purge(&name, 3_600).await.map(|deleted| {
                        said.try_set(Some(format!(
                            "Deleted {deleted} message{} {name} sent in the last hour.",
                            if deleted == 1 { "" } else { "s" }
                        )));
                    }),
                };
                if matches!(action, Action::Purge) && result.is_ok() {
                    return;
                }
                said.try_set(Some(match result {
                    Ok(()) => done,
                    Err(failure) => failure.reason,
                }));
            });
        }
    };
    let lift = act.clone();
    let ban = act.clone();
    let purge = act.clone();
    view! {
        <button
            class="person-more"
            data-testid="moderate-person"
            aria-label=label.clone()
            aria-expanded=move || if open.get() { "true" } else { "false" }
            on:click=move |_| open.update(|o| *o = !*o)
        >
            "⋯"
        </button>
        <Show when=move || open.get()>
            <div
                class="person-menu"
                role="group"
                aria-label=label.clone()
                on:keydown=move |ev| {
                    if ev.key() == "Escape" {
                        ev.stop_propagation();
                        open.set(false);
                    }
                }
            >
                {MUTES
                    .iter()
                    .map(|(words, seconds)| {
                        let act = act.clone();
                        view! {
                            <button data-testid="mute-person" on:click=move |_| act(Action::Mute(*seconds))>
                                {format!("Mute {words}")}
                            </button>
                        }
                    })
                    .collect_view()}
                <button data-testid="lift-person" on:click={
                    let lift = lift.clone();
                    move |_| lift(Action::Lift)
                }>
                    "Lift mute"
                </button>
                <button class="danger" data-testid="purge-person" on:click={
                    let purge = purge.clone();
                    move |_| purge(Action::Purge)
                }>
                    "Delete their last hour"
                </button>
                <button class="danger" data-testid="ban-person" on:click={
                    let ban = ban.clone();
                    move |_| ban(Action::Ban)
                }>
                    "Ban"
                </button>
            </div>
        </Show>
        {move || said.get().map(|words| view! {
            <span class="person-said" role="status" data-testid="moderation-said">{words}</span>
        })}
    }
}

/// The header's count of people online; on a phone it opens the list.
#[component]
pub fn OnlineCount(people: People, open: RwSignal<bool>) -> impl IntoView {
    let count = move || people.online.with(Vec::len);
    view! {
        <button
            class="online-count"
            data-testid="online-count"
            aria-label=move || format!("{} online: show who", count())
            aria-expanded=move || if open.get() { "true" } else { "false" }
            aria-controls="online-list"
            on:click=move |_| open.update(|o| *o = !*o)
        >
            <svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true">
                <path
                    fill="currentColor"
                    d="M9 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zm0 2c-3.3 0-7 1.7-7 4v2h14v-2c0-2.3-3.7-4-7-4zm8-2a3 3 0 1 0 0-6 3 3 0 0 0 0 6zm1 2h-1.2c1.3 1 2.2 2.3 2.2 4v2h4v-2c0-2.2-2.7-3.8-5-4z"
                />
            </svg>
            <span>{count}</span>
        </button>
    }
}

/// The line above the composer saying who is typing.
#[component]
pub fn TypingLine(people: People) -> impl IntoView {
    view! {
        <div class="typing" data-testid="typing" aria-live="polite">
            {move || people.typing.with(|names| typing_line(names))}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn the_typing_line_names_one_or_two_and_counts_no_further() {
        assert_eq!(typing_line(&[]), "");
        assert_eq!(typing_line(&names(&["ada"])), "ada is typing...");
        assert_eq!(
            typing_line(&names(&["ada", "bob"])),
            "ada and bob are typing..."
        );
        assert_eq!(
            typing_line(&names(&["ada", "bob", "cy"])),
            "several people are typing..."
        );
    }
}
