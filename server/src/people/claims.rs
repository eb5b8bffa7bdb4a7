//! Who holds which name, in one process.
//!
//! `Join` claims a name and gets a session token; every token of a name
//! takes it back while the name is held. A name is held while a session of
//! it has an open stream, and for a grace period after its last one closes
//! (or after the `Join`, if none opens), so a reload keeps it. A paper
//! `ChatStream`, which has no session, holds the name of its first message
//! while it is open, with no grace. A name nobody holds is free, and the
//! tokens of a lapsed claim are forgotten with it.
//!
//! In cluster mode a paper hold gets a token of its own too (never given to
//! anyone), under which it is claimed in the cluster; when it lapses, or a
//! `Join` is undone, the cluster is told ([`Claims::on_lapse`]) so the name
//! is free everywhere at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::name_key::NameKey;

/// A name claimed by `Join`, as its holder proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The name as it was claimed, which everyone sees.
    pub name: String,
    /// Opaque, random, 128 bits.
    pub token: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClaimError {
    #[error("the name \"{0}\" is taken: choose another one")]
    Taken(String),
    #[error("could not make a session token: {0}")]
    Random(String),
    /// Cluster mode: the cluster could not say whether the name is free, so
    /// it is not given (see `people::claims_nats`).
    #[error("{0}: try again in a moment")]
    Unavailable(String),
}

#[derive(Debug)]
pub struct Claims {
    grace: Duration,
    state: Mutex<State>,
    /// Cluster mode: where lapsed paper holds and undone `Join`s are told.
    lapses: OnceLock<mpsc::UnboundedSender<Session>>,
}

/// A held name as [`Claims::held`] lists it.
#[derive(Debug, Clone)]
pub struct Held {
    pub key: NameKey,
    pub session: Session,
    /// A paper `ChatStream`'s hold (its token is nobody's session).
    pub paper: bool,
}

#[derive(Debug, Default)]
struct State {
    by_name: HashMap<NameKey, Claim>,
    by_token: HashMap<String, NameKey>,
}

#[derive(Debug)]
struct Claim {
    name: String,
    tokens: Vec<String>,
    /// A paper `ChatStream`'s hold: the token it is claimed under in the
    /// cluster.
    paper_token: Option<String>,
    /// Open streams holding the name (sessions' and `ChatStream`s').
    streams: usize,
    /// When the grace period started: the `Join`, or the last stream closing.
    since: Instant,
}

impl Claim {
    fn held(&self, grace: Duration, now: Instant) -> bool {
        self.streams > 0 || (!self.tokens.is_empty() && now < self.since + grace)
    }
}

impl Claims {
    pub fn new(grace: Duration) -> Arc<Self> {
        Arc::new(Self {
            grace,
            state: Mutex::new(State::default()),
            lapses: OnceLock::new(),
        })
    }

    /// From now on, every lapsed paper hold and undone `Join` is sent to
    /// `lapses` (cluster mode frees it there).
    pub fn on_lapse(&self, lapses: mpsc::UnboundedSender<Session>) {
        let _ = self.lapses.set(lapses);
    }

    fn lapsed(&self, session: Session) {
        if let Some(lapses) = self.lapses.get() {
            let _ = lapses.send(session);
        }
    }

    /// Forgets every claim that has lapsed (claims are otherwise forgotten
    /// when next looked at).
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        let keys: Vec<NameKey> = state.by_name.keys().cloned().collect();
        for key in keys {
            self.forget_if_lapsed(&mut state, &key, now);
        }
    }

    /// Claims `name`, or with the `token` of a held name takes that one back.
    pub fn join(&self, name: &str, token: Option<&str>) -> Result<Session, ClaimError> {
        let now = Instant::now();
        let mut state = self.lock();
        if let Some(token) = token
            && let Some(session) = self.session_in(&mut state, token, now)
        {
            return Ok(session);
        }
        let key = NameKey::of(name);
        self.forget_if_lapsed(&mut state, &key, now);
        if let Some(claim) = state.by_name.get(&key) {
            return Err(ClaimError::Taken(claim.name.clone()));
        }
        let token = new_token()?;
        state.by_token.insert(token.clone(), key.clone());
        state.by_name.insert(
            key,
            Claim {
                name: name.trim().to_owned(),
                tokens: vec![token.clone()],
                paper_token: None,
                streams: 0,
                since: now,
            },
        );
        Ok(Session {
            name: name.trim().to_owned(),
            token,
        })
    }

    /// The session of `name` as a proxy that authenticated it vouches for
    /// it: the name is theirs whoever held it, and one token stands for it.
    pub fn vouch(&self, name: &str) -> Result<Session, ClaimError> {
        let now = Instant::now();
        let key = NameKey::of(name);
        let mut state = self.lock();
        self.forget_if_lapsed(&mut state, &key, now);
        if let Some(claim) = state.by_name.get_mut(&key) {
            claim.since = now;
            if let Some(token) = claim.tokens.first() {
                return Ok(Session {
                    name: claim.name.clone(),
                    token: token.clone(),
                });
            }
            let token = new_token()?;
            claim.tokens.push(token.clone());
            let session = Session {
                name: claim.name.clone(),
                token: token.clone(),
            };
            state.by_token.insert(token, key);
            return Ok(session);
        }
        drop(state);
        self.join(name, None)
    }

    /// The session `token` belongs to, while its name is held.
    pub fn session(&self, token: &str) -> Option<Session> {
        let now = Instant::now();
        let mut state = self.lock();
        self.session_in(&mut state, token, now)
    }

    /// Holds `session`'s name until the returned guard is dropped (a
    /// `Subscribe` stream); `None` if the session has lapsed.
    pub fn hold(self: &Arc<Self>, session: &Session) -> Option<Hold> {
        let now = Instant::now();
        let mut state = self.lock();
        let key = state.by_token.get(&session.token)?.clone();
        self.forget_if_lapsed(&mut state, &key, now);
        let claim = state.by_name.get_mut(&key)?;
        claim.streams += 1;
        Some(Hold {
            claims: Arc::clone(self),
            key,
            session: session.clone(),
        })
    }

    /// Holds `name` for a client without a session (`ChatStream`), unless
    /// somebody holds it already.
    pub fn hold_name(self: &Arc<Self>, name: &str) -> Result<Hold, ClaimError> {
        let now = Instant::now();
        let key = NameKey::of(name);
        let mut state = self.lock();
        self.forget_if_lapsed(&mut state, &key, now);
        if let Some(claim) = state.by_name.get(&key) {
            return Err(ClaimError::Taken(claim.name.clone()));
        }
        let session = Session {
            name: name.trim().to_owned(),
            token: new_token()?,
        };
        state.by_name.insert(
            key.clone(),
            Claim {
                name: session.name.clone(),
                tokens: Vec::new(),
                paper_token: Some(session.token.clone()),
                streams: 1,
                since: now,
            },
        );
        Ok(Hold {
            claims: Arc::clone(self),
            key,
            session,
        })
    }

    /// Takes on a session that another replica made (cluster mode): the
    /// name held with `token`, here as well.
    pub fn adopt(&self, name: &str, token: &str) -> Session {
        let now = Instant::now();
        let key = NameKey::of(name);
        let mut state = self.lock();
        self.forget_if_lapsed(&mut state, &key, now);
        let claim = state.by_name.entry(key.clone()).or_insert_with(|| Claim {
            name: name.trim().to_owned(),
            tokens: Vec::new(),
            paper_token: None,
            streams: 0,
            since: now,
        });
        claim.since = now;
        if !claim.tokens.iter().any(|t| t == token) {
            claim.tokens.push(token.to_owned());
        }
        let session = Session {
            name: claim.name.clone(),
            token: token.to_owned(),
        };
        state.by_token.insert(token.to_owned(), key);
        session
    }

    /// Undoes the `Join` that made `session`, while nothing holds it yet
    /// (another replica turned out to hold the name, or the cluster could
    /// not say).
    pub fn release(&self, session: &Session) {
        let mut state = self.lock();
        let Some(key) = state.by_token.remove(&session.token) else {
            return;
        };
        if let Some(claim) = state.by_name.get_mut(&key) {
            claim.tokens.retain(|t| *t != session.token);
            if claim.tokens.is_empty() && claim.streams == 0 {
                state.by_name.remove(&key);
            }
        }
        drop(state);
        self.lapsed(session.clone());
    }

    /// Every name held now with each token it is held under (what the
    /// cluster is told).
    pub fn held(&self) -> Vec<Held> {
        let now = Instant::now();
        let state = self.lock();
        state
            .by_name
            .iter()
            .filter(|(_, claim)| claim.held(self.grace, now))
            .flat_map(|(key, claim)| {
                let sessions = claim.tokens.iter().map(|token| (token, false));
                let paper = claim.paper_token.iter().map(|token| (token, true));
                sessions.chain(paper).map(|(token, paper)| Held {
                    key: key.clone(),
                    session: Session {
                        name: claim.name.clone(),
                        token: token.clone(),
                    },
                    paper,
                })
            })
            .collect()
    }

    /// The name as held, if somebody holds `name` (in any of its forms).
    pub fn holder_of(&self, name: &str) -> Option<String> {
        let now = Instant::now();
        let key = NameKey::of(name);
        let mut state = self.lock();
        self.forget_if_lapsed(&mut state, &key, now);
        state.by_name.get(&key).map(|claim| claim.name.clone())
    }

    fn session_in(&self, state: &mut State, token: &str, now: Instant) -> Option<Session> {
        let key = state.by_token.get(token)?.clone();
        self.forget_if_lapsed(state, &key, now);
        let claim = state.by_name.get(&key)?;
        Some(Session {
            name: claim.name.clone(),
            token: token.to_owned(),
        })
    }

    fn forget_if_lapsed(&self, state: &mut State, key: &NameKey, now: Instant) {
        if state
            .by_name
            .get(key)
            .is_some_and(|claim| !claim.held(self.grace, now))
            && let Some(claim) = state.by_name.remove(key)
        {
            for token in claim.tokens {
                state.by_token.remove(&token);
            }
            if let Some(token) = claim.paper_token {
                self.lapsed(Session {
                    name: claim.name,
                    token,
                });
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is only ever changed whole under the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stream holding a name; dropping it lets go.
#[derive(Debug)]
pub struct Hold {
    claims: Arc<Claims>,
    key: NameKey,
    /// The session held, or a paper hold's own.
    session: Session,
}

impl Hold {
    /// The name held, and the token it is held under.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut state = self.claims.lock();
        if let Some(claim) = state.by_name.get_mut(&self.key) {
            claim.streams = claim.streams.saturating_sub(1);
            if claim.streams == 0 {
                claim.since = now;
            }
        }
        self.claims.forget_if_lapsed(&mut state, &self.key, now);
    }
}

fn new_token() -> Result<String, ClaimError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ClaimError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_name_is_claimed_once_and_taken_back_by_its_token() {
        let claims = Claims::new(GRACE);
        let ada = claims.join("Ada", None).expect("free");
        assert_eq!(ada.name, "Ada");
        assert_eq!(ada.token.len(), 32);
        assert_eq!(
            claims.join("ada", None),
            Err(ClaimError::Taken("Ada".into()))
        );
        let again = claims.join("whatever", Some(&ada.token)).expect("by token");
        assert_eq!(again, ada);
        assert_ne!(claims.join("bob", None).expect("free").token, ada.token);
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_lapses_after_the_grace_once_no_stream_holds_it() {
        let claims = Claims::new(GRACE);
        let ada = claims.join("ada", None).expect("free");
        let stream = claims.hold(&ada).expect("held");
        tokio::time::advance(GRACE * 2).await;
        assert_eq!(claims.holder_of("ADA").as_deref(), Some("ada"));
        drop(stream);
        tokio::time::advance(GRACE - Duration::from_secs(1)).await;
        assert_eq!(claims.session(&ada.token), Some(ada.clone()));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(claims.session(&ada.token), None, "the token went with it");
        assert!(claims.join("ada", None).is_ok(), "free again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_chat_stream_holds_its_name_while_open_and_not_after() {
        let claims = Claims::new(GRACE);
        let paper = claims.hold_name("ada").expect("free");
        assert!(matches!(
            claims.join("Ada", None),
            Err(ClaimError::Taken(_))
        ));
        assert!(matches!(claims.hold_name("ada"), Err(ClaimError::Taken(_))));
        drop(paper);
        assert!(claims.hold_name("ada").is_ok(), "back at once");
    }
}
