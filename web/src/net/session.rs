//! Who this tab is: the name claimed with `Join` and the token that holds it.
//!
//! The token is kept in session storage, so a reload takes the same name
//! back without asking, and in local storage too, so a second tab of the same
//! browser is the same person (every token of a name stays valid while the
//! name is held). Calls that act as the user carry it as
//! `authorization: Bearer`, except behind an authenticating proxy, which
//! names every request itself: there an `authorization` header of ours would
//! replace the credentials the browser gives the proxy.

use std::cell::{Cell, RefCell};

use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};

use crate::browser::wait;

const NAME_KEY: &str = "chat.username";
const TOKEN_KEY: &str = "chat.token";
const PROXIED_KEY: &str = "chat.proxied";

/// A name this tab holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub name: String,
    pub token: String,
    /// The proxy in front vouches for the name (see the module header).
    pub proxied: bool,
}

/// How long a call that found its session gone waits for a new one.
const RENEW_WAIT_MS: f64 = 15_000.0;

thread_local! {
    /// The `authorization` value calls are made with, if any.
    static BEARER: RefCell<Option<MetadataValue<Ascii>>> = const { RefCell::new(None) };
    /// How many sessions this tab has had: a call waiting for a new one
    /// watches it change.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    /// What the page does when the server no longer knows the session.
    static ON_LOST: RefCell<Option<Box<dyn Fn()>>> = const { RefCell::new(None) };
}

fn stores() -> impl Iterator<Item = web_sys::Storage> {
    let window = web_sys::window();
    let session = window
        .as_ref()
        .and_then(|w| w.session_storage().ok().flatten());
    let local = window.and_then(|w| w.local_storage().ok().flatten());
    session.into_iter().chain(local)
}

/// The session an earlier Join left (name and token may be empty): this
/// tab's own first, then the browser's.
pub fn saved() -> Session {
    stores()
        .find_map(|store| {
            let item = |key| store.get_item(key).ok().flatten();
            Some(Session {
                name: item(NAME_KEY)?,
                token: item(TOKEN_KEY).unwrap_or_default(),
                proxied: item(PROXIED_KEY).is_some_and(|p| p == "1"),
            })
        })
        .unwrap_or(Session {
            name: String::new(),
            token: String::new(),
            proxied: false,
        })
}

/// Makes `session` the one calls are made as, and remembers it (silently
/// skipped where storage is off: the user is then asked again next time).
pub fn adopt(session: &Session) {
    // A token that is not a valid header value (never one from our server)
    // goes without: the server then asks for a new session.
    let bearer = (!session.proxied)
        .then(|| format!("Bearer {}", session.token).parse().ok())
        .flatten();
    BEARER.with(|b| *b.borrow_mut() = bearer);
    GENERATION.with(|g| g.set(g.get() + 1));
    for store in stores() {
        let _ = store.set_item(NAME_KEY, &session.name);
        let _ = store.set_item(TOKEN_KEY, &session.token);
        let _ = store.set_item(PROXIED_KEY, if session.proxied { "1" } else { "0" });
    }
}

/// `message` as a request made as the session (with its `authorization`
/// header, when it has one).
pub fn authorized<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(bearer) = BEARER.with(|b| b.borrow().clone()) {
        request.metadata_mut().insert("authorization", bearer);
    }
    request
}

/// Sets what to do when a call finds the session gone (join again).
pub fn on_lost(rejoin: impl Fn() + 'static) {
    ON_LOST.with(|f| *f.borrow_mut() = Some(Box::new(rejoin)));
}

/// A call was refused for want of a session: asks the page to join again,
/// and resolves once it has (true) or after a while without (false).
pub async fn renew() -> bool {
    let since = GENERATION.with(Cell::get);
    ON_LOST.with(|f| {
        if let Some(rejoin) = f.borrow().as_ref() {
            rejoin();
        }
    });
    let mut waited = 0.0;
    while waited < RENEW_WAIT_MS {
        if GENERATION.with(Cell::get) != since {
            return true;
        }
        wait::sleep_ms(100.0).await;
        waited += 100.0;
    }
    false
}
