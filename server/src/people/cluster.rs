//! Presence and typing across replicas, on plain NATS subjects (never
//! stored): each replica tells the others who has a stream on it, room by
//! room, and who is typing.
//!
//! On `chat.people.<room>` a replica says when someone's first stream on it
//! opens (`here`) and their last one closes (`gone`), when they type or stop
//! (`typing`, `idle`), and every [`HEARTBEAT`] everyone it has there
//! (`all`). The others keep what it said for
//! [`super::presence::ELSEWHERE_FOR`]: a replica killed outright stops
//! saying anything, and its people leave everywhere else soon after. A
//! replica that starts asks the others (`hello` on `chat.people._`) to say
//! at once who is where.
//!
//! Names are claimed cluster-wide in a JetStream KV bucket
//! ([`SharedClaims`]).

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::claims::{ClaimError, Claims, Session};
use super::names::NameKey;
use super::presence::Local;
use crate::hub::{Hub, Room};

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

/// The KV bucket that holds every claimed name in the cluster.
pub const CLAIMS_BUCKET: &str = "chat_claims";
/// How long a claim lasts in the bucket unless its replica says it again:
/// a killed replica's names are free this long after their grace ends.
pub const CLAIM_TTL: Duration = Duration::from_secs(30);
/// How long a lookup in the bucket may take before this replica decides
/// alone.
const KV_WAIT: Duration = Duration::from_secs(2);
/// How long a starting replica waits for the bucket.
const OPEN_PATIENCE: Duration = Duration::from_secs(60);
/// How often a replica says again every name it holds.
const CLAIM_REFRESH: Duration = Duration::from_secs(10);

/// Names claimed anywhere in the cluster, in a JetStream KV bucket: a name
/// is created there if absent (`create` fails if another replica has it),
/// and each session token points at its name, so a session made on one
/// replica is good on every other.
#[derive(Clone)]
pub struct SharedClaims {
    client: Client,
    kv: async_nats::jetstream::kv::Store,
    local: Arc<Claims>,
}

impl std::fmt::Debug for SharedClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedClaims")
    }
}

/// Why the bucket could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the cluster's name registry is unavailable: {0}")]
pub struct Unreachable(String);

impl SharedClaims {
    /// Opens (or creates) the bucket and keeps this replica's held names
    /// in it for as long as the process runs.
    pub async fn open(
        client: Client,
        replicas: usize,
        local: Arc<Claims>,
    ) -> Result<Self, Unreachable> {
        let js = async_nats::jetstream::new(client.clone());
        let config = async_nats::jetstream::kv::Config {
            bucket: CLAIMS_BUCKET.to_owned(),
            description: "chat: claimed names and their session tokens".to_owned(),
            history: 1,
            max_age: CLAIM_TTL,
            num_replicas: replicas,
            ..Default::default()
        };
        // A cluster that is starting answers only after a while.
        let deadline = Instant::now() + OPEN_PATIENCE;
        let kv = loop {
            match js.create_or_update_key_value(config.clone()).await {
                Ok(kv) => break kv,
                Err(error) if Instant::now() < deadline => {
                    warn!(%error, "the name registry is not ready yet; waiting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => return Err(Unreachable(error.to_string())),
            }
        };
        let shared = Self { client, kv, local };
        tokio::spawn(shared.clone().refresh());
        Ok(shared)
    }

    /// Claims `session`'s name (just claimed on this replica) for the
    /// cluster; `Taken` with the holder's name if another replica has it.
    pub async fn claim(&self, session: &Session) -> Result<(), ClaimError> {
        let key = name_key(&NameKey::of(&session.name));
        if self.client.connection_state() != async_nats::connection::State::Connected {
            // The refresh writes it once NATS is back.
            return Ok(());
        }
        let created = tokio::time::timeout(KV_WAIT, self.kv.create(&key, said_claim(session)))
            .await
            .unwrap_or_else(|_| {
                Err(async_nats::jetstream::kv::CreateError::new(
                    async_nats::jetstream::kv::CreateErrorKind::Publish,
                ))
            });
        match created {
            Ok(_) => {}
            Err(error)
                if error.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists =>
            {
                let holder = self.holder(&key).await;
                match holder {
                    Some(held) if held.token == session.token => {}
                    Some(held) => {
                        self.local.release(session);
                        return Err(ClaimError::Taken(held.name));
                    }
                    None => {
                        // Expired in between: try once more.
                        let again = tokio::time::timeout(
                            KV_WAIT,
                            self.kv.create(&key, said_claim(session)),
                        )
                        .await;
                        if !matches!(again, Ok(Ok(_))) {
                            self.local.release(session);
                            return Err(ClaimError::Taken(session.name.clone()));
                        }
                    }
                }
            }
            Err(error) => {
                // The cluster cannot say: keep the claim here; the refresh
                // writes it once the bucket answers again.
                warn!(%error, "cannot claim the name in the cluster");
            }
        }
        let _ = tokio::time::timeout(
            KV_WAIT,
            self.kv
                .put(token_key(&session.token), session.name.clone().into()),
        )
        .await;
        Ok(())
    }

    /// The session `token` stands for, made on another replica; taken on
    /// here too.
    pub async fn session(&self, token: &str) -> Option<Session> {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let name = self.get(&token_key(token)).await?;
        let name = std::str::from_utf8(&name).ok()?;
        let held = self.holder(&name_key(&NameKey::of(name))).await?;
        (held.token == token).then(|| self.local.adopt(&held.name, token))
    }

    /// Who holds `name` in the cluster, if anyone.
    pub async fn holder_of(&self, name: &str) -> Option<String> {
        self.holder(&name_key(&NameKey::of(name)))
            .await
            .map(|held| held.name)
    }

    async fn holder(&self, key: &str) -> Option<Session> {
        let value = self.get(key).await?;
        let (token, name) = std::str::from_utf8(&value).ok()?.split_once('\n')?;
        Some(Session {
            name: name.to_owned(),
            token: token.to_owned(),
        })
    }

    /// The value of `key`; `None` also when NATS cannot answer now (then
    /// this replica decides alone, as it would without a cluster).
    async fn get(&self, key: &str) -> Option<Bytes> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return None;
        }
        tokio::time::timeout(KV_WAIT, self.kv.get(key))
            .await
            .ok()?
            .ok()?
    }

    /// Says every name held here again, so it does not expire.
    async fn refresh(self) {
        let mut every = tokio::time::interval(CLAIM_REFRESH);
        loop {
            every.tick().await;
            for (key, session) in self.local.held() {
                let puts = [
                    (name_key(&key), said_claim(&session)),
                    (token_key(&session.token), session.name.clone().into()),
                ];
                for (key, value) in puts {
                    match tokio::time::timeout(KV_WAIT, self.kv.put(&key, value)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => debug!(%error, "cannot refresh a claim"),
                        Err(_) => debug!("cannot refresh a claim: no answer in time"),
                    }
                }
            }
        }
    }
}

/// A name's key in the bucket: its [`NameKey`] in hex (keys are ASCII).
fn name_key(key: &NameKey) -> String {
    let mut hex = String::from("name.");
    for byte in key.as_str().bytes() {
        hex.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(byte & 15), 16).unwrap_or('0'));
    }
    hex
}

fn token_key(token: &str) -> String {
    format!("token.{token}")
}

fn said_claim(session: &Session) -> Bytes {
    Bytes::from(format!("{}\n{}", session.token, session.name))
}
