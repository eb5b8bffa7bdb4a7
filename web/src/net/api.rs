//! The RPCs the page makes, through tonic's generated `ChatServiceClient`
//! over tonic-web-wasm-client (gRPC-Web on the browser's `fetch`) to the
//! server that served the page (under whatever path prefix a proxy gave
//! it), plus the protocol's input rules (shared with the server through
//! `chat_proto::rules`) worded for the page, so the user gets a hint before
//! a round trip; the server stays the authority.
//!
//! What the library leaves to us is kept thin: where the server is
//! ([`server_url`]), the session header (`session::authorized`), a proxy's
//! own HTTP errors as statuses (`proxy`), and the page's words for a status
//! ([`readable`]).

use std::error::Error as _;
use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;

use chat_proto::rules::{self, InputError};
use chat_proto::{
    ChatEvent, ChatMessage, ChatServiceClient, CreateRoomRequest, DeleteRequest, EditRequest,
    HistoryReply, HistoryRequest, JoinRequest, ListRoomsRequest, ReactRequest, SearchReply,
    SearchRequest, SendReply, SubscribeRequest, TypingRequest,
};
use futures_util::future::{Either, select};
use tonic::{Code, Status, Streaming};
use tonic_web_wasm_client::Client;

use crate::browser::wait;
use crate::net::proxy;
use crate::net::session::{self, Session};

pub use rules::{MAX_MESSAGE_CHARS, MAX_USERNAME_CHARS as MAX_NAME_CHARS};

/// A client for the server that served this page (see [`base_url`]), or for
/// the URL given when the app was built
/// (`CHAT_SERVER_URL=http://127.0.0.1:50051 trunk serve`, for development
/// against a separately running server). Cheap: a handle on the URL.
pub(super) fn client() -> ChatServiceClient<Client> {
    proxy::map_proxy_errors();
    ChatServiceClient::new(Client::new(server_url().to_owned()))
}

/// Opens the stream of a room's events, as the session. Dropping the stream
/// aborts its fetch (the library's abort guard lives in the response body),
/// so a room switch or reconnect leaves no request open.
pub async fn subscribe(request: SubscribeRequest) -> Result<Streaming<ChatEvent>, Status> {
    let response = client().subscribe(session::authorized(request)).await?;
    Ok(response.into_inner())
}

/// Where the API is, worked out once from where the page was loaded.
pub(super) fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match option_env!("CHAT_SERVER_URL") {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => web_sys::window()
            .map(|window| {
                let location = window.location();
                base_url(
                    &location.origin().unwrap_or_default(),
                    &location.pathname().unwrap_or_default(),
                )
            })
            .unwrap_or_default(),
    })
}

/// The API's base URL for a page at `origin` + `pathname`: the page's own
/// directory, so the app works at the root of a site and under any prefix a
/// proxy adds (`/chat/` or `/chat/index.html` give `origin/chat`). No
/// trailing slash: the client appends `/ChatService/<Method>`.
pub fn base_url(origin: &str, pathname: &str) -> String {
    let dir = pathname.rfind('/').map_or("", |slash| &pathname[..slash]);
    format!("{origin}{}", dir.trim_end_matches('/'))
}

/// How long a `Send` may take before the message is marked failed (the
/// user can retry; a late echo still marks it delivered).
const SEND_TIMEOUT_MS: f64 = 15_000.0;

/// Why a message was not sent, for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The server's own words for a refusal, or ours for a lost connection
    /// or for sending too fast.
    pub reason: String,
    /// Whether sending the same text again could work (a refusal of the
    /// text itself, like "too long", needs an edit instead).
    pub retryable: bool,
    /// The server's rate limit held the message back: nothing is wrong with
    /// it, and it can be sent again after a short wait. Shown calmly rather
    /// than as an error.
    pub too_fast: bool,
    /// A moderator muted the user where they posted: until when (ms since
    /// the epoch; 0: until lifted).
    pub muted_until: Option<i64>,
    /// The room is in slow mode and the user posted there too recently:
    /// how long until they may post again (ms).
    pub slow_wait_ms: Option<u64>,
}

impl Failure {
    fn from_status(status: &Status) -> Self {
        note_banned(status);
        match too_fast(status) {
            Some(reason) => Self {
                reason,
                retryable: true,
                too_fast: true,
                muted_until: None,
                slow_wait_ms: None,
            },
            None => Self {
                reason: readable(status),
                retryable: is_transient(status),
                too_fast: false,
                muted_until: muted_until(status),
                slow_wait_ms: slow_wait_ms(status),
            },
        }
    }
}

/// The header a refusal for being banned carries (the name or the
/// address): the page then shows why instead of itself.
const BANNED_UNTIL: &str = "chat-banned-until";

/// What the page does with a ban: shows the server's words.
type OnBanned = Box<dyn Fn(String)>;

thread_local! {
    /// What the page does when the server says the user is banned.
    static ON_BANNED: std::cell::RefCell<Option<OnBanned>> =
        const { std::cell::RefCell::new(None) };
}

/// Sets what to do when a refusal says the user is banned (with the
/// server's words).
pub fn on_banned(show: impl Fn(String) + 'static) {
    ON_BANNED.with(|f| *f.borrow_mut() = Some(Box::new(show)));
}

/// Tells the page if `status` is a ban; whether it was.
pub fn note_banned(status: &Status) -> bool {
    let banned =
        status.code() == Code::PermissionDenied && status.metadata().get(BANNED_UNTIL).is_some();
    if banned {
        let words = status.message().to_owned();
        ON_BANNED.with(|f| {
            if let Some(show) = f.borrow().as_ref() {
                show(words);
            }
        });
    }
    banned
}

/// The header a refusal for being muted carries: when the mute ends (ms
/// since the epoch; 0: when a moderator lifts it).
const MUTED_UNTIL: &str = "chat-muted-until";

/// The header a refusal in slow mode carries: how long to wait (ms).
const SLOW_WAIT_MS: &str = "chat-slow-wait-ms";

fn slow_wait_ms(status: &Status) -> Option<u64> {
    if status.code() != Code::ResourceExhausted {
        return None;
    }
    status
        .metadata()
        .get(SLOW_WAIT_MS)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn muted_until(status: &Status) -> Option<i64> {
    if status.code() != Code::PermissionDenied {
        return None;
    }
    status
        .metadata()
        .get(MUTED_UNTIL)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// How the server starts the text of a `Send` refused by its rate limit
/// (with `RESOURCE_EXHAUSTED`), e.g. "sending too fast: wait 1.2 s and try
/// again (limit: a burst of 20, then 5 per second)".
const TOO_FAST_PREFIX: &str = "sending too fast";

/// For a `Send` the server's rate limit refused, what to tell the user: our
/// own calm sentence, with the server's when-to-retry part when it gave one.
/// `None` for any other failure (`RESOURCE_EXHAUSTED` is also how an
/// oversized message is refused).
pub fn too_fast(status: &Status) -> Option<String> {
    if status.code() != Code::ResourceExhausted {
        return None;
    }
    let message = status.message().trim();
    let head = message.get(..TOO_FAST_PREFIX.len())?;
    if !head.eq_ignore_ascii_case(TOO_FAST_PREFIX) {
        return None;
    }
    let when = message[TOO_FAST_PREFIX.len()..]
        .trim_start_matches(|c: char| c.is_whitespace() || matches!(c, ':' | ',' | ';' | '-' | '—'))
        .trim_end_matches(|c: char| c.is_whitespace() || c == '.');
    Some(if when.is_empty() {
        "You're sending too fast — wait a moment and try again.".to_owned()
    } else {
        format!("You're sending too fast — {when}.")
    })
}

/// Posts one message; the reply carries the server's timestamp.
pub async fn send(message: ChatMessage) -> Result<SendReply, Failure> {
    // The same message (same nonce) goes again if the session was renewed.
    as_session(move |mut client| {
        let message = message.clone();
        async move { client.send(session::authorized(message)).await }
    })
    .await
}

/// Changes the text of one of the user's messages.
pub async fn edit(room: &str, id: u64, text: &str) -> Result<(), Failure> {
    let request = EditRequest {
        room: room.to_owned(),
        id,
        message: text.to_owned(),
        nonce: new_nonce(),
    };
    as_session(move |mut client| {
        let request = request.clone();
        async move { client.edit(session::authorized(request)).await }
    })
    .await
    .map(drop)
}

/// Deletes one of the user's messages.
pub async fn delete(room: &str, id: u64, reason: &str) -> Result<(), Failure> {
    let request = DeleteRequest {
        room: room.to_owned(),
        id,
        reason: reason.to_owned(),
    };
    as_session(move |mut client| {
        let request = request.clone();
        async move { client.delete(session::authorized(request)).await }
    })
    .await
    .map(drop)
}

/// Adds the user's reaction `emoji` to a message, or takes it back.
pub async fn react(room: &str, id: u64, emoji: &str, remove: bool) -> Result<(), Failure> {
    let request = ReactRequest {
        room: room.to_owned(),
        id,
        emoji: emoji.to_owned(),
        remove,
    };
    as_session(move |mut client| {
        let request = request.clone();
        async move { client.react(session::authorized(request)).await }
    })
    .await
    .map(drop)
}

/// A unary call made as the session: given up after [`SEND_TIMEOUT_MS`],
/// and made once more if the server had forgotten the session (it
/// restarted) and the page has joined again.
async fn as_session<T, F, Fut>(call: F) -> Result<T, Failure>
where
    F: FnMut(ChatServiceClient<Client>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    as_session_on(client, call).await
}

/// [`as_session`] on any of the server's services (`make` gives a client).
pub(super) async fn as_session_on<C, T, F, Fut>(
    make: impl Fn() -> C,
    mut call: F,
) -> Result<T, Failure>
where
    F: FnMut(C) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let mut renewed = false;
    loop {
        let call = pin!(call(make()));
        let timer = pin!(wait::sleep_ms(SEND_TIMEOUT_MS));
        // Dropping the losing call aborts its fetch.
        return match select(call, timer).await {
            Either::Left((Ok(reply), _)) => Ok(reply.into_inner()),
            Either::Left((Err(status), _))
                if status.code() == Code::Unauthenticated && !renewed && session::renew().await =>
            {
                renewed = true;
                continue;
            }
            Either::Left((Err(status), _)) => Err(Failure::from_status(&status)),
            Either::Right(_) => Err(Failure {
                reason: "the server didn't answer in time".to_owned(),
                retryable: true,
                too_fast: false,
                muted_until: None,
                slow_wait_ms: None,
            }),
        };
    }
}

/// What `Join` answered: the session, and whether its name moderates.
#[derive(Clone, Debug)]
pub struct Joined {
    pub session: Session,
    pub moderator: bool,
}

/// Claims `name` (a moderator's with the moderator `key`), or with `token`
/// (from an earlier Join) takes its name back. Behind an authenticating
/// proxy the proxy's name comes back, whatever was asked.
pub async fn join(name: &str, token: &str, key: &str) -> Result<Joined, Status> {
    let request = JoinRequest {
        username: name.to_owned(),
        token: token.to_owned(),
        key: key.to_owned(),
    };
    let reply = client()
        .join(request)
        .await
        .inspect_err(|status| {
            note_banned(status);
        })?
        .into_inner();
    Ok(Joined {
        moderator: reply.moderator,
        session: Session {
            name: reply.username,
            token: reply.token,
            proxied: reply.proxied,
        },
    })
}

/// Tells the others in `room` this user is (or stopped) typing. Best
/// effort: a lost notice only means a missing "is typing" line.
pub async fn set_typing(typing: bool, room: String) {
    let request = session::authorized(TypingRequest { typing, room });
    let _ = client().set_typing(request).await;
}

/// A room as the page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomInfo {
    pub name: String,
    pub topic: String,
    /// The newest message id the page knows of.
    pub last_id: u64,
    /// Slow mode: seconds between one person's posts (0: off).
    pub slow_mode_seconds: u32,
}

pub fn room_info(room: chat_proto::Room) -> RoomInfo {
    RoomInfo {
        name: room.name,
        topic: room.topic,
        // Changes never make a room unread: only its newest message counts.
        last_id: room.last_message_id,
        slow_mode_seconds: room.slow_mode_seconds,
    }
}

/// A page of `room`'s past messages: before `before_id` (0: the newest),
/// or around `around_id`; `limit` of them (see `HistoryRequest`).
pub async fn history(
    room: &str,
    before_id: u64,
    around_id: u64,
    limit: u32,
) -> Result<HistoryReply, Status> {
    let request = session::authorized(HistoryRequest {
        room: room.to_owned(),
        before_id,
        limit,
        around_id,
    });
    Ok(client().history(request).await?.into_inner())
}

/// Messages matching `query` (words, "a phrase", prefix*, from:NAME,
/// in:ROOM), newest first: in `room` ("": every room), `limit` of them (0:
/// the server's 20), from `page` (a reply's `next_page`; "": the first).
pub async fn search(
    query: &str,
    room: &str,
    limit: u32,
    page: &str,
) -> Result<SearchReply, Status> {
    let request = session::authorized(SearchRequest {
        query: query.to_owned(),
        room: room.to_owned(),
        limit,
        page: page.to_owned(),
    });
    Ok(client().search(request).await?.into_inner())
}

/// Every room, sorted by name.
pub async fn list_rooms() -> Result<Vec<RoomInfo>, Status> {
    let reply = client().list_rooms(ListRoomsRequest {}).await?.into_inner();
    Ok(reply.rooms.into_iter().map(room_info).collect())
}

/// Opens a new room.
pub async fn create_room(name: &str, topic: &str) -> Result<RoomInfo, Status> {
    let request = CreateRoomRequest {
        name: name.to_owned(),
        topic: topic.to_owned(),
    };
    Ok(room_info(client().create_room(request).await?.into_inner()))
}

/// What to tell a person about a failed call. The server writes its refusals
/// (invalid input, rate limits) for people, so those are shown as they are;
/// a failure to reach it at all gets a plain sentence instead of a JS error.
pub fn readable(status: &Status) -> String {
    let message = status.message().trim();
    match status.code() {
        Code::Unknown if cut_off(status) => "the connection was closed".to_owned(),
        // The library's failures (fetch failed, an unreadable answer) come
        // as UNKNOWN, with its words for developers.
        Code::Unknown => "couldn't reach the server, check your connection".to_owned(),
        Code::Unavailable if message.is_empty() => "the server is unavailable".to_owned(),
        _ if !message.is_empty() => message.to_owned(),
        code => describe(code).to_owned(),
    }
}

/// Whether the answer ended before its status (the connection went away
/// mid-call), which the library reports as a malformed response.
fn cut_off(status: &Status) -> bool {
    status
        .source()
        .and_then(|error| error.downcast_ref::<tonic_web_wasm_client::Error>())
        .is_some_and(|error| matches!(error, tonic_web_wasm_client::Error::MalformedResponse))
}

/// A few words for a status that came without a message.
fn describe(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "the request was cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "the request was invalid",
        Code::DeadlineExceeded => "the server didn't answer in time",
        Code::NotFound => "not found",
        Code::AlreadyExists => "it already exists",
        Code::PermissionDenied => "not allowed",
        Code::ResourceExhausted => "a limit was reached",
        Code::FailedPrecondition => "not possible right now",
        Code::Aborted => "the request was aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "the server doesn't support this",
        Code::Internal => "the server had an internal error",
        Code::Unavailable => "the server is unavailable",
        Code::DataLoss => "data was lost",
        Code::Unauthenticated => "not signed in",
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

/// The username as the server will accept it, or what to tell the user.
pub fn validate_name(raw: &str) -> Result<String, String> {
    rules::username(raw).map_err(|error| match error {
        InputError::EmptyUsername => "Pick a name to join the chat.".to_owned(),
        InputError::UsernameTooLong(chars) => {
            format!("That's {chars} characters; names can have at most {MAX_NAME_CHARS}.")
        }
        InputError::UsernameBidiControl => {
            "Names can't contain text-direction control characters.".to_owned()
        }
        InputError::UsernameInvisible => "Names need at least one visible character.".to_owned(),
        InputError::UsernameControl => "Names can't contain control characters.".to_owned(),
        // Not a username rule (none other applies to names). Not the rule's
        // own words: formatting them links Unicode tables into the app.
        _ => "That name can't be used.".to_owned(),
    })
}

/// Message text as the server will accept it, or what to tell the user (an
/// empty string for an empty draft, which needs no words).
pub fn validate_message(raw: &str) -> Result<String, String> {
    rules::message_text(raw).map_err(|error| match error {
        InputError::EmptyMessage => String::new(),
        InputError::MessageTooLong(chars) => {
            format!("Too long by {} characters.", chars - MAX_MESSAGE_CHARS)
        }
        _ => "Remove the control characters (only newlines and tabs are allowed).".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_breaches_are_worded_for_the_page() {
        assert_eq!(validate_name("  ada \n"), Ok("ada".into()));
        assert!(validate_name(&"é".repeat(33)).is_err_and(|e| e.contains("at most 32")));
        assert_eq!(
            validate_name("a\u{1b}b"),
            Err("Names can't contain control characters.".into())
        );
        assert_eq!(
            validate_name("ada\u{202E}gnp.exe"),
            Err("Names can't contain text-direction control characters.".into())
        );
        assert_eq!(
            validate_name(" \u{200B}\u{3164} "),
            Err("Names need at least one visible character.".into())
        );
        assert_eq!(
            validate_name("👩\u{200D}💻 ada"),
            Ok("👩\u{200D}💻 ada".into())
        );
        assert_eq!(validate_message("\n\n"), Err(String::new()));
        assert_eq!(
            validate_message(&"x".repeat(4_003)),
            Err("Too long by 3 characters.".into())
        );
    }

    #[test]
    fn the_api_lives_in_the_pages_directory() {
        let origin = "https://example.org";
        assert_eq!(base_url(origin, "/"), origin);
        assert_eq!(base_url(origin, ""), origin);
        assert_eq!(base_url(origin, "/index.html"), origin);
        assert_eq!(base_url(origin, "/chat/"), "https://example.org/chat");
        assert_eq!(
            base_url(origin, "/chat/index.html"),
            "https://example.org/chat"
        );
        assert_eq!(base_url(origin, "/a/b/"), "https://example.org/a/b");
        assert_eq!(base_url(origin, "/chat//"), "https://example.org/chat");
        // Without its slash, `/chat` is a file at the root (and nginx
        // redirects it to `/chat/` anyway).
        assert_eq!(base_url(origin, "/chat"), origin);
        assert_eq!(
            base_url("http://127.0.0.1:50051", "/"),
            "http://127.0.0.1:50051"
        );
    }

    #[test]
    fn refusals_are_shown_as_the_server_wrote_them() {
        let status = Status::new(
            Code::InvalidArgument,
            "message is too long: 4001 characters",
        );
        assert_eq!(readable(&status), "message is too long: 4001 characters");
        assert!(!is_transient(&status));
        let status = Status::new(Code::ResourceExhausted, "slow down");
        assert_eq!(readable(&status), "slow down");
        assert!(is_transient(&status));
        assert!(readable(&Status::new(Code::Unknown, "JS API error: TypeError")).contains("reach"));
        // An answer cut off before its status, as the library reports it.
        let cut = Status::from_error(Box::new(tonic_web_wasm_client::Error::MalformedResponse));
        assert_eq!(readable(&cut), "the connection was closed");
    }

    #[test]
    fn a_refusal_for_being_muted_says_until_when() {
        let mut status = Status::permission_denied("a moderator muted you in #general");
        status
            .metadata_mut()
            .insert(MUTED_UNTIL, "1700000000000".parse().expect("ascii"));
        assert_eq!(
            Failure::from_status(&status).muted_until,
            Some(1_700_000_000_000)
        );
        let other = Status::permission_denied("only Ada can edit message 3");
        assert_eq!(Failure::from_status(&other).muted_until, None);
    }

    #[test]
    fn sending_too_fast_is_a_calm_retryable_notice_with_the_servers_wait() {
        let status = Status::new(
            Code::ResourceExhausted,
            "sending too fast: wait 1.2 s and try again (limit: a burst of 20, then 5 per second)",
        );
        assert_eq!(
            Failure::from_status(&status),
            Failure {
                reason: "You're sending too fast — wait 1.2 s and try again \
                         (limit: a burst of 20, then 5 per second)."
                    .into(),
                retryable: true,
                too_fast: true,
                muted_until: None,
                slow_wait_ms: None,
            }
        );
        // Without a when-to-retry part (or with only punctuation), our own.
        for bare in [
            "sending too fast",
            "Sending too fast.",
            "  sending too fast:  ",
        ] {
            let failure = Failure::from_status(&Status::new(Code::ResourceExhausted, bare));
            assert!(failure.too_fast && failure.retryable, "{bare:?}");
            assert_eq!(
                failure.reason,
                "You're sending too fast — wait a moment and try again."
            );
        }
        // A sentence that ends in a full stop gets no second one.
        assert_eq!(
            too_fast(&Status::new(
                Code::ResourceExhausted,
                "sending too fast — wait 3 s."
            ))
            .as_deref(),
            Some("You're sending too fast — wait 3 s.")
        );
    }

    #[test]
    fn other_refusals_are_not_taken_for_sending_too_fast() {
        // The other RESOURCE_EXHAUSTED: an oversized message, as written.
        let status = Status::new(
            Code::ResourceExhausted,
            "message is too large: the limit is 17408 bytes",
        );
        let failure = Failure::from_status(&status);
        assert!(!failure.too_fast);
        assert_eq!(
            failure.reason,
            "message is too large: the limit is 17408 bytes"
        );
        // The words alone, under another code, are not the rate limit.
        for status in [
            Status::new(Code::InvalidArgument, "sending too fast: wait 1 s"),
            Status::new(Code::Unavailable, "sending too fast: wait 1 s"),
            Status::new(Code::ResourceExhausted, "sending"),
            Status::new(Code::ResourceExhausted, "é"),
        ] {
            assert_eq!(too_fast(&status), None, "{status:?}");
            assert!(!Failure::from_status(&status).too_fast);
        }
    }
}
