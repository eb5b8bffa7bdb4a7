//! The two RPCs the page makes, over gRPC-Web to the server that served it,
//! plus the input rules the server enforces (checked here first so the user
//! gets a hint before a round trip; the server stays the authority).

use std::pin::pin;

use chat_proto::{ChatMessage, ChatServiceClient, SendReply};
use futures_util::future::{Either, select};
use tonic::{Code, Status};
use tonic_web_wasm_client::Client;
use wasm_bindgen_futures::JsFuture;

/// Longest username, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// Longest message, in characters after trimming.
pub const MAX_MESSAGE_CHARS: usize = 4_000;

/// A client for the server at this page's own origin.
pub fn client() -> ChatServiceClient<Client> {
    let origin = web_sys::window()
        .and_then(|w| w.location().origin().ok())
        .unwrap_or_default();
    ChatServiceClient::new(Client::new(origin))
}

/// How long a `Send` may take before the message is marked failed (the
/// user can retry; a late echo still marks it delivered).
const SEND_TIMEOUT_MS: f64 = 15_000.0;

/// Why a message was not sent, for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The server's own words for a refusal, or ours for a lost connection.
    pub reason: String,
    /// Whether sending the same text again could work (a refusal of the
    /// text itself, like "too long", needs an edit instead).
    pub retryable: bool,
}

impl Failure {
    fn from_status(status: &Status) -> Self {
        Self {
            reason: readable(status),
            retryable: is_transient(status),
        }
    }
}

/// Posts one message; the reply carries the server's timestamp.
pub async fn send(message: ChatMessage) -> Result<SendReply, Failure> {
    let mut client = client();
    let call = pin!(client.send(message));
    let timer = pin!(sleep_ms(SEND_TIMEOUT_MS));
    // Dropping the losing call aborts its fetch.
    match select(call, timer).await {
        Either::Left((Ok(reply), _)) => Ok(reply.into_inner()),
        Either::Left((Err(status), _)) => Err(Failure::from_status(&status)),
        Either::Right(_) => Err(Failure {
            reason: "the server didn't answer in time".to_owned(),
            retryable: true,
        }),
    }
}

/// Resolves after `ms` milliseconds, on the browser's timer.
pub async fn sleep_ms(ms: f64) {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        if let Some(window) = web_sys::window() {
            let _ =
                window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms as i32);
        }
    });
    let _ = JsFuture::from(promise).await;
}

/// What to tell a person about a failed call. The server writes its refusals
/// (invalid input, rate limits) for people, so those are shown as they are;
/// a failure to reach it at all gets a plain sentence instead of a JS error.
pub fn readable(status: &Status) -> String {
    let message = status.message().trim();
    match status.code() {
        // tonic reports fetch and framing failures as UNKNOWN.
        Code::Unknown => "couldn't reach the server, check your connection".to_owned(),
        Code::Unavailable if message.is_empty() => "the server is unavailable".to_owned(),
        _ if !message.is_empty() => message.to_owned(),
        code => code.description().to_owned(),
    }
}

/// Whether retrying the same request can help (otherwise the server has
/// refused what we sent, and asking again changes nothing).
pub fn is_transient(status: &Status) -> bool {
    !matches!(
        status.code(),
        Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::Unimplemented
    )
}

/// A fresh nonce: 128 random bits as 32 hex digits (the server allows 64
/// characters). It only has to be unique among this tab's own messages.
pub fn new_nonce() -> String {
    let mut nonce = String::with_capacity(32);
    for _ in 0..4 {
        let word = (js_sys::Math::random() * 4_294_967_296.0) as u32;
        nonce.push_str(&format!("{word:08x}"));
    }
    nonce
}

/// The username as the server will accept it: trimmed, 1 to 32 characters,
/// no control characters.
pub fn validate_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 {
        Err("Pick a name to join the chat.".to_owned())
    } else if chars > MAX_NAME_CHARS {
        Err(format!(
            "That's {chars} characters; names can have at most {MAX_NAME_CHARS}."
        ))
    } else if name.chars().any(char::is_control) {
        Err("Names can't contain control characters.".to_owned())
    } else {
        Ok(name.to_owned())
    }
}

/// Message text as the server will accept it: trimmed, 1 to 4,000
/// characters, and no control characters except newlines and tabs.
pub fn validate_message(raw: &str) -> Result<String, String> {
    let text = raw.trim();
    let chars = text.chars().count();
    if chars == 0 {
        Err(String::new())
    } else if chars > MAX_MESSAGE_CHARS {
        Err(format!(
            "Too long by {} characters.",
            chars - MAX_MESSAGE_CHARS
        ))
    } else if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        Err("Remove the control characters (only newlines and tabs are allowed).".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_server_rules() {
        assert_eq!(validate_name("  ada \n"), Ok("ada".into()));
        assert!(validate_name(" \t ").is_err());
        assert_eq!(validate_name(&"é".repeat(32)), Ok("é".repeat(32)));
        assert!(validate_name(&"é".repeat(33)).is_err());
        assert!(validate_name("a\u{1b}b").is_err());
    }

    #[test]
    fn messages_follow_the_server_rules() {
        assert_eq!(validate_message("  hi\nthere\t "), Ok("hi\nthere".into()));
        assert_eq!(validate_message("\n\n"), Err(String::new()));
        assert!(validate_message(&"x".repeat(4_000)).is_ok());
        assert!(validate_message(&"x".repeat(4_001)).is_err());
        assert!(validate_message("bell\u{7}").is_err());
    }

    #[test]
    fn refusals_are_shown_as_the_server_wrote_them() {
        let status = Status::invalid_argument("message is too long: 4001 characters");
        assert_eq!(readable(&status), "message is too long: 4001 characters");
        assert!(!is_transient(&status));
        let status = Status::resource_exhausted("slow down");
        assert_eq!(readable(&status), "slow down");
        assert!(is_transient(&status));
        assert!(readable(&Status::unknown("JS API error: TypeError")).contains("reach"));
    }
}
