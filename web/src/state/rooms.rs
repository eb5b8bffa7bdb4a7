//! Rooms: which one is open (its address is `#/room/NAME`, so links and
//! the back button work; `#/room/NAME/ID` also points at one message), and what each has that this user has not seen
//! (from the one stream's `RoomActivity` events and the last id seen of each
//! room, kept in local storage). The room list and the dialog that creates
//! a room are in `components::rooms`.
//!
//! The names of the rooms are kept in local storage too: a returning user's
//! page opens its stream before `ListRooms` answers, and the stream is told
//! then which other rooms to watch.

use std::collections::HashMap;

use chat_proto::rules::{self, GENERAL};
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::net::api::{self, RoomInfo};

const SEEN_KEY: &str = "chat.seen.";
const NAMES_KEY: &str = "chat.rooms";

#[derive(Clone, Copy)]
pub struct Rooms {
    pub list: RwSignal<Vec<RoomInfo>>,
    /// The open room.
    pub current: RwSignal<String>,
    /// The message the address points at (`#/room/NAME/ID`), if any.
    pub target: RwSignal<Option<u64>>,
    /// The newest id seen of each room, as stored.
    seen: RwSignal<HashMap<String, u64>>,
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// The rooms as last listed (their names only), or just general.
fn remembered() -> Vec<RoomInfo> {
    let names = storage()
        .and_then(|s| s.get_item(NAMES_KEY).ok().flatten())
        .unwrap_or_default();
    let mut names: Vec<&str> = names.lines().filter(|n| !n.is_empty()).collect();
    if names.is_empty() {
        names.push(GENERAL);
    }
    names
        .into_iter()
        .map(|name| RoomInfo {
            name: name.to_owned(),
            topic: String::new(),
            last_id: 0,
            slow_mode_seconds: 0,
        })
        .collect()
}

/// The room an address names (`#/room/NAME`, or `#/room/NAME/ID`), if it
/// is a room name.
pub fn room_in(hash: &str) -> Option<String> {
    let rest = hash.strip_prefix("#/room/")?;
    let name = rest.split_once('/').map_or(rest, |(name, _)| name);
    rules::room(name).ok()
}

/// The message an address points at (`#/room/NAME/ID`).
pub fn target_in(hash: &str) -> Option<u64> {
    let rest = hash.strip_prefix("#/room/")?;
    let (_, id) = rest.split_once('/')?;
    id.parse().ok().filter(|id| *id != 0)
}

/// The address of message `id` in `room`, as a link to share.
pub fn link_to(room: &str, id: u64) -> String {
    let here = web_sys::window()
        .and_then(|w| {
            let location = w.location();
            Some(format!(
                "{}{}",
                location.origin().ok()?,
                location.pathname().ok()?
            ))
        })
        .unwrap_or_default();
    format!("{here}#/room/{room}/{id}")
}

fn current_hash() -> String {
    web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .unwrap_or_default()
}

impl Rooms {
    pub fn new() -> Self {
        let rooms = Self {
            list: RwSignal::new(remembered()),
            current: RwSignal::new(room_in(&current_hash()).unwrap_or_else(|| GENERAL.to_owned())),
            target: RwSignal::new(target_in(&current_hash())),
            seen: RwSignal::new(HashMap::new()),
        };
        // The address follows the open room, and the open room the address
        // (a link, the back and forward buttons).
        let _ = window_event_listener(leptos::ev::hashchange, move |_| {
            let hash = current_hash();
            if let Some(room) = room_in(&hash)
                && room != rooms.current.get_untracked()
            {
                rooms.current.set(room);
            }
            rooms.target.set(target_in(&hash));
        });
        rooms
    }

    /// Opens `room` (a new history entry, so Back returns).
    pub fn open(&self, room: &str) {
        if let Some(window) = web_sys::window() {
            let _ = window.location().set_hash(&format!("/room/{room}"));
        }
        self.target.set(None);
        self.current.set(room.to_owned());
    }

    /// Fetches the room list.
    pub fn refresh(&self) {
        let list = self.list;
        spawn_local(async move {
            if let Ok(rooms) = api::list_rooms().await {
                if let Some(storage) = storage() {
                    let names: Vec<&str> = rooms.iter().map(|r| r.name.as_str()).collect();
                    let _ = storage.set_item(NAMES_KEY, &names.join("\n"));
                }
                list.set(rooms);
            }
        });
    }

    /// The other rooms, for the stream to watch.
    pub fn others(&self) -> Vec<String> {
        let current = self.current.get_untracked();
        self.list.with_untracked(|l| {
            l.iter()
                .map(|r| r.name.clone())
                .filter(|n| *n != current)
                .collect()
        })
    }

    /// A room's newest id, from its activity or a message in it.
    pub fn activity(&self, room: &str, last_id: u64) {
        let known = self
            .list
            .with_untracked(|l| l.iter().find(|r| r.name == room).map(|r| r.last_id));
        match known {
            Some(id) if id >= last_id => {}
            Some(_) => self.list.update(|l| {
                if let Some(r) = l.iter_mut().find(|r| r.name == room) {
                    r.last_id = last_id;
                }
            }),
            // A room made since the list was read.
            None => self.refresh(),
        }
    }

    /// The user has seen `room` up to `id`.
    pub fn saw(&self, room: &str, id: u64) {
        if self.seen_of(room) >= id {
            return;
        }
        self.seen.update(|s| {
            s.insert(room.to_owned(), id);
        });
        if let Some(storage) = storage() {
            let _ = storage.set_item(&format!("{SEEN_KEY}{room}"), &id.to_string());
        }
    }

    /// The newest id of `room` this user has seen (untracked).
    pub fn seen(&self, room: &str) -> u64 {
        self.seen_of(room)
    }

    fn seen_of(&self, room: &str) -> u64 {
        if let Some(id) = self.seen.with_untracked(|s| s.get(room).copied()) {
            return id;
        }
        let stored = storage()
            .and_then(|s| s.get_item(&format!("{SEEN_KEY}{room}")).ok().flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.seen.update_untracked(|s| {
            s.insert(room.to_owned(), stored);
        });
        stored
    }

    /// Messages in `room` this user has not seen (tracked).
    pub fn unread(&self, room: &RoomInfo) -> u64 {
        self.seen.track();
        room.last_id.saturating_sub(self.seen_of(&room.name))
    }

    /// Unread messages in every room but the open one (tracked).
    pub fn total_unread(&self) -> u64 {
        let current = self.current.get();
        self.list.with(|l| {
            l.iter()
                .filter(|r| r.name != current)
                .map(|r| self.unread(r))
                .sum()
        })
    }

    /// A room's settings as the stream told them (its topic, slow mode).
    pub fn settle(&self, room: RoomInfo) {
        self.list.update(|l| {
            if let Some(r) = l.iter_mut().find(|r| r.name == room.name) {
                r.topic = room.topic;
                r.slow_mode_seconds = room.slow_mode_seconds;
            }
        });
    }

    /// The open room's topic and slow mode, untracked: what a form starts
    /// with.
    pub fn topic_untracked(&self) -> String {
        untrack(|| self.topic())
    }

    pub fn slow_mode_untracked(&self) -> u32 {
        untrack(|| self.slow_mode())
    }

    /// The open room's slow mode, in seconds between posts (tracked).
    pub fn slow_mode(&self) -> u32 {
        let current = self.current.get();
        self.list.with(|l| {
            l.iter()
                .find(|r| r.name == current)
                .map_or(0, |r| r.slow_mode_seconds)
        })
    }

    /// The open room's topic (tracked).
    pub fn topic(&self) -> String {
        let current = self.current.get();
        self.list.with(|l| {
            l.iter()
                .find(|r| r.name == current)
                .map(|r| r.topic.clone())
                .unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_rooms() {
        assert_eq!(room_in("#/room/dev"), Some("dev".into()));
        assert_eq!(room_in("#/room/Dev"), Some("dev".into()));
        assert_eq!(room_in("#/room/"), Some("general".into()));
        assert_eq!(room_in("#/room/no such"), None);
        assert_eq!(room_in("#/elsewhere"), None);
        assert_eq!(room_in(""), None);
    }

    #[test]
    fn addresses_may_point_at_a_message() {
        assert_eq!(room_in("#/room/dev/42"), Some("dev".into()));
        assert_eq!(target_in("#/room/dev/42"), Some(42));
        assert_eq!(target_in("#/room/dev"), None);
        assert_eq!(target_in("#/room/dev/0"), None);
        assert_eq!(target_in("#/room/dev/x"), None);
    }
}
