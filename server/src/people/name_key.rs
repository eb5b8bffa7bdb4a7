//! When two user names are the same name.
//!
//! People see names, not code points: `Ada` and `ada`, a precomposed `é` and
//! `e` plus a combining accent, or a Cyrillic `а` standing in for a Latin
//! `a` all look like one name, so they are one name. The key of a name is
//! its trimmed NFC form, case-folded, then reduced to its confusables
//! skeleton (Unicode TS #39); two names clash when their keys are equal.
//! The name a person typed is what everyone sees; the key only decides who
//! may use it.

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;
use unicode_security::skeleton;

/// What decides whether two names are the same name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameKey(String);

impl NameKey {
    pub fn of(name: &str) -> Self {
        let folded: String = name.trim().nfc().default_case_fold().collect();
        Self(skeleton(&folded).collect())
    }

    /// The key as text (what other replicas compare).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key as another replica said it ([`Self::as_str`]).
    pub fn from_said(key: String) -> Self {
        Self(key)
    }
}

#[cfg(test)]
mod tests {
    use super::NameKey;

    fn same(a: &str, b: &str) -> bool {
        NameKey::of(a) == NameKey::of(b)
    }

    #[test]
    fn case_space_and_composition_do_not_make_another_name() {
        assert!(same("Ada", "ada"));
        assert!(same("  ada ", "ADA"));
        assert!(same("Ren\u{e9}", "rene\u{301}"));
        assert!(same("STRASSE", "stra\u{df}e"));
    }

    #[test]
    fn look_alikes_are_the_same_name() {
        // Cyrillic a, Greek omicron.
        assert!(same("\u{430}da", "ada"));
        assert!(same("b\u{3bf}b", "bob"));
        assert!(same("\u{1d41a}da", "ada"), "mathematical bold a");
    }

    #[test]
    fn different_names_stay_different() {
        assert!(!same("ada", "adb"));
        assert!(!same("ada", "ada2"));
        assert!(!same("bob", "rob"));
    }
}
