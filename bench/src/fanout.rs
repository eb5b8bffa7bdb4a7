//! Fan-out: N connected clients, S of them sending M messages each at a
//! fixed rate (or as fast as they can), every receipt checked and timed.
//!
//! Every client is connected and confirmed live before the timed phase:
//! gRPC-Web subscribers by their `Ready` event, native `ChatStream` clients
//! by receiving a probe message.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
        }
    }

    /// The room of client or sender `i` (`""` is general).
    fn room(&self, i: usize) -> String {
        match i % self.rooms.max(1) {
            0 => String::new(),
            k => format!("room{k}"),
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
}

impl Outcome {
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }
}

fn username(i: usize) -> String {
    format!("bench{i}")
}

pub async fn run(url: &str, plan: Plan) -> anyhow::Result<Outcome> {
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
            client
                .create_room(chat_proto::CreateRoomRequest {
                    name: format!("room{k}"),
                    topic: String::new(),
                })
                .await
                .context("creating the rooms")?;
        }
    }
    let (receivers, start_us) = match plan.protocol {
        Protocol::Native => native(url, plan, deadline).await?,
        Protocol::Web => web(url, plan, deadline).await?,
    };
    let mut outcome = Outcome {
        expected: 0,
        delivered: 0,
        duplicated: 0,
        out_of_order: 0,
        latency_us: new_histogram(),
        elapsed: Duration::ZERO,
    };
    let mut last_us = start_us;
    for (expected, tally) in receivers {
        outcome.expected += expected;
        outcome.delivered += tally.unique;
        outcome.duplicated += tally.duplicated;
        outcome.out_of_order += tally.out_of_order;
        outcome
            .latency_us
            .add(&tally.latency_us)
            .context("merging histograms")?;
        last_us = last_us.max(tally.last_receipt_us);
    }
    outcome.elapsed = Duration::from_micros(last_us.saturating_sub(start_us));
    Ok(outcome)
}

type Receivers = (Vec<(u64, Tally)>, u64);

async fn native(url: &str, plan: Plan, deadline: Instant) -> anyhow::Result<Receivers> {
    let probed = Arc::new(AtomicUsize::new(0));
    let mut receivers = JoinSet::new();
    let mut outboxes = Vec::new();
    for i in 0..plan.clients {
        let mut client = clients::native(url).await?;
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
            let mut tally = Tally::new(plan.senders, plan.messages);
            let mut saw_probe = false;
            while tally.unique < expected || !saw_probe {
                match tokio::time::timeout_at(deadline, incoming.message()).await {
                    Ok(Ok(Some(message))) if message.message == "probe" => {
                        if !saw_probe {
                            saw_probe = true;
                            probed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok(Ok(Some(message))) => tally.record(&message.message),
                    _ => break,
                }
            }
            (expected, tally)
        });
        outboxes.push(outbox);
    }
    // Confirm every stream is live: probe until all have seen one. Over a
    // ChatStream of its own, the one RPC every server under test has.
    let (probes, outgoing) = mpsc::channel::<ChatMessage>(16);
    let _probe_stream = clients::native(url)
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

    let start_us = now_us();
    let mut senders = JoinSet::new();
    for (s, outbox) in outboxes.iter().take(plan.senders).cloned().enumerate() {
        senders.spawn(async move {
            let mut ticker = plan.rate.map(ticker);
            for seq in 0..plan.messages {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                if outbox
                    .send(chat(&username(s), &payload(s, seq)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    senders.join_all().await;
    let tallies = receivers.join_all().await;
    drop(outboxes);
    Ok((tallies, start_us))
}

async fn web(url: &str, plan: Plan, deadline: Instant) -> anyhow::Result<Receivers> {
    let mut receivers = JoinSet::new();
    for i in 0..plan.clients {
        let mut client = clients::web(url)?;
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
            let mut tally = Tally::new(plan.senders, plan.messages);
            while tally.unique < expected {
                match tokio::time::timeout_at(deadline, events.message()).await {
                    Ok(Ok(Some(ChatEvent {
                        event: Some(Event::Message(m)),
                    }))) => tally.record(&m.message),
                    Ok(Ok(Some(_))) => {}
                    _ => break,
                }
            }
            (expected, tally)
        });
    }

    let start_us = now_us();
    let mut senders = JoinSet::new();
    for s in 0..plan.senders {
        let mut client = clients::web(url)?;
        senders.spawn(async move {
            let mut ticker = plan.rate.map(ticker);
            for seq in 0..plan.messages {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let message = ChatMessage {
                    room: plan.room(s),
                    ..chat(&username(s), &payload(s, seq))
                };
                if client.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
    senders.join_all().await;
    Ok((receivers.join_all().await, start_us))
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
