//! Searching messages' text: how words are compared ([`fold`]), the query
//! language ([`query`]), and the FTS5 index both logs keep ([`index`]):
//! the SQLite log in its own database, a cluster replica in a file of its
//! own fed from the rooms' streams (`log::nats::search`).

pub mod fold;
pub mod index;
pub mod query;

pub use index::{Find, Found};
pub use query::{Query, QueryError};
