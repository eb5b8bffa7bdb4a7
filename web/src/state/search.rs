//! Searching every room's messages (`Search`): the results of what is in
//! the header's box, a page at a time, newest first; which one the arrow
//! keys are on; and what the status line says. Typing searches once the
//! typist pauses; a newer query cancels an older one's wait and call, so a
//! late reply never replaces a newer one's. How a result's text is marked
//! ([`marked`]) and stepped through ([`stepped`]) is plain logic, tested
//! natively. The box and its list are `components::search`.

use chat_proto::{ChatMessage, SearchHit};
use futures_util::future::{AbortHandle, abortable};
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::browser::wait;
use crate::net::api;

/// How long typing pauses before the query goes out.
const DEBOUNCE_MS: f64 = 250.0;
/// Characters of text before the first mark that a result shows whole;
/// past that, only the last [`LEAD_IN`] of them.
const LEAD: usize = 48;
const LEAD_IN: usize = 32;

/// One result: the message as it now stands, and the words of its text
/// that matched, as written.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub message: ChatMessage,
    pub terms: Vec<String>,
}

fn hits(found: Vec<SearchHit>) -> impl Iterator<Item = Hit> {
    found.into_iter().filter_map(|hit| {
        Some(Hit {
            message: hit.message?,
            terms: hit.terms,
        })
    })
}

/// What the status line says (and a screen reader hears).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Said {
    Nothing,
    Searching,
    Found {
        count: usize,
        more: bool,
    },
    /// The server's words: a query it cannot run, an unknown room, too
    /// many searches; or ours for a failure to reach it.
    Refused(String),
}

impl Said {
    pub fn words(&self) -> String {
        match self {
            Said::Nothing => String::new(),
            Said::Searching => "Searching…".to_owned(),
            Said::Found { count: 0, .. } => "No messages match".to_owned(),
            Said::Found { count, more } => format!(
                "{count} result{}{}",
                if *count == 1 { "" } else { "s" },
                if *more { ", more below" } else { "" }
            ),
            Said::Refused(why) => why.clone(),
        }
    }
}

#[derive(Clone, Copy)]
pub struct Search {
    pub hits: RwSignal<Vec<Hit>>,
    pub said: RwSignal<Said>,
    /// The results are shown.
    pub open: RwSignal<bool>,
    /// The result the arrow keys are on.
    pub active: RwSignal<Option<usize>>,
    /// Reading the next page.
    pub loading: RwSignal<bool>,
    /// The query the results answer.
    answered: StoredValue<String>,
    /// The page after the results ("": none).
    next_page: RwSignal<String>,
    /// The searches under way, for a newer query to cancel.
    calls: StoredValue<Vec<AbortHandle>>,
}

impl Search {
    pub fn new() -> Self {
        Self {
            hits: RwSignal::new(Vec::new()),
            said: RwSignal::new(Said::Nothing),
            open: RwSignal::new(false),
            active: RwSignal::new(None),
            loading: RwSignal::new(false),
            answered: StoredValue::new(String::new()),
            next_page: RwSignal::new(String::new()),
            calls: StoredValue::new(Vec::new()),
        }
    }

    /// The box now holds `query`: its results, once typing pauses (none
    /// for an empty box).
    pub fn look_for(self, query: &str) {
        for call in self.calls.get_value() {
            call.abort();
        }
        self.calls.set_value(Vec::new());
        self.loading.set(false);
        self.active.set(None);
        self.next_page.set(String::new());
        if query.trim().is_empty() {
            self.hits.set(Vec::new());
            self.said.set(Said::Nothing);
            self.open.set(false);
            return;
        }
        self.open.set(true);
        self.said.set(Said::Searching);
        let query = query.to_owned();
        self.run(async move {
            wait::sleep_ms(DEBOUNCE_MS).await;
            let reply = api::search(&query, "", 0, "").await;
            let (found, next) = match reply {
                Ok(reply) => (hits(reply.hits).collect::<Vec<_>>(), reply.next_page),
                Err(status) => {
                    self.hits.try_set(Vec::new());
                    self.said.try_set(Said::Refused(api::readable(&status)));
                    return;
                }
            };
            self.said.try_set(Said::Found {
                count: found.len(),
                more: !next.is_empty(),
            });
            self.hits.try_set(found);
            self.answered.try_set_value(query);
            self.next_page.try_set(next);
        });
    }

    /// Reads the page after the results and puts it below them; `then`
    /// gets the first new one's place.
    pub fn more(self, then: impl FnOnce(usize) + 'static) {
        let query = self.answered.get_value();
        let page = self.next_page.get_untracked();
        if page.is_empty() || self.loading.get_untracked() {
            return;
        }
        self.loading.set(true);
        self.run(async move {
            let reply = api::search(&query, "", 0, &page).await;
            self.loading.try_set(false);
            match reply {
                Ok(reply) => {
                    let Some(first) = self.hits.try_with_untracked(Vec::len) else {
                        return; // the page is gone
                    };
                    self.hits.update(|h| h.extend(hits(reply.hits)));
                    self.said.set(Said::Found {
                        count: self.hits.with_untracked(Vec::len),
                        more: !reply.next_page.is_empty(),
                    });
                    self.next_page.set(reply.next_page);
                    then(first);
                }
                // The results stay; the button offers the page again.
                Err(status) => {
                    self.said.try_set(Said::Refused(api::readable(&status)));
                }
            }
        });
    }

    /// Whether there is a page after the results (tracked).
    pub fn has_more(&self) -> bool {
        self.next_page.with(|p| !p.is_empty())
    }

    /// Hides the results (the box keeps its query).
    pub fn close(self) {
        self.open.set(false);
        self.active.set(None);
    }

    /// Moves the arrow keys' place down (or up) one result.
    pub fn step(self, down: bool) {
        let count = self.hits.with_untracked(Vec::len);
        self.active.update(|at| *at = stepped(*at, count, down));
    }

    fn run(self, work: impl Future<Output = ()> + 'static) {
        let (work, handle) = abortable(work);
        self.calls.update_value(|calls| calls.push(handle));
        spawn_local(async move {
            let _ = work.await;
        });
    }
}

/// Where the arrow keys go among `count` results from `at` (`None`: the
/// box itself): down from the box to the first, up from the box to the
/// last, up from the first back to the box; the last holds.
pub fn stepped(at: Option<usize>, count: usize, down: bool) -> Option<usize> {
    let last = count.checked_sub(1)?;
    match (at, down) {
        (None, true) => Some(0),
        (None, false) => Some(last),
        (Some(0), false) => None,
        (Some(n), true) => Some((n + 1).min(last)),
        (Some(n), false) => Some((n - 1).min(last)),
    }
}

/// `text` as runs of plain (false) and marked (true) text: each of
/// `terms` wherever it stands as a whole word, matched as written (the
/// server found them in this very text). Where terms overlap, the longest
/// wins.
pub fn marked<'a>(text: &'a str, terms: &[String]) -> Vec<(&'a str, bool)> {
    let mut runs = Vec::new();
    let mut plain = 0;
    let mut at = 0;
    while let Some(next) = text[at..].chars().next() {
        let rest = &text[at..];
        let starts_word = !text[..at].chars().next_back().is_some_and(is_word);
        let term = terms
            .iter()
            .filter(|term| {
                starts_word
                    && !term.is_empty()
                    && rest.starts_with(term.as_str())
                    && !rest[term.len()..].chars().next().is_some_and(is_word)
            })
            .map(String::len)
            .max();
        match term {
            Some(len) => {
                if plain < at {
                    runs.push((&text[plain..at], false));
                }
                runs.push((&text[at..at + len], true));
                at += len;
                plain = at;
            }
            None => at += next.len_utf8(),
        }
    }
    if plain < text.len() {
        runs.push((&text[plain..], false));
    }
    runs
}

/// For a long text whose first mark is far in: the last few words before
/// it, to show after "…" instead of all of them (so the mark is on the
/// lines a result shows); `None` if the text is shown from its start.
pub fn lead_in<'a>(runs: &[(&'a str, bool)]) -> Option<&'a str> {
    let [(before, false), (_, true), ..] = runs else {
        return None;
    };
    let chars = before.chars().count();
    if chars <= LEAD {
        return None;
    }
    let (cut, _) = before.char_indices().nth(chars - LEAD_IN)?;
    let tail = &before[cut..];
    // From a word's start, if there is one to start from.
    Some(match tail.find(char::is_whitespace) {
        Some(space) if space + 1 < tail.len() => tail[space..].trim_start(),
        _ => tail,
    })
}

/// A character that continues a word, so a term next to it is only part
/// of another word: outside ASCII, anything but the common blocks of
/// spaces, punctuation, symbols and emoji (Unicode's letter tables would
/// cost the bundle about 2 KB).
fn is_word(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    !matches!(c,
        '\u{a0}'..='\u{bf}' | '×' | '÷'
        | '\u{2000}'..='\u{2bff}'
        | '\u{3000}'..='\u{303f}'
        | '\u{fe30}'..='\u{fe4f}' | '\u{ff01}'..='\u{ff0f}'
        | '\u{1f000}'..='\u{1faff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn terms_are_marked_as_whole_words_as_written() {
        assert_eq!(
            marked("Saša made ćevapi, Saša!", &terms(&["Saša", "ćevapi"])),
            vec![
                ("Saša", true),
                (" made ", false),
                ("ćevapi", true),
                (", ", false),
                ("Saša", true),
                ("!", false),
            ]
        );
        // Case as written: "saša" is not the term "Saša".
        assert_eq!(
            marked("saša and Saša", &terms(&["Saša"])),
            vec![("saša and ", false), ("Saša", true)]
        );
        // Not inside another word, but between any punctuation.
        assert_eq!(
            marked("this is it—is", &terms(&["is"])),
            vec![
                ("this ", false),
                ("is", true),
                (" it—", false),
                ("is", true)
            ]
        );
        assert_eq!(
            marked("«Đorđe» „Đorđe“ Đorđe…🎉Đorđe", &terms(&["Đorđe"])),
            vec![
                ("«", false),
                ("Đorđe", true),
                ("» „", false),
                ("Đorđe", true),
                ("“ ", false),
                ("Đorđe", true),
                ("…🎉", false),
                ("Đorđe", true),
            ]
        );
        assert_eq!(
            marked("Đorđević", &terms(&["Đorđe"])),
            vec![("Đorđević", false)]
        );
        // The longer of two that start at the same place.
        assert_eq!(
            marked("ćevapčići", &terms(&["ćevap", "ćevapčići"])),
            vec![("ćevapčići", true)]
        );
        assert_eq!(marked("", &terms(&["a"])), vec![]);
        assert_eq!(marked("plain", &[]), vec![("plain", false)]);
        assert_eq!(marked("plain", &terms(&[""])), vec![("plain", false)]);
    }

    #[test]
    fn a_mark_far_into_a_long_text_is_led_into_with_its_last_words() {
        let text = format!("{} and then Saša came", "word ".repeat(20));
        let runs = marked(&text, &terms(&["Saša"]));
        let lead = lead_in(&runs).expect("cut");
        assert!(lead.len() <= LEAD_IN * 4 && lead.ends_with("and then "));
        assert!(lead.starts_with(|c: char| !c.is_whitespace()));
        // Near the start, or with nothing marked: from the start.
        assert_eq!(lead_in(&marked("so Saša came", &terms(&["Saša"]))), None);
        assert_eq!(lead_in(&marked(&text, &[])), None);
        // One long word: cut inside it rather than not at all.
        let long = format!("{}é Saša", "x".repeat(60));
        let runs = marked(&long, &terms(&["Saša"]));
        assert_eq!(lead_in(&runs).map(|l| l.chars().count()), Some(LEAD_IN));
    }

    #[test]
    fn arrows_go_from_the_box_through_the_results_and_back() {
        assert_eq!(stepped(None, 0, true), None);
        assert_eq!(stepped(None, 3, true), Some(0));
        assert_eq!(stepped(None, 3, false), Some(2));
        assert_eq!(stepped(Some(0), 3, true), Some(1));
        assert_eq!(stepped(Some(2), 3, true), Some(2));
        assert_eq!(stepped(Some(1), 3, false), Some(0));
        assert_eq!(stepped(Some(0), 3, false), None);
        // A place past a shorter list comes back onto it.
        assert_eq!(stepped(Some(7), 3, false), Some(2));
        assert_eq!(stepped(Some(7), 3, true), Some(2));
    }

    #[test]
    fn the_status_line_counts_or_says_why() {
        let found = |count, more| Said::Found { count, more }.words();
        assert_eq!(found(0, false), "No messages match");
        assert_eq!(found(1, false), "1 result");
        assert_eq!(found(3, false), "3 results");
        assert_eq!(found(20, true), "20 results, more below");
        assert_eq!(Said::Nothing.words(), "");
        let refused = "a quote is not closed: end the phrase with \"";
        assert_eq!(Said::Refused(refused.into()).words(), refused);
    }
}
