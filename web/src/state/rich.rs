//! A message's text as pieces the page renders: plain text, links, inline
//! `code` and fenced code blocks. Every piece is shown as text (a link's
//! label and address are the text as written), so nothing in a message is
//! ever taken as HTML; only `http` and `https` addresses become links.
//!
//! Pure text logic, so it lives with the page's model rather than in
//! `components` (which only renders the pieces, see
//! `components::message_row`): the feed asks it too, whether a message
//! mentions the user (for `browser::notify`), and the views sit above both.

/// One piece of a message, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Link(String),
    Code(String),
    /// A fenced block: the lines between ``` fences (a language word after
    /// the opening fence is dropped).
    Block(String),
}

/// Splits `text` into pieces: fenced blocks first, then inline code, then
/// links in what is left.
pub fn pieces(text: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let Some(close) = after.find("```") else {
            break;
        };
        inline(&rest[..open], &mut out);
        let body = &after[..close];
        // A language word on the fence line ("```rust") is not code.
        let body = match body.split_once('\n') {
            Some((first, code)) if !first.trim().contains(' ') => code,
            _ => body,
        };
        out.push(Piece::Block(body.trim_end_matches('\n').to_owned()));
        rest = after[close + 3..]
            .strip_prefix('\n')
            .unwrap_or(&after[close + 3..]);
    }
    inline(rest, &mut out);
    out
}

/// Inline code between single backticks, and links elsewhere.
fn inline(text: &str, out: &mut Vec<Piece>) {
    let mut rest = text;
    while let Some(open) = rest.find('`') {
        let after = &rest[open + 1..];
        match after.find('`') {
            Some(close) if close > 0 => {
                links(&rest[..open], out);
                out.push(Piece::Code(after[..close].to_owned()));
                rest = &after[close + 1..];
            }
            _ => break,
        }
    }
    links(rest, out);
}

/// `http://` and `https://` addresses as links, the rest as text. Closing
/// punctuation after an address (a full stop, a bracket the address did
/// not open) belongs to the sentence.
fn links(text: &str, out: &mut Vec<Piece>) {
    let mut rest = text;
    loop {
        let start = [rest.find("https://"), rest.find("http://")]
            .into_iter()
            .flatten()
            .min();
        let Some(start) = start else {
            break;
        };
        // "xhttp://" is not the start of an address.
        let glued = rest[..start].chars().next_back().is_some_and(is_word);
        let candidate = &rest[start..];
        let end = candidate
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
            .unwrap_or(candidate.len());
        let url = trim_trailing(&candidate[..end]);
        let scheme = if url.starts_with("https://") { 8 } else { 7 };
        if glued || url.len() <= scheme {
            push_text(&rest[..start + scheme], out);
            rest = &rest[start + scheme..];
            continue;
        }
        push_text(&rest[..start], out);
        out.push(Piece::Link(url.to_owned()));
        rest = &rest[start + url.len()..];
    }
    push_text(rest, out);
}

fn trim_trailing(url: &str) -> &str {
    let mut url = url;
    loop {
        let Some(last) = url.chars().next_back() else {
            return url;
        };
        let unbalanced = |open: char| url.matches(open).count() < url.matches(last).count();
        let drop = match last {
            '.' | ',' | ';' | ':' | '!' | '?' | '\'' => true,
            ')' => unbalanced('('),
            ']' => unbalanced('['),
            _ => false,
        };
        if !drop {
            return url;
        }
        url = &url[..url.len() - last.len_utf8()];
    }
}

/// Text joins the text before it, so the page makes one node of it.
fn push_text(text: &str, out: &mut Vec<Piece>) {
    if text.is_empty() {
        return;
    }
    if let Some(Piece::Text(last)) = out.last_mut() {
        last.push_str(text);
    } else {
        out.push(Piece::Text(text.to_owned()));
    }
}

/// Whether `text` mentions `name` (as a word, with or without `@`), for
/// notifications. Case is ignored for ASCII letters only: Rust's Unicode
/// case tables would cost the bundle ~10 KB.
pub fn mentions(text: &str, name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    if name.is_empty() {
        return false;
    }
    let text = text.to_ascii_lowercase();
    text.match_indices(&name).any(|(at, _)| {
        !text[..at].chars().next_back().is_some_and(is_word)
            && !text[at + name.len()..].chars().next().is_some_and(is_word)
    })
}

/// A character that continues a word. Every non-ASCII character counts:
/// Unicode's letter tables would cost the bundle more than they are worth
/// here.
fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii()
}

#[cfg(test)]
mod tests {
    use super::Piece::{Block, Code, Link, Text};
    use super::*;

    fn t(s: &str) -> Piece {
        Text(s.into())
    }

    #[test]
    fn addresses_become_links_without_the_sentence_around_them() {
        assert_eq!(
            pieces("see https://example.org/a?b=1. ok"),
            [
                t("see "),
                Link("https://example.org/a?b=1".into()),
                t(". ok")
            ]
        );
        assert_eq!(
            pieces("(http://x.org/wiki/A_(b))!"),
            [t("("), Link("http://x.org/wiki/A_(b)".into()), t(")!")]
        );
        // Other schemes, bare schemes and glued ones stay text.
        for text in [
            "javascript:alert(1)",
            "https:// nothing",
            "xhttps://a.b",
            "ftp://a.b",
        ] {
            assert_eq!(pieces(text), [t(text)], "{text}");
        }
        assert_eq!(
            pieces("<a href=\"https://evil\">x</a>"),
            [t("<a href=\""), Link("https://evil".into()), t("\">x</a>")]
        );
    }

    #[test]
    fn code_is_text_in_code_and_blocks_keep_their_lines() {
        assert_eq!(
            pieces("run `cargo test` now"),
            [t("run "), Code("cargo test".into()), t(" now")]
        );
        assert_eq!(
            pieces("look:\n```rust\nfn main() {}\n  <b>x</b>\n```\nthanks"),
            [
                t("look:\n"),
                Block("fn main() {}\n  <b>x</b>".into()),
                t("thanks")
            ]
        );
        assert_eq!(pieces("```a b```"), [Block("a b".into())]);
        // Unclosed markers are just characters; a link inside code is code.
        assert_eq!(pieces("a ` b"), [t("a ` b")]);
        assert_eq!(pieces("```open"), [t("```open")]);
        assert_eq!(pieces("``"), [t("``")]);
        assert_eq!(pieces("`https://x.org`"), [Code("https://x.org".into())]);
    }

    #[test]
    fn a_mention_is_the_name_as_a_word() {
        assert!(mentions("hey @Ada, look", "ada"));
        assert!(mentions("ADA", "ada"));
        assert!(!mentions("adam was here", "ada"));
        assert!(!mentions("canada", "ada"));
        assert!(!mentions("anything", " "));
    }
}
