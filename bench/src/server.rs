//! The server under test: a real `chat-server` process on a free loopback
//! port, and what it costs (resident memory and CPU time from `/proc`).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    /// Holds the scenario's database, removed with it.
    _db_dir: Option<tempfile::TempDir>,
    /// Where the server put its admin socket (next to a database file).
    admin_socket: Option<PathBuf>,
}

impl ServerProcess {
    /// Starts `binary` with a fresh database file (or `:memory:` when `db`
    /// says so) and its default ring buffer unless `buffer` gives one.
    pub async fn start(
        binary: &Path,
        buffer: Option<u32>,
        db: Option<&str>,
    ) -> anyhow::Result<Self> {
        Self::start_with(binary, buffer, db, &[]).await
    }

    /// [`start`](Self::start), with extra command-line flags. The server's
    /// per-client limits are lifted (if it has them): a load generator
    /// is one client posting for many, on more connections than the default
    /// allows.
    pub async fn start_with(
        binary: &Path,
        buffer: Option<u32>,
        db: Option<&str>,
        flags: &[String],
    ) -> anyhow::Result<Self> {
        Self::start_within(binary, buffer, db, flags, LISTEN_PATIENCE).await
    }

    /// [`start_with`](Self::start_with), waiting up to `patience` for the
    /// port to open.
    async fn start_within(
        binary: &Path,
        buffer: Option<u32>,
        db: Option<&str>,
        flags: &[String],
        patience: Duration,
    ) -> anyhow::Result<Self> {
        let addr = free_port()?;
        // Next to the build, so the disk is the one the server would use.
        std::fs::create_dir_all("target")?;
        let db_dir = tempfile::tempdir_in("target")?;
        let db: PathBuf = db.map_or_else(|| db_dir.path().join("bench.db"), Into::into);
        // The server's own choice with `--admin-socket auto`.
        let admin_socket = (db.as_os_str() != ":memory:").then(|| {
            let mut name = db.clone().into_os_string();
            name.push(".admin.sock");
            PathBuf::from(name)
        });
        let lifted = lifted_limits(binary)?;
        let mut command = Command::new(binary);
        command
            .env("CHAT_ADDR", addr.to_string())
            .env("CHAT_DB", db)
            .env("CHAT_WEB_DIR", "/nonexistent")
            .env("RUST_LOG", "error")
            .args(&lifted)
            .args(flags);
        if let Some(buffer) = buffer {
            command.env("CHAT_BUFFER", buffer.to_string());
        }
        let mut server = Self::launch(command, addr, Some(db_dir), patience).await?;
        server.admin_socket = admin_socket;
        Ok(server)
    }

    /// Runs `binary admin ARGS` against this server, as its operator.
    pub async fn admin(&self, binary: &Path, args: &[&str]) -> anyhow::Result<()> {
        let socket = self
            .admin_socket
            .as_ref()
            .context("the server has no admin socket (its database is :memory:)")?;
        let output = Command::new(binary)
            .env_clear()
            .arg("admin")
            .arg("--socket")
            .arg(socket)
            .args(args)
            .output()
            .await?;
        if !output.status.success() {
            bail!(
                "chat-server admin {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// A cluster-mode replica: `binary --nats URLS` (its own port, limits
    /// lifted as in [`start_with`](Self::start_with)), returned once its
    /// `/healthz` answers 200, that is once it has reached JetStream and
    /// serves (it binds its port before it connects).
    pub async fn start_replica(
        binary: &Path,
        buffer: Option<u32>,
        nats_urls: &str,
    ) -> anyhow::Result<Self> {
        Self::start_replica_with(binary, buffer, nats_urls, &[]).await
    }

    /// [`start_replica`](Self::start_replica) with extra flags.
    pub async fn start_replica_with(
        binary: &Path,
        buffer: Option<u32>,
        nats_urls: &str,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let mut flags = vec!["--nats".to_owned(), nats_urls.to_owned()];
        flags.extend_from_slice(extra);
        // A replica opens its port only once it reaches NATS and follows
        // its rooms: after a restart of the cluster that takes a while.
        let server = Self::start_within(binary, buffer, None, &flags, REPLICA_PATIENCE).await?;
        let deadline = tokio::time::Instant::now() + REPLICA_PATIENCE;
        loop {
            if let Some((200, _)) = chat_testkit::http::get(server.addr, "/healthz").await {
                return Ok(server);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the replica on {} was not healthy after {REPLICA_PATIENCE:?}",
                    server.addr
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The reference server ([`crate::reference`]): this very binary, run
    /// with `--reference-server`.
    pub async fn start_reference() -> anyhow::Result<Self> {
        let addr = free_port()?;
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("--reference-server").arg(addr.to_string());
        Self::launch(command, addr, None, LISTEN_PATIENCE).await
    }

    async fn launch(
        mut command: Command,
        addr: SocketAddr,
        db_dir: Option<tempfile::TempDir>,
        patience: Duration,
    ) -> anyhow::Result<Self> {
        let mut child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {:?}", command.as_std().get_program()))?;
        let deadline = tokio::time::Instant::now() + patience;
        while tokio::time::Instant::now() < deadline {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(Self {
                    child,
                    addr,
                    _db_dir: db_dir,
                    admin_socket: None,
                });
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{:?} exited ({status}) before listening on {addr}",
                    command.as_std().get_program()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!(
            "{:?} did not start listening on {addr} within {patience:?}",
            command.as_std().get_program()
        )
    }

    /// Asks the server to stop (SIGTERM) and waits, so a server run under a
    /// profiler gets to write its results; kills it if it takes too long.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = i32::try_from(self.pid()?)?;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error()).context("signalling the server");
        }
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) => status.map(drop).context("waiting for the server"),
            Err(_) => {
                self.child.kill().await?;
                bail!("the server did not stop within 60 s of SIGTERM")
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the server has exited")
    }

    /// Resident memory in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        self.rss_probe()?.bytes()
    }

    /// Reads the server's resident memory from anywhere (a sampling loop).
    pub fn rss_probe(&self) -> anyhow::Result<RssProbe> {
        Ok(RssProbe { pid: self.pid()? })
    }

    /// User plus system CPU time so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time_of_pid(self.pid()?)
    }
}

/// How long a cluster replica may take to reach JetStream and serve.
const REPLICA_PATIENCE: Duration = Duration::from_secs(60);
/// How long any other server may take to open its port.
const LISTEN_PATIENCE: Duration = Duration::from_secs(5);

/// A loopback address with a port nobody listens on.
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The flags that lift `binary`'s per-client limits, for those it has.
fn lifted_limits(binary: &Path) -> anyhow::Result<Vec<String>> {
    let mut flags = Vec::new();
    for (flag, value) in [("--rate-limit", "0"), ("--max-connections", "1000000")] {
        if has_flag(binary, flag)? {
            flags.extend([flag.to_owned(), value.to_owned()]);
        }
    }
    Ok(flags)
}

/// Whether `binary --help` lists `flag` (for flags newer than some builds).
pub fn has_flag(binary: &Path, flag: &str) -> anyhow::Result<bool> {
    let output = std::process::Command::new(binary)
        .arg("--help")
        .output()
        .with_context(|| format!("running {} --help", binary.display()))?;
    Ok(help_lists(&String::from_utf8_lossy(&output.stdout), flag))
}

fn help_lists(help: &str, flag: &str) -> bool {
    help.split(|c: char| c.is_whitespace() || ",=[<".contains(c))
        .any(|word| word == flag)
}

/// The server's resident memory, by process id.
#[derive(Debug, Clone, Copy)]
pub struct RssProbe {
    pid: u32,
}

impl RssProbe {
    /// Resident memory in bytes.
    pub fn bytes(self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("reading the server's /proc status (has it exited?)")?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .context("no VmRSS in /proc/<pid>/status")?;
        Ok(kib * 1024)
    }
}

/// This process's own CPU time (the load generator's cost).
pub fn own_cpu_time() -> anyhow::Result<Duration> {
    cpu_time_of("/proc/self/stat")
}

/// User plus system CPU time so far of process `pid` (any process).
pub fn cpu_time_of_pid(pid: u32) -> anyhow::Result<Duration> {
    cpu_time_of(&format!("/proc/{pid}/stat"))
}

fn cpu_time_of(stat_path: &str) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(stat_path)?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("bad stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Linux reports in clock ticks of 1/100 s on every mainstream platform.
    Ok(Duration::from_millis((ticks(11) + ticks(12)) * 10))
}

#[cfg(test)]
mod tests {
    use super::help_lists;

    #[test]
    fn flags_are_found_in_help_whole() {
        let help = "Options:\n      --rate-limit <RATE_LIMIT>\n          Sends per second [env: CHAT_RATE_LIMIT=] [default: 5]\n      --rate-burst=<N>\n";
        assert!(help_lists(help, "--rate-limit"));
        assert!(help_lists(help, "--rate-burst"));
        assert!(!help_lists(help, "--rate"));
        assert!(!help_lists("      --rate-limit-burst <N>", "--rate-limit"));
    }
}
