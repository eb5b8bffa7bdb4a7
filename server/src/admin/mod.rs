//! The operator's door on the server's own machine: `chat-server admin
//! COMMAND` talks to the running server over a Unix socket, with no browser
//! and no key, and can do what a moderator can, and read the audit log.
//!
//! - [`socket`]: where the socket is (`--admin-socket`: next to the
//!   database, or in systemd's state directory), and the server's side:
//!   the `Moderation` service and `ChatService` served on it as the
//!   operator (whoever can open the socket, mode 0600, is the operator).
//! - [`cli`]: the commands, their arguments, and what they print.

pub mod cli;
pub mod socket;
