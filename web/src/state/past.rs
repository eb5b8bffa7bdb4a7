//! Reading a room's past with `History`: reaching the top of the list reads
//! the page before its first row, until the room's start; a link to a
//! message (`#/room/NAME/ID`) makes the list the page around it; and when
//! the list does not reach the live end (older pages pushed the newest rows
//! out of memory, or a link opened it in the past), "Jump to latest" reads
//! the newest page again. The list keeps the reader's place
//! (`components::message_list`).

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::net::api;
use crate::state::timeline::Timeline;

/// Messages read per page while scrolling back.
const PAGE: u32 = 100;
/// Messages the list starts again with when it jumps back to the live end.
const LATEST: u32 = 50;
/// Messages around the one a link points at (half on each side).
const AROUND: u32 = 100;

/// What is known of the messages before the list's first row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Older {
    /// Not asked yet.
    Unknown,
    Loading,
    /// There are more.
    More,
    /// The first row is the room's first stored message.
    Start,
}

impl Older {
    /// What a `History` page's `more_before` says.
    fn before(more_before: bool) -> Self {
        if more_before { Self::More } else { Self::Start }
    }
}

#[derive(Clone, Copy)]
pub struct Past {
    pub older: RwSignal<Older>,
    /// Why the last read failed (the reader may try again).
    pub error: RwSignal<Option<String>>,
}

impl Past {
    pub fn new() -> Self {
        Self {
            older: RwSignal::new(Older::Unknown),
            error: RwSignal::new(None),
        }
    }

    /// Whether scrolling up should read another page (untracked).
    pub fn wants_older(&self, timeline: &Timeline) -> bool {
        matches!(self.older.get_untracked(), Older::Unknown | Older::More)
            && timeline.first_id() != 0
    }

    /// Reads the page before the first row and puts it above; `placed`
    /// runs once the rows are in, to keep the reader's place.
    pub fn load_older(self, timeline: Timeline, me: String, placed: impl FnOnce() + 'static) {
        if !self.wants_older(&timeline) {
            return;
        }
        let before = timeline.first_id();
        self.older.set(Older::Loading);
        self.error.set(None);
        spawn_local(async move {
            let room = timeline.room();
            match api::history(&room, before, 0, PAGE).await {
                Ok(page) => {
                    timeline.prepend(page.messages, &me);
                    self.older.try_set(Older::before(page.more_before));
                    placed();
                }
                Err(status) => {
                    self.older.try_set(Older::More);
                    self.error.try_set(Some(api::readable(&status)));
                }
            }
        });
    }

    /// Makes the list the page around message `id`; `placed` runs once it
    /// is in (to scroll to it). A message that is not stored says so.
    pub fn open_around(
        self,
        timeline: Timeline,
        id: u64,
        me: String,
        placed: impl FnOnce() + 'static,
    ) {
        self.error.set(None);
        spawn_local(async move {
            let room = timeline.room();
            match api::history(&room, 0, id, AROUND).await {
                Ok(page) => {
                    timeline.restart_from(page.messages, &me, !page.more_after);
                    self.older.try_set(Older::before(page.more_before));
                    placed();
                }
                Err(status) => {
                    let why = if status.code() == tonic::Code::NotFound {
                        "The message that link points at is no longer available.".to_owned()
                    } else {
                        api::readable(&status)
                    };
                    self.error.try_set(Some(why));
                }
            }
        });
    }

    /// Reads the newest page and makes it the list (a detached list goes
    /// back to the live end); `placed` runs once it is in.
    pub fn back_to_latest(self, timeline: Timeline, me: String, placed: impl FnOnce() + 'static) {
        self.error.set(None);
        spawn_local(async move {
            let room = timeline.room();
            // What arrives while the page is read is read again with it.
            for _ in 0..3 {
                match api::history(&room, 0, 0, LATEST).await {
                    Ok(page) => {
                        timeline.restart_from(page.messages, &me, true);
                        self.older.try_set(Older::before(page.more_before));
                        if timeline.last_message_id() >= timeline.newest_message() {
                            break;
                        }
                    }
                    Err(status) => {
                        self.error.try_set(Some(api::readable(&status)));
                        return;
                    }
                }
            }
            placed();
        });
    }
}
