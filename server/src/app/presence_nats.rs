//! Presence and typing across replicas, on plain NATS subjects (never
//! stored): each replica tells the others who has a stream on it, room by
//! room, and who is typing.
//!
//! On `chat.people.<room>` a replica says when someone's first stream on it
//! opens (`here`) and their last one closes (`gone`), when they type or stop
//! (`typing`, `idle`), and every [`HEARTBEAT`] everyone it has there
//! (`all`). The others keep what it said for
//! [`crate::people::presence::ELSEWHERE_FOR`]: a replica killed outright stops
//! saying anything, and its people leave everywhere else soon after. A
//! replica that starts asks the others (`hello` on `chat.people._`) to say
//! at once who is where.
//!
//! It lives with the code that opens cluster mode, above both the hub and
//! `people`: it hooks every room the hub opens to the room's presence.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::hub::{Hub, Room};
use crate::people::presence::Local;

/// How often a replica says everyone it has, room by room.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
const PREFIX: &str = "chat.people.";
/// Where a starting replica says hello (not a room: room names start with
/// a letter or digit).
const HELLO: &str = "chat.people._";

/// Starts telling the other replicas about this one's people, and listening
/// to theirs, for as long as the process runs.
pub async fn start(client: Client, hub: Hub, replica: u64) -> Result<(), async_nats::Error> {
    let incoming = client.subscribe(format!("{PREFIX}*")).await?;
    let (outbox, queued) = mpsc::unbounded_channel::<(String, Bytes)>();
    {
        let outbox = outbox.clone();
        hub.on_room(Box::new(move |room: &Room| {
            let subject = format!("{PREFIX}{}", room.name());
            let outbox = outbox.clone();
            room.presence().announce_to(Box::new(move |local| {
                let _ = outbox.send((subject.clone(), said(replica, &local)));
            }));
        }));
    }
    tokio::spawn(send(client.clone(), queued));
    tokio::spawn(listen(incoming, hub.clone(), replica, outbox.clone()));
    tokio::spawn(heartbeat(hub, replica, outbox.clone()));
    let _ = outbox.send((HELLO.to_owned(), format!("{replica} hello").into()));
    Ok(())
}

/// Publishes in order what the rooms announce.
async fn send(client: Client, mut queued: mpsc::UnboundedReceiver<(String, Bytes)>) {
    while let Some((subject, payload)) = queued.recv().await {
        if let Err(error) = client.publish(subject, payload).await {
            debug!(%error, "could not tell the other replicas");
        }
    }
}

/// Says everyone this replica has, room by room, every [`HEARTBEAT`].
async fn heartbeat(hub: Hub, replica: u64, outbox: mpsc::UnboundedSender<(String, Bytes)>) {
    let mut every = tokio::time::interval(HEARTBEAT);
    while !hub.is_shut_down() {
        every.tick().await;
        say_all(&hub, replica, &outbox);
    }
}

fn say_all(hub: &Hub, replica: u64, outbox: &mpsc::UnboundedSender<(String, Bytes)>) {
    for room in hub.rooms() {
        let names = room.presence().here_locally();
        if !names.is_empty() {
            let payload = format!("{replica} all\n{}", names.join("\n"));
            let _ = outbox.send((format!("{PREFIX}{}", room.name()), payload.into()));
        }
    }
}

/// Applies what the other replicas say.
async fn listen(
    mut incoming: async_nats::Subscriber,
    hub: Hub,
    replica: u64,
    outbox: mpsc::UnboundedSender<(String, Bytes)>,
) {
    while let Some(message) = incoming.next().await {
        let Some(heard) = Heard::parse(&message.payload) else {
            warn!(subject = %message.subject, "a presence message that is not ours; ignored");
            continue;
        };
        if heard.replica == replica {
            continue;
        }
        if message.subject.as_str() == HELLO {
            say_all(&hub, replica, &outbox);
            continue;
        }
        let Some(name) = message.subject.as_str().strip_prefix(PREFIX) else {
            continue;
        };
        let room = match hub.find_room(name).await {
            Ok(Some(room)) => room,
            Ok(None) => continue,
            Err(error) => {
                debug!(%error, room = name, "cannot look the room up");
                continue;
            }
        };
        heard.apply(&room);
    }
}

/// One replica's word about people in a room.
struct Heard<'a> {
    replica: u64,
    kind: &'a str,
    names: Vec<&'a str>,
}

impl<'a> Heard<'a> {
    fn parse(payload: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut lines = text.split('\n');
        let (replica, kind) = lines.next()?.split_once(' ')?;
        Some(Self {
            replica: replica.parse().ok()?,
            kind,
            names: lines.filter(|l| !l.is_empty()).collect(),
        })
    }

    fn apply(&self, room: &Arc<Room>) {
        let presence = room.presence();
        let now = Instant::now();
        match self.kind {
            "here" => self
                .names
                .iter()
                .for_each(|n| presence.here_elsewhere(self.replica, n, now)),
            "gone" => self
                .names
                .iter()
                .for_each(|n| presence.gone_elsewhere(self.replica, n)),
            "typing" | "idle" => self
                .names
                .iter()
                .for_each(|n| presence.typing_elsewhere(n, self.kind == "typing")),
            "all" => {
                let names: Vec<String> = self.names.iter().map(|n| (*n).to_owned()).collect();
                presence.all_elsewhere(self.replica, &names, now);
            }
            _ => {}
        }
    }
}

/// The wire form of a local change.
fn said(replica: u64, local: &Local) -> Bytes {
    let (kind, name) = match local {
        Local::Here(name) => ("here", name),
        Local::Gone(name) => ("gone", name),
        Local::Typing(name, true) => ("typing", name),
        Local::Typing(name, false) => ("idle", name),
    };
    Bytes::from(format!("{replica} {kind}\n{name}"))
}
