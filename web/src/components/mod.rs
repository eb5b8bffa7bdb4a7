//! The views: each component shows a piece of `state` and turns the user's
//! clicks and keys into changes to it (or calls through `net`). The DOM ids,
//! classes, `data-testid`s and words here are what the browser tests in
//! `e2e/` select on.

pub mod composer;
pub mod connection;
pub mod message_actions;
pub mod message_list;
pub mod message_row;
pub mod name_prompt;
pub mod notify_toggle;
pub mod people;
pub mod reactions;
pub mod reply;
pub mod reports;
pub mod room_settings;
pub mod rooms;
pub mod search;
