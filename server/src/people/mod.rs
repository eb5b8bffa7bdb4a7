//! The people in the chat: names nobody else can take.
//!
//! - [`names`]: when two names are the same name.
//! - [`claims`]: who holds which name, in this process.
//! - [`presence`]: who is here, as join and leave events.

pub mod claims;
pub mod names;
pub mod presence;
