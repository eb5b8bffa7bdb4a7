//! Memory: what the server holds for readers of big history, and whether it
//! gives it back.
//!
//! Each part runs on a fresh server that first stores a number of
//! maximum-size messages (4,000 four-byte characters, ~16 KB each):
//!
//! - `attack`: one HTTP/2 connection that advertises a stream window of 0,
//!   so the server can send no DATA at all, opens as many `Subscribe`
//!   streams (from the start of history) as the server lets it and holds
//!   them. Whatever the server prepares for those streams stays in its
//!   memory until the connection closes.
//! - `readers`: ordinary subscribers (native gRPC, or gRPC-Web for the
//!   10,000) that read the whole history, each checked message by message.
//!
//! For each part: resident memory right after start, its peak (sampled every
//! 100 ms) and what is left a while after the clients disconnect. Memory
//! figures are reported against the goal, never failed on; a reader that
//! gets the wrong messages is a failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use chat_proto::{ChatEvent, ChatMessage, Event, SubscribeRequest};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Streaming;

use crate::clients;
use crate::report::Row;
use crate::server::{self, RssProbe, ServerProcess};

const MIB: u64 = 1024 * 1024;
/// The product goal: the peak of any part stays under this...
pub const PEAK_GOAL: u64 = 150 * MIB;
/// ...and afterwards the server is back within 2x its baseline plus this.
pub const AFTER_SLACK: u64 = 20 * MIB;
/// How often resident memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Readers connecting (up to their `Ready`) at once; they then read in
/// parallel.
const CONNECTING_AT_ONCE: usize = 64;

/// Counts and waits for one run of the scenario.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Maximum-size messages stored before each part.
    pub messages: usize,
    /// Stalled streams the attack asks for on its one connection.
    pub streams: usize,
    /// How long the attack tries to open streams before giving up on the
    /// rest (the server may cap streams per connection).
    pub open_for: Duration,
    /// How long the attack holds its streams.
    pub hold: Duration,
    /// Reading-subscriber parts: how many, over which protocol.
    pub readers: Vec<(usize, clients::Kind)>,
    /// How long after the clients disconnect memory is read again.
    pub settle: Duration,
}

impl Sizes {
    /// The full run: 100 messages, 200 stalled streams, 200 native readers
    /// and 10,000 gRPC-Web readers, memory read 15 s after each.
    pub fn full() -> Self {
        Self {
            messages: 100,
            streams: 200,
            open_for: Duration::from_secs(5),
            hold: Duration::from_secs(5),
            readers: vec![(200, clients::Kind::Native), (10_000, clients::Kind::Web)],
            settle: Duration::from_secs(15),
        }
    }

    /// The CI smoke run: a few seconds per part.
    pub fn quick() -> Self {
        Self {
            messages: 20,
            streams: 50,
            open_for: Duration::from_secs(2),
            hold: Duration::from_secs(3),
            readers: vec![(50, clients::Kind::Native)],
            settle: Duration::from_secs(3),
        }
    }

    /// Every part, in order.
    pub fn parts(&self) -> Vec<Part> {
        std::iter::once(Part::Attack)
            .chain(
                self.readers
                    .iter()
                    .map(|&(count, kind)| Part::Readers(count, kind)),
            )
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Part {
    Attack,
    Readers(usize, clients::Kind),
}

/// The server to start for each part.
pub struct Setup<'a> {
    pub binary: &'a std::path::Path,
    pub buffer: Option<u32>,
    pub db: Option<&'a str>,
}

pub struct Outcome {
    /// `attack` or `readers`.
    pub part: &'static str,
    /// `native` (HTTP/2) or `web` (gRPC-Web, HTTP/1.1).
    pub protocol: &'static str,
    pub messages: usize,
    /// Streams or readers asked for.
    pub clients: usize,
    /// Attack: requests that got no answer at all. h2 queues requests past
    /// the server's SETTINGS_MAX_CONCURRENT_STREAMS locally (they never
    /// reach the server), and they count here. Always 0 for readers.
    pub unanswered: usize,
    /// Attack: streams the server answered and still held open at the end of
    /// the hold. Readers: readers that got their whole history right.
    pub accepted: usize,
    /// Streams or readers the server refused, reset or ended early (before
    /// `Ready` for readers).
    pub refused: usize,
    /// Readers that got a wrong, missing or stalled history: a broken server.
    pub wrong: usize,
    /// The first thing that went wrong or was refused, for people.
    pub first_problem: Option<String>,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS, if it sets one (attack).
    pub max_streams: Option<usize>,
    /// Whether `--rate-limit 0` was passed (the server has the flag).
    pub rate_limit_off: bool,
    pub baseline: u64,
    pub peak: u64,
    /// When the clients disconnected.
    pub at_close: u64,
    /// After the clients disconnected and `settle` passed.
    pub after: u64,
    pub settle: Duration,
}

impl Outcome {
    pub fn peak_ok(&self) -> bool {
        self.peak < PEAK_GOAL
    }

    pub fn after_goal(&self) -> u64 {
        2 * self.baseline + AFTER_SLACK
    }

    pub fn after_ok(&self) -> bool {
        self.after <= self.after_goal()
    }

    pub fn row(&self) -> Row {
        let mib = |b: u64| format!("{:.1}", b as f64 / MIB as f64);
        Row::new("memory")
            .text("part", self.part)
            .text("protocol", self.protocol)
            .num("messages", self.messages)
            .num("clients", self.clients)
            .num("unanswered", self.unanswered)
            .num("accepted", self.accepted)
            .num("refused", self.refused)
            .num("wrong", self.wrong)
            .num(
                "max_streams",
                self.max_streams
                    .map_or("null".to_owned(), |m| m.to_string()),
            )
            .num("rate_limit_off", self.rate_limit_off)
            .num("baseline_mib", mib(self.baseline))
            .num("peak_mib", mib(self.peak))
            .num("close_mib", mib(self.at_close))
            .num("after_mib", mib(self.after))
            .num("after_s", self.settle.as_secs())
            .num("peak_ok", self.peak_ok())
            .num("after_ok", self.after_ok())
    }

    /// One line for people: the figures against the goal.
    pub fn verdict(&self) -> String {
        let mib = |b: u64| b as f64 / MIB as f64;
        let word = |ok: bool| if ok { "meets" } else { "MISSES" };
        format!(
            "memory {} ({}, {} clients): peak {:.1} MiB {} the goal (< {:.0} MiB); {} s after close {:.1} MiB {} \
             the goal (<= 2 x {:.1} MiB baseline + {:.0} MiB = {:.1} MiB)",
            self.part,
            self.protocol,
            self.clients,
            mib(self.peak),
            word(self.peak_ok()),
            mib(PEAK_GOAL),
            self.settle.as_secs(),
            mib(self.after),
            word(self.after_ok()),
            mib(self.baseline),
            mib(AFTER_SLACK),
            mib(self.after_goal()),
        )
    }
}

/// One part on a fresh server.
pub async fn run(setup: &Setup<'_>, sizes: &Sizes, part: Part) -> anyhow::Result<Outcome> {
    // A newer server limits senders; `ServerProcess` lifts that.
    let rate_limit_off = server::has_flag(setup.binary, "--rate-limit")?;
    let flags = vec!["--history".to_owned(), sizes.messages.to_string()];
    let server = ServerProcess::start_with(setup.binary, setup.buffer, setup.db, &flags).await?;
    let rss = server.rss_probe()?;
    let baseline = rss.bytes()?;
    let stored = Arc::new(store(&server.url(), sizes.messages).await?);
    let mut peak = Peak {
        rss,
        bytes: baseline,
    };
    let mut outcome = Outcome {
        part: "attack",
        protocol: "native",
        messages: sizes.messages,
        clients: 0,
        unanswered: 0,
        accepted: 0,
        refused: 0,
        wrong: 0,
        first_problem: None,
        max_streams: None,
        rate_limit_off,
        baseline,
        peak: 0,
        at_close: 0,
        after: 0,
        settle: sizes.settle,
    };
    match part {
        Part::Attack => {
            outcome.clients = sizes.streams;
            let attack = peak.during(attack(&server, sizes)).await??;
            outcome.accepted = attack.accepted;
            outcome.refused = attack.refused;
            outcome.unanswered = attack
                .opened
                .saturating_sub(attack.accepted + attack.refused);
            outcome.max_streams = attack.max_streams;
            outcome.first_problem = attack.problem;
            // Closes the connection.
            drop(attack.connection);
        }
        Part::Readers(count, kind) => {
            outcome.part = "readers";
            outcome.protocol = match kind {
                clients::Kind::Native => "native",
                clients::Kind::Web => "web",
            };
            outcome.clients = count;
            let (held, failures) = peak
                .during(readers(&server.url(), kind, count, &stored))
                .await?;
            outcome.accepted = held.len();
            for failure in failures {
                match failure {
                    Failure::Refused(why) => {
                        outcome.refused += 1;
                        outcome
                            .first_problem
                            .get_or_insert(format!("refused: {why}"));
                    }
                    Failure::Wrong(why) => {
                        outcome.wrong += 1;
                        outcome.first_problem.get_or_insert(format!("wrong: {why}"));
                    }
                }
            }
            // Every reader disconnects at once.
            drop(held);
        }
    }
    outcome.at_close = rss.bytes()?;
    peak.during(tokio::time::sleep(sizes.settle)).await?;
    outcome.after = rss.bytes()?;
    outcome.peak = peak.bytes.max(outcome.after);
    server.stop().await?;
    Ok(outcome)
}

/// The highest resident memory seen so far.
struct Peak {
    rss: RssProbe,
    bytes: u64,
}

impl Peak {
    /// Runs `work`, sampling the server's memory every 100 ms meanwhile (and
    /// once more at the end).
    async fn during<T>(&mut self, work: impl Future<Output = T>) -> anyhow::Result<T> {
        let mut ticker = tokio::time::interval(SAMPLE_EVERY);
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => {
                    self.bytes = self.bytes.max(self.rss.bytes()?);
                    return Ok(out);
                }
                _ = ticker.tick() => self.bytes = self.bytes.max(self.rss.bytes()?),
            }
        }
    }
}

/// A maximum-size message text (4,000 four-byte characters), the first
/// three characters spelling `i` so that every message is distinct.
fn big_text(i: usize) -> String {
    let digit = |d: usize| char::from_u32(0x1F600 + (d % 64) as u32).expect("an emoji");
    let mut text = String::with_capacity(chat_proto::rules::MAX_MESSAGE_CHARS * 4);
    text.extend([digit(i / 4096), digit(i / 64), digit(i)]);
    text.extend(std::iter::repeat_n(
        '😀',
        chat_proto::rules::MAX_MESSAGE_CHARS - 3,
    ));
    text
}

/// Stores `count` big messages with the unary `Send`; returns each one's id
/// and text, in order.
async fn store(url: &str, count: usize) -> anyhow::Result<Vec<(u64, String)>> {
    let mut client = clients::native(url).await?;
    let mut stored: Vec<(u64, String)> = Vec::with_capacity(count);
    for i in 0..count {
        let text = big_text(i);
        let reply = client
            .send(ChatMessage {
                username: "writer".to_owned(),
                message: text.clone(),
                ..ChatMessage::default()
            })
            .await
            .with_context(|| format!("storing big message {i}"))?
            .into_inner();
        if stored.last().is_some_and(|&(last, _)| reply.id <= last) {
            bail!(
                "Send gave id {} after {:?}",
                reply.id,
                stored.last().map(|s| s.0)
            );
        }
        stored.push((reply.id, text));
    }
    Ok(stored)
}

struct Attack {
    /// Dropping it closes the connection and every stream on it.
    connection: AttackConnection,
    /// Requests handed to h2 (which queues those past the server's limit).
    opened: usize,
    accepted: usize,
    refused: usize,
    max_streams: Option<usize>,
    problem: Option<String>,
}

struct AttackConnection {
    driver: tokio::task::JoinHandle<()>,
    streams: JoinSet<()>,
}

impl Drop for AttackConnection {
    fn drop(&mut self) {
        self.driver.abort();
        self.streams.abort_all();
    }
}

/// One HTTP/2 connection with a receive window of 0, as many `Subscribe`
/// streams on it as the server takes (within `sizes.open_for`), held for
/// `sizes.hold`.
async fn attack(server: &ServerProcess, sizes: &Sizes) -> anyhow::Result<Attack> {
    let tcp = tokio::net::TcpStream::connect(server.addr).await?;
    tcp.set_nodelay(true)?;
    let (send_request, mut connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .context("HTTP/2 handshake")?;
    let mut ping_pong = connection.ping_pong().context("no ping handle")?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut connection = AttackConnection {
        driver,
        streams: JoinSet::new(),
    };
    // The server's SETTINGS come before its answer to a ping, so its stream
    // limit is known after one round trip.
    tokio::time::timeout(Duration::from_secs(5), ping_pong.ping(h2::Ping::opaque()))
        .await
        .context("no PING answer in 5 s")?
        .context("PING")?;
    let max_streams = Some(send_request.current_max_send_streams()).filter(|&m| m != usize::MAX);

    let uri = format!("http://{}/ChatService/Subscribe", server.addr);
    let body = grpc_frame(&SubscribeRequest {
        username: "attacker".to_owned(),
        after_id: 0,
        ..Default::default()
    });
    let live = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut problem = None;
    let mut opened = 0;
    // Keeps the connection's request side open when `ready` times out.
    let mut next = Some(send_request.clone());
    let _keep = send_request;
    let give_up = Instant::now() + sizes.open_for;
    while opened < sizes.streams {
        let Some(handle) = next.take() else { break };
        // Waits while the server's stream limit is reached.
        let mut handle = match tokio::time::timeout_at(give_up, handle.ready()).await {
            Ok(Ok(handle)) => handle,
            Ok(Err(error)) => {
                problem = Some(format!("connection: {error}"));
                break;
            }
            Err(_) => break,
        };
        let request = http::Request::post(&uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
        let (response, mut request_body) = match handle.send_request(request, false) {
            Ok(sent) => sent,
            Err(error) => {
                problem = Some(format!("opening stream {opened}: {error}"));
                break;
            }
        };
        if let Err(error) = request_body.send_data(body.clone(), true) {
            problem = Some(format!("sending request {opened}: {error}"));
            break;
        }
        opened += 1;
        next = Some(handle);
        let (live, refused) = (Arc::clone(&live), Arc::clone(&refused));
        connection.streams.spawn(async move {
            let _request_body = request_body;
            let ok = |r: &http::Response<h2::RecvStream>| {
                r.status() == http::StatusCode::OK
                    && r.headers()
                        .get("grpc-status")
                        .is_none_or(|s| s.as_bytes() == b"0")
            };
            match response.await {
                Ok(response) if ok(&response) => {
                    live.fetch_add(1, Ordering::SeqCst);
                    // Never read nor release window: the server cannot send a
                    // byte. This only returns if the server ends or resets
                    // the stream.
                    let mut body = response.into_body();
                    while let Some(Ok(_)) = body.data().await {}
                    live.fetch_sub(1, Ordering::SeqCst);
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                _ => {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    tokio::time::sleep(sizes.hold).await;
    Ok(Attack {
        connection,
        opened,
        accepted: live.load(Ordering::SeqCst),
        refused: refused.load(Ordering::SeqCst),
        max_streams,
        problem,
    })
}

/// A message as one gRPC length-prefixed frame, uncompressed.
fn grpc_frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut frame = BytesMut::with_capacity(5 + len);
    frame.put_u8(0);
    frame.put_u32(u32::try_from(len).expect("a small message"));
    message
        .encode(&mut frame)
        .expect("capacity was reserved for it");
    frame.freeze()
}

enum Failure {
    /// Refused or stalled before `Ready`.
    Refused(String),
    /// `Ready` came, then a wrong, missing or stalled history.
    Wrong(String),
}

/// What keeps a reader's connection open.
type Held = Box<dyn Send>;

/// `count` subscribers from the start of history, each reading and checking
/// all of it; all of them stay connected until the last has finished.
async fn readers(
    url: &str,
    kind: clients::Kind,
    count: usize,
    stored: &Arc<Vec<(u64, String)>>,
) -> (Vec<Held>, Vec<Failure>) {
    // Generous: only reached when a server has really stalled.
    let deadline =
        Instant::now() + Duration::from_secs(60) + Duration::from_millis(50) * count as u32;
    let connecting = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let mut readers = JoinSet::new();
    for i in 0..count {
        let (url, stored, connecting) =
            (url.to_owned(), Arc::clone(stored), Arc::clone(&connecting));
        readers.spawn(async move {
            let permit = connecting
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let (held, mut events, last_id) =
                match tokio::time::timeout_at(deadline, subscribe(&url, kind, i, permit)).await {
                    Ok(Ok(subscribed)) => subscribed,
                    Ok(Err(error)) => return Err(Failure::Refused(format!("{error:#}"))),
                    Err(_) => return Err(Failure::Refused("no Ready before the deadline".into())),
                };
            let newest = stored.last().map_or(0, |&(id, _)| id);
            if last_id != newest {
                return Err(Failure::Wrong(format!(
                    "Ready says the newest message is {last_id}, not {newest}"
                )));
            }
            match tokio::time::timeout_at(deadline, check_history(&mut events, &stored)).await {
                Ok(Ok(())) => Ok(Box::new((held, events)) as Held),
                Ok(Err(error)) => Err(Failure::Wrong(format!("{error:#}"))),
                Err(_) => Err(Failure::Wrong(
                    "history not complete before the deadline".into(),
                )),
            }
        });
    }
    let mut held = Vec::with_capacity(count);
    let mut failures = Vec::new();
    while let Some(joined) = readers.join_next().await {
        match joined {
            Ok(Ok(h)) => held.push(h),
            Ok(Err(failure)) => failures.push(failure),
            Err(error) => failures.push(Failure::Wrong(format!("reader task: {error}"))),
        }
    }
    (held, failures)
}

/// Connects and subscribes from the start, up to the `Ready` event (whose
/// `last_id` it returns); the permit is given back then.
async fn subscribe(
    url: &str,
    kind: clients::Kind,
    i: usize,
    _permit: OwnedSemaphorePermit,
) -> anyhow::Result<(Held, Streaming<ChatEvent>, u64)> {
    let request = SubscribeRequest {
        username: format!("reader{i}"),
        after_id: 0,
        ..Default::default()
    };
    let (held, mut events): (Held, _) = match kind {
        clients::Kind::Native => {
            let mut client = clients::native(url).await?;
            let events = client.subscribe(request).await?.into_inner();
            (Box::new(client), events)
        }
        clients::Kind::Web => {
            let mut client = clients::web(url)?;
            let events = client.subscribe(request).await?.into_inner();
            (Box::new(client), events)
        }
    };
    match events.message().await? {
        Some(ChatEvent {
            event: Some(Event::Ready(ready)),
        }) => Ok((held, events, ready.last_id)),
        other => bail!("expected Ready first, got {other:?}"),
    }
}

/// Every stored message, in order and intact (heartbeats aside).
async fn check_history(
    events: &mut Streaming<ChatEvent>,
    stored: &[(u64, String)],
) -> anyhow::Result<()> {
    for (n, (id, text)) in stored.iter().enumerate() {
        let message = loop {
            match events.message().await {
                Ok(Some(ChatEvent {
                    event: Some(Event::Message(m)),
                })) => break m,
                // Heartbeats, and who is here (right after `Ready`, and
                // whenever somebody comes or goes), are not history.
                Ok(Some(ChatEvent {
                    event: Some(Event::Heartbeat(_) | Event::Presence(_) | Event::Typing(_)),
                })) => {}
                Ok(Some(other)) => bail!("after {n} of {} messages: got {other:?}", stored.len()),
                Ok(None) => bail!("stream ended after {n} of {} messages", stored.len()),
                Err(status) => bail!("after {n} of {} messages: {status}", stored.len()),
            }
        };
        if message.id != *id || message.message != *text {
            bail!(
                "message {n}: id {} with {} characters, expected id {id} with {}",
                message.id,
                message.message.chars().count(),
                text.chars().count()
            );
        }
    }
    Ok(())
}
