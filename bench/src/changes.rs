//! Changes to messages: what a reaction storm costs next to the same rate
//! of plain messages, and what replaying history whose messages carry an
//! edit and reactions costs next to plain history.
//!
//! Storm: L gRPC-Web listeners in one room; S people (each with a session)
//! react to one message at R per second each for D seconds, adding and
//! taking back their reaction in turn (every call stores a change).
//! The same S then send plain messages at the same rate and length. Each
//! listener counts what it receives; a run that loses anything fails.
//! Reported per kind: deliveries, CPU time (the chat servers', and the NATS
//! nodes' in cluster mode) and bytes per delivery, and how long the calls
//! took to make (a server that cannot keep up stretches it). On several
//! replicas, people and listeners are spread over them round-robin, so
//! reactions to the one message come through every replica at once.
//!
//! Replay: N messages, then (in the second run) an edit and 5 reactions on
//! each; a new subscriber with `--history N` reads them all. Reported: time
//! to the last message and bytes on the wire, plain against changed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use chat_proto::{
    ChatEvent, ChatMessage, EditRequest, Event, JoinRequest, ReactRequest, SubscribeRequest,
};
use prost::Message;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Request;

use crate::clients;
use crate::report::Row;
use crate::server::{ServerProcess, cpu_time_of_pid};
use chat_testkit::nats::NatsCluster;

/// How long the listeners may take to receive everything.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
const EMOJI: [&str; 5] = ["👍", "🎉", "❤️", "😂", "🙏"];

/// The storm's shape.
#[derive(Debug, Clone, Copy)]
pub struct Storm {
    pub listeners: usize,
    pub senders: usize,
    /// Calls per second per sender.
    pub rate: f64,
    pub seconds: f64,
}

/// One kind's run of the storm.
pub struct Pass {
    /// Where it ran (`sqlite`, `nats3`).
    pub setup: &'static str,
    pub kind: &'static str,
    /// From the first call to the last reply.
    pub calling: Duration,
    pub expected: u64,
    pub delivered: u64,
    pub cpu: Duration,
    /// On the listeners' streams, in all.
    pub bytes: u64,
}

impl Pass {
    pub fn row(&self, storm: &Storm) -> Row {
        Row::new("changes_storm")
            .text("setup", self.setup)
            .text("kind", self.kind)
            .num("listeners", storm.listeners)
            .num("senders", storm.senders)
            .num("rate", storm.rate)
            .num("calling_s", format!("{:.2}", self.calling.as_secs_f64()))
            .num("expected", self.expected)
            .num("delivered", self.delivered)
            .num(
                "cpu_us_per_delivery",
                format!(
                    "{:.2}",
                    self.cpu.as_secs_f64() * 1e6 / self.delivered.max(1) as f64
                ),
            )
            .num("bytes_per_delivery", self.bytes / self.delivered.max(1))
    }
}

/// `Bearer <token>` for `name`, claimed on `client`.
async fn join(client: &mut clients::Web, name: &str) -> anyhow::Result<String> {
    let reply = client
        .join(JoinRequest {
            username: name.into(),
            token: String::new(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(format!("Bearer {}", reply.token))
}

fn authorized<T>(message: T, bearer: &str) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer.parse()?);
    Ok(request)
}

/// Listeners that count the messages and changes (and their bytes) they
/// receive after `Ready`.
struct Listeners {
    received: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Listeners {
    /// `count` listeners, spread over `urls`.
    async fn open(urls: &[String], count: usize, after_id: u64) -> anyhow::Result<Self> {
        let received = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(count.max(1));
        for i in 0..count {
            let mut client = clients::web(&urls[i % urls.len()])?;
            let (received, bytes, ready) =
                (Arc::clone(&received), Arc::clone(&bytes), ready_tx.clone());
            tasks.spawn(async move {
                let mut stream = client
                    .subscribe(SubscribeRequest {
                        username: format!("listener{i}"),
                        after_id,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                while let Some(event) = stream.message().await? {
                    let size = event.encoded_len() as u64;
                    match event.event {
                        Some(Event::Ready(_)) => {
                            let _ = ready.send(()).await;
                        }
                        Some(Event::Message(_) | Event::Change(_)) => {
                            bytes.fetch_add(size, Ordering::Relaxed);
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
                Ok(())
            });
        }
        for _ in 0..count {
            ready_rx
                .recv()
                .await
                .context("a listener ended before Ready")?;
        }
        Ok(Self {
            received,
            bytes,
            tasks,
        })
    }

    /// Waits until `expected` have arrived (or fails after the limit).
    async fn drain(&self, expected: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + DRAIN_LIMIT;
        while self.received.load(Ordering::Relaxed) < expected {
            if Instant::now() > deadline {
                bail!(
                    "{} of {expected} deliveries after {DRAIN_LIMIT:?}",
                    self.received.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn close(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Where a storm runs: one server, or replicas on a NATS cluster (whose
/// nodes' CPU counts too).
pub struct Place<'a> {
    pub name: &'static str,
    pub servers: &'a [ServerProcess],
    pub nats: Option<&'a NatsCluster>,
}

impl Place<'_> {
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        let servers: Duration = self
            .servers
            .iter()
            .map(ServerProcess::cpu_time)
            .sum::<anyhow::Result<Duration>>()?;
        let nats = self.nats.map_or(Ok(Duration::ZERO), |nats| {
            nats.pids().into_iter().map(cpu_time_of_pid).sum()
        })?;
        Ok(servers + nats)
    }
}

/// The storm, changes first, then the same rate of plain messages.
pub async fn storm(place: &Place<'_>, storm: Storm) -> anyhow::Result<Vec<Pass>> {
    let urls: Vec<String> = place.servers.iter().map(ServerProcess::url).collect();
    let url = urls.first().context("no server")?.clone();
    let mut people = Vec::new();
    for i in 0..storm.senders {
        let mut client = clients::web(&urls[i % urls.len()])?;
        let bearer = join(&mut client, &format!("reactor{i}")).await?;
        people.push((client, bearer));
    }
    let (first, bearer) = people.first_mut().context("no senders")?;
    let target = first
        .send(authorized(
            ChatMessage {
                message: "react to me".into(),
                ..Default::default()
            },
            bearer,
        )?)
        .await?
        .into_inner()
        .id;
    let calls = (storm.rate * storm.seconds).round() as u64;
    let mut passes = Vec::new();
    for kind in ["reactions", "messages"] {
        // Live from the newest id: nothing of the last pass replayed.
        let listeners = Listeners::open(&urls, storm.listeners, newest(&url).await?).await?;
        let cpu_before = place.cpu_time()?;
        let calling = Instant::now();
        let mut senders = JoinSet::new();
        for (client, bearer) in &people {
            let (mut client, bearer) = (client.clone(), bearer.clone());
            let gap = Duration::from_secs_f64(1.0 / storm.rate);
            senders.spawn(async move {
                let started = Instant::now();
                for call in 0..calls {
                    tokio::time::sleep_until(
                        started + gap * u32::try_from(call).unwrap_or(u32::MAX),
                    )
                    .await;
                    if kind == "reactions" {
                        client
                            .react(authorized(
                                ReactRequest {
                                    room: String::new(),
                                    id: target,
                                    emoji: EMOJI[0].into(),
                                    // Added, taken back, added...
                                    remove: call % 2 == 1,
                                },
                                &bearer,
                            )?)
                            .await?;
                    } else {
                        client
                            .send(authorized(
                                ChatMessage {
                                    message: "x".repeat(8),
                                    ..Default::default()
                                },
                                &bearer,
                            )?)
                            .await?;
                    }
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = senders.join_next().await {
            done??;
        }
        let calling = calling.elapsed();
        let expected = calls * storm.senders as u64 * storm.listeners as u64;
        listeners.drain(expected).await?;
        let cpu = place.cpu_time()? - cpu_before;
        let delivered = listeners.received.load(Ordering::Relaxed);
        let bytes = listeners.bytes.load(Ordering::Relaxed);
        listeners.close().await;
        passes.push(Pass {
            setup: place.name,
            kind,
            calling,
            expected,
            delivered,
            cpu,
            bytes,
        });
    }
    Ok(passes)
}

/// A `Subscribe` stream as `username`, from the recent history.
async fn recent(url: &str, username: &str) -> anyhow::Result<tonic::Streaming<ChatEvent>> {
    let mut client = clients::web(url)?;
    Ok(client
        .subscribe(SubscribeRequest {
            username: username.into(),
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// The room's newest id, from a `Subscribe`'s `Ready`.
async fn newest(url: &str) -> anyhow::Result<u64> {
    let mut stream = recent(url, "probe").await?;
    while let Some(ChatEvent { event }) = stream.message().await? {
        if let Some(Event::Ready(ready)) = event {
            return Ok(ready.last_id);
        }
    }
    bail!("the probe's stream ended before Ready")
}

/// One replay run.
pub struct Replay {
    pub kind: &'static str,
    pub messages: u64,
    pub elapsed: Duration,
    pub bytes: u64,
}

impl Replay {
    pub fn row(&self) -> Row {
        Row::new("changes_replay")
            .text("kind", self.kind)
            .num("messages", self.messages)
            .num("ms", format!("{:.0}", self.elapsed.as_secs_f64() * 1e3))
            .num("bytes", self.bytes)
    }
}

/// Replays `count` messages (`--history` must be at least `count`), plain
/// or each with an edit and 5 reactions (one each from 5 people).
pub async fn replay(server: &ServerProcess, count: u64, changed: bool) -> anyhow::Result<Replay> {
    let url = server.url();
    let mut author = clients::web(&url)?;
    let bearer = join(&mut author, if changed { "author-c" } else { "author-p" }).await?;
    let mut reactors = Vec::new();
    for i in 0..EMOJI.len() {
        let mut client = clients::web(&url)?;
        let token = join(&mut client, &format!("fan{i}-{changed}")).await?;
        reactors.push((client, token));
    }
    let mut ids = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for i in 0..count {
        let id = author
            .send(authorized(
                ChatMessage {
                    message: format!("message {i} of the history, about sixty bytes long"),
                    ..Default::default()
                },
                &bearer,
            )?)
            .await?
            .into_inner()
            .id;
        ids.push(id);
    }
    if changed {
        for &id in &ids {
            author
                .edit(authorized(
                    EditRequest {
                        room: String::new(),
                        id,
                        message: format!("message {id}, edited, and about sixty bytes long"),
                        nonce: String::new(),
                    },
                    &bearer,
                )?)
                .await?;
            for ((client, token), emoji) in reactors.iter_mut().zip(EMOJI) {
                client
                    .react(authorized(
                        ReactRequest {
                            room: String::new(),
                            id,
                            emoji: emoji.into(),
                            remove: false,
                        },
                        token,
                    )?)
                    .await?;
            }
        }
    }
    // A new subscriber: the newest `count` messages in their current state.
    let started = Instant::now();
    let mut stream = recent(&url, "replayer").await?;
    let (mut messages, mut bytes) = (0u64, 0u64);
    let last = *ids.last().context("no messages")?;
    while let Some(event) = stream.message().await? {
        bytes += event.encoded_len() as u64;
        if let Some(Event::Message(message)) = event.event {
            messages += 1;
            if changed && (message.reactions.len() != EMOJI.len() || message.edited_at == 0) {
                bail!("message {} replayed without its changes", message.id);
            }
            if message.id == last {
                break;
            }
        }
    }
    Ok(Replay {
        kind: if changed {
            "edit_and_5_reactions"
        } else {
            "plain"
        },
        messages,
        elapsed: started.elapsed(),
        bytes,
    })
}
