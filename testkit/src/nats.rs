//! A three-node NATS JetStream cluster on loopback: the one launcher behind
//! the server's cluster tests (`server/tests/it/cluster.rs`), the load
//! generator's cluster comparison and soak (`bench`), and the browser test
//! of cluster mode (`e2e/cluster.test.mjs`, through the `nats-cluster`
//! binary).
//!
//! [`NatsCluster::start`] runs three real `nats-server` processes, each with
//! its own client, route and monitoring port on 127.0.0.1, its own
//! JetStream store and a generated config file, all in a temp dir that also
//! holds their logs (`nats-N.log`, one per node across its restarts). It
//! returns once every node is healthy and names the same JetStream meta
//! leader, which sees both others as current peers: from then on a stream
//! with 3 replicas can be created. After that nodes can be crashed
//! ([`NatsCluster::kill`]: `kill -9`), frozen ([`NatsCluster::pause`]:
//! `SIGSTOP`, until [`NatsCluster::resume`]), stopped cleanly
//! ([`NatsCluster::stop_all`]: `SIGTERM`, as an operator would) and started
//! again on their data ([`NatsCluster::restart`],
//! [`NatsCluster::restart_all`], [`NatsCluster::full_restart`]).
//!
//! No nats-server outlives its cluster: dropping it kills every node, and
//! on Linux a node is also killed by the kernel when the thread that started
//! it ends (so a test process killed with `kill -9` takes its nodes along).
//! The temp dir goes with it, except when the cluster fails (not ready in
//! time, a node exiting by itself, a node not stopping): then it is kept
//! and the error says where, with the tail of every node's log. Setting
//! `$KEEP_NATS_DIR` keeps it always.
//!
//! The binary is [`nats_server_binary`]: `$NATS_SERVER` if set, else the
//! one `scripts/install --tests` puts in the workspace's `.tools/py/bin/`.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Nodes in the cluster.
pub const NODES: usize = 3;
/// How long the cluster may take to become ready, and a JetStream API
/// request to be answered. Here it takes under half a second to start,
/// about 2 s for a restarted node to catch up, and 4 to 6 s to elect a new
/// leader after the old one is killed.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after `SIGTERM`.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
const CLUSTER_NAME: &str = "chat-test";
/// Lines of each node's log that an error shows.
const LOG_TAIL: usize = 25;

/// One cluster at a time in a process: six servers per test on two cores
/// are slow enough, and ports chosen by binding port 0 and letting go can
/// be taken by a parallel cluster (or its chat servers) before a node binds
/// them.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How to start a cluster; the default suits tests.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The `nats-server` binary (2.10 or newer); `None`:
    /// [`nats_server_binary`]`(None)`.
    pub nats_server: Option<PathBuf>,
    /// `sync_interval: always` (every acknowledged write is on disk on a
    /// majority of the stream's replicas) instead of NATS's default (an
    /// fsync every 2 minutes).
    pub fsync: bool,
    /// Where the temp dir goes (created if missing); `None`: the system's
    /// temp dir. The load generator puts it under `target/`, on the disk
    /// its SQLite runs write to.
    pub temp_in: Option<PathBuf>,
}

/// Three `nats-server` processes forming one JetStream cluster; all are
/// killed when this is dropped.
pub struct NatsCluster {
    bin: PathBuf,
    nodes: Vec<Node>,
    // Fields drop after `Drop::drop` has killed the nodes: the dir is
    // removed once they are gone, and the next cluster may start after that.
    dir: tempfile::TempDir,
    /// This process's one turn to start a cluster, until it is dropped or
    /// shared ([`NatsCluster::share_turn`]).
    turn: Option<tokio::sync::MutexGuard<'static, ()>>,
}

struct Node {
    /// Its `server_name`, which the monitoring endpoints report.
    name: String,
    client_port: u16,
    monitor: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    /// `None` while killed or stopped.
    process: Option<Child>,
}

impl NatsCluster {
    /// [`start_with`](Self::start_with) the default [`Options`].
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// Starts the three nodes and waits until JetStream is ready on all of
    /// them (an error, with the tail of their logs, after
    /// [`READY_TIMEOUT`]). Waits first for any other cluster of this
    /// process to be dropped.
    pub async fn start_with(options: Options) -> anyhow::Result<Self> {
        let bin = options
            .nats_server
            .unwrap_or_else(|| nats_server_binary(None));
        if !bin.is_file() {
            bail!(
                "nats-server not found at {} (scripts/install --tests puts it there; or set $NATS_SERVER)",
                bin.display()
            );
        }
        let turn = ONE_AT_A_TIME.lock().await;
        let mut dir = tempfile::Builder::new();
        dir.prefix("nats-cluster-");
        let mut dir = match &options.temp_in {
            Some(parent) => {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
                dir.tempdir_in(parent)
            }
            None => dir.tempdir(),
        }
        .context("a temp dir for the NATS cluster")?;
        if std::env::var_os("KEEP_NATS_DIR").is_some() {
            dir.disable_cleanup(true);
        }
        // All nine ports are held until all are chosen, so that none repeats.
        let listeners = (0..NODES * 3)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .context("a free loopback port")?;
        let ports = listeners
            .iter()
            .map(|l| Ok(l.local_addr()?.port()))
            .collect::<std::io::Result<Vec<u16>>>()?;
        drop(listeners);
        let (client_ports, rest) = ports.split_at(NODES);
        let (route_ports, monitor_ports) = rest.split_at(NODES);
        let routes = route_ports
            .iter()
            .map(|port| format!("nats-route://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sync = if options.fsync {
            "\n    sync_interval: always"
        } else {
            ""
        };

        let mut nodes = Vec::with_capacity(NODES);
        for i in 0..NODES {
            let name = format!("nats-{i}");
            let config = dir.path().join(format!("{name}.conf"));
            let text = format!(
                "# Generated by chat-testkit (testkit/src/nats.rs)
server_name: {name}
listen: 127.0.0.1:{client}
http: 127.0.0.1:{monitor}
jetstream {{
    store_dir: \"{store}\"{sync}
}}
cluster {{
    name: {CLUSTER_NAME}
    listen: 127.0.0.1:{route}
    routes: [{routes}]
}}
",
                client = client_ports[i],
                monitor = monitor_ports[i],
                route = route_ports[i],
                store = dir.path().join(&name).display(),
            );
            std::fs::write(&config, text).context("writing a nats-server config file")?;
            nodes.push(Node {
                log: dir.path().join(format!("{name}.log")),
                name,
                client_port: client_ports[i],
                monitor: SocketAddr::from(([127, 0, 0, 1], monitor_ports[i])),
                config,
                process: None,
            });
        }
        // Made before any node starts, so that they are killed however
        // this ends.
        let mut cluster = Self {
            bin,
            nodes,
            dir,
            turn: Some(turn),
        };
        cluster.start_stopped()?;
        cluster.ready().await?;
        Ok(cluster)
    }

    /// The client URLs of all nodes, comma-separated, as `chat-server
    /// --nats` takes them.
    pub fn urls(&self) -> String {
        (0..NODES)
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// Node `i`'s `server_name` (`nats-I`), as the monitoring endpoints
    /// name it.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Node `i`'s monitoring endpoint, `http://127.0.0.1:PORT`.
    pub fn monitor_url(&self, i: usize) -> String {
        format!("http://{}", self.nodes[i].monitor)
    }

    /// Node `i`'s log (both outputs, appended across restarts).
    pub fn log(&self, i: usize) -> &Path {
        &self.nodes[i].log
    }

    /// The temp dir holding the configs, stores and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Node `i`'s process id, `None` while it is killed or stopped.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].process.as_ref().map(Child::id)
    }

    /// The process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        (0..NODES).filter_map(|i| self.pid(i)).collect()
    }

    /// Whether node `i` is running (not killed or stopped; a paused node
    /// is running).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].process.is_some()
    }

    /// Kills node `i` with `SIGKILL`, as a crash would, and waits for it to
    /// exit. Does not wait for the others to notice.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let mut process = node
            .process
            .take()
            .ok_or_else(|| anyhow!("{} is not running", node.name))?;
        // std's Child::kill sends SIGKILL (which also ends a paused node).
        process.kill().context("kill -9 nats-server")?;
        process
            .wait()
            .context("waiting for the killed nats-server")?;
        Ok(())
    }

    /// Freezes node `i` with `SIGSTOP`: it keeps its connections but answers
    /// nothing and falls behind the others until [`resume`](Self::resume).
    pub fn pause(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, libc::SIGSTOP)
    }

    /// Lets a paused node `i` run again (`SIGCONT`); it then catches up.
    pub fn resume(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, libc::SIGCONT)
    }

    fn signal(&self, i: usize, signal: libc::c_int) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let process = node
            .process
            .as_ref()
            .ok_or_else(|| anyhow!("{} is not running", node.name))?;
        send_signal(process, signal).with_context(|| format!("signal {signal} to {}", node.name))
    }

    /// Stops every running node with `SIGTERM` (a clean shutdown, as an
    /// operator's restart or systemd's stop does; a paused node is resumed
    /// first) and waits for each to exit, up to [`STOP_TIMEOUT`] in all.
    pub async fn stop_all(&mut self) -> anyhow::Result<()> {
        for node in &self.nodes {
            if let Some(process) = &node.process {
                let _ = send_signal(process, libc::SIGCONT);
                send_signal(process, libc::SIGTERM)
                    .with_context(|| format!("stopping {}", node.name))?;
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for i in 0..NODES {
            // std's Child has no async wait: look until it has exited.
            while let Some(process) = &mut self.nodes[i].process {
                if process.try_wait()?.is_some() {
                    self.nodes[i].process = None;
                } else if Instant::now() > deadline {
                    let why = format!(
                        "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM",
                        self.name(i)
                    );
                    return Err(self.failure(&why));
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Ok(())
    }

    /// Starts every killed or stopped node again at once, with the same
    /// ports, config and store, and returns without waiting for the cluster
    /// to be ready (what a replica started right after them meets).
    pub fn start_stopped(&mut self) -> anyhow::Result<()> {
        for i in 0..NODES {
            if !self.is_running(i) {
                self.spawn(i)?;
            }
        }
        Ok(())
    }

    /// Waits until every running node accepts client connections (which
    /// it does long before the cluster is ready).
    pub async fn listening(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        for i in self.running() {
            while TcpStream::connect(("127.0.0.1", self.nodes[i].client_port))
                .await
                .is_err()
            {
                if started.elapsed() > READY_TIMEOUT {
                    bail!("{} does not listen", self.name(i));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// Starts the killed or stopped node `i` again, with the same ports,
    /// config and store, and waits until it is back in the cluster and
    /// caught up.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.is_running(i) {
            bail!("{} is still running", self.name(i));
        }
        self.spawn(i)?;
        self.ready().await
    }

    /// Starts every killed or stopped node again at once (a lone node cannot
    /// recover the cluster's state without a quorum) and waits until all
    /// are ready.
    pub async fn restart_all(&mut self) -> anyhow::Result<()> {
        self.start_stopped()?;
        self.ready().await
    }

    /// An operator's full restart: [`stop_all`](Self::stop_all) (`SIGTERM`,
    /// each waited for), then [`restart_all`](Self::restart_all) on the same
    /// config, ports and JetStream stores, ready again when it returns.
    pub async fn full_restart(&mut self) -> anyhow::Result<()> {
        self.stop_all().await?;
        self.restart_all().await
    }

    /// Kills every node and removes the temp dir (what dropping it does).
    pub fn stop(self) {
        drop(self);
    }

    /// Waits until every running node answers `/healthz` (JetStream current,
    /// its streams caught up) and names the same meta leader, which sees
    /// every other running node as a current peer. With a node killed this
    /// is the two survivors (after a new meta leader is elected if needed).
    /// Fails at once if a node exits by itself, and after
    /// [`READY_TIMEOUT`] otherwise.
    pub async fn ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(exit) = self.exited() {
                return Err(self.failure(&exit));
            }
            let Some(problem) = self.not_ready().await else {
                return Ok(());
            };
            if started.elapsed() > READY_TIMEOUT {
                return Err(self.failure(&format!(
                    "the NATS cluster was not ready after {READY_TIMEOUT:?}: {problem}"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A node that was running and has exited by itself, if any.
    fn exited(&mut self) -> Option<String> {
        self.nodes.iter_mut().find_map(|node| {
            let status = node.process.as_mut()?.try_wait().ok()??;
            Some(format!("{} exited by itself ({status})", node.name))
        })
    }

    /// The error for `why`, with the tail of every node's log; keeps the
    /// temp dir (configs, logs, stores) for a look.
    fn failure(&mut self, why: &str) -> anyhow::Error {
        self.dir.disable_cleanup(true);
        let mut out = format!("{why}\nkept {} for a look\n", self.dir.path().display());
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            out.push_str(&format!("--- {}: {}\n", node.name, node.log.display()));
            out.push_str(&tail.join("\n"));
            out.push('\n');
        }
        anyhow!(out)
    }

    /// Why the cluster is not ready yet, or `None` if it is.
    async fn not_ready(&self) -> Option<String> {
        let mut leaders = Vec::new();
        for i in self.running() {
            let name = self.name(i);
            match self.get(i, "/healthz").await {
                Some((200, _)) => {}
                Some((status, body)) => return Some(format!("{name}: /healthz {status} {body}")),
                None => return Some(format!("{name}: monitoring port not answering")),
            }
            let Some(jsz) = self.monitoring(i, "/jsz").await else {
                return Some(format!("{name}: no /jsz"));
            };
            match jsz.pointer("/meta_cluster/leader").and_then(Value::as_str) {
                Some(leader) if !leader.is_empty() => leaders.push((i, leader.to_owned())),
                _ => return Some(format!("{name}: no JetStream meta leader yet")),
            }
        }
        let Some((_, leader)) = leaders.first() else {
            return Some("no node is running".into());
        };
        if leaders.iter().any(|(_, l)| l != leader) {
            return Some(format!(
                "the nodes name different meta leaders: {leaders:?}"
            ));
        }
        let Some(l) = self.index_of(leader).filter(|&l| self.is_running(l)) else {
            return Some(format!("the meta leader {leader} is not a running node"));
        };
        let Some(jsz) = self.monitoring(l, "/jsz").await else {
            return Some(format!("{leader}: no /jsz"));
        };
        let peers = jsz
            .pointer("/meta_cluster/replicas")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for i in self.running().filter(|&i| i != l) {
            let current = peers.iter().any(|peer| {
                peer["name"] == self.name(i) && peer["current"] == true && peer["offline"] != true
            });
            if !current {
                return Some(format!(
                    "the meta leader {leader} does not yet see {} as a current peer: {peers:?}",
                    self.name(i)
                ));
            }
        }
        None
    }

    /// The running node whose JetStream meta leader is the cluster's, as
    /// the running nodes report it (`None` while they elect one).
    pub async fn meta_leader(&self) -> Option<usize> {
        let mut claims = Vec::new();
        for i in self.running() {
            let jsz = self.monitoring(i, "/jsz").await?;
            let leader = jsz.pointer("/meta_cluster/leader")?.as_str()?;
            claims.push(self.index_of(leader)?);
        }
        let first = *claims.first()?;
        (claims.iter().all(|&c| c == first) && self.is_running(first)).then_some(first)
    }

    /// Which node leads JetStream stream `stream`: the running node that
    /// reports itself as its leader in `/jsz` (a follower's view of the
    /// leader can be stale). `None` while it has no leader, or if there is
    /// no such stream.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        let mut leaders = Vec::new();
        for i in self.running() {
            let Some(jsz) = self
                .monitoring(i, "/jsz?accounts=true&streams=true&config=true")
                .await
            else {
                continue;
            };
            let accounts = jsz["account_details"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let leads = accounts
                .iter()
                .filter_map(|account| account["stream_detail"].as_array())
                .flatten()
                .filter(|detail| detail["name"] == stream)
                .any(|detail| {
                    detail.pointer("/cluster/leader") == Some(&Value::from(self.name(i)))
                });
            if leads {
                leaders.push(i);
            }
        }
        // Two claims only for a moment, from a deposed leader.
        match leaders[..] {
            [leader] => Some(leader),
            _ => None,
        }
    }

    /// GETs `path` from node `i`'s monitoring port and parses the JSON
    /// (`None` if the node does not answer with 200 and JSON).
    pub async fn monitoring(&self, i: usize, path: &str) -> Option<Value> {
        match self.get(i, path).await? {
            (200, body) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// Status and body of a GET of `path` on node `i`'s monitoring port, or
    /// `None` if it does not answer (within [`crate::http::REQUEST_TIMEOUT`]).
    pub async fn get(&self, i: usize, path: &str) -> Option<(u16, String)> {
        crate::http::get(self.nodes[i].monitor, path).await
    }

    /// Sends one JetStream API request to node `i` over the NATS protocol
    /// and returns the reply: `api` is the subject after `$JS.API.`, like
    /// `STREAM.CREATE.chat` with the stream's config as `request`. JetStream
    /// errors come back in the reply's `error`; an error if nothing answers
    /// within [`READY_TIMEOUT`].
    pub async fn jetstream_api(
        &self,
        i: usize,
        api: &str,
        request: &Value,
    ) -> anyhow::Result<Value> {
        let subject = format!("$JS.API.{api}");
        let name = self.name(i);
        let exchange = async {
            let stream = TcpStream::connect(("127.0.0.1", self.nodes[i].client_port))
                .await
                .context("connecting to nats-server's client port")?;
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            let info = read_line(&mut read).await?;
            if !info.starts_with("INFO ") {
                bail!("not a NATS server: {info}");
            }
            let payload = serde_json::to_vec(request)?;
            // With headers and no_responders, a request that no one can
            // answer gets a 503 at once instead of silence.
            let mut out = format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true}}\r\n\
                 SUB _INBOX.harness 1\r\n\
                 PUB {subject} _INBOX.harness {}\r\n",
                payload.len()
            )
            .into_bytes();
            out.extend_from_slice(&payload);
            out.extend_from_slice(b"\r\n");
            write
                .write_all(&out)
                .await
                .context("sending to nats-server")?;
            loop {
                let line = read_line(&mut read).await?;
                let words: Vec<&str> = line.split_whitespace().collect();
                match words[..] {
                    ["PING"] => write.write_all(b"PONG\r\n").await.context("PONG")?,
                    ["MSG", .., size] | ["HMSG", .., size] => {
                        let size: usize = size.parse().context("NATS message size")?;
                        let mut body = vec![0; size + 2];
                        read.read_exact(&mut body)
                            .await
                            .context("a NATS message body")?;
                        body.truncate(size);
                        let mut body = String::from_utf8_lossy(&body).into_owned();
                        if words[0] == "HMSG" {
                            let headers = words[words.len() - 2];
                            let headers: usize = headers.parse().context("NATS header size")?;
                            let (head, rest) = body
                                .split_at_checked(headers)
                                .context("NATS headers longer than the message")?;
                            if head.starts_with("NATS/1.0 503") {
                                bail!("no JetStream responder for {subject} on {name}");
                            }
                            body = rest.to_owned();
                        }
                        return serde_json::from_str::<Value>(&body)
                            .with_context(|| format!("{subject} replied {body:?}"));
                    }
                    _ if line.starts_with("-ERR") => bail!("nats-server: {line}"),
                    _ => {} // +OK, PONG
                }
            }
        };
        // A JetStream request is answered when the cluster has done it
        // (creating a replicated stream waits for its peers), which on a
        // busy machine took over 5 s; one nobody can answer gets a 503 at
        // once, so waiting long only waits for work being done.
        tokio::time::timeout(READY_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("no reply to {subject} from {name}"))?
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..NODES).filter(|&i| self.is_running(i))
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// Starts node `i`, appending both its outputs to its log.
    /// Lets another cluster of this process start while this one runs on,
    /// for a test that only waits from now on: its nodes keep the ports
    /// they hold, so a new cluster cannot pick them; a node of this one
    /// must not be started again after this (its port could be taken).
    pub fn share_turn(&mut self) {
        self.turn = None;
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        if self.turn.is_none() {
            bail!("a node cannot start again after the cluster shared its turn");
        }
        let node = &mut self.nodes[i];
        // One log per node across restarts, so the tail shows both runs.
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .context("opening a nats-server log file")?;
        writeln!(log, "=== {} starting", node.name)?;
        let mut command = Command::new(&self.bin);
        command
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_this_thread(&mut command);
        let process = command
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        node.process = Some(process);
        Ok(())
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.take() {
                let _ = process.kill();
                let _ = process.wait();
            }
        }
    }
}

/// `flag`, else `$NATS_SERVER`, else the pinned one that `scripts/install
/// --tests` puts in the workspace's `.tools/py/bin/` (found from where this
/// crate was built, whatever the current directory).
pub fn nats_server_binary(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("NATS_SERVER").map(PathBuf::from))
        .unwrap_or_else(|| {
            let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
            let workspace = testkit.parent().unwrap_or(testkit);
            workspace.join(".tools/py/bin/nats-server")
        })
}

/// kill(2) on our own child.
fn send_signal(process: &Child, signal: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(process.id()).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) with the pid of a child we have not waited for (so
    // not reused) and a valid signal; no memory is involved.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// On Linux, has the kernel kill the child with `SIGKILL` when the thread
/// that spawns it ends (`PR_SET_PDEATHSIG`): a cluster's owner that dies
/// without dropping it (`kill -9`, an abort) takes its nodes along.
#[cfg(target_os = "linux")]
fn die_with_this_thread(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs in the child between fork and exec, and only
    // makes async-signal-safe system calls; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before prctl: nobody would kill this one.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_this_thread(_command: &mut Command) {}

async fn read_line(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> anyhow::Result<String> {
    let mut line = String::new();
    let n = read
        .read_line(&mut line)
        .await
        .context("reading from nats-server")?;
    if n == 0 {
        bail!("nats-server closed the connection");
    }
    Ok(line.trim_end().to_owned())
}
