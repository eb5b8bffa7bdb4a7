//! Encoding a relayed entry once for all its subscribers.
//!
//! A room's entry (a chat message, or any other `ChatEvent` kind the log
//! holds) goes to every connected client, so whatever is done per
//! subscriber is multiplied by their number. Each entry is encoded once,
//! when it is committed ([`Relayed`]); every stream then sends those same
//! bytes, with no per-subscriber copy of the entry, allocation, encoding
//! or extra reference count. [`WireCodec`] is the codec the generated `ChatService` server
//! uses for its streaming methods: it writes [`Encoded`] bytes as they are
//! and decodes requests with prost.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::{BufMut, Bytes};
use chat_proto::{ChatEvent, ChatMessage, Event};
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// `ChatEvent.message`'s field number in `chat.proto`.
const EVENT_MESSAGE_FIELD: u32 = 1;

/// A protobuf message already encoded, as a stream sends it.
#[derive(Debug, Clone)]
pub struct Encoded(Repr);

#[derive(Debug, Clone)]
enum Repr {
    Owned(Bytes),
    /// A relayed entry as a `ChatEvent`: the stream holds the one shared
    /// copy until tonic has written it, with no reference count of its own.
    Event(Arc<Relayed>),
    /// A relayed chat message as a bare `ChatMessage`.
    Message(Arc<Relayed>),
}

impl Encoded {
    /// Encodes `message` (for the rare, per-stream events such as `Ready`).
    pub fn of(message: &impl Message) -> Self {
        Self(Repr::Owned(Bytes::from(message.encode_to_vec())))
    }

    /// `relayed` as a `ChatEvent` (Subscribe).
    pub fn event(relayed: Arc<Relayed>) -> Self {
        Self(Repr::Event(relayed))
    }

    /// `relayed` as a bare `ChatMessage` (ChatStream), if it is a chat
    /// message that is not deleted: the paper's clients hear of nothing
    /// else (no changes, no tombstones).
    pub fn message(relayed: Arc<Relayed>) -> Option<Self> {
        relayed
            .message_start
            .is_some()
            .then(|| Self(Repr::Message(relayed)))
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned(bytes) => bytes,
            Repr::Event(relayed) => &relayed.event,
            Repr::Message(relayed) => relayed.message_bytes().unwrap_or_default(),
        }
    }
}

impl PartialEq for Encoded {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Encoded {}

/// A stored entry on its way to every subscriber, encoded once when it is
/// committed as the `ChatEvent` Subscribe sends. A chat message is also
/// what ChatStream sends bare, and both share one buffer: a `ChatEvent`
/// holding a message is the message's bytes behind a field header. Only the
/// encoding is kept, not the decoded entry: the ring holds thousands of
/// these.
#[derive(Debug)]
pub struct Relayed {
    id: u64,
    /// The connection that sent it (see [`crate::hub::Origin`]), or `None`
    /// for a unary `Send`.
    origin: Option<u64>,
    event: Vec<u8>,
    /// Where the bare `ChatMessage` starts in `event`, if it is one.
    message_start: Option<usize>,
}

impl Relayed {
    /// Entry `id` of its room, going out as `event`.
    pub fn new(id: u64, event: Event, origin: Option<u64>) -> Self {
        let (event, message_start) = match event {
            Event::Message(message) => {
                let len = message.encoded_len();
                let mut event = Vec::with_capacity(len + 6);
                prost::encoding::message::encode(EVENT_MESSAGE_FIELD, &message, &mut event);
                let start = event.len() - len;
                // A deleted message is nothing the paper's clients can show.
                (event, (!message.deleted).then_some(start))
            }
            other => (ChatEvent { event: Some(other) }.encode_to_vec(), None),
        };
        Self {
            id,
            origin,
            event,
            message_start,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn origin(&self) -> Option<u64> {
        self.origin
    }

    /// Bytes of memory it holds, roughly: what the ring's budget counts.
    pub fn size(&self) -> usize {
        self.event.capacity() + std::mem::size_of::<Self>()
    }

    /// The bare `ChatMessage`'s bytes, if it is a chat message.
    fn message_bytes(&self) -> Option<&[u8]> {
        self.message_start.map(|start| &self.event[start..])
    }

    /// The chat message decoded again, if it is one (tests and diagnostics).
    pub fn decode(&self) -> Option<ChatMessage> {
        ChatMessage::decode(self.message_bytes()?).ok()
    }
}

/// Encodes a `ChatEvent` that is not an entry of the log (`Ready`, a
/// heartbeat, presence): sent to one stream, so encoded per stream.
pub fn event(event: Event) -> Encoded {
    Encoded::of(&ChatEvent { event: Some(event) })
}

/// Writes [`Encoded`] responses as they are; decodes `D` requests with prost.
#[derive(Debug)]
pub struct WireCodec<D>(PhantomData<D>);

impl<D> Default for WireCodec<D> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<D: Message + Default + Send + 'static> Codec for WireCodec<D> {
    type Encode = Encoded;
    type Decode = D;
    type Encoder = EncodedEncoder;
    type Decoder = ProstDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

#[derive(Debug)]
pub struct EncodedEncoder;

/// tonic's buffer for a stream's outgoing messages: allocated when the
/// stream opens, so small for the many that mostly wait (tonic's default is
/// 8 KiB); grown as messages come.
const STREAM_BUFFER: usize = 1024;
/// Ready messages are packed into one write until it holds this much
/// (tonic's default is 32 KiB): what a stream to a slow client holds in
/// flight, times the thousands of streams a burst or a replay may reach.
const STREAM_YIELD: usize = 16 * 1024;

impl Encoder for EncodedEncoder {
    type Item = Encoded;
    type Error = Status;

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(STREAM_BUFFER, STREAM_YIELD)
    }

    fn encode(&mut self, item: Encoded, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(item.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChatMessage {
        ChatMessage {
            username: "ada".into(),
            message: "x".repeat(300),
            timestamp: 1_700_000_000_000,
            nonce: "n-1".into(),
            id: 7,
            room: "general".into(),
            ..ChatMessage::default()
        }
    }

    #[test]
    fn the_event_encoding_is_what_prost_writes_for_a_chat_event() {
        let message = sample();
        let relayed = Arc::new(Relayed::new(7, Event::Message(message.clone()), Some(3)));
        let expected = ChatEvent {
            event: Some(Event::Message(message.clone())),
        }
        .encode_to_vec();
        assert_eq!(
            Encoded::event(Arc::clone(&relayed)).as_bytes(),
            expected.as_slice()
        );
        assert_eq!(
            Encoded::message(Arc::clone(&relayed))
                .expect("a message")
                .as_bytes(),
            message.encode_to_vec().as_slice()
        );
        assert_eq!(relayed.decode().expect("decodes"), message);
        assert_eq!((relayed.id(), relayed.origin()), (7, Some(3)));
    }

    #[test]
    fn any_other_event_kind_goes_to_subscribers_only() {
        let gap = Event::Gap(chat_proto::Gap {
            after_id: 1,
            next_id: 3,
        });
        let relayed = Arc::new(Relayed::new(2, gap.clone(), None));
        assert_eq!(
            Encoded::event(Arc::clone(&relayed)).as_bytes(),
            ChatEvent { event: Some(gap) }.encode_to_vec().as_slice()
        );
        assert!(Encoded::message(Arc::clone(&relayed)).is_none());
        assert!(relayed.decode().is_none());
    }

    #[test]
    fn every_stream_sends_the_same_bytes() {
        let relayed = Arc::new(Relayed::new(7, Event::Message(sample()), None));
        let (a, b) = (
            Encoded::event(Arc::clone(&relayed)),
            Encoded::message(Arc::clone(&relayed)).expect("a message"),
        );
        assert_eq!(a.as_bytes().as_ptr(), relayed.event.as_ptr());
        assert_eq!(
            b.as_bytes().as_ptr(),
            relayed.message_bytes().expect("a message").as_ptr()
        );
    }
}
