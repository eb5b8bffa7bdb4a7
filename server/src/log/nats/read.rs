//! Reading a room's history back from its stream, checked against the
//! stream's first and last sequence as the stream's leader gives them: a
//! page with a hole retention did not make is never served
//! ([`LogError::Incomplete`]: the reader asks again).

use async_nats::jetstream;
use chat_proto::ChatMessage;
use futures_util::StreamExt;
use prost::Message as _;
use tracing::{debug, warn};

use super::follow::consume_from;
use super::{ORIGIN_HEADER, READ_WAIT, Shared, stream_name};
use crate::log::{Entry, LogError, PAGE_BYTES, Stored};

impl Shared {
    /// Messages of `room` with `after < id <= upto`, complete, or
    /// [`LogError::Incomplete`] (the subscription asks again, for as long
    /// as its patience lasts).
    pub(super) async fn read_range(
        &self,
        room: &str,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Stored>, LogError> {
        self.read_range_once(room, after, upto, limit)
            .await
            .map_err(|why| {
                debug!(room, after, upto, %why, "history read incomplete");
                LogError::Incomplete(why)
            })
    }

    /// [`Shared::read_range`]: the leader says which ids the stream has,
    /// and whatever node serves the consumer must deliver them all, in
    /// order.
    async fn read_range_once(
        &self,
        room: &str,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Stored>, String> {
        let stream = self
            .follow_js
            .get_stream(stream_name(room))
            .await
            .map_err(|e| e.to_string())?;
        let state = &stream.cached_info().state;
        let upto = upto.min(state.last_sequence);
        // Ids before the stream's first were removed by retention.
        let mut expected = (after + 1).max(state.first_sequence);
        if expected > upto {
            return Ok(Vec::new());
        }
        let mut messages = consume_from(&stream, expected)
            .await
            .map_err(|e| e.to_string())?;
        let mut page = Vec::new();
        let mut bytes = 0;
        loop {
            let next = tokio::time::timeout(READ_WAIT, messages.next())
                .await
                .map_err(|_| {
                    format!(
                        "the node serving the read has nothing after {}",
                        expected - 1
                    )
                })?
                .ok_or("the read ended")?
                .map_err(|e| e.to_string())?;
            let Some(stored) = self.decode(&next) else {
                continue;
            };
            let id = stored.id();
            if id < expected {
                continue;
            }
            if id > expected {
                return Err(format!(
                    "the node serving the read skipped ids {expected}..{}",
                    id - 1
                ));
            }
            expected += 1;
            bytes += stored.entry.text_len();
            page.push(stored);
            if id == upto || page.len() >= limit || bytes > PAGE_BYTES {
                return Ok(page);
            }
        }
    }

    /// The stored message `id` of `room`, read from the stream's leader.
    pub(super) async fn stored(&self, room: &str, id: u64) -> Option<ChatMessage> {
        let stream = self.js.get_stream(stream_name(room)).await.ok()?;
        let raw = stream.get_raw_message(id).await.ok()?;
        let message = ChatMessage::decode(raw.payload.as_ref()).ok()?;
        Some(ChatMessage { id, ..message })
    }

    pub(super) fn decode(&self, message: &jetstream::Message) -> Option<Stored> {
        let info = message.info().ok()?;
        let id = info.stream_sequence;
        let mut chat = match ChatMessage::decode(message.payload.as_ref()) {
            Ok(chat) => chat,
            Err(error) => {
                warn!(id, %error, "a message in the stream is not a ChatMessage; skipped");
                ChatMessage::default()
            }
        };
        chat.id = id;
        let origin = message
            .headers
            .as_ref()
            .and_then(|h| h.get(ORIGIN_HEADER))
            .and_then(|v| v.as_str().split_once('.'))
            .and_then(|(replica, origin)| {
                (replica.parse::<u64>().ok()? == self.replica).then(|| origin.parse().ok())?
            });
        Some(Stored {
            origin,
            entry: Entry::Message(chat),
        })
    }
}
