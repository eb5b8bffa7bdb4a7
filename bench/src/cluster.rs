//! Cluster mode side by side with the single server (`--cluster`): the same
//! fan-out against
//!
//! - `sqlite`: one chat-server on its embedded SQLite file (the default),
//! - `nats1`: one chat-server on a three-node NATS JetStream cluster
//!   ([`chat_testkit::nats`]) that `bench` starts itself (rooms kept on 3
//!   nodes; its temp dir under `target/`, on the disk the SQLite runs use),
//! - `nats3`: three chat-server replicas on that cluster, client or sender
//!   `i` on replica `i % 3`,
//!
//! and, when asked, `nats1-fsync` and `nats3-fsync`: the same with
//! `jetstream { sync_interval: always }` on the NATS nodes.
//!
//! Every run gets fresh processes (a new database file, a new NATS cluster
//! with empty stores); rounds rotate which setup goes first, so drift in the
//! machine's load hits all alike. One row per run, then per protocol and
//! shape one row per setup with the medians and the NATS hop: how much
//! later than with SQLite a message reaches its receivers (p50) and how
//! much later a `Send` is answered, and with several replicas the latency
//! to receivers on the sender's replica and on another. CPU is read from
//! `/proc` over the timed phase (first message sent to last receipt, every
//! client already connected), per delivery: the chat servers' (summed over
//! replicas) and the NATS nodes' (also per message sent).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use chat_proto::{ChatEvent, ChatMessage, Event, SubscribeRequest};
use chat_testkit::nats::{NatsCluster, Options};
use hdrhistogram::Histogram;

use crate::clients;
use crate::compare::median;
use crate::fanout::{self, Plan, Protocol};
use crate::report::Row;
use crate::server::{ServerProcess, cpu_time_of_pid, own_cpu_time};

/// How the chat is deployed for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Setup {
    /// One chat-server on SQLite (a fresh database file).
    Sqlite,
    /// One chat-server on a 3-node NATS JetStream cluster.
    Nats1,
    /// Three chat-server replicas on a 3-node NATS cluster, clients and
    /// senders spread round-robin.
    Nats3,
    /// nats1 with `sync_interval: always` (every write fsynced before its
    /// acknowledgement).
    #[value(name = "nats1-fsync")]
    Nats1Fsync,
    /// nats3 with `sync_interval: always`.
    #[value(name = "nats3-fsync")]
    Nats3Fsync,
}

impl Setup {
    /// What `--cluster` alone compares.
    pub const DEFAULT: [Setup; 3] = [Setup::Sqlite, Setup::Nats1, Setup::Nats3];

    fn name(self) -> &'static str {
        match self {
            Setup::Sqlite => "sqlite",
            Setup::Nats1 => "nats1",
            Setup::Nats3 => "nats3",
            Setup::Nats1Fsync => "nats1-fsync",
            Setup::Nats3Fsync => "nats3-fsync",
        }
    }

    fn replicas(self) -> usize {
        match self {
            Setup::Sqlite | Setup::Nats1 | Setup::Nats1Fsync => 1,
            Setup::Nats3 | Setup::Nats3Fsync => 3,
        }
    }

    /// `None` without NATS, else whether its nodes fsync every write.
    fn nats(self) -> Option<bool> {
        match self {
            Setup::Sqlite => None,
            Setup::Nats1 | Setup::Nats3 => Some(false),
            Setup::Nats1Fsync | Setup::Nats3Fsync => Some(true),
        }
    }
}

/// What the runs are started with.
pub struct Bench<'a> {
    pub server_bin: &'a Path,
    pub nats_server: &'a Path,
    pub buffer: Option<u32>,
    /// Rooms the fan-out is spread over (gRPC-Web only).
    pub rooms: usize,
}

/// One finished run.
pub struct Run {
    pub setup: Setup,
    pub plan: Plan,
    pub outcome: fanout::Outcome,
    server_cpu: Duration,
    nats_cpu: Duration,
    pub row: Row,
}

impl Run {
    pub fn broke(&self) -> bool {
        let o = &self.outcome;
        o.lost() + o.duplicated + o.out_of_order > 0
    }

    fn per_delivery_us(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.outcome.delivered.max(1) as f64
    }

    /// Per message sent (NATS's work is per message and replica, not per
    /// receiver).
    fn per_message_us(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / (self.plan.senders * self.plan.messages).max(1) as f64
    }

    fn deliveries_per_s(&self) -> f64 {
        self.outcome.delivered as f64 / self.outcome.elapsed.as_secs_f64().max(1e-9)
    }

    fn p50_ms(&self) -> f64 {
        quantile_ms(&self.outcome.latency_us, 0.5)
    }

    fn p99_ms(&self) -> f64 {
        quantile_ms(&self.outcome.latency_us, 0.99)
    }

    /// p50 of one of the [`fanout::Timings`] histograms (NaN if missing).
    fn timing_p50_ms(&self, pick: impl Fn(&fanout::Timings) -> Option<&Histogram<u64>>) -> f64 {
        self.timing_ms(pick, 0.5)
    }

    /// Quantile `q` of one of the [`fanout::Timings`] histograms (NaN if
    /// missing).
    fn timing_ms(&self, pick: impl Fn(&fanout::Timings) -> Option<&Histogram<u64>>, q: f64) -> f64 {
        self.outcome
            .timings
            .as_ref()
            .and_then(pick)
            .filter(|h| !h.is_empty())
            .map_or(f64::NAN, |h| quantile_ms(h, q))
    }
}

/// `rounds` of every setup for one protocol and shape, rotating which goes
/// first; `each` sees every run as it ends.
pub async fn rounds(
    bench: &Bench<'_>,
    shape: (usize, usize, usize, Option<f64>),
    protocol: Protocol,
    setups: &[Setup],
    rounds: usize,
    mut each: impl FnMut(&Run),
) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for round in 0..rounds {
        for i in 0..setups.len() {
            let setup = setups[(i + round) % setups.len()];
            let run = one(bench, shape, protocol, setup).await?;
            each(&run);
            runs.push(run);
        }
    }
    Ok(runs)
}

/// A fresh three-node NATS cluster of `nats_server` (`fsync`: every write
/// fsynced), its stores under `target/` like the SQLite runs' databases.
pub async fn start_nats(nats_server: &Path, fsync: bool) -> anyhow::Result<NatsCluster> {
    NatsCluster::start_with(Options {
        nats_server: Some(nats_server.to_path_buf()),
        fsync,
        temp_in: Some("target".into()),
    })
    .await
}

/// One fan-out on fresh processes. Whatever happens, every process started
/// here is stopped: on an error they are dropped, which kills them.
pub async fn one(
    bench: &Bench<'_>,
    shape: (usize, usize, usize, Option<f64>),
    protocol: Protocol,
    setup: Setup,
) -> anyhow::Result<Run> {
    let nats = match setup.nats() {
        Some(fsync) => Some(start_nats(bench.nats_server, fsync).await?),
        None => None,
    };
    let mut servers = Vec::new();
    for _ in 0..setup.replicas() {
        // One after the other: the first makes the `general` stream.
        servers.push(match &nats {
            Some(nats) => {
                ServerProcess::start_replica(bench.server_bin, bench.buffer, &nats.urls()).await?
            }
            None => ServerProcess::start(bench.server_bin, bench.buffer, None).await?,
        });
    }
    let urls: Vec<String> = servers.iter().map(ServerProcess::url).collect();
    warm_up(&urls, bench.rooms).await?;
    let mut plan = Plan::new(protocol, shape);
    plan.rooms = bench.rooms;
    plan.timings = true;

    let cpu = |servers: &[ServerProcess], nats: Option<&NatsCluster>| -> anyhow::Result<_> {
        let chat: Duration = servers
            .iter()
            .map(ServerProcess::cpu_time)
            .sum::<anyhow::Result<Duration>>()?;
        let nats = nats.map_or(Ok(Duration::ZERO), |nats| {
            nats.pids().into_iter().map(cpu_time_of_pid).sum()
        })?;
        Ok((chat, nats, own_cpu_time()?))
    };
    // Over the timed phase: from the first message sent (every client
    // connected and live) until the last receipt.
    let (outcome, before) =
        fanout::run_metered(&urls, plan, || cpu(&servers, nats.as_ref())).await?;
    let before = before?;
    let after = cpu(&servers, nats.as_ref())?;
    let server_cpu = after.0.saturating_sub(before.0);
    let nats_cpu = after.1.saturating_sub(before.1);
    let own_cpu = after.2.saturating_sub(before.2);

    for server in servers {
        server.stop().await?;
    }
    if let Some(nats) = nats {
        nats.stop();
    }
    let mut run = Run {
        setup,
        plan,
        outcome,
        server_cpu,
        nats_cpu,
        row: Row::new("cluster"),
    };
    run.row = row(&run, own_cpu);
    Ok(run)
}

/// Makes the plan's rooms, then waits until every server hands on a
/// message sent through the first, in each room. A replica is healthy once
/// it reaches NATS but follows a room a moment later (it makes a consumer
/// per room after it starts serving, or when a room is new to it), so
/// without this the first messages of a run wait for that (0.3-0.95 s seen
/// in gRPC-Web runs; native runs were covered by their probes). The
/// message stays in the room's history: gRPC-Web subscribers get it first,
/// as a message of no sender (not counted).
pub async fn warm_up(urls: &[String], rooms: usize) -> anyhow::Result<()> {
    const TEXT: &str = "warm-up";
    let mut first = clients::web(&urls[0])?;
    let mut names = vec![String::new()];
    for k in 1..rooms {
        names.push(fanout::room_name(k));
        first
            .create_room(chat_proto::CreateRoomRequest {
                name: fanout::room_name(k),
                topic: String::new(),
            })
            .await
            .context("warm-up: creating the rooms")?;
    }
    let mut listeners = Vec::new();
    for url in urls {
        for room in &names {
            let mut client = clients::web(url)?;
            let events = client
                .subscribe(SubscribeRequest {
                    username: "warmup".to_owned(),
                    room: room.clone(),
                    ..Default::default()
                })
                .await
                .context("warm-up: subscribing")?
                .into_inner();
            listeners.push((format!("{url} room {room:?}"), client, events));
        }
    }
    for room in &names {
        first
            .send(ChatMessage {
                username: "warmup".to_owned(),
                message: TEXT.to_owned(),
                room: room.clone(),
                ..Default::default()
            })
            .await
            .context("warm-up: sending")?;
    }
    for (url, _client, mut events) in listeners {
        let heard = async {
            loop {
                match events.message().await? {
                    Some(ChatEvent {
                        event: Some(Event::Message(m)),
                    }) if m.message == TEXT => return Ok(()),
                    Some(_) => {}
                    None => bail!("the stream ended"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), heard)
            .await
            .context("no warm-up message in 30 s")?
            .with_context(|| format!("warm-up on {url}"))?;
    }
    Ok(())
}

/// Per setup in `runs` (all one protocol and shape): the medians, and the
/// NATS hop against the `sqlite` runs (if any).
pub fn summary(runs: &[Run], setups: &[Setup]) -> Vec<Row> {
    let of = |setup: Setup| runs.iter().filter(move |r| r.setup == setup);
    let med = |setup: Setup, f: &dyn Fn(&Run) -> f64| median(of(setup).map(f));
    let base_p50 = med(Setup::Sqlite, &|r| r.p50_ms());
    let base_ack = med(Setup::Sqlite, &|r| r.timing_p50_ms(|t| t.ack_us.as_ref()));
    let mut rows = Vec::new();
    for &setup in setups {
        let Some(first) = of(setup).next() else {
            continue;
        };
        let m = |f: &dyn Fn(&Run) -> f64| med(setup, f);
        let p50 = m(&|r| r.p50_ms());
        let ack = m(&|r| r.timing_p50_ms(|t| t.ack_us.as_ref()));
        let chat_us = m(&|r| r.per_delivery_us(r.server_cpu));
        let nats_us = m(&|r| r.per_delivery_us(r.nats_cpu));
        let nats_message_us = m(&|r| r.per_message_us(r.nats_cpu));
        let hop = |value: f64, base: f64| match setup {
            Setup::Sqlite => "null".to_owned(),
            _ => ms_or_null(value - base),
        };
        let broken: u64 = of(setup)
            .map(|r| r.outcome.lost() + r.outcome.duplicated + r.outcome.out_of_order)
            .sum();
        rows.push(
            shape(Row::new("cluster-vs"), setup, first.plan)
                .num("runs", of(setup).count())
                .num(
                    "deliveries_per_s",
                    format!("{:.0}", m(&|r| r.deliveries_per_s())),
                )
                .num("p50_ms", ms_or_null(p50))
                .num("p99_ms", ms_or_null(m(&|r| r.p99_ms())))
                .num("ack_p50_ms", ms_or_null(ack))
                .num(
                    "ack_p99_ms",
                    ms_or_null(m(&|r| r.timing_ms(|t| t.ack_us.as_ref(), 0.99))),
                )
                .num(
                    "same_p50_ms",
                    ms_or_null(m(&|r| r.timing_p50_ms(|t| Some(&t.same_server_us)))),
                )
                .num(
                    "other_p50_ms",
                    ms_or_null(m(&|r| r.timing_p50_ms(|t| Some(&t.other_server_us)))),
                )
                .num(
                    "after_ack_other_p50_ms",
                    ms_or_null(m(&|r| r.timing_p50_ms(|t| t.after_ack_other_us.as_ref()))),
                )
                .num("hop_p50_ms", hop(p50, base_p50))
                .num("hop_ack_p50_ms", hop(ack, base_ack))
                .num("chat_us_per_delivery", format!("{chat_us:.2}"))
                .num("nats_us_per_delivery", format!("{nats_us:.2}"))
                .num("total_us_per_delivery", format!("{:.2}", chat_us + nats_us))
                .num("nats_us_per_message", format!("{nats_message_us:.1}"))
                .num("lost_dup_reordered", broken),
        )
    }
    rows
}

/// The setup and the plan's cells.
fn shape(row: Row, setup: Setup, plan: Plan) -> Row {
    row.text("setup", setup.name())
        .text("protocol", format!("{:?}", plan.protocol).to_lowercase())
        .num("clients", plan.clients)
        .num("senders", plan.senders)
        .num("messages", plan.messages)
        .num(
            "rate",
            plan.rate.map_or("null".to_owned(), |r| r.to_string()),
        )
}

fn row(run: &Run, own_cpu: Duration) -> Row {
    let o = &run.outcome;
    let q = |p: f64| format!("{:.3}", quantile_ms(&o.latency_us, p));
    let timing = |pick: &dyn Fn(&fanout::Timings) -> Option<&Histogram<u64>>, p: f64| {
        o.timings
            .as_ref()
            .and_then(pick)
            .filter(|h| !h.is_empty())
            .map_or("null".to_owned(), |h| format!("{:.3}", quantile_ms(h, p)))
    };
    shape(Row::new("cluster"), run.setup, run.plan)
        .num("rooms", run.plan.rooms)
        .num("replicas", run.setup.replicas())
        .num("expected", o.expected)
        .num("delivered", o.delivered)
        .num("lost", o.lost())
        .num("duplicated", o.duplicated)
        .num("out_of_order", o.out_of_order)
        .num("p50_ms", q(0.5))
        .num("p90_ms", q(0.9))
        .num("p99_ms", q(0.99))
        .num(
            "max_ms",
            format!("{:.3}", o.latency_us.max() as f64 / 1000.0),
        )
        .num("deliveries_per_s", format!("{:.0}", run.deliveries_per_s()))
        .num("ack_p50_ms", timing(&|t| t.ack_us.as_ref(), 0.5))
        .num("ack_p99_ms", timing(&|t| t.ack_us.as_ref(), 0.99))
        .num("same_p50_ms", timing(&|t| Some(&t.same_server_us), 0.5))
        .num("other_p50_ms", timing(&|t| Some(&t.other_server_us), 0.5))
        .num(
            "after_ack_same_p50_ms",
            timing(&|t| t.after_ack_same_us.as_ref(), 0.5),
        )
        .num(
            "after_ack_other_p50_ms",
            timing(&|t| t.after_ack_other_us.as_ref(), 0.5),
        )
        .num("before_ack", o.timings.as_ref().map_or(0, |t| t.before_ack))
        .num("elapsed_s", format!("{:.3}", o.elapsed.as_secs_f64()))
        .num("chat_cpu_s", format!("{:.2}", run.server_cpu.as_secs_f64()))
        .num(
            "chat_us_per_delivery",
            format!("{:.2}", run.per_delivery_us(run.server_cpu)),
        )
        .num("nats_cpu_s", format!("{:.2}", run.nats_cpu.as_secs_f64()))
        .num(
            "nats_us_per_delivery",
            format!("{:.2}", run.per_delivery_us(run.nats_cpu)),
        )
        .num(
            "nats_us_per_message",
            format!("{:.1}", run.per_message_us(run.nats_cpu)),
        )
        .num("generator_cpu_s", format!("{:.2}", own_cpu.as_secs_f64()))
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn ms_or_null(ms: f64) -> String {
    if ms.is_finite() {
        format!("{ms:.3}")
    } else {
        "null".to_owned()
    }
}
