//! Reading a room's history back from its stream, checked against the
//! stream's first and last sequence as the stream's leader gives them: a
//! page with a hole that neither retention nor a deletion's erasure made is
//! never served ([`LogError::Incomplete`]: the reader asks again). Erased
//! entries are served as their tombstones, and messages in their current
//! state (the room's index, `index`).

use async_nats::jetstream;
use chat_proto::ChatMessage;
use futures_util::StreamExt;
use prost::Message as _;
use tracing::{debug, warn};

use super::changes::Record;
use super::consume::consume_from;
use super::{ORIGIN_HEADER, READ_WAIT, Shared, stream_name, subject};
use crate::log::{Entry, LogError, PAGE_BYTES, Stored};

/// A history page as it fills: at most `limit` entries, and
/// [`PAGE_BYTES`] of text after the first.
struct Page {
    entries: Vec<Stored>,
    bytes: usize,
    limit: usize,
}

impl Page {
    fn new(limit: usize) -> Self {
        Self {
            entries: Vec::new(),
            bytes: 0,
            limit,
        }
    }

    /// Adds `stored`; whether the page is full now.
    fn push(&mut self, stored: Stored) -> bool {
        self.bytes += stored.entry.text_len();
        self.entries.push(stored);
        self.entries.len() >= self.limit || self.bytes > PAGE_BYTES
    }

    /// Adds tombstones, until the page is full (then `true`).
    fn extend(&mut self, tombstones: Vec<Entry>) -> bool {
        tombstones.into_iter().any(|entry| {
            self.push(Stored {
                origin: None,
                entry,
            })
        })
    }
}

/// An entry as read from the stream, with what a change's record says
/// beyond the change.
pub(super) struct Decoded {
    pub(super) stored: Stored,
    pub(super) record: Option<Record>,
}

impl Shared {
    /// Entries of `room` with `after < id <= upto`, complete, or
    /// [`LogError::Incomplete`] (the subscription asks again, for as long
    /// as its patience lasts).
    pub(super) async fn read_range(
        &self,
        room: &str,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Stored>, LogError> {
        let index = self.index_of(room)?;
        self.wait_built(&index).await?;
        let mut page = self
            .read_range_once(room, after, upto, limit)
            .await
            .map_err(|why| {
                debug!(room, after, upto, %why, "history read incomplete");
                LogError::Incomplete(why)
            })?;
        let known = index.known();
        for stored in &mut page {
            if let Entry::Message(message) = &mut stored.entry {
                known.show(message);
            }
        }
        Ok(page)
    }

    /// [`Shared::read_range`]: the leader says which ids the stream has,
    /// and whatever node serves the consumer must deliver them all, in
    /// order, but for erased ones.
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
        let mut page = Page::new(limit);
        let mut expected = after + 1;
        if expected > upto {
            return Ok(page.entries);
        }
        // Ids before the stream's first were removed by retention, or
        // erased (JetStream moves its first id past erased ones too).
        let first = state.first_sequence;
        let before_first = self
            .holes(room, expected, (upto + 1).min(first), first)
            .await?;
        if page.extend(before_first) {
            return Ok(page.entries);
        }
        expected = expected.max(first);
        if expected > upto {
            return Ok(page.entries);
        }
        let mut messages = consume_from(&stream, expected)
            .await
            .map_err(|e| e.to_string())?;
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
            let Some(Decoded { stored, .. }) = self.decode(room, &next) else {
                continue;
            };
            let id = stored.id();
            if id < expected {
                continue;
            }
            // Erased ids in between are served as their tombstones.
            let until = id.min(upto + 1);
            if page.extend(self.holes(room, expected, until, first).await?) {
                return Ok(page.entries);
            }
            expected = expected.max(until);
            if id > upto {
                return Ok(page.entries);
            }
            expected += 1;
            if page.push(stored) || id == upto {
                return Ok(page.entries);
            }
        }
    }

    /// What stands for the ids `from..to` that the stream does not have:
    /// the tombstones of erased ones, in order. Ids before `first` (the
    /// stream's first) that are not erased were removed by retention; an id
    /// after it that is not erased is a hole: `Err`.
    pub(super) async fn holes(
        &self,
        room: &str,
        from: u64,
        to: u64,
        first: u64,
    ) -> Result<Vec<Entry>, String> {
        let mut entries = self
            .index(room)
            .map(|index| index.known().tombstones_in(from, to.min(first)))
            .unwrap_or_default();
        for id in from.max(first)..to {
            match self.erased_entry(room, id).await {
                Ok(Some(entry)) => entries.push(entry),
                _ => return Err(format!("the node serving the read skipped id {id}")),
            }
        }
        Ok(entries)
    }

    /// The stored message `id` of `room`, read from the stream's leader.
    pub(super) async fn stored(&self, room: &str, id: u64) -> Option<ChatMessage> {
        let stream = self.js.get_stream(stream_name(room)).await.ok()?;
        let raw = stream.get_raw_message(id).await.ok()?;
        match self.decode_raw(room, &raw)? {
            (Entry::Message(message), _) => Some(message),
            (Entry::Change(_), _) => None,
        }
    }

    /// An entry read from a consumer.
    pub(super) fn decode(&self, room: &str, message: &jetstream::Message) -> Option<Decoded> {
        let info = message.info().ok()?;
        let (entry, record) = decode_payload(
            room,
            info.stream_sequence,
            &message.subject,
            &message.payload,
        );
        let origin = message
            .headers
            .as_ref()
            .and_then(|h| h.get(ORIGIN_HEADER))
            .and_then(|v| v.as_str().split_once('.'))
            .and_then(|(replica, origin)| {
                (replica.parse::<u64>().ok()? == self.replica).then(|| origin.parse().ok())?
            });
        Some(Decoded {
            stored: Stored { origin, entry },
            record,
        })
    }

    /// An entry read by its id.
    pub(super) fn decode_raw(
        &self,
        room: &str,
        raw: &jetstream::message::StreamMessage,
    ) -> Option<(Entry, Option<Record>)> {
        Some(decode_payload(
            room,
            raw.sequence,
            &raw.subject,
            &raw.payload,
        ))
    }
}

/// Entry `id`, published on `subject` with `payload`: a message on the
/// room's subject, else a change's record.
pub(super) fn decode_payload(
    room: &str,
    id: u64,
    subject_: &str,
    payload: &[u8],
) -> (Entry, Option<Record>) {
    if subject_ == subject(room) {
        let mut chat = ChatMessage::decode(payload).unwrap_or_else(|error| {
            warn!(id, %error, "a message in the stream is not a ChatMessage; skipped");
            ChatMessage::default()
        });
        chat.id = id;
        return (Entry::Message(chat), None);
    }
    match Record::decode(payload) {
        Ok(mut record) => {
            let mut change = record.change.take().unwrap_or_default();
            change.id = id;
            (Entry::Change(change), Some(record))
        }
        Err(error) => {
            warn!(id, %error, "a change in the stream is not a change record; shown as nothing");
            let change = chat_proto::Change {
                id,
                ..Default::default()
            };
            (Entry::Change(change), None)
        }
    }
}
