//! The open reports, for a moderator: read with `ListReports` when the
//! panel opens, added to as the stream tells of new ones, and taken away
//! as the moderator dismisses them or deletes the message. Provided as
//! context by the app; empty (and never fetched) for anyone else.

use chat_proto::Report;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::net::moderation;

#[derive(Clone, Copy)]
pub struct Reports {
    /// Oldest first, as the server lists them.
    pub open: RwSignal<Vec<Report>>,
    /// Why the last call about them failed.
    pub error: RwSignal<Option<String>>,
}

impl Reports {
    pub fn new() -> Self {
        Self {
            open: RwSignal::new(Vec::new()),
            error: RwSignal::new(None),
        }
    }

    /// Reads the open reports anew.
    pub fn load(self) {
        spawn_local(async move {
            match moderation::reports().await {
                Ok(open) => {
                    self.open.try_set(open);
                    self.error.try_set(None);
                }
                Err(failure) => {
                    self.error.try_set(Some(failure.reason));
                }
            }
        });
    }

    /// A report the stream told of.
    pub fn add(self, report: Report) {
        self.open.update(|open| {
            if !open.iter().any(|r| r.id == report.id) {
                open.push(report);
            }
        });
    }

    /// Message `target` of `room` was deleted: its reports are closed.
    pub fn message_gone(self, room: &str, target: u64) {
        let any = self
            .open
            .with_untracked(|open| open.iter().any(|r| r.room == room && r.target == target));
        if any {
            self.open
                .update(|open| open.retain(|r| !(r.room == room && r.target == target)));
        }
    }

    /// Dismisses report `id`.
    pub fn dismiss(self, id: u64) {
        spawn_local(async move {
            match moderation::dismiss(id).await {
                Ok(()) => self.open.update(|open| open.retain(|r| r.id != id)),
                Err(failure) => {
                    self.error.try_set(Some(failure.reason));
                }
            }
        });
    }

    /// Deletes the message of report `id` (which closes it) with `reason`.
    pub fn delete_message(self, report: &Report) {
        let Report {
            room, target, id, ..
        } = report.clone();
        let reason = match report.reason.as_str() {
            "" => "reported".to_owned(),
            why => format!("reported: {why}"),
        };
        spawn_local(async move {
            match crate::net::api::delete(&room, target, &reason).await {
                Ok(()) => self.open.update(|open| {
                    open.retain(|r| r.id != id && !(r.room == room && r.target == target));
                }),
                Err(failure) => {
                    self.error.try_set(Some(failure.reason));
                }
            }
        });
    }
}
