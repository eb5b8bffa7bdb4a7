//! `bench`: drives a real `chat-server` on loopback and prints a table plus
//! one JSON line per scenario. `--quick` is the CI smoke run: seconds long,
//! and it fails only on lost, duplicated, reordered or wrong messages, never
//! on timing or memory figures.

mod bundle;
mod changes;
mod clients;
mod cluster;
mod compare;
mod connections;
mod fanout;
mod memory;
mod past;
mod presence;
mod reference;
mod report;
mod rng;
mod server;
mod soak;
mod tally;

use std::path::PathBuf;

use anyhow::bail;
use chat_testkit::nats::nats_server_binary;
use clap::Parser;

use compare::{ChatSetup, Subject};
use fanout::Protocol;
use report::Row;
use server::ServerProcess;

/// Load generator for chat-server: fan-out throughput and latency, idle
/// connections and memory, and the web bundle's size.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// A few seconds of each scenario, for CI: fails on any loss. Ends with
    /// a short fan-out across three cluster replicas on NATS and a 20 s
    /// soak of them (both skipped without nats-server).
    #[arg(long)]
    quick: bool,
    /// The chat-server binary to test (build it with --release).
    #[arg(long, default_value = "target/release/chat-server")]
    server_bin: PathBuf,
    /// Where trunk put the release web app.
    #[arg(long, default_value = "dist")]
    dist: PathBuf,
    /// The wasm's size budget; the run fails when the wasm, as sent with
    /// brotli, grows more than 5% past it.
    #[arg(long, default_value = "web/bundle-budget.toml")]
    budget: PathBuf,
    /// Only the fan-out with these clients/senders/messages/rate (rate 0 = unthrottled).
    #[arg(long, num_args = 4, value_names = ["CLIENTS", "SENDERS", "MESSAGES", "RATE"])]
    fanout: Option<Vec<f64>>,
    /// Spread the fan-out's clients and senders over this many rooms
    /// (client or sender i in room i % N; gRPC-Web only; no reference).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Before each chat-server fan-out, mute one name and ban another
    /// (neither posts), so every post's moderation checks take their read
    /// locks instead of one atomic load: the cost of a moderated chat.
    #[arg(long)]
    sanctioned: bool,
    /// Protocols for the fan-out.
    #[arg(long, value_enum, default_values_t = [Protocol::Native, Protocol::Web])]
    protocol: Vec<Protocol>,
    /// Idle-subscriber counts for the connections scenario.
    #[arg(long, value_delimiter = ',')]
    connections: Option<Vec<usize>>,
    /// Ring buffer given to the server (messages a reader may lag); by
    /// default the server's own.
    #[arg(long)]
    buffer: Option<u32>,
    /// The server's database: by default a fresh file per scenario (the
    /// real, durable path); `:memory:` measures without the disk.
    #[arg(long)]
    db: Option<String>,
    /// Only the knee search: 100 clients x 10 senders, the rate per sender
    /// doubling from 100/s until p99 latency crosses 100 ms or the server
    /// stops keeping up.
    #[arg(long)]
    knee: bool,
    /// Only the memory scenario: a client that stalls Subscribe streams of
    /// big history on one HTTP/2 connection (window 0), then ordinary readers
    /// of that history; peak memory and memory after they leave. With
    /// --quick, its short version.
    #[arg(long)]
    memory: bool,
    /// Only the presence scenario, for these numbers of people (default
    /// 1,000 and 10,000; 200 with --quick).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    presence: Option<Vec<usize>>,
    /// Only the changes scenarios: a reaction storm (100 listeners, 10
    /// people reacting to one message at 100/s each for 10 s) against the
    /// same rate of plain messages, and the replay of 10,000 messages that
    /// each carry an edit and 5 reactions against plain ones. With --quick,
    /// their short versions.
    #[arg(long)]
    changes: bool,
    /// Only the past scenario (issue 27): a database of --past-messages
    /// messages over 100 rooms (with --quick 20,000 over 10), then History
    /// pages, Search one at a time and beside a fan-out, the index's size
    /// against the text's, FTS5 alone and grep as a floor; with
    /// --baseline-bin, write throughput with the index and without.
    #[arg(long)]
    past: bool,
    /// Messages in the past scenario's database (default 1,000,000).
    #[arg(long, value_name = "N")]
    past_messages: Option<u64>,
    /// A chat-server built before search, for the past scenario's write
    /// throughput with the index and without (skipped without it).
    #[arg(long, value_name = "PATH")]
    baseline_bin: Option<PathBuf>,
    /// Rounds of each fan-out, alternating with the reference server
    /// (default: 5, or 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Skip the reference server: chat-server's figures only.
    #[arg(long)]
    no_reference: bool,
    /// Only the cluster comparison: the fan-out (the default shapes, or
    /// --fanout's) against each SETUP side by side, each run on fresh
    /// processes: `sqlite` (1 chat-server on SQLite), `nats1` (1 chat-server
    /// on a 3-node NATS JetStream cluster that bench starts on loopback),
    /// `nats3` (3 replicas on it, clients and senders round-robin), and
    /// `nats1-fsync`/`nats3-fsync` (the same with `sync_interval: always`).
    /// Without a list: sqlite,nats1,nats3. Reports deliveries/s, p50/p99,
    /// CPU per delivery over the timed phase (chat servers and NATS nodes),
    /// and the NATS hop
    /// (latency and `Send` reply time against sqlite). --rounds (default 3)
    /// rounds, rotating which setup goes first.
    #[arg(long, value_enum, value_delimiter = ',', num_args = 0.., value_name = "SETUP")]
    cluster: Option<Vec<cluster::Setup>>,
    /// The nats-server binary for --cluster and --soak (2.10 or newer); by default
    /// $NATS_SERVER, else the workspace's .tools/py/bin/nats-server (scripts/install --tests).
    #[arg(long, value_name = "PATH")]
    nats_server: Option<PathBuf>,
    /// Only the cluster soak, for SECONDS (after the --cluster comparison
    /// if that is asked for too): three replicas on a 3-node NATS cluster,
    /// 20-40 gRPC-Web and paper clients at once joining and leaving on all
    /// three, names claimed, released and contended; every acknowledged
    /// message checked on every client present when it was sent; then
    /// NATS and the replicas restarted (SIGTERM) and the room replayed on
    /// each. The full run ends with 180 s of it, --quick with 20 s.
    #[arg(long, value_name = "SECONDS")]
    soak: Option<u64>,
    /// Be the reference server on this address (bench starts itself so).
    #[arg(long, hide = true)]
    reference_server: Option<std::net::SocketAddr>,
}

/// p99 latency beyond which the knee search stops.
const KNEE_P99_MS: f64 = 100.0;
/// Seconds of sending per knee step.
const KNEE_STEP_SECS: f64 = 4.0;
/// The soak's length in the full run and in `--quick`.
const FULL_SOAK_SECS: u64 = 180;
const QUICK_SOAK_SECS: u64 = 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(addr) = args.reference_server {
        return reference::serve(addr).await;
    }
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the open-files limit: {error}");
    }
    let plans: Vec<(usize, usize, usize, Option<f64>)> = match (&args.fanout, args.quick) {
        (Some(f), _) => vec![(
            f[0] as usize,
            f[1] as usize,
            f[2] as usize,
            (f[3] > 0.0).then_some(f[3]),
        )],
        (None, true) => vec![(20, 4, 100, Some(200.0)), (20, 4, 200, None)],
        // The tail at a steady rate, then sustained fan-out past the ring.
        (None, false) => vec![(100, 10, 200, Some(100.0)), (100, 10, 1_000, None)],
    };
    let connection_counts = args.connections.clone().unwrap_or_else(|| {
        if args.quick {
            vec![200]
        } else {
            vec![1_000, 10_000]
        }
    });

    if args.memory {
        return finish(memory_scenarios(&args).await?);
    }
    if args.changes {
        return finish(changes_scenarios(&args).await?);
    }
    if args.past {
        return finish(past_scenario(&args).await?);
    }
    if args.presence.is_some() {
        return finish(presence_scenarios(&args).await?);
    }
    if let Some(setups) = &args.cluster {
        let setups = if setups.is_empty() {
            cluster::Setup::DEFAULT.to_vec()
        } else {
            setups.clone()
        };
        let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 });
        let mut failures = cluster_comparison(&args, &plans, &setups, rounds).await?;
        if let Some(seconds) = args.soak {
            failures.extend(soak_scenario(&args, seconds, true).await?);
        }
        return finish(failures);
    }
    if let Some(seconds) = args.soak {
        return finish(soak_scenario(&args, seconds, true).await?);
    }

    let setup = ChatSetup {
        binary: &args.server_bin,
        buffer: args.buffer,
        db: args.db.as_deref(),
        rooms: args.rooms,
        sanctioned: args.sanctioned,
    };
    let mut failures = Vec::new();
    if args.knee {
        for &protocol in &args.protocol {
            let subjects = subjects(&[protocol], !args.no_reference);
            let mut rate = 100.0;
            loop {
                let messages = (rate * KNEE_STEP_SECS) as usize;
                let shape = (100, 10, messages, Some(rate));
                let runs = compare::rounds(&setup, shape, &subjects, 1, print_run()).await?;
                print_versus(&runs, protocol);
                let Some(outcome) = runs
                    .iter()
                    .find(|r| r.subject == Subject::Chat(protocol))
                    .map(|r| &r.outcome)
                else {
                    break;
                };
                let offered = rate * 10.0 * 99.0;
                let achieved = outcome.delivered as f64 / outcome.elapsed.as_secs_f64().max(1e-9);
                if p99_ms(outcome) > KNEE_P99_MS || outcome.lost() > 0 || achieved < 0.8 * offered {
                    break;
                }
                rate *= 2.0;
            }
        }
        return Ok(());
    }
    // The reference has one room: against many, only chat-server runs.
    let subjects = subjects(&args.protocol, !args.no_reference && args.rooms <= 1);
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 5 });
    for &shape in &plans {
        let runs = compare::rounds(&setup, shape, &subjects, rounds, print_run()).await?;
        for run in runs.iter().filter(|r| r.broke()) {
            let plan = run.plan;
            failures.push(format!(
                "{:?} {:?} {}x{}x{}: delivery errors",
                run.subject, plan.protocol, plan.clients, plan.senders, plan.messages
            ));
        }
        for &protocol in &args.protocol {
            print_versus(&runs, protocol);
        }
    }
    if args.fanout.is_none() {
        for count in connection_counts {
            let server =
                ServerProcess::start(&args.server_bin, args.buffer, args.db.as_deref()).await?;
            let outcome = connections::run(&server, count).await?;
            let row = Row::new("connections")
                .num("connections", outcome.connections)
                .num("rss_before_mib", format!("{:.1}", mib(outcome.rss_before)))
                .num("rss_after_mib", format!("{:.1}", mib(outcome.rss_after)))
                .num("bytes_per_connection", outcome.bytes_per_connection());
            println!("{}\n{}\n{}", row.header(), row.table(), row.json());
        }
        failures.extend(presence_scenarios(&args).await?);
        failures.extend(changes_scenarios(&args).await?);
        failures.extend(past_scenario(&args).await?);
        failures.extend(memory_scenarios(&args).await?);
        if args.quick {
            failures.extend(cluster_smoke(&args).await?);
        }
        let seconds = if args.quick {
            QUICK_SOAK_SECS
        } else {
            FULL_SOAK_SECS
        };
        failures.extend(soak_scenario(&args, seconds, false).await?);
        match bundle::measure(&args.dist) {
            Ok(b) => {
                let budget = bundle::budget(&args.budget)?;
                let row = Row::new("bundle")
                    .text("file", b.file.display())
                    .num("raw", b.raw)
                    .num("gzipped", b.gzipped)
                    .num("brotli", b.brotli)
                    .num("budget", budget);
                println!("{}\n{}\n{}", row.header(), row.table(), row.json());
                failures.extend(bundle::over_budget(&b, budget, &args.budget));
            }
            Err(error) => println!("bundle: skipped ({error:#})"),
        }
    }
    finish(failures)
}

/// chat-server over each protocol, after the reference if `reference`.
fn subjects(protocols: &[Protocol], reference: bool) -> Vec<Subject> {
    let reference = reference.then_some(Subject::Reference);
    reference
        .into_iter()
        .chain(protocols.iter().map(|&p| Subject::Chat(p)))
        .collect()
}

/// Prints each run as it ends, under one header.
fn print_run() -> impl FnMut(&compare::Run) {
    let mut header = true;
    move |run| {
        if std::mem::take(&mut header) {
            println!("{}", run.row.header());
        }
        println!("{}\n{}", run.row.table(), run.row.json());
    }
}

/// The medians of chat-server over `protocol` against the reference's.
fn print_versus(runs: &[compare::Run], protocol: Protocol) {
    if let Some(row) = compare::versus(runs, protocol) {
        println!("{}\n{}\n{}", row.header(), row.table(), row.json());
    }
}

/// Fails if any scenario broke (never on timing or memory figures).
fn finish(failures: Vec<String>) -> anyhow::Result<()> {
    if !failures.is_empty() {
        // Messages lost, duplicated, reordered or wrong, or the bundle
        // past its budget: each failure says which.
        bail!(
            "{} check(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// The cluster comparison ([`cluster`]) for every shape and protocol;
/// returns what broke.
async fn cluster_comparison(
    args: &Args,
    plans: &[(usize, usize, usize, Option<f64>)],
    setups: &[cluster::Setup],
    rounds: usize,
) -> anyhow::Result<Vec<String>> {
    let nats_server = nats_server_binary(args.nats_server.as_deref());
    let bench = cluster::Bench {
        server_bin: &args.server_bin,
        nats_server: &nats_server,
        buffer: args.buffer,
        rooms: args.rooms,
    };
    let mut failures = Vec::new();
    for &shape in plans {
        for &protocol in &args.protocol {
            let mut header = true;
            let runs = cluster::rounds(&bench, shape, protocol, setups, rounds, |run| {
                if std::mem::take(&mut header) {
                    println!("{}", run.row.header());
                }
                println!("{}\n{}", run.row.table(), run.row.json());
            })
            .await?;
            for run in runs.iter().filter(|r| r.broke()) {
                let (plan, o) = (run.plan, &run.outcome);
                failures.push(format!(
                    "cluster {:?} {:?} {}x{}x{}: {} lost, {} duplicated, {} out of order",
                    run.setup,
                    plan.protocol,
                    plan.clients,
                    plan.senders,
                    plan.messages,
                    o.lost(),
                    o.duplicated,
                    o.out_of_order
                ));
            }
            for (i, row) in cluster::summary(&runs, setups).iter().enumerate() {
                if i == 0 {
                    println!("{}", row.header());
                }
                println!("{}\n{}", row.table(), row.json());
            }
        }
    }
    Ok(failures)
}

/// The CI smoke run's share of cluster mode: one short fan-out over each
/// protocol against three replicas on a 3-node NATS cluster (a few
/// seconds), checking every delivery across replicas. Skipped, with a
/// notice, where there is no nats-server.
async fn cluster_smoke(args: &Args) -> anyhow::Result<Vec<String>> {
    let nats_server = nats_server_binary(args.nats_server.as_deref());
    if !nats_server.is_file() {
        println!(
            "cluster: skipped (no nats-server at {}; scripts/install --tests installs it)",
            nats_server.display()
        );
        return Ok(Vec::new());
    }
    let shape = [(20, 4, 100, Some(200.0))];
    cluster_comparison(args, &shape, &[cluster::Setup::Nats3], 1).await
}

/// The cluster soak ([`soak`]) for `seconds`; returns what broke, with the
/// details on stderr. Without nats-server it fails if `required` (asked
/// for by name), else is skipped with a notice.
async fn soak_scenario(args: &Args, seconds: u64, required: bool) -> anyhow::Result<Vec<String>> {
    let nats_server = nats_server_binary(args.nats_server.as_deref());
    if !nats_server.is_file() {
        if required {
            soak::require(&nats_server)?;
        }
        println!(
            "soak: skipped (no nats-server at {}; scripts/install --tests installs it)",
            nats_server.display()
        );
        return Ok(Vec::new());
    }
    let setup = soak::Setup {
        server_bin: &args.server_bin,
        nats_server: &nats_server,
        buffer: args.buffer,
        duration: std::time::Duration::from_secs(seconds),
    };
    let outcome = soak::run(&setup).await?;
    let row = outcome.row();
    println!("{}\n{}\n{}", row.header(), row.table(), row.json());
    eprint!("{}", outcome.report);
    Ok(outcome.problems)
}

/// The presence scenario for each number of people, each on a fresh
/// server; returns what broke (a join or leave that cost a stream more than
/// one small event).
async fn presence_scenarios(args: &Args) -> anyhow::Result<Vec<String>> {
    let counts = match args.presence.as_deref() {
        Some(counts) if !counts.is_empty() => counts.to_vec(),
        _ if args.quick => vec![200],
        _ => vec![1_000, 10_000],
    };
    let mut failures = Vec::new();
    for (i, people) in counts.into_iter().enumerate() {
        let server =
            ServerProcess::start(&args.server_bin, args.buffer, args.db.as_deref()).await?;
        let outcome = presence::run(&server, people).await?;
        server.stop().await?;
        let row = outcome.row();
        if i == 0 {
            println!("{}", row.header());
        }
        println!("{}\n{}", row.table(), row.json());
        if let Some(problem) = outcome.problem() {
            failures.push(format!("presence with {people} people: {problem}"));
        }
    }
    Ok(failures)
}

/// The reaction storm and the replay of changed history, each on a fresh
/// server; returns what was lost.
async fn changes_scenarios(args: &Args) -> anyhow::Result<Vec<String>> {
    let (storm, replayed) = if args.quick {
        (
            changes::Storm {
                listeners: 20,
                senders: 5,
                rate: 20.0,
                seconds: 2.0,
            },
            300,
        )
    } else {
        (
            changes::Storm {
                listeners: 100,
                senders: 10,
                rate: 100.0,
                seconds: 10.0,
            },
            10_000,
        )
    };
    let mut failures = Vec::new();
    let server = ServerProcess::start(&args.server_bin, args.buffer, args.db.as_deref()).await?;
    let place = changes::Place {
        name: "sqlite",
        servers: std::slice::from_ref(&server),
        nats: None,
    };
    let mut passes = changes::storm(&place, storm).await;
    server.stop().await?;
    // The same on three replicas, where reactions to the one message come
    // through every replica at once.
    let nats_server = nats_server_binary(args.nats_server.as_deref());
    if passes.is_ok() && nats_server.is_file() {
        let nats = cluster::start_nats(&nats_server, false).await?;
        let mut replicas = Vec::new();
        for _ in 0..3 {
            replicas.push(
                ServerProcess::start_replica(&args.server_bin, args.buffer, &nats.urls()).await?,
            );
        }
        let place = changes::Place {
            name: "nats3",
            servers: &replicas,
            nats: Some(&nats),
        };
        let clustered = changes::storm(&place, storm).await;
        for replica in replicas {
            replica.stop().await?;
        }
        nats.stop();
        if let Ok(all) = &mut passes {
            all.extend(clustered?);
        }
    } else if !nats_server.is_file() {
        println!(
            "changes storm on a cluster: skipped (no nats-server at {})",
            nats_server.display()
        );
    }
    for (i, pass) in passes?.iter().enumerate() {
        let row = pass.row(&storm);
        if i == 0 {
            println!("{}", row.header());
        }
        println!("{}\n{}", row.table(), row.json());
        if pass.delivered != pass.expected {
            failures.push(format!(
                "changes storm ({}, {}): {} of {} delivered",
                pass.setup, pass.kind, pass.delivered, pass.expected
            ));
        }
    }
    let history = ["--history".to_owned(), replayed.to_string()];
    for (i, changed) in [false, true].into_iter().enumerate() {
        let server =
            ServerProcess::start_with(&args.server_bin, args.buffer, args.db.as_deref(), &history)
                .await?;
        let replay = changes::replay(&server, replayed, changed).await;
        server.stop().await?;
        let replay = replay?;
        let row = replay.row();
        if i == 0 {
            println!("{}", row.header());
        }
        println!("{}\n{}", row.table(), row.json());
        if replay.messages != replayed {
            failures.push(format!(
                "changes replay ({}): {} of {replayed} messages",
                replay.kind, replay.messages
            ));
        }
    }
    Ok(failures)
}

/// The past scenario ([`past`]), full or (with --quick) short; returns
/// what broke (errors and lost fan-out messages, never timing).
async fn past_scenario(args: &Args) -> anyhow::Result<Vec<String>> {
    let mut sizes = if args.quick {
        past::Sizes::quick()
    } else {
        past::Sizes::full()
    };
    if let Some(messages) = args.past_messages {
        sizes.messages = messages;
    }
    let setup = past::Setup {
        server_bin: &args.server_bin,
        baseline_bin: args.baseline_bin.as_deref(),
        buffer: args.buffer,
    };
    // A header wherever the kind of row changes.
    let mut header = String::new();
    past::run(&setup, sizes, |row| {
        if row.header() != header {
            header = row.header();
            println!("{header}");
        }
        println!("{}\n{}", row.table(), row.json());
    })
    .await
}

/// Every part of the memory scenario, each on a fresh server; returns what
/// broke (a reader given the wrong messages), not memory over its goal.
async fn memory_scenarios(args: &Args) -> anyhow::Result<Vec<String>> {
    let sizes = if args.quick {
        memory::Sizes::quick()
    } else {
        memory::Sizes::full()
    };
    let setup = memory::Setup {
        binary: &args.server_bin,
        buffer: args.buffer,
        db: args.db.as_deref(),
    };
    let mut failures = Vec::new();
    for (i, part) in sizes.parts().into_iter().enumerate() {
        let outcome = memory::run(&setup, &sizes, part).await?;
        let row = outcome.row();
        if i == 0 {
            println!("{}", row.header());
        }
        println!("{}\n{}", row.table(), row.json());
        println!("{}", outcome.verdict());
        if let Some(problem) = &outcome.first_problem {
            println!(
                "memory {} ({}): first problem: {problem}",
                outcome.part, outcome.protocol
            );
        }
        if outcome.wrong > 0 {
            failures.push(format!(
                "memory {} ({}): {} of {} readers got a wrong history",
                outcome.part, outcome.protocol, outcome.wrong, outcome.clients
            ));
        }
    }
    Ok(failures)
}

fn p99_ms(o: &fanout::Outcome) -> f64 {
    ms(o.latency_us.value_at_quantile(0.99))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}
