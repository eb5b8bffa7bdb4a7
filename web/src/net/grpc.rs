//! A gRPC-Web client on the browser's own `fetch`: unary and server-streaming
//! calls, protobuf bodies, the status from headers or trailers.
//!
//! A general client (tonic plus an HTTP stack compiled to wasm) cost about
//! 40 % of the app's download; the browser already has HTTP, so what is left
//! to do here is gRPC-Web's framing: each message goes in a frame of one flag
//! byte and a 4-byte big-endian length, and the status comes last, as a
//! frame with flag 0x80 holding `grpc-status` and `grpc-message` lines (or,
//! when nothing else is sent, as response headers).

use std::marker::PhantomData;

use js_sys::{Reflect, Uint8Array};
use prost::Message;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, Headers, ReadableStreamDefaultReader, RequestInit, Response};

/// gRPC status codes (the numbers are the protocol's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code a `grpc-status` value names; unknown numbers are `Unknown`,
    /// as the protocol says.
    fn parse(value: &str) -> Self {
        value
            .trim()
            .parse::<usize>()
            .ok()
            .and_then(|n| Self::ALL.get(n).copied())
            .unwrap_or(Code::Unknown)
    }

    /// The code for an HTTP error that carried no gRPC status (a proxy's
    /// own answer), as gRPC's HTTP mapping has it.
    fn of_http(status: u16) -> Self {
        match status {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }

    /// A few words for a status that came without a message.
    pub fn description(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Cancelled => "the request was cancelled",
            Code::Unknown => "unknown error",
            Code::InvalidArgument => "the request was invalid",
            Code::DeadlineExceeded => "the server didn't answer in time",
            Code::NotFound => "not found",
            Code::AlreadyExists => "it already exists",
            Code::PermissionDenied => "not allowed",
            Code::ResourceExhausted => "a limit was reached",
            Code::FailedPrecondition => "not possible right now",
            Code::Aborted => "the request was aborted",
            Code::OutOfRange => "out of range",
            Code::Unimplemented => "the server doesn't support this",
            Code::Internal => "the server had an internal error",
            Code::Unavailable => "the server is unavailable",
            Code::DataLoss => "data was lost",
            Code::Unauthenticated => "not signed in",
        }
    }
}

/// How a call ended, when it did not end well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> Code {
        self.code
    }

    /// The server's own words (percent-decoded), possibly empty.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The browser could not make or finish the request (network down,
    /// server gone): no gRPC status ever arrived.
    fn unreachable() -> Self {
        Self::new(Code::Unknown, "")
    }
}

/// The largest message this client takes, a guard against a broken or
/// hostile peer (the server's own events are far smaller).
const MAX_FRAME_BYTES: usize = 4 << 20;

/// Flag of the frame that carries the trailers.
const TRAILERS: u8 = 0x80;

/// Calls `method` with `request` and waits for its one reply. `bearer` is
/// an `authorization` header value, for calls made as a session.
pub async fn unary<Q: Message, R: Message + Default>(
    base: &str,
    method: &str,
    request: &Q,
    bearer: Option<&str>,
) -> Result<R, Status> {
    let mut frames = Frames::open(base, method, frame(request), bearer).await?;
    let reply = frames.next().await?;
    // The status follows the reply: a reply with an error status is an error.
    match (reply, frames.next().await?) {
        (Some(reply), None) => decode(&reply),
        (None, _) => Err(Status::new(Code::Internal, "the server sent no reply")),
        (Some(_), Some(_)) => Err(Status::new(Code::Internal, "the server sent two replies")),
    }
}

/// Starts a call whose replies come as a stream (see [`Streaming`]).
pub async fn server_streaming<Q: Message, R: Message + Default>(
    base: &str,
    method: &str,
    request: &Q,
    bearer: Option<&str>,
) -> Result<Streaming<R>, Status> {
    Ok(Streaming {
        frames: Frames::open(base, method, frame(request), bearer).await?,
        _reply: PhantomData,
    })
}

/// The replies of a call, read with [`Streaming::message`]. Dropping it
/// aborts the request, so the browser closes the stream at once.
pub struct Streaming<R> {
    frames: Frames,
    _reply: PhantomData<R>,
}

impl<R: Message + Default> Streaming<R> {
    /// The next reply; `Ok(None)` once the call ended well, `Err` with its
    /// status if it did not (including the connection breaking).
    pub async fn message(&mut self) -> Result<Option<R>, Status> {
        match self.frames.next().await? {
            Some(reply) => decode(&reply).map(Some),
            None => Ok(None),
        }
    }
}

fn decode<R: Message + Default>(bytes: &[u8]) -> Result<R, Status> {
    R::decode(bytes).map_err(|_| Status::new(Code::Internal, "the server sent an unreadable reply"))
}

/// A call's response body, taken apart into gRPC-Web frames. Not generic,
/// so the app carries one copy of it, not one per message type.
struct Frames {
    reader: ReadableStreamDefaultReader,
    /// Bytes received and not yet taken as frames.
    buffer: Vec<u8>,
    /// The trailers arrived: nothing more comes.
    ended: bool,
    _abort: Abort,
}

impl Frames {
    async fn open(
        base: &str,
        method: &str,
        body: Vec<u8>,
        bearer: Option<&str>,
    ) -> Result<Self, Status> {
        let window = web_sys::window().ok_or_else(Status::unreachable)?;
        let abort = AbortController::new().map_err(|_| Status::unreachable())?;
        let headers = Headers::new().map_err(|_| Status::unreachable())?;
        let _ = headers.set("content-type", "application/grpc-web+proto");
        let _ = headers.set("x-grpc-web", "1");
        if let Some(bearer) = bearer {
            let _ = headers.set("authorization", bearer);
        }
        let init = RequestInit::new();
        init.set_method("POST");
        init.set_headers(&headers);
        init.set_body(&Uint8Array::from(body.as_slice()));
        init.set_signal(Some(&abort.signal()));

        // Until the stream exists, dropping this future aborts the fetch too.
        let guard = Abort(Some(abort));
        let url = format!("{base}/ChatService/{method}");
        let response: Response = JsFuture::from(window.fetch_with_str_and_init(&url, &init))
            .await
            .map_err(|_| Status::unreachable())?
            .unchecked_into();

        // A status in the headers means the call ended without any reply
        // ("trailers-only"); an HTTP error without one is a proxy's own answer.
        let response_headers = response.headers();
        if let Ok(Some(code)) = response_headers.get("grpc-status") {
            let message = response_headers
                .get("grpc-message")
                .ok()
                .flatten()
                .unwrap_or_default();
            return Err(match Code::parse(&code) {
                Code::Ok => Status::new(Code::Internal, "the server sent no reply"),
                code => Status::new(code, percent_decode(&message)),
            });
        }
        if !response.ok() {
            let code = Code::of_http(response.status());
            return Err(Status::new(code, format!("HTTP {}", response.status())));
        }
        let reader = response
            .body()
            .and_then(|body| {
                body.get_reader()
                    .dyn_into::<ReadableStreamDefaultReader>()
                    .ok()
            })
            .ok_or_else(Status::unreachable)?;
        Ok(Self {
            reader,
            buffer: Vec::new(),
            ended: false,
            _abort: guard,
        })
    }

    /// The next message's bytes; `Ok(None)` once the call ended well.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, Status> {
        loop {
            if self.ended {
                return Ok(None);
            }
            if let Some((flag, body)) = self.next_frame()? {
                if flag & TRAILERS != 0 {
                    self.ended = true;
                    return match trailer_status(&body) {
                        None => Ok(None),
                        Some(status) => Err(status),
                    };
                }
                if flag & 1 != 0 {
                    return Err(Status::new(
                        Code::Internal,
                        "compressed replies are not supported",
                    ));
                }
                return Ok(Some(body));
            }
            let chunk = JsFuture::from(self.reader.read())
                .await
                .map_err(|_| Status::unreachable())?;
            let done = Reflect::get(&chunk, &JsValue::from_str("done"))
                .ok()
                .and_then(|done| done.as_bool())
                .unwrap_or(true);
            if done {
                // Cut off before the trailers: the connection went away.
                self.ended = true;
                return Err(Status::new(Code::Unavailable, "the connection was closed"));
            }
            if let Ok(value) = Reflect::get(&chunk, &JsValue::from_str("value")) {
                let bytes: Uint8Array = value.unchecked_into();
                let start = self.buffer.len();
                self.buffer.resize(start + bytes.length() as usize, 0);
                bytes.copy_to(&mut self.buffer[start..]);
            }
        }
    }

    /// Takes one whole frame off the buffer, if one is there.
    fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, Status> {
        let Some(header) = self.buffer.get(..5) else {
            return Ok(None);
        };
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if length > MAX_FRAME_BYTES {
            return Err(Status::new(
                Code::ResourceExhausted,
                "the server sent too large a reply",
            ));
        }
        if self.buffer.len() < 5 + length {
            return Ok(None);
        }
        let flag = header[0];
        let body = self.buffer[5..5 + length].to_vec();
        self.buffer.drain(..5 + length);
        Ok(Some((flag, body)))
    }
}

/// Aborts the fetch it guards when dropped.
struct Abort(Option<AbortController>);

impl Drop for Abort {
    fn drop(&mut self) {
        if let Some(abort) = self.0.take() {
            abort.abort();
        }
    }
}

/// A request as gRPC-Web frames it: flag 0, length, the message.
fn frame(message: &impl Message) -> Vec<u8> {
    let length = message.encoded_len();
    let mut out = Vec::with_capacity(5 + length);
    out.push(0);
    out.extend_from_slice(&(length as u32).to_be_bytes());
    // Cannot fail: `out` has room for the whole message.
    let _ = message.encode(&mut out);
    out
}

/// The status in a trailers frame (`name: value` lines), `None` for OK.
fn trailer_status(body: &[u8]) -> Option<Status> {
    let text = String::from_utf8_lossy(body);
    let mut code = Code::Unknown;
    let mut message = String::new();
    for line in text.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "grpc-status" => code = Code::parse(value),
            "grpc-message" => message = percent_decode(value.trim()),
            _ => {}
        }
    }
    (code != Code::Ok).then(|| Status::new(code, message))
}

/// `grpc-message` is percent-encoded UTF-8.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) if hex(hi).is_some() && hex(lo).is_some() => {
                out.push((hex(hi).unwrap_or(0) * 16 + hex(lo).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_give_the_status_and_the_decoded_message() {
        let status =
            trailer_status(b"grpc-status:6\r\ngrpc-message:ada%20is%20taken%3A%20%C3%A9\r\n");
        assert_eq!(
            status,
            Some(Status::new(Code::AlreadyExists, "ada is taken: é"))
        );
        assert_eq!(trailer_status(b"grpc-status: 0\r\n"), None);
        assert_eq!(
            trailer_status(b"Grpc-Status: 14\r\n").map(|s| s.code()),
            Some(Code::Unavailable)
        );
        // No status at all is not success.
        assert_eq!(trailer_status(b"").map(|s| s.code()), Some(Code::Unknown));
        assert_eq!(Code::parse("99"), Code::Unknown);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn requests_are_framed_with_flag_and_big_endian_length() {
        let message = chat_proto::TypingRequest {
            typing: true,
            room: "general".into(),
        };
        let framed = frame(&message);
        assert_eq!(framed[0], 0);
        assert_eq!(
            u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize,
            message.encoded_len()
        );
        assert_eq!(chat_proto::TypingRequest::decode(&framed[5..]), Ok(message));
    }
}
