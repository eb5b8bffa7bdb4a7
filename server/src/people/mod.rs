//! The people in the chat: names nobody else can take.
//!
//! - [`names`]: when two names are the same name.
//! - [`claims`]: who holds which name, in this process.
//! - [`presence`]: who is here, as join and leave events.
//! - [`cluster`]: presence and typing shared with other replicas over NATS.

pub mod claims;
pub mod cluster;
pub mod names;
pub mod presence;
