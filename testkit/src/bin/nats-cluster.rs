//! `nats-cluster`: the launcher of [`chat_testkit::nats`] as a process, for
//! what is not Rust (the browser test's `e2e/nats.mjs`) and for trying
//! cluster mode by hand.
//!
//! It starts the three nodes and, once the cluster is ready, prints one
//! JSON line on stdout:
//!
//! ```text
//! {"urls":"nats://127.0.0.1:P0,...","dir":"/tmp/nats-cluster-…",
//!  "nodes":[{"name":"nats-0","url":"nats://…","monitor":"http://…",
//!            "log":"…/nats-0.log","pid":1234,"running":true},…]}
//! ```
//!
//! Then it reads commands on stdin, one a line, and answers each with one
//! line: that same state afterwards, or `{"error":"…"}` (the cluster goes
//! on). Commands: `kill N` (`SIGKILL`), `pause N` (`SIGSTOP`), `resume N`
//! (`SIGCONT`), `restart N` (a killed node, back and caught up),
//! `stop-all` (`SIGTERM`, each waited for), `restart-all` (every stopped
//! node, ready again), `full-restart` (both), `ready` (wait until it is),
//! `state`.
//!
//! When stdin closes, or on `SIGTERM`, `SIGINT` or `SIGHUP` (even in the
//! middle of a command), it kills every node, removes the temp dir (unless
//! `$KEEP_NATS_DIR` is set) and exits 0. If the cluster does not start it
//! says why on stderr, with the tail of each node's log (the temp dir is
//! kept), and exits 1.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use chat_testkit::nats::{NODES, NatsCluster, Options, nats_server_binary};
use clap::Parser;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};

/// Runs a three-node NATS JetStream cluster on loopback until stdin closes;
/// prints its URLs as one JSON line once it is ready, then takes commands
/// on stdin (kill N, pause N, resume N, restart N, stop-all, restart-all,
/// full-restart, ready, state), each answered with one JSON line.
#[derive(Debug, Parser)]
#[command(name = "nats-cluster")]
struct Args {
    /// The nats-server binary (2.10 or newer); by default $NATS_SERVER,
    /// else the workspace's .tools/py/bin/nats-server (scripts/install --tests).
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// Fsync every write (`sync_interval: always`).
    #[arg(long)]
    fsync: bool,
    /// Put the temp dir (configs, stores, logs) in DIR instead of the
    /// system's temp dir.
    #[arg(long, value_name = "DIR")]
    temp_in: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("nats-cluster: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Installed before anything starts, so that a signal from now on ends
    // the loop below (or the start) instead of this process alone.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut signalled = async move || {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
            _ = hangup.recv() => {}
        }
    };

    let options = Options {
        nats_server: Some(nats_server_binary(args.nats_server.as_deref())),
        fsync: args.fsync,
        temp_in: args.temp_in,
    };
    let mut cluster = tokio::select! {
        cluster = NatsCluster::start_with(options) => cluster?,
        () = signalled() => return Ok(()),
    };
    if !say(&state(&cluster)) {
        return Ok(());
    }

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line.context("reading stdin")?,
            () = signalled() => break,
        };
        // stdin closed: whoever started us is done (or gone).
        let Some(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let answer = tokio::select! {
            done = command(&mut cluster, &line) => match done {
                Ok(()) => state(&cluster),
                Err(error) => json!({ "error": format!("{error:#}") }),
            },
            () = signalled() => break,
        };
        if !say(&answer) {
            break;
        }
    }
    cluster.stop();
    Ok(())
}

/// Does what one line of stdin says.
async fn command(cluster: &mut NatsCluster, line: &str) -> anyhow::Result<()> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let node = |word: &str| -> anyhow::Result<usize> {
        match word.parse::<usize>() {
            Ok(i) if i < NODES => Ok(i),
            _ => bail!("no node {word:?}: nodes are 0 to {}", NODES - 1),
        }
    };
    match words[..] {
        ["kill", i] => cluster.kill(node(i)?),
        ["pause", i] => cluster.pause(node(i)?),
        ["resume", i] => cluster.resume(node(i)?),
        ["restart", i] => cluster.restart(node(i)?).await,
        ["stop-all"] => cluster.stop_all().await,
        ["restart-all"] => cluster.restart_all().await,
        ["full-restart"] => cluster.full_restart().await,
        ["ready"] => cluster.ready().await,
        ["state"] => Ok(()),
        _ => bail!(
            "unknown command {line:?} (kill N, pause N, resume N, restart N, stop-all, restart-all, full-restart, ready, state)"
        ),
    }
}

/// What a client needs to know of the cluster.
fn state(cluster: &NatsCluster) -> Value {
    let nodes: Vec<Value> = (0..NODES)
        .map(|i| {
            json!({
                "name": cluster.name(i),
                "url": cluster.url(i),
                "monitor": cluster.monitor_url(i),
                "log": cluster.log(i).display().to_string(),
                "pid": cluster.pid(i),
                "running": cluster.is_running(i),
            })
        })
        .collect();
    json!({
        "urls": cluster.urls(),
        "dir": cluster.dir().display().to_string(),
        "nodes": nodes,
    })
}

/// One line on stdout; false once nobody reads it.
fn say(value: &Value) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}").and_then(|()| out.flush()).is_ok()
}
