//! The room header: the open room's name, its topic and whether it is in
//! slow mode; for a moderator, a button that opens a small form under it to
//! change the topic and the slow mode (everyone's page hears of the change
//! through its stream: `ChatEvent.room`).

use leptos::html;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::browser::focus;
use crate::net::moderation;
use crate::state::rooms::Rooms;

/// The slow modes the form offers: seconds, and how they read.
const SLOW_MODES: [(u32, &str); 7] = [
    (0, "Off"),
    (10, "10 seconds"),
    (30, "30 seconds"),
    (60, "1 minute"),
    (300, "5 minutes"),
    (900, "15 minutes"),
    (3600, "1 hour"),
];

/// "30 s", "5 min", "1 h": a slow mode, short.
fn short(seconds: u32) -> String {
    match seconds {
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[component]
pub fn RoomHeading(rooms: Rooms, moderator: Signal<bool>) -> impl IntoView {
    let editing = RwSignal::new(false);
    let slow = move || rooms.slow_mode();
    view! {
        <div class="room-title">
            <h2 data-testid="room-title">"#" {move || rooms.current.get()}</h2>
            <span class="topic" data-testid="room-topic">{move || rooms.topic()}</span>
            <Show when=move || { slow() > 0 }>
                <span
                    class="chip-slow"
                    data-testid="room-slow-mode"
                    title=move || format!("Slow mode: one message every {} per person", short(slow()))
                >
                    "🐢 " {move || short(slow())}
                </span>
            </Show>
            <Show when=move || moderator.get()>
                <button
                    class="link room-settings-toggle"
                    data-testid="room-settings"
                    aria-expanded=move || if editing.get() { "true" } else { "false" }
                    aria-controls="room-settings"
                    on:click=move |_| editing.update(|e| *e = !*e)
                >
                    "Room settings"
                </button>
            </Show>
            <Show when=move || editing.get() && moderator.get()>
                <RoomSettings rooms on_close=Callback::new(move |()| editing.set(false)) />
            </Show>
        </div>
    }
}

/// Topic and slow mode of the open room, for a moderator.
#[component]
fn RoomSettings(rooms: Rooms, on_close: Callback<()>) -> impl IntoView {
    let room = rooms.current.get_untracked();
    let topic = RwSignal::new(rooms.topic_untracked());
    let slow = RwSignal::new(rooms.slow_mode_untracked());
    let saving = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let first = NodeRef::<html::Input>::new();
    Effect::new(move |_| {
        if let Some(input) = first.get() {
            let _ = input.focus();
        }
    });
    let close = move || {
        on_close.run(());
        focus::restore(
            document()
                .query_selector("[aria-controls=room-settings]")
                .ok()
                .flatten(),
        );
    };
    let save = move || {
        let room = room.clone();
        let (new_topic, new_slow) = (topic.get_untracked(), slow.get_untracked());
        let (old_topic, old_slow) = (rooms.topic_untracked(), rooms.slow_mode_untracked());
        saving.set(true);
        spawn_local(async move {
            let mut result = Ok(());
            if new_topic.trim() != old_topic {
                result = moderation::set_topic(&room, new_topic.trim()).await;
            }
            if result.is_ok() && new_slow != old_slow {
                result = moderation::set_slow_mode(&room, new_slow).await;
            }
            saving.try_set(false);
            match result {
                Ok(()) => close(),
                Err(failure) => {
                    error.try_set(Some(failure.reason));
                }
            }
        });
    };
    let save = StoredValue::new(save);
    view! {
        <form
            class="room-settings"
            id="room-settings"
            data-testid="room-settings-form"
            aria-label="Room settings"
            on:submit=move |ev| {
                ev.prevent_default();
                save.with_value(|save| save());
            }
            on:keydown=move |ev| {
                if ev.key() == "Escape" {
                    ev.stop_propagation();
                    close();
                }
            }
        >
            <label>
                "Topic"
                <input
                    node_ref=first
                    data-testid="room-topic-edit"
                    maxlength="200"
                    placeholder="What this room is for"
                    prop:value=move || topic.get()
                    on:input=move |ev| topic.set(event_target_value(&ev))
                />
            </label>
            <label>
                "Slow mode"
                <select
                    data-testid="room-slow-edit"
                    on:change=move |ev| slow.set(event_target_value(&ev).parse().unwrap_or(0))
                >
                    {SLOW_MODES
                        .iter()
                        .map(|(seconds, words)| view! {
                            <option value=seconds.to_string() selected=move || slow.get() == *seconds>
                                {*words}
                            </option>
                        })
                        .collect_view()}
                </select>
            </label>
            {move || error.get().map(|why| view! { <p class="action-error" role="alert">{why}</p> })}
            <div class="room-settings-actions">
                <button type="button" class="secondary" on:click=move |_| close()>"Cancel"</button>
                <button type="submit" class="primary" data-testid="room-settings-save" disabled=move || saving.get()>
                    "Save"
                </button>
            </div>
        </form>
    }
}
