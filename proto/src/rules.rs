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
/// Longest room name, in characters (all ASCII).
pub const MAX_ROOM_CHARS: usize = 32;
/// Longest room topic, in characters, after trimming.
pub const MAX_TOPIC_CHARS: usize = 200;
/// Longest reason given for a deletion, in characters, after trimming.
pub const MAX_REASON_CHARS: usize = 200;
/// Messages in a `History` page when the request says 0.
pub const HISTORY_PAGE: u32 = 50;
/// The most messages one `History` page holds (more is clamped to this).
pub const MAX_HISTORY_PAGE: u32 = 200;
/// Search hits in a reply when the request says 0.
pub const SEARCH_PAGE: u32 = 20;
/// The most search hits one reply holds (more is clamped to this).
pub const MAX_SEARCH_PAGE: u32 = 100;
/// Longest reaction emoji, in bytes (a family of four with skin tones is 25).
pub const MAX_EMOJI_BYTES: usize = 32;
/// Most distinct emoji under one message.
pub const MAX_REACTIONS: usize = 20;
/// How many reactors a reaction names (the first ones); its count goes on.
pub const MAX_REACTORS_LISTED: usize = 50;
/// The room that always exists, and the one an empty room name means.
pub const GENERAL: &str = "general";
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
    #[error("username contains text-direction control characters")]
    UsernameBidiControl,
    #[error("username has no visible characters")]
    UsernameInvisible,
    #[error("message is empty")]
    EmptyMessage,
    #[error("message is too long: {0} characters, the limit is {MAX_MESSAGE_CHARS}")]
    MessageTooLong(usize),
    #[error("message contains control characters (only newlines and tabs are allowed)")]
    MessageControl,
    #[error("nonce is too long: {0} characters, the limit is {MAX_NONCE_CHARS}")]
    NonceTooLong(usize),
    #[error(
        "room name {0:?} is not a room name: 1 to {MAX_ROOM_CHARS} of a-z, 0-9, - and _, \
         starting with a letter or digit"
    )]
    RoomName(String),
    #[error("topic is too long: {0} characters, the limit is {MAX_TOPIC_CHARS}")]
    TopicTooLong(usize),
    #[error("topic contains control characters")]
    TopicControl,
    #[error("the reason is too long: {0} characters, the limit is {MAX_REASON_CHARS}")]
    ReasonTooLong(usize),
    #[error("the reason contains control characters")]
    ReasonControl,
    #[error("{0:?} is not one emoji")]
    NotAnEmoji(String),
    #[error("the emoji is too long: {0} bytes, the limit is {MAX_EMOJI_BYTES}")]
    EmojiTooLong(usize),
}

/// A username: trimmed, 1 to 32 characters, no control characters, no
/// text-direction controls (which can make a name display as another, or
/// reorder the text shown after it), and at least one visible character (so
/// nobody can post under a blank name).
pub fn username(raw: &str) -> Result<String, InputError> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 {
        Err(InputError::EmptyUsername)
    } else if chars > MAX_USERNAME_CHARS {
        Err(InputError::UsernameTooLong(chars))
    } else if name.chars().any(char::is_control) {
        Err(InputError::UsernameControl)
    } else if name.chars().any(is_bidi_control) {
        Err(InputError::UsernameBidiControl)
    } else if name.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        Err(InputError::UsernameInvisible)
    } else {
        Ok(name.to_owned())
    }
}

/// The Unicode bidirectional formatting characters (UAX #9, "explicit
/// directional formatting characters" and the implicit marks): ALM, LRM,
/// RLM, the embeddings and overrides LRE, RLE, PDF, LRO, RLO, and the
/// isolates LRI, RLI, FSI, PDI. "Trojan Source" (CVE-2021-42574) uses them
/// to show text in a different order than it is stored.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Characters that show nothing on their own, so a name made only of them
/// (and whitespace) looks blank. The list is Unicode's
/// Default_Ignorable_Code_Point property (DerivedCoreProperties.txt; what a
/// renderer may draw as nothing, including the Hangul fillers often used for
/// blank names), plus the braille pattern blank (used the same way, though
/// not in the property), plus the common blocks of combining marks, which
/// have nothing to sit on without a base character.
/// Whitespace is not listed: `char::is_whitespace` covers it.
///
/// A name with one visible character is fine whatever else it contains:
/// emoji sequences join with U+200D and pick their style with U+FE0F, and
/// subdivision flags are spelled with tag characters.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        // Default_Ignorable_Code_Point (Unicode 16.0): soft hyphen, combining
        // grapheme joiner, Arabic letter mark, Hangul choseong and jungseong
        // fillers, Khmer inherent vowels, Mongolian variation selectors and
        // vowel separator, zero-width space, ZWNJ, ZWJ, LRM, RLM, the bidi
        // embeddings and overrides, word joiner, invisible operators, bidi
        // isolates, deprecated format characters, Hangul filler, variation
        // selectors, zero-width no-break space (BOM), halfwidth Hangul filler,
        // unassigned specials, shorthand format controls, musical symbol
        // format controls, tags and the variation selectors supplement.
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
            // Blank, though not default-ignorable: braille pattern blank.
            | '\u{2800}'
            // Combining marks, with nothing to sit on without a base
            // character: combining diacritical marks, their extension,
            // supplement, the marks for symbols, and the half marks.
            | '\u{0300}'..='\u{036F}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{FE20}'..='\u{FE2F}'
    )
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

/// Why a message was deleted: trimmed, at most 200 characters, no control
/// characters; may be empty.
pub fn reason(raw: &str) -> Result<String, InputError> {
    let text = raw.trim();
    let chars = text.chars().count();
    if chars > MAX_REASON_CHARS {
        Err(InputError::ReasonTooLong(chars))
    } else if text.chars().any(char::is_control) {
        Err(InputError::ReasonControl)
    } else {
        Ok(text.to_owned())
    }
}

/// A reaction: exactly one emoji, as Unicode defines one: a single grapheme
/// cluster made only of emoji characters (Extended_Pictographic) and the
/// parts of emoji sequences (Emoji_Component: skin-tone modifiers, the
/// zero-width joiner, variation selector 16, tags, the keycap mark and
/// regional indicators) that is a pictograph, a flag (two regional
/// indicators) or a keycap (`1️⃣`), at most 32 bytes. Kept as given.
pub fn emoji(raw: &str) -> Result<String, InputError> {
    use icu_properties::CodePointSetData;
    use icu_properties::props::{EmojiComponent, ExtendedPictographic, RegionalIndicator};
    use unicode_segmentation::UnicodeSegmentation;

    if raw.len() > MAX_EMOJI_BYTES {
        return Err(InputError::EmojiTooLong(raw.len()));
    }
    let not_one = || InputError::NotAnEmoji(raw.to_owned());
    if raw.graphemes(true).count() != 1 {
        return Err(not_one());
    }
    let pictographic = CodePointSetData::new::<ExtendedPictographic>();
    let component = CodePointSetData::new::<EmojiComponent>();
    let indicator = CodePointSetData::new::<RegionalIndicator>();
    if !raw
        .chars()
        .all(|c| pictographic.contains(c) || component.contains(c))
    {
        return Err(not_one());
    }
    let flag = raw.chars().count() == 2 && raw.chars().all(|c| indicator.contains(c));
    let keycap = raw.ends_with('\u{20E3}');
    if raw.chars().any(|c| pictographic.contains(c)) || flag || keycap {
        Ok(raw.to_owned())
    } else {
        Err(not_one())
    }
}

/// A room name: 1 to 32 of `a-z`, `0-9`, `-` and `_`, starting with a
/// letter or digit, lower-cased (`General` is `general`); empty means
/// [`GENERAL`], so every client from before rooms lives there.
pub fn room(raw: &str) -> Result<String, InputError> {
    if raw.is_empty() {
        return Ok(GENERAL.to_owned());
    }
    let name = raw.to_ascii_lowercase();
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.len() <= MAX_ROOM_CHARS && starts_well && name.chars().all(allowed) {
        Ok(name)
    } else {
        // Quoted with its escapes, so the refusal shows what was sent.
        let shown: String = raw.chars().take(MAX_ROOM_CHARS + 8).collect();
        Err(InputError::RoomName(shown))
    }
}

/// A room's topic: trimmed, at most 200 characters on one line (may be
/// empty).
pub fn topic(raw: &str) -> Result<String, InputError> {
    let topic = raw.trim();
    let chars = topic.chars().count();
    if chars > MAX_TOPIC_CHARS {
        Err(InputError::TopicTooLong(chars))
    } else if topic.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        Err(InputError::TopicControl)
    } else {
        Ok(topic.to_owned())
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
    fn an_emoji_is_one_pictograph_flag_or_keycap_with_its_modifiers() {
        for ok in [
            "👍",
            "👍🏽",
            "❤️",
            "❤",
            "🏳️‍🌈",
            "👩‍👩‍👧‍👦",
            "👩🏽‍💻",
            "🇭🇷",
            "🏴󠁧󠁢󠁳󠁣󠁴󠁿",
            "1️⃣",
            "#️⃣",
            "🥳",
            "©️",
        ] {
            assert_eq!(emoji(ok).as_deref(), Ok(ok), "{ok:?}");
        }
        for bad in [
            "", "a", "ab", "👍👍", "1", "#", "🇭", "é", "👍 ", " ", "\u{200D}", "🏽",
        ] {
            assert!(
                matches!(emoji(bad), Err(InputError::NotAnEmoji(_))),
                "{bad:?}: {:?}",
                emoji(bad)
            );
        }
        let long = "👨🏻‍👩🏻‍👧🏻‍👦🏻";
        assert!(long.len() > MAX_EMOJI_BYTES);
        assert_eq!(emoji(long), Err(InputError::EmojiTooLong(long.len())));
    }

    #[test]
    fn room_names_are_lower_cased_and_empty_is_general() {
        assert_eq!(room(""), Ok("general".into()));
        assert_eq!(room("General"), Ok("general".into()));
        assert_eq!(room("dev-ops_2"), Ok("dev-ops_2".into()));
        assert_eq!(room("9lives"), Ok("9lives".into()));
        assert_eq!(room(&"a".repeat(32)), Ok("a".repeat(32)));
        for bad in ["-dev", "_x", "a b", " general", "café", "a.b", "#general"] {
            assert!(matches!(room(bad), Err(InputError::RoomName(_))), "{bad:?}");
        }
        assert!(room(&"a".repeat(33)).is_err());
    }

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
    fn usernames_with_text_direction_controls_are_refused() {
        // "ada" + RLO + "gnp.exe" shows as "adaexe.png".
        assert_eq!(
            username("ada\u{202E}gnp.exe"),
            Err(InputError::UsernameBidiControl)
        );
        for c in [
            '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}',
            '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ] {
            assert_eq!(
                username(&format!("bob{c}")),
                Err(InputError::UsernameBidiControl),
                "U+{:04X}",
                c as u32
            );
        }
        // Right-to-left names need no controls, and stay valid.
        assert_eq!(username("دانا"), Ok("دانا".into()));
        assert_eq!(username("שרה 2"), Ok("שרה 2".into()));
        assert_eq!(
            InputError::UsernameBidiControl.to_string(),
            "username contains text-direction control characters"
        );
    }

    #[test]
    fn usernames_need_a_visible_character() {
        for blank in [
            "\u{200B}",
            " \u{200B}\u{200C}\u{200D} ",
            "\u{2060}\u{FEFF}\u{00AD}",
            "\u{180E}",
            "\u{3164}",
            "\u{3164}\u{3000}\u{3164}",
            "\u{115F}\u{1160}",
            "\u{FFA0}",
            "\u{FE0F}\u{FE00}",
            "\u{E0041}\u{E007F}",
            "\u{2800}",
            "\u{0301}\u{0308}",
            "\u{200B} \u{00A0} \u{200B}",
        ] {
            assert_eq!(
                username(blank),
                Err(InputError::UsernameInvisible),
                "{}",
                blank.escape_unicode()
            );
        }
        assert_eq!(
            InputError::UsernameInvisible.to_string(),
            "username has no visible characters"
        );
    }

    #[test]
    fn usernames_with_a_visible_character_may_hold_joiners_and_selectors() {
        for name in [
            "👩\u{200D}💻 ada", // woman technologist: a ZWJ sequence
            "👩\u{200D}💻",     // ...alone
            "❤\u{FE0F}",        // red heart, emoji style
            // Flag of Scotland: a black flag and tag characters.
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
            "e\u{0301}",    // é, decomposed
            "ナ\u{200B}ミ", // a zero-width space between visible letters
            "कृष्ण",          // Devanagari with a virama
        ] {
            assert_eq!(username(name), Ok(name.into()), "{}", name.escape_unicode());
        }
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
            room: "r".repeat(MAX_ROOM_CHARS),
            reply_to: u64::MAX,
            // What the server sets is never sent to it.
            ..Default::default()
        };
        let len = biggest.encoded_len();
        assert!(len <= MAX_DECODED_BYTES, "{len} > {MAX_DECODED_BYTES}");
        assert!(
            MAX_DECODED_BYTES - len < 1024,
            "limit is far above the largest message"
        );
    }
}
