//! Encoding a relayed message once for all its subscribers.
//!
//! A chat message goes to every connected client, so whatever is done per
//! subscriber is multiplied by their number. The hub encodes each message
//! when it is published; every stream then sends the same reference-counted
//! bytes, with no per-subscriber copy of the message, allocation or
//! encoding. [`WireCodec`] is the codec the generated `ChatService` server
//! uses for its streaming methods: it writes [`Encoded`] bytes as they are
//! and decodes requests with prost.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use chat_proto::{ChatEvent, ChatMessage, Event};
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// `ChatEvent.message`'s field number in `chat.proto`.
const EVENT_MESSAGE_FIELD: u32 = 1;

/// A protobuf message already encoded; cloning it shares the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded(Bytes);

impl Encoded {
    /// Encodes `message` (for the rare, per-stream events such as `Ready`).
    pub fn of(message: &impl Message) -> Self {
        Self(Bytes::from(message.encode_to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A relayed chat message encoded the two ways clients receive it: as a
/// `ChatEvent` (Subscribe) and as a bare `ChatMessage` (ChatStream). Both
/// share one buffer: a `ChatEvent` holding a message is the message's bytes
/// behind a field header.
#[derive(Debug, Clone)]
pub struct WireMessage {
    event: Bytes,
    message_start: usize,
}

impl WireMessage {
    pub fn new(message: &ChatMessage) -> Self {
        let mut event = Vec::with_capacity(message.encoded_len() + 6);
        prost::encoding::message::encode(EVENT_MESSAGE_FIELD, message, &mut event);
        let message_start = event.len() - message.encoded_len();
        Self {
            event: Bytes::from(event),
            message_start,
        }
    }

    /// The message as `ChatEvent { message }`.
    pub fn event(&self) -> Encoded {
        Encoded(self.event.clone())
    }

    /// The bare `ChatMessage`.
    pub fn message(&self) -> Encoded {
        Encoded(self.event.slice(self.message_start..))
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

impl Encoder for EncodedEncoder {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item.0);
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
        }
    }

    #[test]
    fn the_event_encoding_is_what_prost_writes_for_a_chat_event() {
        let message = sample();
        let wire = WireMessage::new(&message);
        let expected = ChatEvent {
            event: Some(Event::Message(message.clone())),
        }
        .encode_to_vec();
        assert_eq!(wire.event().as_bytes(), expected.as_slice());
        assert_eq!(
            wire.message().as_bytes(),
            message.encode_to_vec().as_slice()
        );
    }

    #[test]
    fn clones_share_the_bytes() {
        let wire = WireMessage::new(&sample());
        let (a, b) = (wire.event(), wire.event());
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
        assert_eq!(
            wire.message().as_bytes().as_ptr(),
            wire.event().as_bytes()[wire.message_start..].as_ptr()
        );
    }
}
