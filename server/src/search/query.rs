//! The search query language: words (every one must match), `"a phrase"`,
//! `prefix*`, `from:NAME` and `in:ROOM` (a name or room with spaces in
//! quotes: `from:"Ada L"`). Parsed here into what the index is asked
//! ([`Query::expression`]) and what the reply highlights
//! ([`Query::terms_in`]).

use thiserror::Error;

use super::fold::{fold, words};

/// The longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// The most words and phrases one query holds.
pub const MAX_TERMS: usize = 16;

/// Why a query cannot be run; said to the client as it is.
#[derive(Debug, Error, PartialEq)]
pub enum QueryError {
    #[error("the query is empty: give words to look for, or from:NAME or in:ROOM")]
    Empty,
    #[error("the query is {0} characters long; the most is {MAX_QUERY_CHARS}")]
    TooLong(usize),
    #[error("the query has more than {MAX_TERMS} words and phrases")]
    TooManyTerms,
    #[error("a quote is not closed: end the phrase with \"")]
    UnclosedQuote,
    #[error("{0} has nothing after the colon")]
    EmptyFilter(&'static str),
    #[error("{0} is given twice; search one at a time")]
    TwiceFilter(&'static str),
    #[error("\"{0}\" has no letters or digits to look for")]
    NoWords(String),
}

/// One thing the text must hold: these folded words, one after the other
/// (a lone word is a phrase of one); with `prefix`, the last one only
/// needs to start so.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub words: Vec<String>,
    pub prefix: bool,
}

/// A parsed query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub terms: Vec<Term>,
    /// `from:` as written.
    pub from: Option<String>,
    /// `in:` as written (a leading `#` taken off).
    pub room: Option<String>,
}

impl Query {
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        let chars = raw.chars().count();
        if chars > MAX_QUERY_CHARS {
            return Err(QueryError::TooLong(chars));
        }
        let mut query = Query::default();
        let mut rest = raw.trim_start();
        while !rest.is_empty() {
            let (token, after) = next_token(rest)?;
            rest = after.trim_start();
            if let Some(name) = token.strip_prefix("from:") {
                let name = unquote(name)?;
                set_once(&mut query.from, name, "from:")?;
            } else if let Some(room) = token.strip_prefix("in:") {
                let room = unquote(room)?;
                let room = room.strip_prefix('#').unwrap_or(&room).to_owned();
                set_once(&mut query.room, room, "in:")?;
            } else {
                let (text, prefix) = match token.strip_suffix('*') {
                    Some(stem) => (stem, true),
                    None => (token, false),
                };
                let text = unquote(text)?;
                let words: Vec<String> = words(&text).map(fold).collect();
                if words.is_empty() {
                    // A lone "*" or punctuation: nothing the index knows.
                    return Err(QueryError::NoWords(token.to_owned()));
                }
                if query.terms.len() == MAX_TERMS {
                    return Err(QueryError::TooManyTerms);
                }
                query.terms.push(Term { words, prefix });
            }
        }
        if query.terms.is_empty() && query.from.is_none() && query.room.is_none() {
            return Err(QueryError::Empty);
        }
        Ok(query)
    }

    /// The FTS5 expression the text must match (`None`: filters only).
    pub fn expression(&self) -> Option<String> {
        if self.terms.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|Term { words, prefix }| {
                // Each word quoted, so nothing in it is FTS5 syntax; only
                // the text, not the room's and author's tokens.
                let phrase = words.join(" ").replace('"', "\"\"");
                if *prefix {
                    format!("body : \"{phrase}\" *")
                } else {
                    format!("body : \"{phrase}\"")
                }
            })
            .collect();
        Some(parts.join(" AND "))
    }

    /// The words of `text`, as written there, that the query's terms
    /// matched, each once, in the order they come.
    pub fn terms_in(&self, text: &str) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        for word in words(text) {
            let key = fold(word);
            let hit = self.terms.iter().any(|Term { words, prefix }| {
                let last = words.len() - 1;
                words.iter().enumerate().any(|(at, w)| {
                    *w == key || (*prefix && at == last && key.starts_with(w.as_str()))
                })
            });
            if hit && !found.iter().any(|f| f == word) {
                found.push(word.to_owned());
            }
        }
        found
    }
}

/// The first token of `rest` (up to whitespace outside quotes), and what
/// follows it.
fn next_token(rest: &str) -> Result<(&str, &str), QueryError> {
    let mut quoted = false;
    for (at, c) in rest.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return Ok((&rest[..at], &rest[at..])),
            _ => {}
        }
    }
    if quoted {
        return Err(QueryError::UnclosedQuote);
    }
    Ok((rest, ""))
}

/// `text` without the quotes around it (or in it).
fn unquote(text: &str) -> Result<String, QueryError> {
    Ok(text.replace('"', ""))
}

fn set_once(
    slot: &mut Option<String>,
    value: String,
    filter: &'static str,
) -> Result<(), QueryError> {
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(QueryError::EmptyFilter(filter));
    }
    if slot.is_some() {
        return Err(QueryError::TwiceFilter(filter));
    }
    *slot = Some(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phrase(words: &[&str], prefix: bool) -> Term {
        Term {
            words: words.iter().map(|w| (*w).to_owned()).collect(),
            prefix,
        }
    }

    #[test]
    fn words_phrases_prefixes_and_filters() {
        let query = Query::parse(r#"Saša "grilled ćevapi" tomor* from:Ada in:#general"#)
            .expect("a good query");
        assert_eq!(
            query.terms,
            vec![
                phrase(&["sasa"], false),
                phrase(&["grilled", "cevapi"], false),
                phrase(&["tomor"], true),
            ]
        );
        assert_eq!(query.from.as_deref(), Some("Ada"));
        assert_eq!(query.room.as_deref(), Some("general"));
        assert_eq!(
            query.expression().as_deref(),
            Some(r#"body : "sasa" AND body : "grilled cevapi" AND body : "tomor" *"#)
        );
        let names = Query::parse(r#"from:"Ada L""#).expect("a quoted name");
        assert_eq!(names.from.as_deref(), Some("Ada L"));
        assert_eq!(names.expression(), None);
    }

    #[test]
    fn bad_queries_say_why() {
        assert_eq!(Query::parse("   "), Err(QueryError::Empty));
        assert_eq!(Query::parse("\"open"), Err(QueryError::UnclosedQuote));
        assert_eq!(Query::parse("from:"), Err(QueryError::EmptyFilter("from:")));
        assert_eq!(
            Query::parse("in:a in:b"),
            Err(QueryError::TwiceFilter("in:"))
        );
        assert_eq!(Query::parse("*"), Err(QueryError::NoWords("*".into())));
        assert!(matches!(
            Query::parse(&"a".repeat(300)),
            Err(QueryError::TooLong(300))
        ));
        let many = vec!["w"; MAX_TERMS + 1].join(" ");
        assert_eq!(Query::parse(&many), Err(QueryError::TooManyTerms));
    }

    #[test]
    fn terms_are_the_words_as_written() {
        let query = Query::parse("sasa cevap* \"good night\"").expect("a good query");
        assert_eq!(
            query.terms_in("Saša made ćevapčići, good night Saša!"),
            vec!["Saša", "ćevapčići", "good", "night"]
        );
    }
}
