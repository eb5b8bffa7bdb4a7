//! Search: the log's index finds messages newest first (`crate::search`),
//! and each is read back in its current state: by the log with the hit
//! (SQLite), or here through the same read every other reader uses. What
//! the index still names but the log no longer holds (a cluster replica's
//! index learns of retention only this way), or holds deleted, is left out.

use chat_proto::ChatMessage;
use futures_util::future::try_join_all;

use super::Hub;
use crate::log::{Entry, LogError};
use crate::search::Find;

/// One page of hits, newest first, and where the next page starts.
#[derive(Debug, Default)]
pub struct Hits {
    pub messages: Vec<ChatMessage>,
    /// The seq to search below for the next page (`None`: no more).
    pub next: Option<i64>,
}

impl Hub {
    /// Up to `find.limit` messages the index finds for `find`, each with
    /// its room's name.
    pub async fn search(&self, find: Find) -> Result<Hits, LogError> {
        let limit = find.limit;
        let mut found = self
            .inner
            .log
            .search(&Find {
                limit: limit + 1,
                ..find
            })
            .await?;
        let next = if found.len() > limit {
            found.truncate(limit);
            found.last().map(|last| last.seq)
        } else {
            None
        };
        let reads = found.into_iter().map(|found| async move {
            let message = match found.message {
                Some(message) => Some(message),
                None => {
                    let Some(room) = self.find_room(&found.room).await? else {
                        return Ok::<_, LogError>(None);
                    };
                    match self.entry(&room, found.id).await? {
                        Some(Entry::Message(message)) => Some(message),
                        _ => None,
                    }
                }
            };
            Ok(message
                .filter(|message| !message.deleted)
                .map(|message| ChatMessage {
                    room: found.room,
                    ..message
                }))
        });
        let messages = try_join_all(reads).await?.into_iter().flatten().collect();
        Ok(Hits { messages, next })
    }
}
