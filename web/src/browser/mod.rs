//! The browser's own services, wrapped for the app: timers and events as
//! futures, where keyboard focus goes, desktop notifications, the
//! clipboard, and dates in the reader's language. Nothing here knows about chat messages or views,
//! so every other part of the app may use it.

pub mod clipboard;
pub mod focus;
pub mod notify;
pub mod time;
pub mod wait;
