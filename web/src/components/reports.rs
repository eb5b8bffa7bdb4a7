//! A moderator's reports: the header's button (with how many are open) and
//! the panel it opens, listing each open report with its message, who
//! reported it and why, and what to do: delete the message (which closes
//! the report) or dismiss the report. What they show is `state::reports`.

use chat_proto::Report;
use leptos::prelude::*;

use crate::browser::{focus, time};
use crate::state::reports::Reports;
use crate::state::rooms::Rooms;

/// The button that opens the panel (in the header).
const TOGGLE: &str = "[aria-controls=reports-panel]";

/// "Reports 2" in the header; opening the panel reads the list anew.
#[component]
pub fn ReportsToggle(open: RwSignal<bool>) -> impl IntoView {
    let reports = expect_context::<Reports>();
    let count = move || reports.open.with(Vec::len);
    let pending = move || count() > 0;
    view! {
        <button
            class="reports-toggle"
            class:pending=pending
            data-testid="reports-toggle"
            aria-controls="reports-panel"
            aria-expanded=move || if open.get() { "true" } else { "false" }
            on:click=move |_| {
                if !open.get_untracked() {
                    reports.load();
                }
                open.update(|o| *o = !*o);
            }
        >
            <span aria-hidden="true">"⚑"</span>
            // Its name is its text: "Reports", and "2 open" when some are.
            <span class="reports-label">" Reports"</span>
            <Show when=pending>
                <span class="reports-count" data-testid="reports-count">{count}</span>
                <span class="sr-only">" open"</span>
            </Show>
        </button>
    }
}

/// The open reports, newest last, each with its message for context.
#[component]
pub fn ReportsPanel(open: RwSignal<bool>, rooms: Rooms) -> impl IntoView {
    let reports = expect_context::<Reports>();
    focus::into_drawer(open, "#reports-panel .close-reports");
    let close = move || focus::close_drawer(open, TOGGLE);
    view! {
        <Show when=move || open.get()>
            <aside
                class="reports"
                id="reports-panel"
                data-testid="reports-panel"
                aria-labelledby="reports-title"
                on:keydown=move |ev| {
                    if ev.key() == "Escape" {
                        close();
                    }
                }
            >
                <div class="reports-head">
                    <h2 id="reports-title">"Reports"</h2>
                    <button class="close-reports link" aria-label="Close reports" on:click=move |_| close()>
                        "✕"
                    </button>
                </div>
                {move || reports.error.get().map(|why| view! {
                    <p class="action-error" role="alert">{why}</p>
                })}
                <p class="reports-empty" role="status">
                    {move || match reports.open.with(Vec::len) {
                        0 => "Nothing reported. All quiet.".to_owned(),
                        1 => "1 open report".to_owned(),
                        n => format!("{n} open reports"),
                    }}
                </p>
                <ul>
                    <For
                        each=move || reports.open.get()
                        key=|report| report.id
                        children=move |report| view! { <ReportItem report rooms /> }
                    />
                </ul>
            </aside>
        </Show>
    }
}

/// One report: who reported whose message where and why, the message, and
/// Delete / Dismiss / Open the room.
#[component]
fn ReportItem(report: Report, rooms: Rooms) -> impl IntoView {
    let reports = expect_context::<Reports>();
    let (author, text, deleted) = report
        .message
        .as_ref()
        .map_or((String::new(), String::new(), true), |m| {
            (m.username.clone(), m.message.clone(), m.deleted)
        });
    let when = time::stamp(report.timestamp);
    let room = report.room.clone();
    let id = report.id;
    let to_delete = report.clone();
    let heading = format!("report-{id}");
    let labelled_by = heading.clone();
    view! {
        <li class="report" data-testid="report" aria-labelledby=labelled_by>
            <p class="report-head" id=heading>
                <strong>{report.username.clone()}</strong>
                " reported "
                {if author.is_empty() { "a message".to_owned() } else { format!("{author}'s message") }}
                " in #" {report.room.clone()}
                " · "
                <time class="report-time" datetime=when.iso title=when.full>{when.short}</time>
            </p>
            <blockquote class="report-message" data-testid="report-message">
                {if deleted { "(this message is gone)".to_owned() } else { text }}
            </blockquote>
            {(!report.reason.is_empty()).then(|| view! {
                <p class="report-reason">"Why: " {report.reason.clone()}</p>
            })}
            <div class="report-actions">
                <button
                    class="primary danger"
                    data-testid="report-delete"
                    disabled=deleted
                    on:click=move |_| reports.delete_message(&to_delete)
                >
                    "Delete message"
                </button>
                <button class="secondary" data-testid="report-dismiss" on:click=move |_| reports.dismiss(id)>
                    "Dismiss"
                </button>
                <button class="link" data-testid="report-open" on:click=move |_| rooms.open(&room)>
                    "Open #" {report.room.clone()}
                </button>
            </div>
        </li>
    }
}
