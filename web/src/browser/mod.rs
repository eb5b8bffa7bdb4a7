//! The browser's own services, wrapped for the app: timers and events as
//! futures, where keyboard focus goes, desktop notifications, the
//! clipboard, bringing a message's row into view (by its element id), and
//! dates in the reader's language. Nothing here knows about the app's state
//! or views, so every other part of the app may use it.

pub mod clipboard;
pub mod focus;
pub mod notify;
pub mod scroll;
pub mod time;
pub mod wait;
