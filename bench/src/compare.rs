//! Fan-out side by side with the reference server ([`crate::reference`]):
//! for each shape, rounds of the reference and of chat-server (each
//! protocol asked for) alternate, each on a fresh server process, so drift
//! in the machine's load hits both alike. One row per run, then one row per
//! protocol with the medians and the ratios. The reference speaks only the
//! paper's `ChatStream`, so gRPC-Web figures are set against its native ones.

use std::time::Duration;

use crate::fanout::{self, Plan, Protocol};
use crate::report::Row;
use crate::server::{ServerProcess, own_cpu_time};

/// Which server a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Chat(Protocol),
    Reference,
}

/// How chat-server is started for a run.
pub struct ChatSetup<'a> {
    pub binary: &'a std::path::Path,
    pub buffer: Option<u32>,
    pub db: Option<&'a str>,
    /// Rooms chat-server's fan-outs are spread over (see [`Plan::rooms`]).
    pub rooms: usize,
    /// Somebody muted and somebody banned (neither of them posting) before
    /// each fan-out, so every post's moderation checks take their locks.
    pub sanctioned: bool,
}

/// One finished run.
pub struct Run {
    pub subject: Subject,
    pub plan: Plan,
    pub outcome: fanout::Outcome,
    pub server_cpu: Duration,
    pub row: Row,
}

impl Run {
    pub fn broke(&self) -> bool {
        let o = &self.outcome;
        o.lost() + o.duplicated + o.out_of_order > 0
    }

    fn deliveries_per_s(&self) -> f64 {
        self.outcome.delivered as f64 / self.outcome.elapsed.as_secs_f64().max(1e-9)
    }

    fn p99_ms(&self) -> f64 {
        ms(self.outcome.latency_us.value_at_quantile(0.99))
    }

    fn server_us_per_delivery(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.outcome.delivered.max(1) as f64
    }
}

/// `rounds` of every subject in `subjects`, rotating who goes first;
/// `each` sees every run as it ends.
pub async fn rounds(
    setup: &ChatSetup<'_>,
    shape: (usize, usize, usize, Option<f64>),
    subjects: &[Subject],
    rounds: usize,
    mut each: impl FnMut(&Run),
) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for round in 0..rounds {
        for i in 0..subjects.len() {
            let subject = subjects[(i + round) % subjects.len()];
            let run = one(setup, shape, subject).await?;
            each(&run);
            runs.push(run);
        }
    }
    Ok(runs)
}

/// One fan-out on a fresh server, with what it cost the server and `bench`.
pub async fn one(
    setup: &ChatSetup<'_>,
    shape: (usize, usize, usize, Option<f64>),
    subject: Subject,
) -> anyhow::Result<Run> {
    let (server, protocol) = match subject {
        Subject::Chat(protocol) => {
            let server = ServerProcess::start(setup.binary, setup.buffer, setup.db).await?;
            if setup.sanctioned {
                sanction(&server, setup.binary).await?;
            }
            (server, protocol)
        }
        Subject::Reference => (ServerProcess::start_reference().await?, Protocol::Native),
    };
    let mut plan = Plan::new(protocol, shape);
    if matches!(subject, Subject::Chat(_)) {
        plan.rooms = setup.rooms;
    }
    let (server_cpu, own_cpu) = (server.cpu_time()?, own_cpu_time()?);
    let outcome = fanout::run(&[server.url()], plan).await?;
    let server_cpu = server.cpu_time()?.saturating_sub(server_cpu);
    let own_cpu = own_cpu_time()?.saturating_sub(own_cpu);
    server.stop().await?;
    let row = row(subject, plan, &outcome, server_cpu, own_cpu);
    Ok(Run {
        subject,
        plan,
        outcome,
        server_cpu,
        row,
    })
}

/// Mutes one name everywhere and bans another, through the admin socket.
async fn sanction(server: &ServerProcess, binary: &std::path::Path) -> anyhow::Result<()> {
    server
        .admin(binary, &["mute", "bench-muted", "--for", "1h"])
        .await?;
    server
        .admin(binary, &["ban", "bench-banned", "--for", "1h"])
        .await
}

/// Medians of chat-server over `protocol` against the reference's
/// (deliveries per second, p99 latency, server CPU per delivery), or `None`
/// if either is missing from `runs`.
pub fn versus(runs: &[Run], protocol: Protocol) -> Option<Row> {
    let of = |subject: Subject| runs.iter().filter(move |r| r.subject == subject);
    let chat: Vec<&Run> = of(Subject::Chat(protocol)).collect();
    let reference: Vec<&Run> = of(Subject::Reference).collect();
    let (first, _) = chat.split_first()?;
    reference.first()?;
    let rate = |runs: &[&Run]| median(runs.iter().map(|r| r.deliveries_per_s()));
    let p99 = |runs: &[&Run]| median(runs.iter().map(|r| r.p99_ms()));
    let (chat_rate, ref_rate) = (rate(&chat), rate(&reference));
    let (chat_p99, ref_p99) = (p99(&chat), p99(&reference));
    let cpu = |runs: &[&Run]| median(runs.iter().map(|r| r.server_us_per_delivery()));
    let (chat_cpu, ref_cpu) = (cpu(&chat), cpu(&reference));
    let lost = |runs: &[&Run]| runs.iter().map(|r| r.outcome.lost()).sum::<u64>();
    let plan = first.plan;
    Some(
        shape(Row::new("vs-ref"), plan)
            .num("rounds", chat.len())
            .num("chat_per_s", format!("{chat_rate:.0}"))
            .num("ref_per_s", format!("{ref_rate:.0}"))
            .num(
                "rate_ratio",
                format!("{:.2}", chat_rate / ref_rate.max(1e-9)),
            )
            .num("chat_p99_ms", format!("{chat_p99:.3}"))
            .num("ref_p99_ms", format!("{ref_p99:.3}"))
            .num("p99_ratio", format!("{:.2}", chat_p99 / ref_p99.max(1e-9)))
            .num("chat_cpu_us", format!("{chat_cpu:.2}"))
            .num("ref_cpu_us", format!("{ref_cpu:.2}"))
            .num("cpu_ratio", format!("{:.2}", chat_cpu / ref_cpu.max(1e-9)))
            .num("chat_lost", lost(&chat))
            .num("ref_lost", lost(&reference)),
    )
}

pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The plan's cells: protocol, clients, senders, messages, rate.
fn shape(row: Row, plan: Plan) -> Row {
    row.text("protocol", protocol_name(plan.protocol))
        .num("clients", plan.clients)
        .num("senders", plan.senders)
        .num("messages", plan.messages)
        .num(
            "rate",
            plan.rate.map_or("null".to_owned(), |r| r.to_string()),
        )
}

fn protocol_name(protocol: Protocol) -> String {
    format!("{protocol:?}").to_lowercase()
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn row(
    subject: Subject,
    plan: Plan,
    o: &fanout::Outcome,
    server_cpu: Duration,
    own_cpu: Duration,
) -> Row {
    let secs = o.elapsed.as_secs_f64().max(1e-9);
    let q = |p: f64| format!("{:.3}", ms(o.latency_us.value_at_quantile(p)));
    let server = match subject {
        Subject::Chat(_) => "chat",
        Subject::Reference => "reference",
    };
    shape(Row::new("fan-out").text("server", server), plan)
        .num("rooms", plan.rooms)
        .num("expected", o.expected)
        .num("delivered", o.delivered)
        .num("lost", o.lost())
        .num("duplicated", o.duplicated)
        .num("out_of_order", o.out_of_order)
        .num("p50_ms", q(0.5))
        .num("p90_ms", q(0.9))
        .num("p99_ms", q(0.99))
        .num("max_ms", format!("{:.3}", ms(o.latency_us.max())))
        .num(
            "deliveries_per_s",
            format!("{:.0}", o.delivered as f64 / secs),
        )
        .num("elapsed_s", format!("{secs:.3}"))
        .num("server_cpu_s", format!("{:.2}", server_cpu.as_secs_f64()))
        .num(
            "server_us_per_delivery",
            format!(
                "{:.2}",
                server_cpu.as_secs_f64() * 1e6 / o.delivered.max(1) as f64
            ),
        )
        .num("generator_cpu_s", format!("{:.2}", own_cpu.as_secs_f64()))
}
