//! The cluster soak (`--soak SECONDS`): three chat-server replicas on a
//! three-node NATS cluster, and for the whole run people of both kinds
//! coming and going on every replica (20 to 40 at once, each for 1 to 5 s):
//! gRPC-Web clients (Join a fresh name or take an earlier one back with its
//! token, Subscribe with the token, Send with a nonce) and paper
//! `ChatStream` clients (their first message names them). Meanwhile
//! contention trials claim one name on several replicas at once. Then every
//! process is stopped with SIGTERM and started again on the same NATS
//! stores, and every replica replays the room.
//!
//! Everything a client saw is kept (24 bytes a delivery) and checked after
//! the run, conservatively, against what the protocol promises:
//!
//! - **Deliveries.** A client is live from its `Ready` (gRPC-Web) or from
//!   the first message it receives (paper). It must receive, once and in
//!   id order, every message that was *acknowledged* (a `Send` answered,
//!   or a paper message seen by any Subscribe client) with an id above the
//!   newest before it was live, *issued* after it was live and acknowledged
//!   before it decided to leave; a paper client never gets its own. A
//!   leaving client first reads up to the newest id stored when it decided
//!   to leave (each replica's ticker keeps ids coming), so a delivery that
//!   was merely slow is never counted lost; if its stream ends with an
//!   error meanwhile, only ids below the last it got are owed.
//! - **Storage.** Every id is one message, stored once (JetStream's
//!   sequence: no holes), the one its `Send` was answered; every paper
//!   message sent on a stream the server never ended with an error was
//!   relayed or is in a replay.
//! - **Names.** Of concurrent claims of one free name on different
//!   replicas (`Join`s, or a `Join` and a paper client's first message) at
//!   most one is accepted (and a later `Join` is refused), and while a
//!   `Join`'s holder is connected a paper client naming it on another
//!   replica is refused (never relayed) and a `Send` without the session
//!   under that name is refused. A paper client's claim counts as accepted
//!   once its message is relayed to a Subscribe client.
//! - **Restart.** After the full restart every replica replays ids 1 to
//!   the newest with no hole, duplicate or disagreement, and a message sent
//!   then reaches every replica's subscriber.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, bail};
use chat_proto::{ChatEvent, ChatMessage, Event, JoinReply, JoinRequest, SubscribeRequest};
use chat_testkit::nats::NatsCluster;
use futures_util::future::join_all;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use crate::clients;
use crate::cluster;
use crate::fanout::{Ended, since};
use crate::report::Row;
use crate::rng::Rng;
use crate::server::ServerProcess;
use crate::tally::{now_us, ranges};

const REPLICAS: usize = 3;
/// People present at once: a new target in this range every second.
const PRESENT: (u64, u64) = (20, 40);
/// How long each person stays, in ms.
const LIFE_MS: (u64, u64) = (1_000, 5_000);
/// Messages per second each person sends: with ~30 present about 300
/// messages and 10,000 deliveries a second, a moderate load for three
/// replicas and three NATS nodes sharing two cores.
const RATE: f64 = 10.0;
/// Each replica's ticker sends this often, so a leaving paper client (which
/// never gets its own messages) always has a newer id coming to read up to.
const TICK_EVERY: Duration = Duration::from_millis(300);
/// Pause between contention trials.
const TRIAL_PAUSE: Duration = Duration::from_millis(300);
/// One new gRPC-Web person in this many takes back a name that an earlier
/// one left, with its token (a reload).
const REJOIN_ONE_IN: u64 = 4;
/// How long a leaving client may take to read up to its target (and a
/// paper client to see its own last message relayed).
const DRAIN_PATIENCE: Duration = Duration::from_secs(15);
/// How long any call may take to be answered.
const CALL_PATIENCE: Duration = Duration::from_secs(30);
/// How long a trial waits for a claim to be refused or relayed.
const TRIAL_PATIENCE: Duration = Duration::from_secs(10);
/// How long the replay after the restart may take.
const REPLAY_PATIENCE: Duration = Duration::from_secs(120);
/// The restarted replicas' `--history` (the most it may be), so that a
/// Subscribe from `after_id` 0 replays the whole room; a longer room is
/// replayed from `after_id` 1 (all but the warm-up message).
const REPLAY_HISTORY: u64 = 100_000;
/// The room's stream keeps more than any soak sends.
const RETAIN: &str = "10000000";
const SEED: u64 = 0x5eed_cafe_f00d_1234;
/// Problems of one kind listed one by one in the report, at most.
const LISTED: usize = 30;
/// Client numbers: the after-restart message is client 0's; tickers and
/// watchers have one per replica; people count from `FIRST_PERSON`.
const AFTER_RESTART: Key = Key { client: 0, seq: 0 };
const FIRST_TICKER: u32 = 1;
const FIRST_WATCHER: u32 = 4;
const FIRST_PERSON: u32 = 10;

/// What the soak is started with.
pub struct Setup<'a> {
    pub server_bin: &'a Path,
    pub nats_server: &'a Path,
    pub buffer: Option<u32>,
    pub duration: Duration,
}

/// A soak message: `soak <client> <seq>` in its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    client: u32,
    seq: u32,
}

/// Any other message (the warm-up, a trial's).
const UNKNOWN: Key = Key {
    client: u32::MAX,
    seq: u32::MAX,
};

fn text(key: Key) -> String {
    format!("soak {} {}", key.client, key.seq)
}

fn key_of(text: &str) -> Key {
    let mut parts = text.strip_prefix("soak ").unwrap_or("").split(' ');
    match (
        parts.next().and_then(|c| c.parse().ok()),
        parts.next().and_then(|s| s.parse().ok()),
        parts.next(),
    ) {
        (Some(client), Some(seq), None) => Key { client, seq },
        _ => UNKNOWN,
    }
}

/// What the replicas must agree on for an id: who sent what.
fn fingerprint(message: &ChatMessage) -> u64 {
    let mut hasher = DefaultHasher::new();
    (&message.username, &message.message).hash(&mut hasher);
    hasher.finish()
}

/// One message as a client received it.
#[derive(Debug, Clone, Copy)]
struct Receipt {
    id: u64,
    key: Key,
    at_us: u64,
}

/// State every client shares while the soak runs.
struct Shared {
    urls: Vec<String>,
    /// The newest id known stored: a `Send`'s reply, or seen by anyone.
    newest: AtomicU64,
    /// Paper clients' messages as the watchers see them: per client, how
    /// many of its first messages have been seen (it waits on this).
    paper_seen: Mutex<HashMap<u32, watch::Sender<u32>>>,
    /// Names (and tokens) that gRPC-Web people left, to be taken back.
    left_names: Mutex<Vec<(String, String)>>,
    present: AtomicUsize,
    peak: AtomicUsize,
}

impl Shared {
    fn stored(&self, id: u64) {
        self.newest.fetch_max(id, Ordering::SeqCst);
    }

    fn newest(&self) -> u64 {
        self.newest.load(Ordering::SeqCst)
    }

    /// A watcher saw `key`: wakes its paper sender if it waits for it.
    fn saw(&self, key: Key) {
        if let Some(seen) = lock(&self.paper_seen).get(&key.client) {
            seen.send_if_modified(|n| {
                let more = *n <= key.seq;
                if more {
                    *n = key.seq + 1;
                }
                more
            });
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A call that failed: its status code (none if it timed out) and how.
#[derive(Debug, Clone)]
struct Failure {
    code: Option<Code>,
    ended: Ended,
}

/// `call`, answered within [`CALL_PATIENCE`].
async fn within<T>(call: impl Future<Output = Result<T, Status>>) -> Result<T, Failure> {
    match tokio::time::timeout(CALL_PATIENCE, call).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(status)) => Err(Failure {
            code: Some(status.code()),
            ended: Ended::with_status(&status),
        }),
        Err(_) => Err(Failure {
            code: None,
            ended: Ended::other(&format!("no answer in {CALL_PATIENCE:?}")),
        }),
    }
}

/// A connection that could not be made, as a failure.
fn unreachable(error: &anyhow::Error) -> Failure {
    Failure {
        code: None,
        ended: Ended::other(&format!("cannot connect: {error:#}")),
    }
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A gRPC-Web person (Join, Subscribe, Send).
    Web,
    /// A paper `ChatStream` client.
    Paper,
    /// A gRPC-Web subscriber present the whole soak, one per replica.
    Watcher,
    /// Sends every [`TICK_EVERY`] on its replica, the whole soak.
    Ticker,
}

/// One message a client sent: when, and (`Send`) its reply's id and time.
#[derive(Debug, Clone, Copy)]
struct Sent {
    issued_us: u64,
    ack: Option<(u64, u64)>,
}

/// What one client did and saw.
struct ClientLog {
    id: u32,
    kind: Kind,
    replica: usize,
    name: String,
    /// A Join that took back an earlier person's name with its token.
    rejoin: bool,
    /// gRPC-Web people: their Join's outcome.
    join: Option<Result<(), Failure>>,
    /// Why it never got a stream, if so.
    failed_to_start: Option<Failure>,
    sent: Vec<Sent>,
    send_failures: u64,
    first_send_failure: Option<(usize, Ended)>,
    /// Paper: the watchers saw its last message before it left.
    confirmed: bool,
    /// When it decided to leave, and the newest id stored then.
    left: Option<(u64, u64)>,
    reading: Option<Reading>,
}

impl ClientLog {
    fn new(id: u32, kind: Kind, replica: usize, name: String) -> Self {
        Self {
            id,
            kind,
            replica,
            name,
            rejoin: false,
            join: None,
            failed_to_start: None,
            sent: Vec::new(),
            send_failures: 0,
            first_send_failure: None,
            confirmed: false,
            left: None,
            reading: None,
        }
    }

    fn send_failed(&mut self, seq: usize, ended: Ended) {
        self.send_failures += 1;
        if self.first_send_failure.is_none() {
            self.first_send_failure = Some((seq, ended));
        }
    }

    fn describe(&self) -> String {
        let kind = match self.kind {
            Kind::Web => "gRPC-Web",
            Kind::Paper => "paper",
            Kind::Watcher => "watcher",
            Kind::Ticker => "ticker",
        };
        format!(
            "client {} ({kind} {:?} on replica {})",
            self.id, self.name, self.replica
        )
    }
}

/// A stream a client reads.
enum Source {
    Web(Streaming<ChatEvent>),
    Paper(Streaming<ChatMessage>),
}

impl Source {
    /// The next message (cancel safe: tonic's `message` is); `Gap`s go to
    /// `gaps`.
    async fn next(&mut self, gaps: &mut Vec<(u64, u64)>) -> Result<Option<ChatMessage>, Status> {
        match self {
            Source::Paper(stream) => stream.message().await,
            Source::Web(stream) => loop {
                match stream.message().await? {
                    Some(ChatEvent {
                        event: Some(Event::Message(m)),
                    }) => return Ok(Some(m)),
                    Some(ChatEvent {
                        event: Some(Event::Gap(gap)),
                    }) => gaps.push((gap.after_id, gap.next_id)),
                    Some(_) => {}
                    None => return Ok(None),
                }
            },
        }
    }
}

/// What a client read, in order, and how its stream ended.
#[derive(Default)]
struct Reading {
    /// `(after_id, from_us)`: the newest id before it was live, and when
    /// it was (gRPC-Web: its `Ready`; paper: the first message it got).
    live: Option<(u64, u64)>,
    receipts: Vec<Receipt>,
    gaps: Vec<(u64, u64)>,
    /// The server ended the stream: how and when.
    ended: Option<Ended>,
    /// It read up to the target it was given when told to stop.
    drained: bool,
    /// Told to stop, its target did not come within [`DRAIN_PATIENCE`].
    stalled: Option<Ended>,
}

impl Reading {
    fn newest(&self) -> u64 {
        self.receipts.iter().map(|r| r.id).max().unwrap_or(0)
    }
}

/// Reads `source` until told to stop (an id to read up to) and that id has
/// come, or the stream ends.
async fn read(
    mut source: Source,
    mut reading: Reading,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<Option<u64>>,
    watcher: bool,
) -> Reading {
    let mut target: Option<u64> = None;
    // No deadline until told to stop.
    let mut patience = Instant::now() + Duration::from_secs(365 * 86_400);
    let mut newest = 0;
    loop {
        if target.is_some_and(|t| newest >= t) {
            reading.drained = true;
            break;
        }
        let next = tokio::select! {
            biased;
            changed = stop.changed(), if target.is_none() => {
                if changed.is_err() {
                    break;
                }
                target = *stop.borrow_and_update();
                patience = Instant::now() + DRAIN_PATIENCE;
                continue;
            }
            () = tokio::time::sleep_until(patience) => {
                reading.stalled = Some(Ended::other(&format!(
                    "still open, but id {} did not come within {DRAIN_PATIENCE:?}",
                    target.unwrap_or(0)
                )));
                break;
            }
            next = source.next(&mut reading.gaps) => next,
        };
        match next {
            Ok(Some(message)) => {
                shared.stored(message.id);
                let at_us = now_us();
                let key = key_of(&message.message);
                if reading.live.is_none() {
                    reading.live = Some((message.id, at_us));
                }
                if watcher {
                    shared.saw(key);
                }
                newest = newest.max(message.id);
                reading.receipts.push(Receipt {
                    id: message.id,
                    key,
                    at_us,
                });
            }
            Ok(None) => {
                reading.ended = Some(Ended::other("closed by the server without a status"));
                break;
            }
            Err(status) => {
                reading.ended = Some(Ended::with_status(&status));
                break;
            }
        }
    }
    reading
}

/// A Subscribe stream, live once its `Ready` came: the stream and the
/// newest id then.
async fn subscribe(
    client: &mut clients::Web,
    request: tonic::Request<SubscribeRequest>,
) -> Result<(Streaming<ChatEvent>, u64), Failure> {
    let mut events = within(client.subscribe(request)).await?.into_inner();
    match within(events.message()).await? {
        Some(ChatEvent {
            event: Some(Event::Ready(ready)),
        }) => Ok((events, ready.last_id)),
        other => Err(Failure {
            code: None,
            ended: Ended::other(&format!("expected Ready first, got {other:?}")),
        }),
    }
}

/// A gRPC-Web person: Join (or take `rejoin`'s name back with its token),
/// Subscribe, Send for `life`, then read up to the newest id and go.
async fn web_person(
    shared: Arc<Shared>,
    id: u32,
    replica: usize,
    life: Duration,
    rejoin: Option<(String, String)>,
) -> ClientLog {
    let name = rejoin
        .as_ref()
        .map_or_else(|| format!("w{id}"), |(name, _)| name.clone());
    let mut log = ClientLog::new(id, Kind::Web, replica, name);
    log.rejoin = rejoin.is_some();
    let mut client = match clients::web(&shared.urls[replica]) {
        Ok(client) => client,
        Err(error) => {
            log.failed_to_start = Some(unreachable(&error));
            return log;
        }
    };
    let asked = JoinRequest {
        username: log.name.clone(),
        token: rejoin.map(|(_, token)| token).unwrap_or_default(),
        ..Default::default()
    };
    let token = match within(client.join(asked)).await {
        Ok(reply) => {
            log.join = Some(Ok(()));
            reply.into_inner().token
        }
        Err(failure) => {
            log.join = Some(Err(failure));
            return log;
        }
    };
    let request = with_token(
        SubscribeRequest {
            username: log.name.clone(),
            ..Default::default()
        },
        &token,
    );
    let (events, newest) = match subscribe(&mut client, request).await {
        Ok(live) => live,
        Err(failure) => {
            log.failed_to_start = Some(failure);
            return log;
        }
    };
    let (stop, stopped) = watch::channel(None);
    let reading = Reading {
        live: Some((newest, now_us())),
        ..Reading::default()
    };
    let reader = tokio::spawn(read(
        Source::Web(events),
        reading,
        Arc::clone(&shared),
        stopped,
        false,
    ));
    let until = Instant::now() + life;
    let mut every = rate();
    let mut seq = 0;
    while Instant::now() < until && !reader.is_finished() {
        every.tick().await;
        let key = Key {
            client: id,
            seq: u32::try_from(seq).unwrap_or(u32::MAX),
        };
        let message = ChatMessage {
            username: log.name.clone(),
            message: text(key),
            nonce: format!("{id}-{seq}"),
            ..Default::default()
        };
        let issued_us = now_us();
        let ack = match within(client.send(with_token(message, &token))).await {
            Ok(reply) => {
                let stored = reply.into_inner().id;
                shared.stored(stored);
                Some((stored, now_us()))
            }
            Err(failure) => {
                log.send_failed(seq, failure.ended);
                None
            }
        };
        log.sent.push(Sent { issued_us, ack });
        seq += 1;
    }
    let left = (now_us(), shared.newest());
    log.left = Some(left);
    let _ = stop.send(Some(left.1));
    log.reading = reader.await.ok();
    lock(&shared.left_names).push((log.name.clone(), token));
    log
}

/// A paper client: its first message names it; it sends for `life`, then
/// waits until its last message is relayed and reads up to the newest id.
async fn paper_person(shared: Arc<Shared>, id: u32, replica: usize, life: Duration) -> ClientLog {
    let mut log = ClientLog::new(id, Kind::Paper, replica, format!("p{id}"));
    let connected = tokio::time::timeout(CALL_PATIENCE, clients::native(&shared.urls[replica]))
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no connection in {CALL_PATIENCE:?}")));
    let mut client = match connected {
        Ok(client) => client,
        Err(error) => {
            log.failed_to_start = Some(unreachable(&error));
            return log;
        }
    };
    let (outbox, outgoing) = mpsc::channel::<ChatMessage>(64);
    let incoming = match within(client.chat_stream(ReceiverStream::new(outgoing))).await {
        Ok(response) => response.into_inner(),
        Err(failure) => {
            log.failed_to_start = Some(failure);
            return log;
        }
    };
    let (seen, mut relayed) = watch::channel(0u32);
    lock(&shared.paper_seen).insert(id, seen);
    let (stop, stopped) = watch::channel(None);
    let reader = tokio::spawn(read(
        Source::Paper(incoming),
        Reading::default(),
        Arc::clone(&shared),
        stopped,
        false,
    ));
    let until = Instant::now() + life;
    let mut every = rate();
    let mut seq = 0;
    while Instant::now() < until && !reader.is_finished() {
        every.tick().await;
        let key = Key {
            client: id,
            seq: u32::try_from(seq).unwrap_or(u32::MAX),
        };
        let message = ChatMessage {
            username: log.name.clone(),
            message: text(key),
            ..Default::default()
        };
        let issued_us = now_us();
        if outbox.send(message).await.is_err() {
            // The call is over; its receiving side says why.
            log.send_failed(seq, Ended::other("outbox closed: the stream had ended"));
            break;
        }
        log.sent.push(Sent {
            issued_us,
            ack: None,
        });
        seq += 1;
    }
    let left = (now_us(), shared.newest());
    log.left = Some(left);
    let _ = stop.send(Some(left.1));
    let sent = u32::try_from(log.sent.len()).unwrap_or(u32::MAX);
    log.confirmed = tokio::time::timeout(DRAIN_PATIENCE, relayed.wait_for(|&n| n >= sent))
        .await
        .is_ok_and(|r| r.is_ok());
    log.reading = reader.await.ok();
    lock(&shared.paper_seen).remove(&id);
    log
}

/// Sends every [`TICK_EVERY`] on its replica until told to stop (no name
/// of its own: a Send without a session).
async fn ticker(
    shared: Arc<Shared>,
    id: u32,
    replica: usize,
    mut stop: watch::Receiver<bool>,
) -> ClientLog {
    let mut log = ClientLog::new(id, Kind::Ticker, replica, format!("ticker{replica}"));
    let mut client = match clients::web(&shared.urls[replica]) {
        Ok(client) => client,
        Err(error) => {
            log.failed_to_start = Some(unreachable(&error));
            return log;
        }
    };
    let mut every = tokio::time::interval(TICK_EVERY);
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = stop.wait_for(|&stop| stop) => break,
            _ = every.tick() => {}
        }
        let key = Key {
            client: id,
            seq: u32::try_from(seq).unwrap_or(u32::MAX),
        };
        let message = ChatMessage {
            username: log.name.clone(),
            message: text(key),
            nonce: format!("{id}-{seq}"),
            ..Default::default()
        };
        let issued_us = now_us();
        let ack = match within(client.send(message)).await {
            Ok(reply) => {
                let stored = reply.into_inner().id;
                shared.stored(stored);
                Some((stored, now_us()))
            }
            Err(failure) => {
                log.send_failed(seq, failure.ended);
                None
            }
        };
        log.sent.push(Sent { issued_us, ack });
        seq += 1;
    }
    log
}

/// A watcher: a Subscribe without a session on `replica`, live before the
/// soak starts and read to the end.
struct Watcher {
    log: ClientLog,
    _client: clients::Web,
    stop: watch::Sender<Option<u64>>,
    reader: JoinHandle<Reading>,
}

async fn watcher(shared: &Arc<Shared>, replica: usize) -> anyhow::Result<Watcher> {
    let id = FIRST_WATCHER + u32::try_from(replica)?;
    let log = ClientLog::new(id, Kind::Watcher, replica, format!("watcher{replica}"));
    let mut client = clients::web(&shared.urls[replica])?;
    let request = tonic::Request::new(SubscribeRequest {
        username: log.name.clone(),
        ..Default::default()
    });
    let (events, newest) = subscribe(&mut client, request)
        .await
        .map_err(|f| anyhow::anyhow!("watcher on replica {replica}: {}", f.ended.how))?;
    let (stop, stopped) = watch::channel(None);
    let reading = Reading {
        live: Some((newest, now_us())),
        ..Reading::default()
    };
    let reader = tokio::spawn(read(
        Source::Web(events),
        reading,
        Arc::clone(shared),
        stopped,
        true,
    ));
    Ok(Watcher {
        log,
        _client: client,
        stop,
        reader,
    })
}

fn rate() -> tokio::time::Interval {
    let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / RATE));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every
}

/// People coming and going for `duration`, round-robin over the replicas;
/// returns once every one has left.
async fn churn(shared: &Arc<Shared>, duration: Duration) -> anyhow::Result<Vec<ClientLog>> {
    let mut rng = Rng::seeded(SEED);
    let mut people = JoinSet::new();
    let mut logs = Vec::new();
    let end = Instant::now() + duration;
    let mut every = tokio::time::interval(Duration::from_millis(100));
    let mut next_id = FIRST_PERSON;
    let mut target = PRESENT.0;
    let mut retarget = Instant::now();
    while Instant::now() < end {
        every.tick().await;
        if Instant::now() >= retarget {
            target = rng.range(PRESENT.0, PRESENT.1);
            retarget += Duration::from_secs(1);
        }
        while (shared.present.load(Ordering::SeqCst) as u64) < target {
            let present = shared.present.fetch_add(1, Ordering::SeqCst) + 1;
            shared.peak.fetch_max(present, Ordering::SeqCst);
            let id = next_id;
            next_id += 1;
            let replica = (id as usize) % REPLICAS;
            let life = Duration::from_millis(rng.range(LIFE_MS.0, LIFE_MS.1));
            let web = rng.one_in(2);
            let rejoin = if web && rng.one_in(REJOIN_ONE_IN) {
                let mut left = lock(&shared.left_names);
                let n = left.len() as u64;
                (n > 0).then(|| left.swap_remove(rng.range(0, n - 1) as usize))
            } else {
                None
            };
            let shared = Arc::clone(shared);
            people.spawn(async move {
                let log = if web {
                    web_person(Arc::clone(&shared), id, replica, life, rejoin).await
                } else {
                    paper_person(Arc::clone(&shared), id, replica, life).await
                };
                shared.present.fetch_sub(1, Ordering::SeqCst);
                log
            });
        }
        while let Some(done) = people.try_join_next() {
            logs.push(done.context("a soak client panicked")?);
        }
    }
    while let Some(done) = people.join_next().await {
        logs.push(done.context("a soak client panicked")?);
    }
    Ok(logs)
}

/// One contention trial: what the replicas answered.
struct Trial {
    kind: &'static str,
    name: String,
    accepted: u32,
    refused: u32,
    /// Two holders of the name at once.
    held_twice: bool,
    /// A `Send` without the session went out under the held name.
    impersonated: bool,
    /// Neither refused nor relayed in time.
    undecided: bool,
    story: String,
}

impl Trial {
    fn new(kind: &'static str, name: String) -> Self {
        Self {
            kind,
            name,
            accepted: 0,
            refused: 0,
            held_twice: false,
            impersonated: false,
            undecided: false,
            story: String::new(),
        }
    }

    fn note(&mut self, start_us: u64, what: impl std::fmt::Display) {
        let _ = write!(self.story, "{what} at {}; ", since(start_us, now_us()));
    }
}

/// Whether a refusal of a claim says what it should.
fn refusal(code: Option<Code>) -> bool {
    matches!(
        code,
        Some(Code::AlreadyExists | Code::PermissionDenied | Code::Unavailable)
    )
}

async fn join(url: &str, name: &str) -> Result<JoinReply, Failure> {
    let mut client = clients::web(url).map_err(|e| unreachable(&e))?;
    let asked = JoinRequest {
        username: name.to_owned(),
        token: String::new(),
        ..Default::default()
    };
    Ok(within(client.join(asked)).await?.into_inner())
}

/// Contention trials one after the other until told to stop.
async fn trials(shared: Arc<Shared>, start_us: u64, mut stop: watch::Receiver<bool>) -> Vec<Trial> {
    let mut done = Vec::new();
    for n in 0usize.. {
        if *stop.borrow_and_update() {
            break;
        }
        let a = n % REPLICAS;
        let trial = match n % 3 {
            0 => joins_at_once(&shared, start_us, n, a).await,
            1 => paper_against_holder(&shared, start_us, n, a).await,
            _ => paper_and_join_race(&shared, start_us, n, a).await,
        };
        done.push(trial);
        tokio::select! {
            _ = stop.wait_for(|&stop| stop) => break,
            () = tokio::time::sleep(TRIAL_PAUSE) => {}
        }
    }
    done
}

/// `Join`s of one free name on two or three replicas at once: at most one
/// is accepted; then a `Join` on another replica is refused.
async fn joins_at_once(shared: &Shared, start_us: u64, n: usize, a: usize) -> Trial {
    let name = format!("t{n}");
    let mut trial = Trial::new("joins at once", name.clone());
    let replicas: Vec<usize> = if (n / 3).is_multiple_of(2) {
        vec![a, (a + 1) % REPLICAS]
    } else {
        (0..REPLICAS).collect()
    };
    let answers = join_all(replicas.iter().map(|&r| {
        let (url, name) = (shared.urls[r].clone(), name.clone());
        async move { (r, join(&url, &name).await, now_us()) }
    }))
    .await;
    let mut winners = Vec::new();
    for (r, answer, at) in answers {
        match answer {
            Ok(_) => {
                trial.accepted += 1;
                winners.push(r);
                let _ = write!(
                    trial.story,
                    "replica {r} accepted at {}; ",
                    since(start_us, at)
                );
            }
            Err(failure) => {
                trial.refused += u32::from(refusal(failure.code));
                let _ = write!(
                    trial.story,
                    "replica {r} {}; ",
                    failure.ended.since(start_us)
                );
            }
        }
    }
    trial.held_twice = winners.len() > 1;
    if let [winner] = winners[..] {
        let other = (winner + 1) % REPLICAS;
        match join(&shared.urls[other], &name).await {
            Ok(_) => {
                trial.accepted += 1;
                trial.held_twice = true;
                trial.note(
                    start_us,
                    format!("then replica {other} accepted it too (held on {winner})"),
                );
            }
            Err(failure) => {
                trial.refused += u32::from(refusal(failure.code));
                trial.note(
                    start_us,
                    format!("then replica {other} {}", failure.ended.how),
                );
            }
        }
    }
    trial
}

/// A paper client's first message and the outcome of its claim: refused
/// (the status), or relayed (`watch` saw it), or neither in time.
enum PaperClaim {
    Refused(Failure),
    Relayed,
    Undecided(String),
}

/// A paper client's open stream: it holds its name while open.
struct PaperStream {
    _client: clients::Native,
    outbox: mpsc::Sender<ChatMessage>,
    incoming: Streaming<ChatMessage>,
    name: String,
}

impl PaperStream {
    async fn open(url: &str, name: &str) -> Result<Self, PaperClaim> {
        let mut client = match tokio::time::timeout(CALL_PATIENCE, clients::native(url)).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                return Err(PaperClaim::Undecided(format!("cannot connect: {error:#}")));
            }
            Err(_) => return Err(PaperClaim::Undecided("no connection".into())),
        };
        let (outbox, outgoing) = mpsc::channel::<ChatMessage>(1);
        let incoming = within(client.chat_stream(ReceiverStream::new(outgoing)))
            .await
            .map_err(PaperClaim::Refused)?
            .into_inner();
        Ok(Self {
            _client: client,
            outbox,
            incoming,
            name: name.to_owned(),
        })
    }

    /// Sends `text` under its name and waits until the stream is ended
    /// (refused) or `seen` says the message was relayed.
    async fn say(
        &mut self,
        text: &str,
        seen: impl Future<Output = Result<(), String>>,
    ) -> PaperClaim {
        let message = ChatMessage {
            username: self.name.clone(),
            message: text.to_owned(),
            ..Default::default()
        };
        if self.outbox.send(message).await.is_err() {
            return PaperClaim::Undecided("the stream had ended".into());
        }
        let incoming = &mut self.incoming;
        let refused = async {
            loop {
                match incoming.message().await {
                    // Everyone else's messages: not an answer.
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Failure {
                            code: None,
                            ended: Ended::other("closed without a status"),
                        };
                    }
                    Err(status) => {
                        return Failure {
                            code: Some(status.code()),
                            ended: Ended::with_status(&status),
                        };
                    }
                }
            }
        };
        let claim = tokio::time::timeout(TRIAL_PATIENCE, async {
            tokio::select! {
                failure = refused => PaperClaim::Refused(failure),
                seen = seen => match seen {
                    Ok(()) => PaperClaim::Relayed,
                    Err(why) => PaperClaim::Undecided(why),
                },
            }
        })
        .await;
        claim.unwrap_or_else(|_| PaperClaim::Undecided(format!("neither in {TRIAL_PATIENCE:?}")))
    }
}

/// Opens a paper stream on `url` whose first message, `text`, names
/// `name`: the claim's outcome, and the stream (still open) if it opened.
async fn paper_claim(
    url: &str,
    name: &str,
    text: &str,
    seen: impl Future<Output = Result<(), String>>,
) -> (PaperClaim, Option<PaperStream>) {
    match PaperStream::open(url, name).await {
        Ok(mut stream) => (stream.say(text, seen).await, Some(stream)),
        Err(claim) => (claim, None),
    }
}

/// Waits on `events` for a message with `text`.
async fn sees(events: &mut Streaming<ChatEvent>, text: &str) -> Result<(), String> {
    loop {
        match events.message().await {
            Ok(Some(ChatEvent {
                event: Some(Event::Message(m)),
            })) if m.message == text => return Ok(()),
            Ok(Some(_)) => {}
            Ok(None) => return Err("the watching stream closed".into()),
            Err(status) => return Err(format!("the watching stream ended {status:?}")),
        }
    }
}

/// A `Join` holds a name on replica `a` (with a Subscribe); then a paper
/// client names it on `b` and a `Send` without the session uses it on `c`:
/// both must be refused.
async fn paper_against_holder(shared: &Shared, start_us: u64, n: usize, a: usize) -> Trial {
    let name = format!("t{n}");
    let mut trial = Trial::new("paper against a holder", name.clone());
    let (b, c) = ((a + 1) % REPLICAS, (a + 2) % REPLICAS);
    let token = match join(&shared.urls[a], &name).await {
        Ok(reply) => reply.token,
        Err(failure) => {
            trial.undecided = true;
            trial.note(start_us, format!("the Join on {a} {}", failure.ended.how));
            return trial;
        }
    };
    trial.accepted += 1;
    let mut holder = match clients::web(&shared.urls[a]) {
        Ok(client) => client,
        Err(error) => {
            trial.undecided = true;
            trial.note(start_us, format!("no holder: {error:#}"));
            return trial;
        }
    };
    let request = with_token(
        SubscribeRequest {
            username: name.clone(),
            ..Default::default()
        },
        &token,
    );
    let mut events = match subscribe(&mut holder, request).await {
        Ok((events, _)) => events,
        Err(failure) => {
            trial.undecided = true;
            trial.note(
                start_us,
                format!("the holder's Subscribe {}", failure.ended.how),
            );
            return trial;
        }
    };
    trial.note(start_us, format!("joined and connected on {a}"));
    let claim_text = format!("trial {n}");
    let send_as = {
        let url = shared.urls[c].clone();
        let message = ChatMessage {
            username: name.clone(),
            message: format!("trial {n} send"),
            ..Default::default()
        };
        tokio::spawn(async move {
            let mut client = clients::web(&url).map_err(|e| unreachable(&e))?;
            within(client.send(message))
                .await
                .map(|r| r.into_inner().id)
        })
    };
    // The paper stream stays open (holding, if it won) to the end.
    let (claim, _paper) = paper_claim(
        &shared.urls[b],
        &name,
        &claim_text,
        sees(&mut events, &claim_text),
    )
    .await;
    match claim {
        PaperClaim::Refused(failure) => {
            trial.refused += u32::from(refusal(failure.code));
            trial.note(start_us, format!("paper on {b} {}", failure.ended.how));
        }
        PaperClaim::Relayed => {
            trial.accepted += 1;
            trial.held_twice = true;
            trial.note(start_us, format!("paper on {b} ACCEPTED (relayed)"));
        }
        PaperClaim::Undecided(why) => {
            trial.undecided = true;
            trial.note(start_us, format!("paper on {b} undecided: {why}"));
        }
    }
    match send_as.await {
        Ok(Ok(id)) => {
            trial.impersonated = true;
            trial.note(
                start_us,
                format!("a Send without the session on {c} was STORED as id {id}"),
            );
        }
        Ok(Err(failure)) => {
            trial.refused += u32::from(refusal(failure.code));
            trial.note(
                start_us,
                format!("a Send without the session on {c} {}", failure.ended.how),
            );
        }
        Err(error) => trial.note(start_us, format!("the Send task failed: {error}")),
    }
    drop(holder);
    trial
}

/// A `Join` on `a` and a paper client on `b` claim one free name at once:
/// at most one may win.
async fn paper_and_join_race(shared: &Shared, start_us: u64, n: usize, a: usize) -> Trial {
    let name = format!("t{n}");
    let mut trial = Trial::new("paper and Join race", name.clone());
    let b = (a + 1) % REPLICAS;
    let mut observer = match clients::web(&shared.urls[b]) {
        Ok(client) => client,
        Err(error) => {
            trial.undecided = true;
            trial.note(start_us, format!("no observer: {error:#}"));
            return trial;
        }
    };
    let request = tonic::Request::new(SubscribeRequest {
        username: format!("observer{n}"),
        ..Default::default()
    });
    let mut events = match subscribe(&mut observer, request).await {
        Ok((events, _)) => events,
        Err(failure) => {
            trial.undecided = true;
            trial.note(start_us, format!("the observer {}", failure.ended.how));
            return trial;
        }
    };
    let claim_text = format!("trial {n}");
    let (joined, (claim, paper)) = tokio::join!(
        join(&shared.urls[a], &name),
        paper_claim(
            &shared.urls[b],
            &name,
            &claim_text,
            sees(&mut events, &claim_text)
        )
    );
    let join_won = match joined {
        Ok(_) => {
            trial.accepted += 1;
            trial.note(start_us, format!("the Join on {a} accepted"));
            true
        }
        Err(failure) => {
            trial.refused += u32::from(refusal(failure.code));
            trial.note(start_us, format!("the Join on {a} {}", failure.ended.how));
            false
        }
    };
    match claim {
        PaperClaim::Refused(failure) => {
            trial.refused += u32::from(refusal(failure.code));
            trial.note(start_us, format!("paper on {b} {}", failure.ended.how));
        }
        PaperClaim::Relayed => {
            trial.accepted += 1;
            trial.note(start_us, format!("paper on {b} accepted (relayed)"));
            if let (true, Some(mut paper)) = (join_won, paper) {
                // Both answered yes. A message the paper client sends now
                // is relayed only while its stream holds the name, that is
                // after the Join was accepted: then both held it at once.
                let again = format!("trial {n} again");
                match paper.say(&again, sees(&mut events, &again)).await {
                    PaperClaim::Relayed => {
                        trial.held_twice = true;
                        trial.note(
                            start_us,
                            "and its next message, sent after the Join's reply, was relayed too",
                        );
                    }
                    PaperClaim::Refused(failure) => {
                        // It may have held the name with the Join briefly.
                        trial.undecided = true;
                        trial.note(
                            start_us,
                            format!(
                                "then, before its next message, its stream ended {}",
                                failure.ended.how
                            ),
                        );
                    }
                    PaperClaim::Undecided(why) => {
                        trial.undecided = true;
                        trial.note(start_us, format!("its next message: {why}"));
                    }
                }
            }
        }
        PaperClaim::Undecided(why) => {
            trial.undecided = true;
            trial.note(start_us, format!("paper on {b} undecided: {why}"));
        }
    }
    trial
}

/// What one replica replayed after the restart.
struct Replay {
    /// Its `Ready`'s newest id.
    newest: u64,
    /// Every message: id, soak key, who-sent-what.
    messages: Vec<(u64, Key, u64)>,
    gaps: Vec<(u64, u64)>,
    ended: Option<Ended>,
    /// The id of the message sent after the restart, if it came.
    after_restart: Option<u64>,
}

/// On every replica at once, a Subscribe from the start of the room read to
/// its newest id; then one message sent through the first must reach all.
async fn replay(urls: &[String], after_id: u64) -> anyhow::Result<Vec<Replay>> {
    let deadline = Instant::now() + REPLAY_PATIENCE;
    let mut readers = Vec::new();
    for (r, url) in urls.iter().enumerate() {
        let mut client = clients::web(url)?;
        let request = tonic::Request::new(SubscribeRequest {
            username: format!("replay{r}"),
            after_id,
            ..Default::default()
        });
        let (events, newest) = subscribe(&mut client, request)
            .await
            .map_err(|f| anyhow::anyhow!("replay on replica {r}: {}", f.ended.how))?;
        let replay = Replay {
            newest,
            messages: Vec::new(),
            gaps: Vec::new(),
            ended: None,
            after_restart: None,
        };
        readers.push((client, Source::Web(events), replay));
    }
    // Read each through its history, all at once.
    let histories = join_all(readers.into_iter().map(
        |(client, mut source, mut replay)| async move {
            let upto = replay.newest;
            read_replay(&mut source, &mut replay, deadline, |id, _| id >= upto).await;
            (client, source, replay)
        },
    ))
    .await;
    let mut sender = clients::web(&urls[0])?;
    let message = ChatMessage {
        username: "restarted".to_owned(),
        message: text(AFTER_RESTART),
        nonce: "after-restart".to_owned(),
        ..Default::default()
    };
    let sent = within(sender.send(message))
        .await
        .map_err(|f| anyhow::anyhow!("the Send after the restart {}", f.ended.how))?
        .into_inner()
        .id;
    let replays = join_all(histories.into_iter().map(
        |(client, mut source, mut replay)| async move {
            let _client = client;
            if replay.ended.is_none() {
                read_replay(&mut source, &mut replay, deadline, |id, key| {
                    id >= sent || key == AFTER_RESTART
                })
                .await;
            }
            replay
        },
    ))
    .await;
    Ok(replays)
}

/// Reads into `replay` until `done(id, key)` (or an end, or the deadline).
async fn read_replay(
    source: &mut Source,
    replay: &mut Replay,
    deadline: Instant,
    done: impl Fn(u64, Key) -> bool,
) {
    loop {
        let (id, key, _) = replay.messages.last().copied().unwrap_or((0, UNKNOWN, 0));
        if done(id, key) {
            return;
        }
        match tokio::time::timeout_at(deadline, source.next(&mut replay.gaps)).await {
            Ok(Ok(Some(m))) => {
                let key = key_of(&m.message);
                if key == AFTER_RESTART {
                    replay.after_restart = Some(m.id);
                }
                replay.messages.push((m.id, key, fingerprint(&m)));
            }
            Ok(Ok(None)) => {
                replay.ended = Some(Ended::other("closed without a status"));
                return;
            }
            Ok(Err(status)) => {
                replay.ended = Some(Ended::with_status(&status));
                return;
            }
            Err(_) => {
                replay.ended = Some(Ended::other("still open at the deadline"));
                return;
            }
        }
    }
}

/// What the soak found.
#[derive(Default)]
pub struct Outcome {
    pub duration: Duration,
    pub restart: Duration,
    pub people: usize,
    pub peak_present: usize,
    pub sent: u64,
    pub acknowledged: u64,
    pub deliveries: u64,
    pub checked: u64,
    pub joins: u64,
    pub rejoins: u64,
    pub leaves: u64,
    pub claims: u64,
    pub refused_claims: u64,
    pub trials: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub wrong: u64,
    pub stored_twice: u64,
    pub held_twice: u64,
    pub impersonated: u64,
    pub undecided: u64,
    pub send_failures: u64,
    pub broken_streams: u64,
    pub replayed: Vec<usize>,
    pub replay_holes: Vec<u64>,
    /// Every problem, one line each (empty: none).
    pub problems: Vec<String>,
    /// The details: who missed what, how streams ended, the trials.
    pub report: String,
}

impl Outcome {
    pub fn row(&self) -> Row {
        let per_replica = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join("/");
        let replayed: Vec<u64> = self.replayed.iter().map(|&n| n as u64).collect();
        Row::new("soak")
            .num("duration_s", format!("{:.1}", self.duration.as_secs_f64()))
            .num("people", self.people)
            .num("peak", self.peak_present)
            .num("sent", self.sent)
            .num("acknowledged", self.acknowledged)
            .num("deliveries", self.deliveries)
            .num("checked", self.checked)
            .num("joins", self.joins)
            .num("rejoins", self.rejoins)
            .num("leaves", self.leaves)
            .num("claims", self.claims)
            .num("refused", self.refused_claims)
            .num("trials", self.trials)
            .num("lost", self.lost)
            .num("duplicated", self.duplicated)
            .num("reordered", self.reordered)
            .num("wrong", self.wrong)
            .num("stored_twice", self.stored_twice)
            .num("held_twice", self.held_twice)
            .num("impersonated", self.impersonated)
            .num("undecided", self.undecided)
            .num("send_failures", self.send_failures)
            .num("broken_streams", self.broken_streams)
            .text("replayed", per_replica(&replayed))
            .text("replay_holes", per_replica(&self.replay_holes))
            .num("restart_s", format!("{:.1}", self.restart.as_secs_f64()))
    }
}

/// The soak: start, churn for `setup.duration`, restart, replay, check.
/// Every process is stopped at the end (dropped, hence killed, on an
/// error).
pub async fn run(setup: &Setup<'_>) -> anyhow::Result<Outcome> {
    let mut nats = cluster::start_nats(setup.nats_server, false).await?;
    let flags = ["--retain".to_owned(), RETAIN.to_owned()];
    let mut servers = Vec::new();
    for _ in 0..REPLICAS {
        // One after the other: the first makes the room's stream.
        servers.push(
            ServerProcess::start_replica_with(setup.server_bin, setup.buffer, &nats.urls(), &flags)
                .await?,
        );
    }
    let urls: Vec<String> = servers.iter().map(ServerProcess::url).collect();
    cluster::warm_up(&urls, 1).await?;
    let shared = Arc::new(Shared {
        urls,
        newest: AtomicU64::new(0),
        paper_seen: Mutex::new(HashMap::new()),
        left_names: Mutex::new(Vec::new()),
        present: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
    });
    let mut watchers = Vec::new();
    for r in 0..REPLICAS {
        watchers.push(watcher(&shared, r).await?);
    }

    let start_us = now_us();
    let started = Instant::now();
    let (stop_ticks, ticks_stopped) = watch::channel(false);
    let tickers: Vec<_> = (0..REPLICAS)
        .map(|r| {
            let id = FIRST_TICKER + r as u32;
            tokio::spawn(ticker(Arc::clone(&shared), id, r, ticks_stopped.clone()))
        })
        .collect();
    let (stop_trials, trials_stopped) = watch::channel(false);
    let trials = tokio::spawn(trials(Arc::clone(&shared), start_us, trials_stopped));
    let mut logs = churn(&shared, setup.duration).await?;
    let _ = stop_trials.send(true);
    let trials = trials.await.context("the trials panicked")?;
    let _ = stop_ticks.send(true);
    for ticker in tickers {
        logs.push(ticker.await.context("a ticker panicked")?);
    }
    // Every sender has stopped: the watchers read to the newest id.
    let newest = shared.newest();
    let leaving = now_us();
    for mut w in watchers {
        let _ = w.stop.send(Some(newest));
        w.log.left = Some((leaving, newest));
        w.log.reading = Some(w.reader.await.context("a watcher panicked")?);
        logs.push(w.log);
    }
    let duration = started.elapsed();

    let after_id = u64::from(newest > REPLAY_HISTORY);
    let restarted = restart_and_replay(setup, servers, &mut nats, after_id).await;
    nats.stop();
    let (restart, replays, failed) = match restarted {
        Ok((restart, replays)) => (restart, replays, None),
        Err(error) => (Duration::ZERO, Vec::new(), Some(format!("{error:#}"))),
    };
    let mut outcome = check(start_us, &logs, &trials, (after_id, &replays));
    if let Some(error) = failed {
        let line = format!("soak: the full restart and replay failed: {error}");
        let _ = writeln!(outcome.report, "{line}");
        outcome.problems.push(line);
    }
    outcome.duration = duration;
    outcome.restart = restart;
    outcome.peak_present = shared.peak.load(Ordering::SeqCst);
    Ok(outcome)
}

/// Stops the replicas and NATS (SIGTERM), starts them again on the same
/// stores, and replays the room on every replica; returns how long the
/// restart took (until every replica was healthy) and the replays.
async fn restart_and_replay(
    setup: &Setup<'_>,
    servers: Vec<ServerProcess>,
    nats: &mut NatsCluster,
    after_id: u64,
) -> anyhow::Result<(Duration, Vec<Replay>)> {
    let restarting = Instant::now();
    for result in join_all(servers.into_iter().map(ServerProcess::stop)).await {
        result.context("stopping a replica for the restart")?;
    }
    nats.full_restart().await.context("restarting NATS")?;
    let mut servers = Vec::new();
    let replay_flags = [
        "--retain".to_owned(),
        RETAIN.to_owned(),
        "--history".to_owned(),
        REPLAY_HISTORY.to_string(),
    ];
    for _ in 0..REPLICAS {
        servers.push(
            ServerProcess::start_replica_with(
                setup.server_bin,
                setup.buffer,
                &nats.urls(),
                &replay_flags,
            )
            .await
            .context("starting a replica again after the restart")?,
        );
    }
    let restart = restarting.elapsed();
    let urls: Vec<String> = servers.iter().map(ServerProcess::url).collect();
    let replays = replay(&urls, after_id).await?;
    for server in servers {
        server.stop().await?;
    }
    Ok((restart, replays))
}

/// A message as the checks know it: when it was issued and acknowledged
/// (a `Send`'s reply, or first seen by a Subscribe client), and its id.
#[derive(Debug, Clone, Copy)]
struct Known {
    id: u64,
    issued_us: u64,
    acked_us: u64,
}

/// What the checks found, one line each, by section of the report.
#[derive(Default)]
struct Findings {
    lost: Vec<String>,
    unstored: Vec<String>,
    misordered: Vec<String>,
    wrong: Vec<String>,
    doubled: Vec<String>,
    names: Vec<String>,
    replay: Vec<String>,
    calls: Vec<String>,
    undecided: Vec<String>,
}

/// What the replicas replayed: the first replica's word for each id (the
/// others are checked against it), and the ids of each soak message.
#[derive(Default)]
struct Stored {
    by_id: HashMap<u64, (Key, u64)>,
    ids_of: HashMap<Key, Vec<u64>>,
}

/// Everything checked after the run.
fn check(
    start_us: u64,
    logs: &[ClientLog],
    trials: &[Trial],
    (replayed_after, replays): (u64, &[Replay]),
) -> Outcome {
    let mut o = Outcome {
        people: logs
            .iter()
            .filter(|l| matches!(l.kind, Kind::Web | Kind::Paper))
            .count(),
        trials: trials.len() as u64,
        replayed: replays.iter().map(|r| r.messages.len()).collect(),
        ..Outcome::default()
    };
    let mut f = Findings::default();
    let by_client: HashMap<u32, &ClientLog> = logs.iter().map(|l| (l.id, l)).collect();
    let stored = stored(replays, &mut o, &mut f);
    let known = acknowledged(logs, &by_client, &stored, &mut o, &mut f);
    let mut by_id: Vec<(u64, Key)> = known.iter().map(|(&key, k)| (k.id, key)).collect();
    by_id.sort_unstable();
    for log in logs {
        deliveries(
            log, &by_client, &known, &by_id, &stored, start_us, &mut o, &mut f,
        );
    }
    // Only a replay read to its end can say what was never stored.
    if replays
        .iter()
        .any(|r| r.ended.is_none() && r.after_restart.is_some())
    {
        paper_storage(logs, &stored, &known, &mut o, &mut f);
    }
    names(trials, &mut o, &mut f);
    replay_checks(replays, replayed_after, &stored, &by_id, &mut o, &mut f);
    verdict(&mut o, &f);
    o
}

fn stored(replays: &[Replay], o: &mut Outcome, f: &mut Findings) -> Stored {
    let mut stored = Stored::default();
    for (r, replay) in replays.iter().enumerate() {
        for &(id, key, print) in &replay.messages {
            match stored.by_id.get(&id) {
                Some(&(_, first)) if first != print => f.replay.push(format!(
                    "replica {r} has another message under id {id} ({key:?})"
                )),
                Some(_) => {}
                None => {
                    stored.by_id.insert(id, (key, print));
                }
            }
        }
    }
    for (&id, &(key, _)) in &stored.by_id {
        if key != UNKNOWN {
            stored.ids_of.entry(key).or_default().push(id);
        }
    }
    for (key, ids) in &mut stored.ids_of {
        if ids.len() > 1 {
            ids.sort_unstable();
            o.stored_twice += ids.len() as u64 - 1;
            f.doubled.push(format!("{key:?} stored as ids {ids:?}"));
        }
    }
    stored
}

/// Every acknowledged message: `Send`s answered, and paper messages seen by
/// a Subscribe client (the first sight is the acknowledgement).
fn acknowledged(
    logs: &[ClientLog],
    by_client: &HashMap<u32, &ClientLog>,
    stored: &Stored,
    o: &mut Outcome,
    f: &mut Findings,
) -> HashMap<Key, Known> {
    let mut known: HashMap<Key, Known> = HashMap::new();
    for log in logs {
        o.sent += log.sent.len() as u64;
        o.send_failures += log.send_failures;
        for (seq, sent) in log.sent.iter().enumerate() {
            let Some((id, acked_us)) = sent.ack else {
                continue;
            };
            let key = Key {
                client: log.id,
                seq: seq as u32,
            };
            let message = Known {
                id,
                issued_us: sent.issued_us,
                acked_us,
            };
            known.insert(key, message);
            match stored.by_id.get(&id) {
                Some(&(stored_key, _)) if stored_key != key => f.wrong.push(format!(
                    "{key:?} was answered id {id}, stored as {stored_key:?}"
                )),
                _ => {}
            }
        }
    }
    let subscribers = logs
        .iter()
        .filter(|l| matches!(l.kind, Kind::Web | Kind::Watcher));
    for reading in subscribers.filter_map(|l| l.reading.as_ref()) {
        for receipt in &reading.receipts {
            let Some(sender) = by_client.get(&receipt.key.client) else {
                continue;
            };
            let Some(sent) = sender.sent.get(receipt.key.seq as usize) else {
                continue;
            };
            if sender.kind != Kind::Paper {
                continue;
            }
            let first = known.entry(receipt.key).or_insert(Known {
                id: receipt.id,
                issued_us: sent.issued_us,
                acked_us: receipt.at_us,
            });
            first.acked_us = first.acked_us.min(receipt.at_us);
        }
    }
    o.acknowledged = known.len() as u64;
    known
}

/// One client: its calls, and what it got against what it was owed.
#[allow(clippy::too_many_arguments)]
fn deliveries(
    log: &ClientLog,
    by_client: &HashMap<u32, &ClientLog>,
    known: &HashMap<Key, Known>,
    by_id: &[(u64, Key)],
    stored: &Stored,
    start_us: u64,
    o: &mut Outcome,
    f: &mut Findings,
) {
    let t = |at: u64| since(start_us, at);
    match &log.join {
        Some(Ok(())) => {
            o.joins += 1;
            o.rejoins += u64::from(log.rejoin);
            o.claims += 1;
        }
        Some(Err(failure)) => {
            o.refused_claims += u64::from(refusal(failure.code));
            f.calls.push(format!(
                "{}: Join {}",
                log.describe(),
                failure.ended.since(start_us)
            ));
        }
        None => {}
    }
    if let Some(failure) = &log.failed_to_start {
        f.calls.push(format!(
            "{}: no stream, {}",
            log.describe(),
            failure.ended.since(start_us)
        ));
    }
    if let Some((seq, first)) = &log.first_send_failure {
        f.calls.push(format!(
            "{}: {} sends failed, the first (seq {seq}) {}",
            log.describe(),
            log.send_failures,
            first.since(start_us)
        ));
    }
    let Some(reading) = &log.reading else {
        return;
    };
    if matches!(log.kind, Kind::Web | Kind::Paper) {
        o.leaves += 1;
    }
    if log.kind == Kind::Paper {
        // Its name was accepted if its first message was relayed.
        let first = Key {
            client: log.id,
            seq: 0,
        };
        o.claims += u64::from(known.contains_key(&first));
    }
    if let Some(ended) = &reading.ended {
        o.broken_streams += 1;
        f.calls.push(format!(
            "{}: stream ended {}",
            log.describe(),
            ended.since(start_us)
        ));
    }
    for &(after, next) in &reading.gaps {
        f.calls
            .push(format!("{}: a Gap from {after} to {next}", log.describe()));
    }
    o.deliveries += reading.receipts.len() as u64;
    let mut got: HashSet<u64> = HashSet::with_capacity(reading.receipts.len());
    let mut previous = 0;
    for receipt in &reading.receipts {
        if !got.insert(receipt.id) {
            o.duplicated += 1;
            f.misordered.push(format!(
                "{}: id {} twice (again at {})",
                log.describe(),
                receipt.id,
                t(receipt.at_us)
            ));
        } else if receipt.id < previous {
            o.reordered += 1;
            f.misordered.push(format!(
                "{}: id {} after {previous} at {}",
                log.describe(),
                receipt.id,
                t(receipt.at_us)
            ));
        }
        previous = previous.max(receipt.id);
        if let Some(&(stored_key, _)) = stored.by_id.get(&receipt.id)
            && stored_key != receipt.key
        {
            f.wrong.push(format!(
                "{} got id {} as {:?}, stored as {stored_key:?}",
                log.describe(),
                receipt.id,
                receipt.key
            ));
        }
    }
    let (Some((after, from_us)), Some((until_us, target))) = (reading.live, log.left) else {
        return;
    };
    // Owed up to the target if it read there or stalled on the way; if
    // the server ended the stream, only what came before the last it got.
    let upto = match (&reading.ended, reading.drained) {
        (Some(_), false) => reading.newest(),
        _ => target,
    };
    let until_us = reading
        .ended
        .as_ref()
        .map_or(until_us, |e| until_us.min(e.at_us));
    let first = by_id.partition_point(|&(id, _)| id <= after);
    let mut missing: Vec<Key> = Vec::new();
    let mut owed = 0;
    for &(id, key) in by_id[first..].iter().take_while(|&&(id, _)| id <= upto) {
        let message = known[&key];
        if message.issued_us < from_us
            || message.acked_us > until_us
            || (log.kind == Kind::Paper && key.client == log.id)
        {
            continue;
        }
        owed += 1;
        if !got.contains(&id) {
            missing.push(key);
        }
    }
    o.checked += owed;
    o.lost += missing.len() as u64;
    if !missing.is_empty() {
        f.lost.push(loss_line(
            log,
            reading,
            &missing,
            owed,
            (from_us, until_us, upto),
            by_client,
            start_us,
        ));
    }
}

/// Paper messages sent on a stream the server never ended with an error
/// must be stored: each must have been relayed to a Subscribe client or be
/// in a replay.
fn paper_storage(
    logs: &[ClientLog],
    stored: &Stored,
    known: &HashMap<Key, Known>,
    o: &mut Outcome,
    f: &mut Findings,
) {
    for log in logs.iter().filter(|l| l.kind == Kind::Paper) {
        let Some(reading) = &log.reading else {
            continue;
        };
        if reading.ended.is_some() {
            continue;
        }
        let missing: Vec<u64> = (0..log.sent.len() as u32)
            .filter(|&seq| {
                let key = Key {
                    client: log.id,
                    seq,
                };
                !known.contains_key(&key) && !stored.ids_of.contains_key(&key)
            })
            .map(u64::from)
            .collect();
        if !missing.is_empty() {
            o.lost += missing.len() as u64;
            f.unstored.push(format!(
                "{}: seq {} never relayed nor replayed (the server never ended its stream; its last was relayed before it left: {})",
                log.describe(),
                ranges(missing),
                log.confirmed
            ));
        }
    }
}

fn names(trials: &[Trial], o: &mut Outcome, f: &mut Findings) {
    for trial in trials {
        o.claims += u64::from(trial.accepted);
        o.refused_claims += u64::from(trial.refused);
        o.held_twice += u64::from(trial.held_twice);
        o.impersonated += u64::from(trial.impersonated);
        o.undecided += u64::from(trial.undecided);
        let story = trial.story.trim_end_matches("; ");
        let line = format!("{} {:?}: {story}", trial.kind, trial.name);
        if trial.held_twice || trial.impersonated {
            f.names.push(line);
        } else if trial.undecided {
            f.undecided.push(line);
        }
    }
}

/// Every replica replays ids `replayed_after + 1` to the newest stored
/// before the restart, once each, in order, and got the message sent after.
fn replay_checks(
    replays: &[Replay],
    replayed_after: u64,
    stored: &Stored,
    by_id: &[(u64, Key)],
    o: &mut Outcome,
    f: &mut Findings,
) {
    let after_restart: Vec<u64> = replays.iter().filter_map(|r| r.after_restart).collect();
    // The newest id stored before the restart, by anyone's word.
    let top = stored
        .by_id
        .keys()
        .copied()
        .filter(|id| !after_restart.contains(id))
        .chain(replays.iter().map(|r| r.newest))
        .chain(by_id.iter().map(|&(id, _)| id))
        .max()
        .unwrap_or(0);
    for (r, replay) in replays.iter().enumerate() {
        let ids: HashSet<u64> = replay.messages.iter().map(|m| m.0).collect();
        let holes: Vec<u64> = (replayed_after + 1..=top)
            .filter(|id| !ids.contains(id))
            .collect();
        o.replay_holes.push(holes.len() as u64);
        if !holes.is_empty() {
            let acked = holes
                .iter()
                .filter(|&&id| by_id.binary_search_by_key(&id, |&(i, _)| i).is_ok())
                .count();
            f.replay.push(format!(
                "replica {r}: {} holes in ids {}-{top} ({acked} of them acknowledged): {}",
                holes.len(),
                replayed_after + 1,
                shorten(ranges(holes.iter().copied()))
            ));
        }
        let mut previous = 0;
        let mut seen = HashSet::new();
        for &(id, ..) in &replay.messages {
            if !seen.insert(id) {
                f.replay
                    .push(format!("replica {r}: id {id} replayed twice"));
            } else if id < previous {
                f.replay
                    .push(format!("replica {r}: id {id} replayed after {previous}"));
            }
            previous = previous.max(id);
        }
        if replay.newest < top {
            f.replay.push(format!(
                "replica {r}: its Ready said the newest id is {}, but {top} was stored",
                replay.newest
            ));
        }
        for &(after, next) in &replay.gaps {
            f.replay
                .push(format!("replica {r}: a Gap from {after} to {next}"));
        }
        if let Some(ended) = &replay.ended {
            f.replay
                .push(format!("replica {r}: the replay ended {}", ended.how));
        }
        if replay.after_restart.is_none() {
            f.replay.push(format!(
                "replica {r}: the message sent after the restart never came"
            ));
        }
    }
}

/// At most a few hundred characters of `text`.
fn shorten(text: String) -> String {
    const LONGEST: usize = 300;
    match text.char_indices().nth(LONGEST) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// The problems (what fails the run) and the report.
fn verdict(o: &mut Outcome, f: &Findings) {
    o.wrong = f.wrong.len() as u64;
    let counts = [
        (o.lost, "acknowledged deliveries or stored messages lost"),
        (o.duplicated, "deliveries duplicated"),
        (o.reordered, "deliveries out of order"),
        (o.wrong, "messages under the wrong id"),
        (o.stored_twice, "messages stored twice"),
        (o.held_twice, "names held twice"),
        (o.impersonated, "Sends under a name held by someone else"),
        (
            f.replay.len() as u64,
            "problems in the replay after the restart",
        ),
    ];
    for (count, what) in counts {
        if count > 0 {
            o.problems.push(format!("soak: {count} {what}"));
        }
    }
    let sections: [(&str, &[String]); 9] = [
        ("lost (receiver: what it missed, by sender)", &f.lost),
        ("paper messages never relayed nor replayed", &f.unstored),
        ("duplicated or out of order", &f.misordered),
        ("wrong ids", &f.wrong),
        ("stored twice", &f.doubled),
        ("names held twice or used without the session", &f.names),
        ("replay after the restart", &f.replay),
        ("streams ended by the server and failed calls", &f.calls),
        ("trials that could not decide (not failed)", &f.undecided),
    ];
    for (title, lines) in sections {
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(o.report, "soak: {title} ({}):", lines.len());
        for line in lines.iter().take(LISTED) {
            let _ = writeln!(o.report, "  {line}");
        }
        if lines.len() > LISTED {
            let _ = writeln!(o.report, "  ... and {} more", lines.len() - LISTED);
        }
    }
}

/// One receiver's losses: its window and stream end, then each sender's
/// missing seqs and how that sender fared.
fn loss_line(
    log: &ClientLog,
    reading: &Reading,
    missing: &[Key],
    owed: u64,
    (from_us, until_us, upto): (u64, u64, u64),
    by_client: &HashMap<u32, &ClientLog>,
    start_us: u64,
) -> String {
    let t = |at: u64| since(start_us, at);
    let end = match (&reading.ended, &reading.stalled) {
        (Some(ended), _) => format!("ended {}", ended.since(start_us)),
        (None, Some(stalled)) => stalled.since(start_us),
        (None, None) => "read to its target".to_owned(),
    };
    let mut line = format!(
        "{} live {} to {}, owed ids up to {upto}, stream {end}: missing {} of {owed}:",
        log.describe(),
        t(from_us),
        t(until_us),
        missing.len()
    );
    let mut by_sender: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for key in missing {
        by_sender
            .entry(key.client)
            .or_default()
            .push(u64::from(key.seq));
    }
    for (client, mut seqs) in by_sender {
        seqs.sort_unstable();
        let _ = write!(line, " [sender ");
        match by_client.get(&client) {
            Some(sender) => {
                let _ = write!(line, "{} seq {}", sender.describe(), ranges(seqs));
                if let Some(ended) = sender.reading.as_ref().and_then(|r| r.ended.as_ref())
                    && sender.kind == Kind::Paper
                {
                    let _ = write!(line, "; its stream ended {}", ended.since(start_us));
                }
                if let Some((seq, first)) = &sender.first_send_failure {
                    let _ = write!(
                        line,
                        "; {} sends failed, the first (seq {seq}) {}",
                        sender.send_failures,
                        first.since(start_us)
                    );
                }
            }
            None => {
                let _ = write!(line, "{client} seq {}", ranges(seqs));
            }
        }
        line.push(']');
    }
    line
}

/// Bails if nats-server is missing (for `--soak` asked for by name).
pub fn require(nats_server: &Path) -> anyhow::Result<()> {
    if !nats_server.is_file() {
        bail!(
            "nats-server not found at {} (scripts/install --tests puts it there; or give --nats-server PATH)",
            nats_server.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(client: u32, seq: u32) -> Key {
        Key { client, seq }
    }

    /// A gRPC-Web sender (client 10) whose Sends were answered ids 5, 6, 7
    /// at 200, 400 and 1100 µs.
    fn sender() -> ClientLog {
        let mut log = ClientLog::new(10, Kind::Web, 0, "w10".into());
        for (issued_us, id, acked_us) in [(100, 5, 200), (300, 6, 400), (1_000, 7, 1_100)] {
            log.sent.push(Sent {
                issued_us,
                ack: Some((id, acked_us)),
            });
        }
        log
    }

    /// A client live from 50 µs (after id 4) that left at 900 µs, told to
    /// read up to id 6, having got `ids`.
    fn receiver(id: u32, kind: Kind, ids: &[(u64, Key)]) -> ClientLog {
        let mut log = ClientLog::new(id, kind, 1, format!("r{id}"));
        log.left = Some((900, 6));
        log.reading = Some(Reading {
            live: Some((4, 50)),
            receipts: ids
                .iter()
                .map(|&(id, key)| Receipt {
                    id,
                    key,
                    at_us: 500,
                })
                .collect(),
            drained: true,
            ..Reading::default()
        });
        log
    }

    fn outcome(logs: &[ClientLog]) -> Outcome {
        check(0, logs, &[], (0, &[]))
    }

    #[test]
    fn a_message_answered_inside_the_window_is_owed() {
        let o = outcome(&[sender(), receiver(11, Kind::Web, &[(5, key(10, 0))])]);
        // Id 6 was answered at 400, inside 50-900: lost. Id 7 was answered
        // after the receiver left: not owed.
        assert_eq!((o.checked, o.lost), (2, 1), "{}", o.report);
        assert!(o.report.contains("seq 1"), "{}", o.report);
    }

    #[test]
    fn a_stream_the_server_ended_owes_only_what_came_before_its_last() {
        let mut broken = receiver(11, Kind::Web, &[(5, key(10, 0))]);
        if let Some(reading) = broken.reading.as_mut() {
            reading.drained = false;
            reading.ended = Some(Ended {
                at_us: 800,
                ..Ended::other("ended")
            });
        }
        let o = outcome(&[sender(), broken]);
        assert_eq!((o.checked, o.lost, o.broken_streams), (1, 0, 1));
    }

    #[test]
    fn a_paper_client_is_not_owed_its_own_messages() {
        let mut paper = receiver(12, Kind::Paper, &[(5, key(10, 0))]);
        paper.sent.push(Sent {
            issued_us: 150,
            ack: None,
        });
        // A watcher saw the paper message as id 6 (its acknowledgement).
        let watcher = receiver(4, Kind::Watcher, &[(5, key(10, 0)), (6, key(12, 0))]);
        let mut web = sender();
        web.sent.truncate(1);
        let o = outcome(&[web, paper, watcher]);
        // The paper client owes id 5 only; the watcher 5 and 6.
        assert_eq!(
            (o.checked, o.lost, o.acknowledged),
            (3, 0, 2),
            "{}",
            o.report
        );
    }

    #[test]
    fn duplicates_and_reordering_are_counted() {
        let ids = [
            (5, key(10, 0)),
            (5, key(10, 0)),
            (6, key(10, 1)),
            (4, UNKNOWN),
        ];
        let o = outcome(&[sender(), receiver(11, Kind::Web, &ids)]);
        assert_eq!((o.duplicated, o.reordered, o.lost), (1, 1, 0));
        assert_eq!(o.problems.len(), 2, "{:?}", o.problems);
    }

    #[test]
    fn soak_texts_round_trip() {
        assert_eq!(key_of(&text(key(12, 7))), key(12, 7));
        assert_eq!(key_of("warm-up"), UNKNOWN);
        assert_eq!(key_of("soak 1 2 3"), UNKNOWN);
    }
}
