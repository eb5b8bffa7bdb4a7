//! The live feed: one Subscribe stream kept open for as long as the page has
//! a name, reconnected with exponential backoff and jitter when it drops.
//!
//! "connected" means the server has said `Ready` (the subscription is live,
//! so nothing sent from then on can be missed), not merely that a request
//! went out.

use chat_proto::{ChatEvent, Event, SubscribeRequest};
use futures_util::future::{AbortHandle, abortable};
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api;
use crate::messages::Timeline;

/// First retry delay, doubled after every failed attempt up to `MAX_DELAY_MS`
/// and back to this after a successful `Ready`.
const MIN_DELAY_MS: f64 = 500.0;
const MAX_DELAY_MS: f64 = 15_000.0;

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

impl Connection {
    pub fn new() -> Self {
        Self {
            state: RwSignal::new(ConnState::Connecting),
            detail: RwSignal::new(None),
            refused: RwSignal::new(None),
        }
    }

    /// Subscribes as `name` until the returned handle is aborted.
    pub fn start(self, name: String, timeline: Timeline) -> AbortHandle {
        self.state.set(ConnState::Connecting);
        self.detail.set(None);
        self.refused.set(None);
        let (task, handle) = abortable(self.run(name, timeline));
        spawn_local(async move {
            // Aborted means the name changed or the page is going away.
            let _ = task.await;
        });
        handle
    }

    async fn run(self, name: String, timeline: Timeline) {
        let mut delay = MIN_DELAY_MS;
        loop {
            match self.subscribe_once(&name, timeline).await {
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
            }
            self.state.set(ConnState::Reconnecting);
            api::sleep_ms(jittered(delay)).await;
            delay = (delay * 2.0).min(MAX_DELAY_MS);
        }
    }

    /// One Subscribe call, read until it ends.
    async fn subscribe_once(self, name: &str, timeline: Timeline) -> Ended {
        let request = SubscribeRequest {
            username: name.to_owned(),
        };
        let mut stream = match api::client().subscribe(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if api::is_transient(&status) => {
                return Ended::BeforeReady(api::readable(&status));
            }
            Err(status) => return Ended::Refused(api::readable(&status)),
        };
        let mut ready = false;
        loop {
            match stream.message().await {
                Ok(Some(ChatEvent {
                    event: Some(Event::Ready(_)),
                })) => {
                    ready = true;
                    self.state.set(ConnState::Connected);
                    self.detail.set(None);
                    self.refused.set(None);
                }
                Ok(Some(ChatEvent {
                    event: Some(Event::Message(message)),
                })) => {
                    timeline.receive(message);
                }
                // An event kind newer than this page: nothing to show.
                Ok(Some(ChatEvent { event: None })) => {}
                Ok(None) => {
                    let reason = "the server closed the stream".to_owned();
                    return if ready {
                        Ended::AfterReady(Some(reason))
                    } else {
                        Ended::BeforeReady(reason)
                    };
                }
                Err(status) if ready => return Ended::AfterReady(Some(api::readable(&status))),
                Err(status) if api::is_transient(&status) => {
                    return Ended::BeforeReady(api::readable(&status));
                }
                Err(status) => return Ended::Refused(api::readable(&status)),
            }
        }
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
}

/// Somewhere between half and all of `delay`, so that many clients dropped
/// at once do not all come back at the same instant.
fn jittered(delay: f64) -> f64 {
    delay * (0.5 + 0.5 * js_sys::Math::random())
}
