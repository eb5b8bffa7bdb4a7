//! How text is compared when searching: split into words at Unicode word
//! boundaries (UAX #29, so any language: Han characters are a word each),
//! and each word folded so that case and diacritics do not count ("Saša"
//! and "sasa", "ćevapi" and "cevapi" fold alike).
//!
//! The index stores a message's folded words, and a query is folded the
//! same way, so both sides always agree on what a word is.

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use unicode_segmentation::UnicodeSegmentation;

/// The words of `text` as written, in order.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.unicode_words()
}

/// One word folded: compatibility-decomposed (NFKD, so "ﬁ" is "fi" and a
/// full-width letter its plain one), combining marks dropped, case folded,
/// and the few letters whose stroke is not a combining mark (đ, ł, ø, ħ)
/// taken as their base letter.
pub fn fold(word: &str) -> String {
    word.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .default_case_fold()
        .map(base_letter)
        .collect()
}

/// The folded words of `text`, separated by spaces: what the index holds.
pub fn folded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in words(text) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&fold(word));
    }
    out
}

fn base_letter(c: char) -> char {
    match c {
        'đ' => 'd',
        'ł' => 'l',
        'ø' => 'o',
        'ħ' => 'h',
        'ŧ' => 't',
        'ƀ' => 'b',
        _ => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_diacritics_do_not_count() {
        assert_eq!(fold("Saša"), "sasa");
        assert_eq!(fold("ćevapi"), "cevapi");
        assert_eq!(fold("Đorđe"), "dorde");
        assert_eq!(fold("STRASSE"), fold("straße"));
        assert_eq!(fold("ﬁne"), "fine");
    }

    #[test]
    fn words_break_at_unicode_boundaries() {
        assert_eq!(folded("Hello, Saša! Où est-ce?"), "hello sasa ou est ce");
        assert_eq!(folded("我爱北京"), "我 爱 北 京");
        assert_eq!(folded("don't stop"), "don't stop");
        assert_eq!(folded("🎉 !!"), "");
    }
}
