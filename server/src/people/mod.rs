//! The people in the chat: names nobody else can take, and who is here.
//!
//! - [`name_key`]: when two names are the same name.
//! - [`names`]: the one door every RPC asks about names through: claims
//!   held in this process ([`claims`]) and, in cluster mode, the ones held
//!   anywhere in the cluster ([`claims_nats`]).
//! - [`roles`]: who moderates (`--moderators`, and the proof a listed name
//!   needs: the proxy's word or the moderator key).
//! - [`presence`]: who is here and who is typing, as join and leave events
//!   (shared with other replicas by `app::presence_nats`).

pub mod claims;
pub mod claims_nats;
pub mod name_key;
pub mod names;
pub mod presence;
pub mod roles;
