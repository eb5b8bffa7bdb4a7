//! What the page knows, as signals, with the logic that keeps it right: the
//! open room's timeline (`timeline`, its rows in `entry`, scrolling back in
//! `past`), who is here and who is typing (`people`), the rooms and what is
//! unread in them (`rooms`), what a message's text is made of (`rich`), the
//! open reports for a moderator (`reports`), what a search found
//! (`search`), the user's own messages on their way out, in order
//! (`outbox`), and what the user is doing to a message (`acting`:
//! replying, editing, reacting). No views: `components` shows this, and
//! `feed` fills it from the server's stream. Most of it is plain logic,
//! tested natively; where a change means a call (sending a message, the
//! room list, typing notices, a search) the call is made here through
//! `net`, next to the signals its reply updates.

pub mod acting;
pub mod entry;
pub mod outbox;
pub mod past;
pub mod people;
pub mod reports;
pub mod rich;
pub mod rooms;
pub mod search;
pub mod timeline;
