//! `bench`: drives a real `chat-server` on loopback and prints a table plus
//! one JSON line per scenario. `--quick` is the CI smoke run: seconds long,
//! and it fails only on lost, duplicated or reordered messages.

mod bundle;
mod clients;
mod connections;
mod fanout;
mod server;
mod tally;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Parser;

use fanout::{Plan, Protocol};
use server::{ServerProcess, own_cpu_time};

/// Load generator for chat-server: fan-out throughput and latency, idle
/// connections and memory, and the web bundle's size.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// A few seconds of each scenario, for CI: fails on any loss.
    #[arg(long)]
    quick: bool,
    /// The chat-server binary to test (build it with --release).
    #[arg(long, default_value = "target/release/chat-server")]
    server_bin: PathBuf,
    /// Where trunk put the release web app.
    #[arg(long, default_value = "dist")]
    dist: PathBuf,
    /// Only the fan-out with these clients/senders/messages/rate (rate 0 = unthrottled).
    #[arg(long, num_args = 4, value_names = ["CLIENTS", "SENDERS", "MESSAGES", "RATE"])]
    fanout: Option<Vec<f64>>,
    /// Protocols for the fan-out.
    #[arg(long, value_enum, default_values_t = [Protocol::Native, Protocol::Web])]
    protocol: Vec<Protocol>,
    /// Idle-subscriber counts for the connections scenario.
    #[arg(long, value_delimiter = ',')]
    connections: Option<Vec<usize>>,
    /// Ring buffer size given to the server (messages a reader may lag).
    #[arg(long, default_value_t = 4096)]
    buffer: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
        (None, false) => vec![(100, 10, 1_000, Some(100.0)), (100, 10, 1_000, None)],
    };
    let connection_counts = args.connections.clone().unwrap_or_else(|| {
        if args.quick {
            vec![200]
        } else {
            vec![1_000, 10_000]
        }
    });

    println!(
        "{:<10} {:<7} {:>7} {:>7} {:>6} {:>7} {:>9} {:>9} {:>5} {:>5} {:>5} {:>8} {:>8} {:>8} {:>8} {:>11} {:>8} {:>8}",
        "scenario",
        "proto",
        "clients",
        "senders",
        "msgs",
        "rate",
        "expected",
        "delivered",
        "lost",
        "dup",
        "ooo",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "deliv/s",
        "srv cpu",
        "gen cpu"
    );
    let mut failures = Vec::new();
    for &(clients, senders, messages, rate) in &plans {
        for &protocol in &args.protocol {
            let server = ServerProcess::start(&args.server_bin, args.buffer).await?;
            let plan = Plan {
                protocol,
                clients,
                senders,
                messages,
                rate,
            };
            let (server_cpu, own_cpu) = (server.cpu_time()?, own_cpu_time()?);
            let outcome = fanout::run(&server.url(), plan).await?;
            let server_cpu = server.cpu_time()?.saturating_sub(server_cpu);
            let own_cpu = own_cpu_time()?.saturating_sub(own_cpu);
            report_fanout(plan, &outcome, server_cpu, own_cpu);
            if outcome.lost() + outcome.duplicated + outcome.out_of_order > 0 {
                failures.push(format!(
                    "{protocol:?} {clients}x{senders}x{messages}: delivery errors"
                ));
            }
        }
    }
    if args.fanout.is_none() {
        for count in connection_counts {
            let server = ServerProcess::start(&args.server_bin, args.buffer).await?;
            let outcome = connections::run(&server, count).await?;
            println!(
                "connections {:>6} idle gRPC-Web subscribers: server RSS {:.1} MiB -> {:.1} MiB, {:.1} KB per connection",
                outcome.connections,
                mib(outcome.rss_before),
                mib(outcome.rss_after),
                outcome.bytes_per_connection() as f64 / 1000.0
            );
            println!(
                "{{\"scenario\":\"connections\",\"connections\":{},\"rss_before\":{},\"rss_after\":{},\"bytes_per_connection\":{}}}",
                outcome.connections,
                outcome.rss_before,
                outcome.rss_after,
                outcome.bytes_per_connection()
            );
        }
        match bundle::measure(&args.dist) {
            Ok(b) => {
                println!(
                    "bundle {}: {} bytes raw, {} bytes gzipped",
                    b.file.display(),
                    b.raw,
                    b.gzipped
                );
                println!(
                    "{{\"scenario\":\"bundle\",\"raw\":{},\"gzipped\":{}}}",
                    b.raw, b.gzipped
                );
            }
            Err(error) => println!("bundle: skipped ({error:#})"),
        }
    }
    if !failures.is_empty() {
        bail!(
            "messages were lost, duplicated or reordered: {}",
            failures.join("; ")
        );
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn report_fanout(plan: Plan, o: &fanout::Outcome, server_cpu: Duration, own_cpu: Duration) {
    let rate = plan.rate.map_or("max".to_owned(), |r| format!("{r}"));
    let secs = o.elapsed.as_secs_f64().max(1e-9);
    let per_second = o.delivered as f64 / secs;
    let q = |p: f64| ms(o.latency_us.value_at_quantile(p));
    let protocol = format!("{:?}", plan.protocol).to_lowercase();
    println!(
        "{:<10} {:<7} {:>7} {:>7} {:>6} {:>7} {:>9} {:>9} {:>5} {:>5} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>11.0} {:>7.1}s {:>7.1}s",
        "fan-out",
        protocol,
        plan.clients,
        plan.senders,
        plan.messages,
        rate,
        o.expected,
        o.delivered,
        o.lost(),
        o.duplicated,
        o.out_of_order,
        q(0.5),
        q(0.9),
        q(0.99),
        ms(o.latency_us.max()),
        per_second,
        server_cpu.as_secs_f64(),
        own_cpu.as_secs_f64()
    );
    println!(
        "{{\"scenario\":\"fan-out\",\"protocol\":\"{protocol}\",\"clients\":{},\"senders\":{},\"messages\":{},\"rate\":{},\"expected\":{},\"delivered\":{},\"lost\":{},\"duplicated\":{},\"out_of_order\":{},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"deliveries_per_s\":{:.0},\"elapsed_s\":{:.3},\"server_cpu_s\":{:.2},\"generator_cpu_s\":{:.2}}}",
        plan.clients,
        plan.senders,
        plan.messages,
        plan.rate.map_or("null".to_owned(), |r| r.to_string()),
        o.expected,
        o.delivered,
        o.lost(),
        o.duplicated,
        o.out_of_order,
        q(0.5),
        q(0.9),
        q(0.99),
        ms(o.latency_us.max()),
        per_second,
        secs,
        server_cpu.as_secs_f64(),
        own_cpu.as_secs_f64()
    );
}
