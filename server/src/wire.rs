//! Encoding a relayed message once for all its subscribers.
//!
//! A chat message goes to every connected client, so whatever is done per
//! subscriber is multiplied by their number. Each message is encoded once,
//! when it is committed ([`Relayed`]); every stream then sends those same
//! bytes, with no per-subscriber copy of the message, allocation, encoding
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
    /// A relayed message as a `ChatEvent`: the stream holds the one shared
    /// copy until tonic has written it, with no reference count of its own.
    Event(Arc<Relayed>),
    /// A relayed message as a bare `ChatMessage`.
    Message(Arc<Relayed>),
}

impl Encoded {
    /// Encodes `message` (for the rare, per-stream events such as `Ready`).
    pub fn of(message: &impl Message) -> Self {
        Self(Repr::Owned(Bytes::from(message.encode_to_vec())))
    }

    /// `relayed` as `ChatEvent { message }` (Subscribe).
    pub fn event(relayed: Arc<Relayed>) -> Self {
        Self(Repr::Event(relayed))
    }

    /// `relayed` as a bare `ChatMessage` (ChatStream).
    pub fn message(relayed: Arc<Relayed>) -> Self {
        Self(Repr::Message(relayed))
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned(bytes) => bytes,
            Repr::Event(relayed) => &relayed.event,
            Repr::Message(relayed) => &relayed.event[relayed.message_start..],
        }
    }
}

impl PartialEq for Encoded {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Encoded {}

/// A stored message on its way to every subscriber, encoded once when it is
/// published, the two ways clients receive it: as a `ChatEvent` (Subscribe)
/// and as a bare `ChatMessage` (ChatStream). Both share one buffer: a
/// `ChatEvent` holding a message is the message's bytes behind a field
/// header. Only the encoding is kept, not the decoded message: the ring
/// holds thousands of these.
#[derive(Debug)]
pub struct Relayed {
    id: u64,
    /// The connection that sent it (see [`crate::hub::Origin`]), or `None`
    /// for a unary `Send`.
    origin: Option<u64>,
    event: Vec<u8>,
    message_start: usize,
}

impl Relayed {
    pub fn new(message: &ChatMessage, origin: Option<u64>) -> Self {
        let mut event = Vec::with_capacity(message.encoded_len() + 6);
        prost::encoding::message::encode(EVENT_MESSAGE_FIELD, message, &mut event);
        let message_start = event.len() - message.encoded_len();
        Self {
            id: message.id,
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

    /// The message decoded again (tests and diagnostics).
    pub fn decode(&self) -> Result<ChatMessage, prost::DecodeError> {
        ChatMessage::decode(&self.event[self.message_start..])
    }
}

/// Encodes a `ChatEvent` that is not a chat message.
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
        }
    }

    #[test]
    fn the_event_encoding_is_what_prost_writes_for_a_chat_event() {
        let message = sample();
        let relayed = Arc::new(Relayed::new(&message, Some(3)));
        let expected = ChatEvent {
            event: Some(Event::Message(message.clone())),
        }
        .encode_to_vec();
        assert_eq!(
            Encoded::event(Arc::clone(&relayed)).as_bytes(),
            expected.as_slice()
        );
        assert_eq!(
            Encoded::message(Arc::clone(&relayed)).as_bytes(),
            message.encode_to_vec().as_slice()
        );
        assert_eq!(relayed.decode().expect("decodes"), message);
        assert_eq!((relayed.id(), relayed.origin()), (7, Some(3)));
    }

    #[test]
    fn every_stream_sends_the_same_bytes() {
        let relayed = Arc::new(Relayed::new(&sample(), None));
        let (a, b) = (
            Encoded::event(Arc::clone(&relayed)),
            Encoded::message(Arc::clone(&relayed)),
        );
        assert_eq!(a.as_bytes().as_ptr(), relayed.event.as_ptr());
        assert_eq!(
            b.as_bytes().as_ptr(),
            relayed.event[relayed.message_start..].as_ptr()
        );
    }
}
