//! The page: header (title, search, connection state, who is online, who
//! you are), the conversation with the people online beside it, the
//! composer pinned at the bottom, and the name prompt while there is no
//! name yet or the user wants another one.
//!
//! On load the page asks the server for the name this tab (or browser) held
//! before, with its token; only if that fails is the user asked. A first
//! visit (nothing saved) is asked at once, while the same call finds out
//! whether an authenticating proxy names the user: then the prompt closes
//! and the proxy's name is the name. A returning user does not wait for the
//! answer either: the page acts as the saved session at once, so the room's
//! stream and the room list go out beside `Join` rather than one round trip
//! after it (on a slow phone network that round trip is over half a
//! second). `Join` then confirms the session, and nothing restarts, or
//! replaces it.

use futures_util::future::AbortHandle;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::components::composer::Composer;
use crate::components::connection::{ConnectionBadge, ConnectionBanner};
use crate::components::message_list::MessageList;
use crate::components::name_prompt::{NamePrompt, Refusal};
use crate::components::notify_toggle::NotifyToggle;
use crate::components::people::{OnlineCount, OnlineList, TypingLine};
use crate::components::reports::{ReportsPanel, ReportsToggle};
use crate::components::room_settings::RoomHeading;
use crate::components::rooms::{CreateRoom, RoomList};
use crate::components::search::SearchBox;
use crate::feed::Connection;
use crate::net::api::{self, Joined};
use crate::net::session::{self, Session};
use crate::state::acting::Acting;
use crate::state::people::{People, TypingNotices};
use crate::state::reports::Reports;
use crate::state::rooms::Rooms;
use crate::state::timeline::Timeline;

/// What the name prompt opens with.
#[derive(Clone)]
struct Asking {
    name: String,
    refused: Option<Refusal>,
}

#[component]
pub fn App() -> impl IntoView {
    let session = RwSignal::new(None::<Session>);
    // Whether the session's name moderates, as `Join` last said.
    let moderator = RwSignal::new(false);
    // A moderator banned this user (or their address): the server's words.
    let banned = RwSignal::new(None::<String>);
    api::on_banned(move |words| {
        banned.try_set(Some(words));
    });
    // Set while the name prompt is open.
    let asking = RwSignal::new(None::<Asking>);
    let rooms = Rooms::new();
    rooms.refresh();
    let people = People::new();
    let typing = TypingNotices::new(rooms.current);
    let connection = Connection::new();
    let people_open = RwSignal::new(false);
    let rooms_open = RwSignal::new(false);
    let creating = RwSignal::new(false);
    // A moderator's open reports, and whether their panel is open.
    let reports = Reports::new();
    provide_context(reports);
    let reports_open = RwSignal::new(false);
    Effect::new(move |_| {
        if moderator.get() {
            reports.load();
        }
    });
    // The composer's text; a refused message can be put back into it.
    let draft = RwSignal::new(String::new());

    let joined = move |Joined {
                           session: joined,
                           moderator: moderates,
                       }: Joined| {
        moderator.set(moderates);
        session::adopt(&joined);
        asking.set(None);
        // The session the page already acts as, confirmed: its stream stays.
        if session.with_untracked(|s| s.as_ref() != Some(&joined)) {
            session.set(Some(joined));
        }
    };
    // Takes `name` (with `token`, the session that held it) back, or asks.
    // One attempt at a time: the stream and a send may both find the
    // session gone, and a second claim would find the name taken (by the
    // first).
    let joining = StoredValue::new(false);
    let rejoin = move |name: String, token: String| {
        if joining.get_value() {
            return;
        }
        joining.set_value(true);
        spawn_local(async move {
            match api::join(&name, &token, "").await {
                Ok(session) => joined(session),
                // A first visit without a proxy: the prompt is open already
                // (and the user may have joined through it meanwhile).
                Err(_) if name.is_empty() => {}
                Err(status) => {
                    // The name is not ours any more: nothing goes out as it.
                    session.set(None);
                    moderator.set(false);
                    let refused = Some(Refusal::of(&name, &status));
                    asking.set(Some(Asking { name, refused }));
                }
            }
            joining.set_value(false);
        });
    };
    let saved = session::saved();
    if !saved.token.is_empty() {
        session::adopt(&saved);
        session.set(Some(saved.clone()));
    }
    // A first visit asks for a name at once; `Join("")` only finds out
    // whether an authenticating proxy names the user instead (it then
    // closes the prompt).
    if saved.name.is_empty() {
        asking.set(Some(Asking {
            name: String::new(),
            refused: None,
        }));
    }
    rejoin(saved.name, saved.token);

    // The server forgot the session (a restart, or the grace ran out while
    // offline): claim the name again; if somebody took it meanwhile, ask.
    session::on_lost(move || {
        if let Some(lost) = session.get_untracked() {
            rejoin(lost.name, lost.token);
        }
    });

    // The tab says where the user is, and how much is unread elsewhere.
    Effect::new(move |_| {
        let unread = rooms.total_unread();
        let room = rooms.current.get();
        let title = if unread > 0 {
            format!("({unread}) #{room} - chat")
        } else {
            format!("#{room} - chat")
        };
        document().set_title(&title);
    });

    let name = Signal::derive(move || {
        session
            .with(|s| s.as_ref().map(|s| s.name.clone()))
            .unwrap_or_default()
    });
    let rename = move |_| {
        asking.set(Some(Asking {
            name: name.get_untracked(),
            refused: None,
        }));
    };
    let cancel_rename = Callback::new(move |()| asking.set(None));
    // Behind an authenticating proxy the name is the login: not ours to change.
    let can_rename = move || session.with(|s| s.as_ref().is_some_and(|s| !s.proxied));
    // While a dialog is open, everything behind it is inert: nothing there
    // can be focused, clicked or read.
    let modal = move || creating.get() || asking.with(Option::is_some);

    let app = move || {
        view! {
            <div class="app" inert=modal>
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
                    <button
                        class="rooms-toggle"
                        aria-label="Rooms"
                        aria-expanded=move || if rooms_open.get() { "true" } else { "false" }
                        aria-controls="room-list"
                        on:click=move |_| rooms_open.update(|o| *o = !*o)
                    >
                        "#"
                    </button>
                    <RoomHeading rooms moderator=moderator.into() />
                    // Nothing is connecting until there is a name to connect as.
                    <Show when=move || session.with(Option::is_some)>
                        <SearchBox rooms />
                        <ConnectionBadge connection />
                        <Show when=move || moderator.get()>
                            <ReportsToggle open=reports_open />
                        </Show>
                        <NotifyToggle />
                        <OnlineCount people open=people_open />
                        <button
                            class="me"
                            data-testid="change-name"
                            title=move || if can_rename() { "Change your name" } else { "Your name, from your login" }
                            disabled=move || !can_rename()
                            on:click=rename
                        >
                            <span class="me-label">"You are "</span>
                            <strong class="me-name">{move || name.get()}</strong>
                            <Show when=move || moderator.get()>
                                <span class="badge-mod" data-testid="moderator-badge">"Moderator"</span>
                            </Show>
                            <span class="edit" aria-hidden="true" hidden=move || !can_rename()>"✎"</span>
                        </button>
                    </Show>
                </header>
                <ConnectionBanner connection />
                {move || connection.refused.get().map(|reason| view! {
                    <div class="banner" role="alert" data-testid="connection-error">
                        <span>"The server won't let you in: " {reason}</span>
                        <button class="link" on:click=rename>"Change name"</button>
                    </div>
                })}
                <div class="body">
                    <RoomList rooms open=rooms_open creating />
                    <main class="conversation">
                        // Keyed by room: another room's conversation is built
                        // anew (its own timeline and stream), never patched over
                        // the last one's.
                        <For
                            each=move || std::iter::once(rooms.current.get())
                            key=|room| room.clone()
                            children=move |room| view! {
                                <RoomView room session rooms people connection draft typing name moderator=moderator.into() />
                            }
                        />
                    </main>
                    <Show when=move || moderator.get()>
                        <ReportsPanel open=reports_open rooms />
                    </Show>
                    <Show when=move || session.with(Option::is_some)>
                        <OnlineList
                            people
                            me=name
                            open=people_open
                            moderator=moderator.into()
                            room=rooms.current.into()
                        />
                    </Show>
                </div>
            </div>
            // The dialogs, outside the (then inert) page.
            <Show when=move || creating.get()>
                <CreateRoom rooms on_close=Callback::new(move |()| creating.set(false)) />
            </Show>
            {move || asking.get().map(|Asking { name, refused }| {
                let has_session = session.with_untracked(Option::is_some);
                view! {
                    <NamePrompt
                        initial=name
                        refused
                        on_joined=Callback::new(joined)
                        on_cancel=has_session.then_some(cancel_rename)
                    />
                }
            })}
        }
    };
    view! {
        <Show
            when=move || banned.with(Option::is_none)
            fallback=move || view! { <Banned words=banned.get().unwrap_or_default() /> }
        >
            {app()}
        </Show>
    }
}

/// What a banned person sees instead of the chat: the server's words (until
/// when, and why) and nothing to type into.
#[component]
fn Banned(words: String) -> impl IntoView {
    let mut said = words.chars();
    let words: String = said
        .next()
        .map(|first| first.to_uppercase().chain(said).collect())
        .unwrap_or_default();
    view! {
        <main class="banned" data-testid="banned-page">
            <div class="card">
                <h1>"You can't use this chat right now"</h1>
                <p data-testid="banned-reason">{words} "."</p>
                <p class="muted">
                    "If you think this is a mistake, ask the people who run this chat."
                </p>
            </div>
        </main>
    }
}

/// One room's conversation: its timeline, the stream that fills it (for as
/// long as the room is open), who is typing, and the composer. It resumes
/// a little before the last message seen in the room, so nothing is missed
/// and what was read last is in view.
#[component]
#[allow(clippy::too_many_arguments)]
fn RoomView(
    room: String,
    session: RwSignal<Option<Session>>,
    rooms: Rooms,
    people: People,
    connection: Connection,
    draft: RwSignal<String>,
    typing: TypingNotices,
    name: Signal<String>,
    moderator: Signal<bool>,
) -> impl IntoView {
    let timeline = Timeline::of_room(&room);
    let reports = expect_context::<Reports>();
    // Replying, editing, reacting: for this room's rows and composer.
    provide_context(Acting::new(&room, name, moderator));
    let seen = rooms.seen(&room);
    timeline.resume_after(seen.saturating_sub(CONTEXT));
    timeline.seen_up_to(seen);
    let stream = StoredValue::new(None::<AbortHandle>);
    // A new session (a rename, a rejoin) opens a new stream.
    Effect::new(move |_| {
        if let Some(handle) = stream.get_value() {
            handle.abort();
        }
        let started = session.with(|s| {
            s.as_ref()
                .map(|s| connection.start(s, timeline, people, rooms, reports))
        });
        stream.set_value(started);
    });
    on_cleanup(move || {
        if let Some(handle) = stream.try_get_value().flatten() {
            handle.abort();
        }
    });
    view! {
        <MessageList timeline draft name target=rooms.target.into() />
        <TypingLine people />
        <Composer timeline name draft typing slow=Signal::derive(move || rooms.slow_mode()) />
    }
}

/// Messages before the last one seen that a room opens with.
const CONTEXT: u64 = 50;
