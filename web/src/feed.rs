//! The live feed: one Subscribe stream kept open for as long as the page has
//! a name, reconnected with exponential backoff and jitter when it drops.
//!
//! "connected" means the server has said `Ready` (the subscription is live,
//! so nothing sent from then on can be missed), not merely that a request
//! went out. A stream can also die without ending: a proxy that buffers it
//! or silently drops an idle connection, a laptop waking up on another
//! network. So the server sends a heartbeat every interval it names in
//! `Ready`, and a stream that goes quiet for too long is given up on and
//! replaced. When the browser says it is back online, the wait before the
//! next attempt is cut short.
//!
//! The first subscription asks for the recent history; every later one
//! resumes after the last id the timeline holds, so the server replays
//! exactly what was missed while the stream was down.
//!
//! The stream carries who is here and who is typing too (see
//! `state::people`). If the server no longer knows the session (it
//! restarted, or the name's grace ran out), the stream stops and the page
//! joins again (see `net::session`).
//!
//! `Connection` is what the header shows of all this
//! (`components::connection`); `show` is where each event lands in `state`.

use std::cell::Cell;
use std::pin::pin;
use std::rc::Rc;

use chat_proto::{ChangeKind, ChatEvent, Event, SubscribeRequest};
use futures_util::future::{AbortHandle, Either, abortable, select};
use leptos::prelude::*;
use leptos::task::spawn_local;
use tonic::{Code, Status, Streaming};

use crate::browser::{notify, wait};
use crate::net::api;
use crate::net::session::{self, Session};
use crate::state::people::People;
use crate::state::reports::Reports;
use crate::state::rich;
use crate::state::rooms::Rooms;
use crate::state::timeline::Timeline;

/// First retry delay, doubled after every failed attempt up to `MAX_DELAY_MS`
/// and back to this after a successful `Ready`.
const MIN_DELAY_MS: f64 = 500.0;
const MAX_DELAY_MS: f64 = 15_000.0;
/// How long an attempt may take to get `Ready` (it comes at once from a
/// healthy server) before it counts as failed.
const READY_TIMEOUT_MS: f64 = 15_000.0;
/// The shortest silence that ends a stream, however short the heartbeat.
const MIN_SILENCE_MS: f64 = 2_000.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// The first attempt, before any `Ready`.
    Connecting,
    /// `Ready` received; the stream is live.
    Connected,
    /// The stream dropped (or never came up); trying again.
    Reconnecting,
}

impl ConnState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Reconnecting => "reconnecting",
        }
    }
}

/// What the header shows about the connection.
#[derive(Clone, Copy)]
pub struct Connection {
    pub state: RwSignal<ConnState>,
    /// Why the last attempt failed, if it did (shown as a tooltip).
    pub detail: RwSignal<Option<String>>,
    /// The server refused the subscription itself (e.g. the name): retrying
    /// blindly would not help, so the user is told.
    pub refused: RwSignal<Option<String>>,
}

/// Where the stream's events go, and whose eyes they are for.
#[derive(Clone)]
pub struct Feed {
    /// The open room's.
    pub timeline: Timeline,
    pub people: People,
    pub rooms: Rooms,
    /// The open reports (a moderator's stream tells of new ones).
    pub reports: Reports,
    /// The session's name: messages under it are this user's own.
    pub me: String,
    /// The other rooms whose activity the stream reports.
    pub watch: Vec<String>,
    /// The room's newest id when the stream said `Ready`: messages up to
    /// it are history being replayed, later ones arrive live.
    pub live_after: Rc<Cell<u64>>,
}

impl Connection {
    pub fn new() -> Self {
        Self {
            state: RwSignal::new(ConnState::Connecting),
            detail: RwSignal::new(None),
            refused: RwSignal::new(None),
        }
    }

    /// Subscribes as `session` to the room of `timeline` until the
    /// returned handle is aborted.
    pub fn start(
        self,
        session: &Session,
        timeline: Timeline,
        people: People,
        rooms: Rooms,
        reports: Reports,
    ) -> AbortHandle {
        self.state.set(ConnState::Connecting);
        self.detail.set(None);
        self.refused.set(None);
        let feed = Feed {
            timeline,
            people,
            watch: rooms.others(),
            rooms,
            reports,
            me: session.name.clone(),
            live_after: Rc::default(),
        };
        let (task, handle) = abortable(self.run(feed));
        spawn_local(async move {
            // Aborted means the name changed or the page is going away.
            let _ = task.await;
        });
        handle
    }

    async fn run(self, feed: Feed) {
        let mut delay = MIN_DELAY_MS;
        loop {
            match self.subscribe_once(&feed).await {
                Ended::AfterReady(reason) => {
                    delay = MIN_DELAY_MS;
                    self.detail.set(reason);
                }
                Ended::BeforeReady(reason) => self.detail.set(Some(reason)),
                Ended::Refused(reason) => {
                    self.refused.set(Some(reason.clone()));
                    self.detail.set(Some(reason));
                    delay = MAX_DELAY_MS;
                }
                Ended::SessionGone => {
                    // The page joins again, and a new stream replaces this
                    // one; if it cannot, the name prompt says why.
                    self.state.set(ConnState::Reconnecting);
                    session::renew().await;
                    return;
                }
            }
            self.state.set(ConnState::Reconnecting);
            let pause = pin!(wait::sleep_ms(jittered(delay)));
            let online = pin!(wait::window_event("online"));
            select(pause, online).await;
            delay = (delay * 2.0).min(MAX_DELAY_MS);
        }
    }

    /// One Subscribe call, read until it ends or goes quiet.
    async fn subscribe_once(self, feed: &Feed) -> Ended {
        let opening = pin!(open(feed));
        let timeout = pin!(wait::sleep_ms(READY_TIMEOUT_MS));
        let (mut stream, heartbeat_ms) = match select(opening, timeout).await {
            Either::Left((Ok(opened), _)) => opened,
            Either::Left((Err(ended), _)) => return ended,
            Either::Right(_) => {
                return Ended::BeforeReady("the server didn't answer in time".to_owned());
            }
        };
        self.state.set(ConnState::Connected);
        self.detail.set(None);
        self.refused.set(None);

        let last_event = Cell::new(js_sys::Date::now());
        let reading = pin!(read(&mut stream, feed, &last_event));
        let Some(limit) = silence_limit_ms(heartbeat_ms) else {
            // An older server, without heartbeats: trust the stream.
            return reading.await;
        };
        // Losing the race drops `reading` and then `stream`, which aborts
        // the fetch.
        match select(reading, pin!(silence(&last_event, limit))).await {
            Either::Left((ended, _)) => ended,
            Either::Right(_) => {
                // Whole seconds, as an integer: float formatting costs the
                // bundle kilobytes.
                let seconds = (limit / 1_000.0).round() as u64;
                Ended::AfterReady(Some(format!(
                    "the connection went quiet (nothing for {seconds} s)"
                )))
            }
        }
    }
}

/// Starts a Subscribe call and reads it up to `Ready`, which gives the
/// heartbeat interval (0 from a server that sends none).
async fn open(feed: &Feed) -> Result<(Streaming<ChatEvent>, u32), Ended> {
    let request = SubscribeRequest {
        username: feed.me.clone(),
        after_id: feed.timeline.last_id(),
        room: feed.timeline.room().to_string(),
        watch: feed.watch.clone(),
    };
    let mut stream = match api::subscribe(request).await {
        Ok(stream) => stream,
        Err(status) => return Err(failed_before_ready(&status)),
    };
    loop {
        match stream.message().await {
            Ok(Some(ChatEvent {
                event: Some(Event::Ready(ready)),
            })) => {
                feed.live_after.set(ready.last_id);
                feed.people.restart();
                // Rooms made by others since the list was read show up.
                feed.rooms.refresh();
                return Ok((stream, ready.heartbeat_interval_ms));
            }
            // `Ready` comes first, but a message is a message.
            Ok(Some(ChatEvent { event: Some(event) })) => show(event, feed),
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(Ended::BeforeReady(
                    "the server closed the stream".to_owned(),
                ));
            }
            Err(status) => return Err(failed_before_ready(&status)),
        }
    }
}

/// Reads a live stream until it ends, noting when each event arrived.
async fn read(stream: &mut Streaming<ChatEvent>, feed: &Feed, last_event: &Cell<f64>) -> Ended {
    loop {
        let next = stream.message().await;
        last_event.set(js_sys::Date::now());
        match next {
            Ok(Some(ChatEvent { event: Some(event) })) => show(event, feed),
            Ok(Some(_)) => {}
            Ok(None) => return Ended::AfterReady(Some("the server closed the stream".to_owned())),
            // A ban: the page shows why, and the stream stays away.
            Err(status) if api::note_banned(&status) => {
                return Ended::Refused(api::readable(&status));
            }
            // Including UNAVAILABLE from a server shutting down: reconnect
            // soon, it is probably restarting.
            Err(status) => return Ended::AfterReady(Some(api::readable(&status))),
        }
    }
}

/// Puts what the stream said where the user sees it.
fn show(event: Event, feed: &Feed) {
    let Feed {
        timeline,
        people,
        rooms,
        reports,
        me,
        ..
    } = feed;
    match event {
        Event::Message(message) => {
            people.stopped_typing(&message.username);
            // The open room is seen as it comes.
            let (room, id) = (timeline.room(), message.id);
            let live = id > feed.live_after.get();
            if let Some(entry) = timeline.receive(message, me)
                && live
            {
                timeline.announce(&entry);
                if rich::mentions(&entry.text, me) {
                    notify::mention(&entry.author, &entry.text, &room);
                }
            }
            rooms.activity(&room, id);
            rooms.saw(&room, id);
        }
        // Changes never make a room unread: only its newest message counts.
        Event::Activity(activity) => rooms.activity(&activity.room, activity.last_message_id),
        // An edit, a deletion or a reaction to an earlier message.
        Event::Change(change) => {
            if change.kind() == ChangeKind::ChangeDelete {
                reports.message_gone(&change.room, change.target);
            }
            timeline.apply(&change);
        }
        // A moderator changed the room's topic or slow mode.
        Event::Room(room) => rooms.settle(api::room_info(room)),
        // For a moderator: somebody reported a message.
        Event::Report(report) => reports.add(report),
        Event::Gap(gap) => timeline.gap(gap.after_id, gap.next_id),
        Event::Presence(presence) => people.presence(presence, *timeline, me),
        Event::Typing(typing) => people.typing(typing, me),
        // A heartbeat has done its job by arriving; `Ready` is handled by
        // `open`.
        Event::Ready(_) | Event::Heartbeat(_) => {}
    }
}

/// Resolves once `limit_ms` have passed since `last_event` (which the reader
/// keeps moving) with nothing new. One timer at a time, not one per event;
/// a timer a background tab delays only makes the check late, never wrong.
async fn silence(last_event: &Cell<f64>, limit_ms: f64) {
    loop {
        let quiet = js_sys::Date::now() - last_event.get();
        if quiet >= limit_ms {
            return;
        }
        wait::sleep_ms(limit_ms - quiet).await;
    }
}

/// How long a live stream may go without any event before it counts as
/// dead: 2.5 heartbeat intervals (a late heartbeat, or one lost in a busy
/// moment, is not enough), and never under `MIN_SILENCE_MS`. `None` for a
/// server that sends no heartbeats (interval 0).
fn silence_limit_ms(heartbeat_interval_ms: u32) -> Option<f64> {
    (heartbeat_interval_ms > 0)
        .then(|| (f64::from(heartbeat_interval_ms) * 2.5).max(MIN_SILENCE_MS))
}

/// A call that failed before `Ready`: worth retrying, or a refusal.
fn failed_before_ready(status: &Status) -> Ended {
    if api::note_banned(status) {
        Ended::Refused(api::readable(status))
    } else if status.code() == Code::Unauthenticated {
        Ended::SessionGone
    } else if api::is_transient(status) {
        Ended::BeforeReady(api::readable(status))
    } else {
        Ended::Refused(api::readable(status))
    }
}

/// How a Subscribe call ended.
enum Ended {
    /// It had been live: reconnect soon.
    AfterReady(Option<String>),
    /// It never got going: back off further.
    BeforeReady(String),
    /// The server said no for a reason retrying won't fix.
    Refused(String),
    /// The server does not know the session: join again.
    SessionGone,
}

/// Somewhere between half and all of `delay`, so that many clients dropped
/// at once do not all come back at the same instant.
fn jittered(delay: f64) -> f64 {
    delay * (0.5 + 0.5 * js_sys::Math::random())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_dead_after_two_and_a_half_quiet_intervals() {
        assert_eq!(silence_limit_ms(15_000), Some(37_500.0));
        assert_eq!(silence_limit_ms(1_000), Some(2_500.0));
        assert_eq!(silence_limit_ms(100), Some(MIN_SILENCE_MS));
        assert_eq!(silence_limit_ms(u32::MAX), Some(f64::from(u32::MAX) * 2.5));
        // An older server without heartbeats: no watchdog.
        assert_eq!(silence_limit_ms(0), None);
    }
}
