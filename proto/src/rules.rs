//! The protocol's input rules, shared so that the server enforces exactly
//! what the web app checks before sending.
//!
//! Each rule returns a cleaned value or an [`InputError`] whose text is meant
//! for people (the web app shows the server's refusal as-is). The server maps
//! every `InputError` to `INVALID_ARGUMENT`.

use thiserror::Error;

/// Longest username, in characters (not bytes).
pub const MAX_USERNAME_CHARS: usize = 32;
/// Longest message text, in characters, after trimming.
pub const MAX_MESSAGE_CHARS: usize = 4_000;
/// Longest client nonce, in characters.
pub const MAX_NONCE_CHARS: usize = 64;
/// Largest encoded protobuf message the server decodes. The biggest valid
/// message (4,000 four-byte characters plus a 32-character name, a nonce and
/// framing) stays just under it; anything larger is refused before it is read.
pub const MAX_DECODED_BYTES: usize = 17 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum InputError {
    #[error("username is empty")]
    EmptyUsername,
    #[error("username is too long: {0} characters, the limit is {MAX_USERNAME_CHARS}")]
    UsernameTooLong(usize),
    #[error("username contains control characters")]
    UsernameControl,
    #[error("message is empty")]
    EmptyMessage,
    #[error("message is too long: {0} characters, the limit is {MAX_MESSAGE_CHARS}")]
    MessageTooLong(usize),
    #[error("message contains control characters (only newlines and tabs are allowed)")]
    MessageControl,
    #[error("nonce is too long: {0} characters, the limit is {MAX_NONCE_CHARS}")]
    NonceTooLong(usize),
}

/// A username: trimmed, 1 to 32 characters, no control characters.
pub fn username(raw: &str) -> Result<String, InputError> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 {
        Err(InputError::EmptyUsername)
    } else if chars > MAX_USERNAME_CHARS {
        Err(InputError::UsernameTooLong(chars))
    } else if name.chars().any(char::is_control) {
        Err(InputError::UsernameControl)
    } else {
        Ok(name.to_owned())
    }
}

/// Message text: trimmed, 1 to 4,000 characters. Newlines and tabs are
/// allowed; other control characters (escape sequences that would repaint a
/// terminal client, NULs) are not.
pub fn message_text(raw: &str) -> Result<String, InputError> {
    let text = raw.trim();
    let chars = text.chars().count();
    if chars == 0 {
        Err(InputError::EmptyMessage)
    } else if chars > MAX_MESSAGE_CHARS {
        Err(InputError::MessageTooLong(chars))
    } else if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        Err(InputError::MessageControl)
    } else {
        Ok(text.to_owned())
    }
}

/// The sender's nonce is opaque to the server but bounded like everything else.
pub fn nonce(raw: &str) -> Result<String, InputError> {
    let chars = raw.chars().count();
    if chars > MAX_NONCE_CHARS {
        Err(InputError::NonceTooLong(chars))
    } else {
        Ok(raw.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_trimmed_and_bounded_in_characters() {
        assert_eq!(username("  ada \n"), Ok("ada".into()));
        assert_eq!(username(" \t "), Err(InputError::EmptyUsername));
        assert_eq!(username(&"é".repeat(32)), Ok("é".repeat(32)));
        assert_eq!(
            username(&"é".repeat(33)),
            Err(InputError::UsernameTooLong(33))
        );
        assert_eq!(username("a\u{1b}[2Jb"), Err(InputError::UsernameControl));
        assert_eq!(username("a\nb"), Err(InputError::UsernameControl));
    }

    #[test]
    fn messages_keep_inner_newlines_but_not_other_controls() {
        assert_eq!(message_text("  hi\nthere\t "), Ok("hi\nthere".into()));
        assert_eq!(message_text("\n\n"), Err(InputError::EmptyMessage));
        assert_eq!(message_text(&"x".repeat(4_000)).map(|t| t.len()), Ok(4_000));
        assert_eq!(
            message_text(&"x".repeat(4_001)),
            Err(InputError::MessageTooLong(4_001))
        );
        assert_eq!(message_text("bell\u{7}"), Err(InputError::MessageControl));
    }

    #[test]
    fn the_largest_valid_message_fits_the_decoding_limit() {
        use crate::ChatMessage;
        use prost::Message;
        let biggest = ChatMessage {
            username: "😀".repeat(MAX_USERNAME_CHARS),
            message: "😀".repeat(MAX_MESSAGE_CHARS),
            timestamp: i64::MIN,
            nonce: "😀".repeat(MAX_NONCE_CHARS),
            id: u64::MAX,
        };
        let len = biggest.encoded_len();
        assert!(len <= MAX_DECODED_BYTES, "{len} > {MAX_DECODED_BYTES}");
        assert!(
            MAX_DECODED_BYTES - len < 1024,
            "limit is far above the largest message"
        );
    }
}
