//! Fan-out: N connected clients, S of them sending M messages each at a
//! fixed rate (or as fast as they can), every receipt checked and timed.
//!
//! Every client is connected and confirmed live before the timed phase:
//! gRPC-Web subscribers by their `Ready` event, native `ChatStream` clients
//! by receiving a probe message.
//!
//! Against several servers (replicas of one cluster), client or sender `i`
//! connects to server `i % servers` (`(i / rooms) % servers` with several
//! rooms, so each room has members on every server), and with [`Plan::timings`] the latency
//! is also split by whether the receiver is on its sender's server, and
//! (gRPC-Web) set against the moment each `Send` was answered.
//!
//! A run that loses messages explains itself on stderr ([`loss_report`]):
//! which receivers missed which senders' messages, how each affected
//! stream ended (its gRPC status, or still open at the deadline) and when,
//! and which senders' streams or `Send`s failed. What that needs is kept
//! on every run but is a few words per client; the report is only built
//! when something is lost.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use chat_proto::{ChatEvent, ChatMessage, Event, SubscribeRequest};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::clients;
use crate::tally::{Tally, new_histogram, now_us, payload};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// The paper's bidirectional ChatStream over HTTP/2.
    Native,
    /// Subscribe + Send over gRPC-Web on HTTP/1.1 (the browser's path).
    Web,
}

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub protocol: Protocol,
    pub clients: usize,
    pub senders: usize,
    pub messages: usize,
    /// Messages per second per sender; `None` sends as fast as possible.
    pub rate: Option<f64>,
    /// Rooms the clients and senders are spread over (client or sender `i`
    /// in room `i % rooms`); each hears only its room's senders.
    pub rooms: usize,
    /// Keep when each message was sent, answered and received, for
    /// [`Outcome::timings`] (memory: 8 bytes per delivery).
    pub timings: bool,
}

impl Plan {
    /// `(clients, senders, messages, rate)` over `protocol`.
    pub fn new(
        protocol: Protocol,
        (clients, senders, messages, rate): (usize, usize, usize, Option<f64>),
    ) -> Self {
        Self {
            protocol,
            clients,
            senders,
            messages,
            rate,
            rooms: 1,
            timings: false,
        }
    }

    /// The room of client or sender `i` (`""` is general).
    fn room(&self, i: usize) -> String {
        match i % self.rooms.max(1) {
            0 => String::new(),
            k => room_name(k),
        }
    }

    /// Senders in the room of client `i`.
    fn senders_heard(&self, i: usize) -> usize {
        let rooms = self.rooms.max(1);
        (0..self.senders).filter(|s| s % rooms == i % rooms).count()
    }
}

pub struct Outcome {
    pub expected: u64,
    pub delivered: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub latency_us: Histogram<u64>,
    pub elapsed: Duration,
    /// With [`Plan::timings`].
    pub timings: Option<Timings>,
}

/// Where the time between send and receipt goes (see [`Plan::timings`]).
pub struct Timings {
    /// Send to receipt, receivers on the sender's own server.
    pub same_server_us: Histogram<u64>,
    /// Send to receipt, receivers on another server (empty with one).
    pub other_server_us: Histogram<u64>,
    /// gRPC-Web: send to `Send`'s reply, once per message: how long the
    /// server took to store it (a SQLite commit, or JetStream's
    /// acknowledgement of a replicated write).
    pub ack_us: Option<Histogram<u64>>,
    /// gRPC-Web: `Send`'s reply to receipt, per delivery, receivers on the
    /// sender's server and on another; a delivery that came before the
    /// reply counts as 0 (and in `before_ack`).
    pub after_ack_same_us: Option<Histogram<u64>>,
    pub after_ack_other_us: Option<Histogram<u64>>,
    pub before_ack: u64,
}

/// When each message (`sender * messages + seq`) was sent and answered.
struct Stamps {
    sent: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
    messages: usize,
}

impl Stamps {
    fn new(plan: &Plan) -> Arc<Self> {
        let n = if plan.timings {
            plan.senders * plan.messages
        } else {
            0
        };
        Arc::new(Self {
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            acked: (0..n).map(|_| AtomicU64::new(0)).collect(),
            messages: plan.messages,
        })
    }

    fn slot(&self, sender: usize, seq: usize) -> usize {
        sender * self.messages + seq
    }

    fn sent(&self, sender: usize, seq: usize, at: u64) {
        if let Some(s) = self.sent.get(self.slot(sender, seq)) {
            s.store(at, Ordering::Relaxed);
        }
    }

    fn acked(&self, sender: usize, seq: usize, at: u64) {
        if let Some(s) = self.acked.get(self.slot(sender, seq)) {
            s.store(at, Ordering::Relaxed);
        }
    }
}

impl Outcome {
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }
}

/// Room `k` of a plan's rooms after general (`k` from 1).
pub fn room_name(k: usize) -> String {
    format!("room{k}")
}

fn username(i: usize) -> String {
    format!("bench{i}")
}

/// How a stream ended before its client was done with it.
#[derive(Debug, Clone)]
pub struct Ended {
    /// The gRPC status (`Unavailable "..."`), or what else happened.
    pub how: String,
    /// Whether the server ended it with an error status.
    pub status: bool,
    /// When it was seen, on [`now_us`]'s clock.
    pub at_us: u64,
}

impl Ended {
    pub fn with_status(status: &tonic::Status) -> Self {
        Self {
            how: describe(status),
            status: true,
            at_us: now_us(),
        }
    }

    /// Not an error status: `what` says what it was.
    pub fn other(what: &str) -> Self {
        Self {
            how: what.to_owned(),
            status: false,
            at_us: now_us(),
        }
    }

    /// How a stream's next item says it ended, if it did: closed, an error
    /// status, or still open at the deadline.
    pub fn of<T>(
        next: &Result<Result<Option<T>, tonic::Status>, tokio::time::error::Elapsed>,
    ) -> Option<Self> {
        match next {
            Ok(Ok(Some(_))) => None,
            Ok(Ok(None)) => Some(Self::other("closed without a status")),
            Ok(Err(status)) => Some(Self::with_status(status)),
            Err(_) => Some(Self::other("open at the deadline")),
        }
    }

    /// `how at +1.234 s`, the time from `start_us`.
    pub fn since(&self, start_us: u64) -> String {
        format!("{} at {}", self.how, since(start_us, self.at_us))
    }
}

/// A status as the reports print it: its code and (shortened) message.
pub fn describe(status: &tonic::Status) -> String {
    const LONGEST: usize = 160;
    let message = status.message();
    let short: String = message.chars().take(LONGEST).collect();
    let more = if short.len() < message.len() {
        "..."
    } else {
        ""
    };
    format!("{:?} \"{short}{more}\"", status.code())
}

/// `at_us` from `start_us` in seconds, signed (`+1.234 s`).
pub fn since(start_us: u64, at_us: u64) -> String {
    let delta = at_us as f64 - start_us as f64;
    format!("{:+.3} s", delta / 1e6)
}

/// One receiving client: what it should get, what it got, how its stream
/// ended if it ended early (`None`: it had everything).
struct Receiver {
    index: usize,
    expected: u64,
    tally: Tally,
    ended: Option<Ended>,
}

/// How one sender fared: `Send`s that failed (gRPC-Web), or the message
/// at which its outbox closed (native: its stream had ended).
#[derive(Default)]
struct Sender {
    index: usize,
    failed: u64,
    /// The first failure: the message's seq and what happened.
    first_failure: Option<(usize, Ended)>,
}

impl Sender {
    fn failed(&mut self, seq: usize, ended: impl FnOnce() -> Ended) {
        self.failed += 1;
        if self.first_failure.is_none() {
            self.first_failure = Some((seq, ended()));
        }
    }
}

/// The fan-out against `urls`: one server, or replicas of one cluster.
pub async fn run(urls: &[String], plan: Plan) -> anyhow::Result<Outcome> {
    Ok(run_metered(urls, plan, || ()).await?.0)
}

/// [`run`], calling `meter` once every client is live, just before the
/// first message is sent (to read CPU clocks over the timed phase alone).
pub async fn run_metered<M>(
    urls: &[String],
    plan: Plan,
    meter: impl FnOnce() -> M,
) -> anyhow::Result<(Outcome, M)> {
    let Some(url) = urls.first() else {
        bail!("no server to run the fan-out against");
    };
    if plan.senders > plan.clients {
        bail!(
            "more senders ({}) than clients ({})",
            plan.senders,
            plan.clients
        );
    }
    // Generous: only reached if messages are really lost.
    let deadline = Instant::now()
        + Duration::from_secs(30)
        + plan.rate.map_or(Duration::from_secs(120), |r| {
            Duration::from_secs_f64(plan.messages as f64 / r)
        });
    if plan.rooms > 1 {
        if plan.protocol == Protocol::Native {
            bail!("--rooms needs --protocol web");
        }
        let mut client = clients::web(url)?;
        for k in 1..plan.rooms {
            let made = client
                .create_room(chat_proto::CreateRoomRequest {
                    name: room_name(k),
                    topic: String::new(),
                })
                .await;
            match made {
                // Made already (by the cluster comparison's warm-up).
                Err(status) if status.code() == tonic::Code::AlreadyExists => {}
                other => drop(other.context("creating the rooms")?),
            }
        }
    }
    let stamps = Stamps::new(&plan);
    let ((receivers, senders, start_us), metered) = match plan.protocol {
        Protocol::Native => native(urls, plan, deadline, &stamps, meter).await?,
        Protocol::Web => web(urls, plan, deadline, &stamps, meter).await?,
    };
    let mut outcome = Outcome {
        expected: 0,
        delivered: 0,
        duplicated: 0,
        out_of_order: 0,
        latency_us: new_histogram(),
        elapsed: Duration::ZERO,
        timings: None,
    };
    if plan.timings {
        outcome.timings = Some(timings(urls.len(), plan, &stamps, &receivers)?);
    }
    let mut last_us = start_us;
    for r in &receivers {
        outcome.expected += r.expected;
        outcome.delivered += r.tally.unique;
        outcome.duplicated += r.tally.duplicated;
        outcome.out_of_order += r.tally.out_of_order;
        outcome
            .latency_us
            .add(&r.tally.latency_us)
            .context("merging histograms")?;
        last_us = last_us.max(r.tally.last_receipt_us);
    }
    outcome.elapsed = Duration::from_micros(last_us.saturating_sub(start_us));
    if outcome.lost() > 0 {
        eprint!(
            "{}",
            loss_report(urls.len(), plan, start_us, &outcome, &receivers, &senders)
        );
    }
    Ok((outcome, metered))
}

/// Splits the latency by server and sets it against the replies, from
/// what the receivers and senders kept.
fn timings(
    servers: usize,
    plan: Plan,
    stamps: &Stamps,
    receivers: &[Receiver],
) -> anyhow::Result<Timings> {
    let web = plan.protocol == Protocol::Web;
    let web_histogram = || web.then(new_histogram);
    let mut t = Timings {
        same_server_us: new_histogram(),
        other_server_us: new_histogram(),
        ack_us: web_histogram(),
        after_ack_same_us: web_histogram(),
        after_ack_other_us: web_histogram(),
        before_ack: 0,
    };
    if let Some(ack) = t.ack_us.as_mut() {
        for (sent, acked) in stamps.sent.iter().zip(&stamps.acked) {
            let (sent, acked) = (sent.load(Ordering::Relaxed), acked.load(Ordering::Relaxed));
            if sent > 0 && acked > 0 {
                ack.record(acked.saturating_sub(sent).max(1))?;
            }
        }
    }
    for Receiver {
        index: receiver,
        tally,
        ..
    } in receivers
    {
        let Some(times) = &tally.received_us else {
            continue;
        };
        for (sender, times) in times.iter().enumerate() {
            let same = server_of(plan, servers, sender) == server_of(plan, servers, *receiver);
            for (seq, &received) in times.iter().enumerate() {
                let slot = stamps.slot(sender, seq);
                let sent = stamps.sent[slot].load(Ordering::Relaxed);
                if received == 0 || sent == 0 {
                    continue;
                }
                let latency = received.saturating_sub(sent).max(1);
                if same {
                    t.same_server_us.record(latency)?;
                } else {
                    t.other_server_us.record(latency)?;
                }
                let acked = stamps.acked[slot].load(Ordering::Relaxed);
                let after = if same {
                    t.after_ack_same_us.as_mut()
                } else {
                    t.after_ack_other_us.as_mut()
                };
                if let (Some(after), true) = (after, acked > 0) {
                    if received < acked {
                        t.before_ack += 1;
                    }
                    after.record(received.saturating_sub(acked))?;
                }
            }
        }
    }
    Ok(t)
}

/// Every receiver and sender, and when the timed phase started.
type Receivers = (Vec<Receiver>, Vec<Sender>, u64);

/// At most this many receivers are listed one by one in a loss report.
const LISTED: usize = 40;

/// Which receivers missed which senders' messages, how their streams
/// ended, and which senders failed; times from the first message sent.
fn loss_report(
    servers: usize,
    plan: Plan,
    start_us: u64,
    outcome: &Outcome,
    receivers: &[Receiver],
    senders: &[Sender],
) -> String {
    let mut out = format!(
        "fan-out lost {} of {} deliveries ({:?}, {} clients x {} senders x {} messages, {} server(s); {} duplicated, {} out of order); times from the first message sent:\n",
        outcome.lost(),
        outcome.expected,
        plan.protocol,
        plan.clients,
        plan.senders,
        plan.messages,
        servers,
        outcome.duplicated,
        outcome.out_of_order,
    );
    let rooms = plan.rooms.max(1);
    let hears = |receiver: usize, sender: usize| match plan.protocol {
        Protocol::Native => receiver != sender,
        Protocol::Web => sender % rooms == receiver % rooms,
    };
    let mut affected: Vec<&Receiver> = receivers
        .iter()
        .filter(|r| r.tally.unique < r.expected)
        .collect();
    affected.sort_by_key(|r| r.index);
    for r in affected.iter().take(LISTED) {
        let missing: Vec<String> = (0..plan.senders)
            .filter(|&s| hears(r.index, s))
            .filter_map(|s| {
                let seqs = r.tally.missing(s);
                (!seqs.is_empty())
                    .then(|| format!("sender {s} (server {}) {seqs}", server_of(plan, servers, s)))
            })
            .collect();
        let end = r.ended.as_ref().map_or_else(
            || "still open".to_owned(),
            |e| format!("ended {}", e.since(start_us)),
        );
        let _ = writeln!(
            out,
            "  receiver {} (server {}), {} of {}, stream {end}; missing: {}",
            r.index,
            server_of(plan, servers, r.index),
            r.tally.unique,
            r.expected,
            missing.join("; ")
        );
    }
    if affected.len() > LISTED {
        let _ = writeln!(out, "  ... and {} more receivers", affected.len() - LISTED);
    }
    let mut senders: Vec<&Sender> = senders.iter().collect();
    senders.sort_by_key(|s| s.index);
    for s in senders {
        let server = server_of(plan, servers, s.index);
        match plan.protocol {
            Protocol::Native => {
                // A sender's stream is also its receiving side: how that
                // ended says why its outbox closed.
                let own = receivers
                    .iter()
                    .find(|r| r.index == s.index)
                    .and_then(|r| r.ended.as_ref())
                    .filter(|e| e.status);
                if s.first_failure.is_none() && own.is_none() {
                    continue;
                }
                let handed = s
                    .first_failure
                    .as_ref()
                    .map_or(plan.messages, |(seq, _)| *seq);
                let stream = own.map_or_else(
                    || "no status seen on its stream".to_owned(),
                    |e| format!("its stream ended {}", e.since(start_us)),
                );
                let _ = writeln!(
                    out,
                    "  sender {} (server {server}): {handed} of {} messages handed over; {stream}",
                    s.index, plan.messages
                );
            }
            Protocol::Web => {
                if let Some((seq, first)) = &s.first_failure {
                    let _ = writeln!(
                        out,
                        "  sender {} (server {server}): {} Sends failed, the first (seq {seq}) {}",
                        s.index,
                        s.failed,
                        first.since(start_us)
                    );
                }
            }
        }
    }
    out
}

/// Client or sender `i`'s server: round-robin, but over the members of a
/// room when there are several (`i / rooms`), so that every room has
/// members on every server.
fn server_of(plan: Plan, servers: usize, i: usize) -> usize {
    (i / plan.rooms.max(1)) % servers.max(1)
}

fn url_of(urls: &[String], plan: Plan, i: usize) -> &str {
    &urls[server_of(plan, urls.len(), i)]
}

fn tally(plan: Plan) -> Tally {
    let tally = Tally::new(plan.senders, plan.messages);
    if plan.timings {
        tally.keep_times()
    } else {
        tally
    }
}

async fn native<M>(
    urls: &[String],
    plan: Plan,
    deadline: Instant,
    stamps: &Arc<Stamps>,
    meter: impl FnOnce() -> M,
) -> anyhow::Result<(Receivers, M)> {
    let probed = Arc::new(AtomicUsize::new(0));
    let mut receivers = JoinSet::new();
    let mut outboxes = Vec::new();
    for i in 0..plan.clients {
        let mut client = clients::native(url_of(urls, plan, i)).await?;
        let (outbox, outgoing) = mpsc::channel::<ChatMessage>(1024);
        let mut incoming = client
            .chat_stream(ReceiverStream::new(outgoing))
            .await?
            .into_inner();
        // ChatStream does not echo: a sender gets everyone's but its own.
        let own = usize::from(i < plan.senders);
        let expected = ((plan.senders - own) * plan.messages) as u64;
        let probed = Arc::clone(&probed);
        receivers.spawn(async move {
            let mut tally = tally(plan);
            let mut saw_probe = false;
            let mut ended = None;
            while tally.unique < expected || !saw_probe {
                let next = tokio::time::timeout_at(deadline, incoming.message()).await;
                if let Some(end) = Ended::of(&next) {
                    ended = Some(end);
                    break;
                }
                let Ok(Ok(Some(message))) = next else {
                    continue;
                };
                if message.message != "probe" {
                    tally.record(&message.message);
                } else if !saw_probe {
                    saw_probe = true;
                    probed.fetch_add(1, Ordering::SeqCst);
                }
            }
            Receiver {
                index: i,
                expected,
                tally,
                ended,
            }
        });
        outboxes.push(outbox);
    }
    // Confirm every stream is live: probe until all have seen one. Over a
    // ChatStream of its own, the one RPC every server under test has.
    let (probes, outgoing) = mpsc::channel::<ChatMessage>(16);
    let _probe_stream = clients::native(url_of(urls, plan, 0))
        .await?
        .chat_stream(ReceiverStream::new(outgoing))
        .await?;
    while probed.load(Ordering::SeqCst) < plan.clients {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} clients came live",
                probed.load(Ordering::SeqCst),
                plan.clients
            );
        }
        probes.send(chat("prober", "probe")).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let metered = meter();
    let start_us = now_us();
    let mut senders = JoinSet::new();
    for (s, outbox) in outboxes.iter().take(plan.senders).cloned().enumerate() {
        let stamps = Arc::clone(stamps);
        senders.spawn(async move {
            let mut ticker = plan.rate.map(ticker);
            let mut sender = Sender {
                index: s,
                ..Sender::default()
            };
            for seq in 0..plan.messages {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let sent = now_us();
                stamps.sent(s, seq, sent);
                if outbox
                    .send(chat(&username(s), &payload(s, seq, sent)))
                    .await
                    .is_err()
                {
                    // The stream is gone; its receiving side says why.
                    sender.failed(seq, || Ended::other("outbox closed"));
                    break;
                }
            }
            sender
        });
    }
    let senders = senders.join_all().await;
    let receivers = receivers.join_all().await;
    drop(outboxes);
    Ok(((receivers, senders, start_us), metered))
}

async fn web<M>(
    urls: &[String],
    plan: Plan,
    deadline: Instant,
    stamps: &Arc<Stamps>,
    meter: impl FnOnce() -> M,
) -> anyhow::Result<(Receivers, M)> {
    let mut receivers = JoinSet::new();
    for i in 0..plan.clients {
        let mut client = clients::web(url_of(urls, plan, i))?;
        let mut events = client
            .subscribe(SubscribeRequest {
                username: username(i),
                after_id: 0,
                room: plan.room(i),
                ..Default::default()
            })
            .await?
            .into_inner();
        match events.message().await? {
            Some(ChatEvent {
                event: Some(Event::Ready(_)),
            }) => {}
            other => bail!("expected Ready first, got {other:?}"),
        }
        let expected = (plan.senders_heard(i) * plan.messages) as u64;
        receivers.spawn(async move {
            let _client = client;
            let mut tally = tally(plan);
            let mut ended = None;
            while tally.unique < expected {
                let next = tokio::time::timeout_at(deadline, events.message()).await;
                if let Some(end) = Ended::of(&next) {
                    ended = Some(end);
                    break;
                }
                if let Ok(Ok(Some(ChatEvent {
                    event: Some(Event::Message(m)),
                }))) = next
                {
                    tally.record(&m.message);
                }
            }
            Receiver {
                index: i,
                expected,
                tally,
                ended,
            }
        });
    }

    let metered = meter();
    let start_us = now_us();
    let mut senders = JoinSet::new();
    for s in 0..plan.senders {
        let mut client = clients::web(url_of(urls, plan, s))?;
        let stamps = Arc::clone(stamps);
        senders.spawn(async move {
            let mut ticker = plan.rate.map(ticker);
            let mut sender = Sender {
                index: s,
                ..Sender::default()
            };
            for seq in 0..plan.messages {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let sent = now_us();
                stamps.sent(s, seq, sent);
                let message = ChatMessage {
                    room: plan.room(s),
                    ..chat(&username(s), &payload(s, seq, sent))
                };
                // A failed Send is counted and the next one tried: the
                // report then shows which messages went missing and why.
                match client.send(message).await {
                    Ok(_) => stamps.acked(s, seq, now_us()),
                    Err(status) => sender.failed(seq, || Ended::with_status(&status)),
                }
            }
            sender
        });
    }
    let senders = senders.join_all().await;
    Ok(((receivers.join_all().await, senders, start_us), metered))
}

fn ticker(rate: f64) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    // Keep the average rate if the sender is briefly descheduled.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    ticker
}

fn chat(username: &str, text: &str) -> ChatMessage {
    ChatMessage {
        username: username.to_owned(),
        message: text.to_owned(),
        ..ChatMessage::default()
    }
}
