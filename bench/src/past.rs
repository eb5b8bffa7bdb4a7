//! The past (issue 27): `History` pages and `Search` over a database of
//! many messages, and what keeping the search index costs.
//!
//! Fill: a server (`--search-rate 0`, `--history 0`) on a database file
//! kept for the scenario; R rooms, then N messages spread over them
//! (message `i` in room `i % R`) from [`IN_FLIGHT`] concurrent unary
//! `Send`s over [`CONNECTIONS`] native HTTP/2 connections, each answered
//! once its message is durable (the writer group-commits them). Texts are
//! deterministic sentences of 5-20 words drawn Zipf-like from a built-in
//! vocabulary of a few thousand words, names and words with diacritics
//! among them ([`Vocabulary`]), by ~200 people. Reported: messages/s over
//! the fill, its wall time and the server's CPU per message.
//!
//! Then, the server stopped, on the file itself (rusqlite, read-only):
//! - sizes from the `dbstat` table: the messages' text, the file, the
//!   messages table and the search index (`search_text`'s shadow tables,
//!   `search_rows` and its indexes);
//! - where a search's time goes: for [`PROBES`] two-word queries, the FTS5
//!   match alone, the server's own query (the match joined to `search_rows`
//!   and `rooms`), and reading the hits' rows; beside `grep -F -i` for the
//!   same words over every text in a file (one a line), as a floor.
//!
//! The server started again on the file:
//! - the same queries through `Search`, one at a time (the whole RPC, and
//!   the server's CPU time per call);
//! - `History`: sequential pages of 50 at random rooms and `before_id`s,
//!   each checked to hold the 50 (or fewer) ids before it;
//! - a fan-out in general (gRPC-Web subscribers, senders at a fixed
//!   rate), once alone and once beside open-loop two-word searches of
//!   every room at a target rate (several tasks each firing on a fixed
//!   interval, not waiting for replies), over its timed phase.
//!
//! With a baseline binary (built before search): the same W messages
//! written into a fresh database on each binary, rounds alternating
//! (ABBA, so drift hits both alike): messages/s with the index and without.
//!
//! Bench reports figures: it fails only on errors (a failed call, a wrong
//! History page, any search error) and on lost fan-out messages.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use chat_proto::{ChatMessage, CreateRoomRequest, HistoryRequest, SearchRequest};
use hdrhistogram::Histogram;
use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::clients;
use crate::fanout::{self, Plan, Protocol, describe};
use crate::report::Row;
use crate::rng::Rng;
use crate::server::{ServerProcess, has_flag};
use crate::tally::new_histogram;

/// Native HTTP/2 connections the writes go over.
const CONNECTIONS: usize = 4;
/// `Send`s in flight at once, spread over the connections.
const IN_FLIGHT: usize = 256;
/// Two-word queries timed one at a time (FTS5 alone, the RPC, grep).
const PROBES: usize = 20;
/// Native connections the searches beside the fan-out go over.
const SEARCH_CONNECTIONS: usize = 4;
/// Tasks firing searches beside the fan-out, each on its own interval.
const FIRING: usize = 5;
/// Words of this rank range (most frequent first) make the queries:
/// neither "the" nor a word seen a dozen times.
const MEDIUM: std::ops::Range<usize> = 40..400;
/// Words in the vocabulary, with the generated ones.
const VOCABULARY: usize = 3_000;
/// The Zipf exponent of the words' ranks.
const ZIPF: f64 = 1.0;

/// How big each part is.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub messages: u64,
    pub rooms: usize,
    /// Messages written per binary and round of the write comparison.
    pub writes: u64,
    pub write_rounds: usize,
    pub history_calls: usize,
    /// Searches per second beside the fan-out, and for how long.
    pub search_rate: f64,
    pub search_seconds: f64,
    /// The fan-out: subscribers, senders, messages per second per sender.
    pub fanout: (usize, usize, f64),
    /// Repeats of each probe query, timed (after one untimed).
    pub probe_repeats: usize,
}

impl Sizes {
    pub fn full() -> Self {
        Self {
            messages: 1_000_000,
            rooms: 100,
            writes: 200_000,
            write_rounds: 2,
            history_calls: 2_000,
            search_rate: 250.0,
            search_seconds: 20.0,
            fanout: (100, 10, 100.0),
            probe_repeats: 10,
        }
    }

    pub fn quick() -> Self {
        Self {
            messages: 20_000,
            rooms: 10,
            writes: 10_000,
            write_rounds: 1,
            history_calls: 200,
            search_rate: 50.0,
            search_seconds: 3.0,
            fanout: (20, 4, 50.0),
            probe_repeats: 3,
        }
    }

    /// Messages in room `k` (of `0..rooms`): those `i` with `i % rooms == k`.
    fn in_room(&self, k: usize) -> u64 {
        let rooms = self.rooms as u64;
        self.messages / rooms + u64::from((k as u64) < self.messages % rooms)
    }
}

/// The binaries.
pub struct Setup<'a> {
    pub server_bin: &'a Path,
    /// A chat-server built before search, for the write comparison.
    pub baseline_bin: Option<&'a Path>,
    pub buffer: Option<u32>,
}

/// Runs every part, handing each row to `print` as it is made; returns
/// what broke.
pub async fn run(
    setup: &Setup<'_>,
    sizes: Sizes,
    mut print: impl FnMut(&Row),
) -> anyhow::Result<Vec<String>> {
    let vocabulary = Arc::new(Vocabulary::new());
    let rooms: Arc<Vec<String>> = Arc::new((1..=sizes.rooms).map(|k| format!("past{k}")).collect());
    let probes = vocabulary.queries(PROBES, 1);
    let mut failures = Vec::new();

    // The database, kept across the server's restarts; removed at the end.
    std::fs::create_dir_all("target")?;
    let dir = tempfile::tempdir_in("target")?;
    let db = dir.path().join("past.db");
    let db_arg = db.to_str().context("a database path that is UTF-8")?;
    let flags = server_flags(setup.server_bin, &sizes)?;

    let server =
        ServerProcess::start_with(setup.server_bin, setup.buffer, Some(db_arg), &flags).await?;
    let wrote = write_all(&server, &rooms, &vocabulary, sizes.messages).await?;
    server.stop().await?;
    print(&wrote.fill_row(sizes.rooms));

    // On the file, the server stopped.
    let size = measure_sizes(&db)?;
    print(&size.row());
    let texts = dir.path().join("texts.txt");
    dump_texts(&db, &texts)?;
    let alone = index_alone(&db, &probes, sizes.probe_repeats)?;
    let grep = grep_floor(&texts, &probes)?;

    let server =
        ServerProcess::start_with(setup.server_bin, setup.buffer, Some(db_arg), &flags).await?;
    let url = server.url();
    let rpc = searches_one_at_a_time(&server, &probes, sizes.probe_repeats).await?;
    print(&where_time_goes(&alone, &grep, &rpc));

    let history = history(&url, &rooms, &sizes).await?;
    print(&history.row());
    failures.extend(history.problem.clone());

    let (clients, senders, rate) = sizes.fanout;
    let messages = (rate * sizes.search_seconds).round() as usize;
    let plan = Plan::new(Protocol::Web, (clients, senders, messages, Some(rate)));
    let quiet = fanout::run(std::slice::from_ref(&url), plan).await?;
    print(&fanout_row(&quiet, plan, false));
    let queries = Arc::new(vocabulary.queries(200, 2));
    let (started, start) = oneshot::channel();
    let (beside, searched) = tokio::join!(
        fanout::run_metered(std::slice::from_ref(&url), plan, move || {
            let _ = started.send(());
        }),
        search_load(
            &url,
            queries,
            sizes.search_rate,
            sizes.search_seconds,
            start
        ),
    );
    let beside = beside?.0;
    print(&fanout_row(&beside, plan, true));
    let searched = searched?;
    print(&searched.row(sizes.search_rate));
    server.stop().await?;
    for (outcome, searches) in [(&quiet, "without"), (&beside, "with")] {
        let broke = outcome.lost() + outcome.duplicated + outcome.out_of_order;
        if broke > 0 {
            failures.push(format!(
                "past fan-out {searches} searches: {} lost, {} duplicated, {} out of order",
                outcome.lost(),
                outcome.duplicated,
                outcome.out_of_order
            ));
        }
    }
    if searched.errors > 0 {
        failures.push(format!(
            "past searches beside the fan-out: {} of {} failed, the first: {}",
            searched.errors,
            searched.errors + searched.searches,
            searched.first_error.as_deref().unwrap_or("?")
        ));
    }
    drop(dir);

    if let Some(baseline) = setup.baseline_bin {
        write_comparison(setup, baseline, &sizes, &rooms, &vocabulary, &mut print).await?;
    }
    Ok(failures)
}

/// `--search-rate 0` and `--history 0` (a new subscriber gets no replay,
/// so the second fan-out's listeners do not see the first's messages),
/// and a retention that keeps every message; each where `binary` has it.
fn server_flags(binary: &Path, sizes: &Sizes) -> anyhow::Result<Vec<String>> {
    let keep = sizes.messages.max(sizes.writes).max(100_000).to_string();
    let mut flags = Vec::new();
    for (flag, value) in [
        ("--search-rate", "0"),
        ("--history", "0"),
        ("--retain", keep.as_str()),
    ] {
        if has_flag(binary, flag)? {
            flags.extend([flag.to_owned(), value.to_owned()]);
        }
    }
    Ok(flags)
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

// ---------------------------------------------------------------- writes

/// One run of writes.
struct Wrote {
    messages: u64,
    elapsed: Duration,
    cpu: Duration,
    /// The writer's time in its batches (writing, indexing, committing)
    /// and how many batches, from the server's `/metrics`, if it has them.
    commits: Option<(f64, f64)>,
    load: String,
}

impl Wrote {
    fn per_s(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The fill's row.
    fn fill_row(&self, rooms: usize) -> Row {
        self.figures(Row::new("past_fill").num("rooms", rooms))
    }

    /// A row of the write comparison.
    fn write_row(&self, binary: &str, round: usize) -> Row {
        self.figures(
            Row::new("past_write")
                .text("binary", binary)
                .num("round", round),
        )
    }

    fn figures(&self, row: Row) -> Row {
        row.num("messages", self.messages)
            .num("seconds", format!("{:.1}", self.elapsed.as_secs_f64()))
            .num("messages_per_s", format!("{:.0}", self.per_s()))
            .num(
                "server_cpu_us_per_msg",
                format!(
                    "{:.1}",
                    self.cpu.as_secs_f64() * 1e6 / self.messages.max(1) as f64
                ),
            )
            .num(
                "writer_us_per_msg",
                self.commits.map_or_else(
                    || "null".to_owned(),
                    |(seconds, _)| format!("{:.1}", seconds * 1e6 / self.messages.max(1) as f64),
                ),
            )
            .num(
                "msgs_per_batch",
                self.commits.map_or_else(
                    || "null".to_owned(),
                    |(_, batches)| format!("{:.0}", self.messages as f64 / batches.max(1.0)),
                ),
            )
            .num("load1", &self.load)
    }
}

/// The writer's seconds in batches and the batches so far: the sum and
/// count of `chat_store_commit_seconds` (`None` if `/metrics` lacks it).
async fn commits(server: &ServerProcess) -> Option<(f64, f64)> {
    let (200, text) = chat_testkit::http::get(server.addr, "/metrics").await? else {
        return None;
    };
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    Some((
        value("chat_store_commit_seconds_sum ")?,
        value("chat_store_commit_seconds_count ")?,
    ))
}

/// Makes the rooms, then writes messages `0..count` into them.
async fn write_all(
    server: &ServerProcess,
    rooms: &Arc<Vec<String>>,
    vocabulary: &Arc<Vocabulary>,
    count: u64,
) -> anyhow::Result<Wrote> {
    let url = server.url();
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        connections.push(clients::native(&url).await?);
    }
    for name in rooms.iter() {
        connections[0]
            .create_room(CreateRoomRequest {
                name: name.clone(),
                topic: String::new(),
            })
            .await
            .with_context(|| format!("creating room {name}"))?;
    }
    let cpu_before = server.cpu_time()?;
    let commits_before = commits(server).await;
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for t in 0..IN_FLIGHT {
        let mut client = connections[t % CONNECTIONS].clone();
        let (next, rooms, vocabulary) =
            (Arc::clone(&next), Arc::clone(rooms), Arc::clone(vocabulary));
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                client
                    .send(vocabulary.message(i, &rooms))
                    .await
                    .map_err(|status| {
                        anyhow::anyhow!("Send of message {i}: {}", describe(&status))
                    })?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let elapsed = started.elapsed();
    let commits = commits_before
        .zip(commits(server).await)
        .map(|((s0, n0), (s1, n1))| (s1 - s0, n1 - n0));
    Ok(Wrote {
        messages: count,
        elapsed,
        cpu: server.cpu_time()? - cpu_before,
        commits,
        load: load(),
    })
}

/// The same writes on a fresh database with each binary, ABBA.
async fn write_comparison(
    setup: &Setup<'_>,
    baseline: &Path,
    sizes: &Sizes,
    rooms: &Arc<Vec<String>>,
    vocabulary: &Arc<Vocabulary>,
    print: &mut impl FnMut(&Row),
) -> anyhow::Result<()> {
    let binaries = [("index", setup.server_bin), ("no_index", baseline)];
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut writer: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..sizes.write_rounds {
        for j in 0..2 {
            let which = if round % 2 == 0 { j } else { 1 - j };
            let (name, binary) = binaries[which];
            let flags = server_flags(binary, sizes)?;
            let server = ServerProcess::start_with(binary, setup.buffer, None, &flags).await?;
            let wrote = write_all(&server, rooms, vocabulary, sizes.writes).await;
            server.stop().await?;
            let wrote = wrote?;
            print(&wrote.write_row(name, round + 1));
            rates[which].push(wrote.per_s());
            if let Some((seconds, _)) = wrote.commits {
                writer[which].push(seconds * 1e6 / wrote.messages.max(1) as f64);
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (with, without) = (mean(&rates[0]), mean(&rates[1]));
    print(
        &Row::new("past_write_vs")
            .num("rounds", sizes.write_rounds)
            .num("messages", sizes.writes)
            .num("index_per_s", format!("{with:.0}"))
            .num("no_index_per_s", format!("{without:.0}"))
            .num("ratio", format!("{:.3}", with / without.max(1e-9)))
            .num("index_writer_us", format!("{:.1}", mean(&writer[0])))
            .num("no_index_writer_us", format!("{:.1}", mean(&writer[1]))),
    );
    Ok(())
}

// ---------------------------------------------------------- on the file

/// Bytes of the text and of what holds it.
struct Bytes {
    text: u64,
    file: u64,
    messages: Option<u64>,
    fts: Option<u64>,
    rows: Option<u64>,
}

impl Bytes {
    fn row(&self) -> Row {
        let opt = |v: Option<u64>| v.map_or_else(|| "null".to_owned(), |v| v.to_string());
        let index = self.fts.zip(self.rows).map(|(f, r)| f + r);
        Row::new("past_size")
            .num("text_bytes", self.text)
            .num("file_bytes", self.file)
            .num("messages_bytes", opt(self.messages))
            .num("fts_bytes", opt(self.fts))
            .num("rows_bytes", opt(self.rows))
            .num("index_bytes", opt(index))
            .num(
                "index_per_text",
                index.map_or_else(
                    || "null".to_owned(),
                    |i| format!("{:.2}", i as f64 / self.text.max(1) as f64),
                ),
            )
    }
}

fn read_only(db: &Path) -> anyhow::Result<Connection> {
    Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} read-only", db.display()))
}

/// Sizes from `dbstat` (if SQLite has it; else the file's alone).
fn measure_sizes(db: &Path) -> anyhow::Result<Bytes> {
    let connection = read_only(db)?;
    let text: i64 = connection.query_row(
        "SELECT coalesce(sum(length(CAST(message AS BLOB))), 0) FROM messages WHERE kind = 0",
        [],
        |row| row.get(0),
    )?;
    let page_count: i64 = connection.query_row("PRAGMA page_count", [], |row| row.get(0))?;
    let page_size: i64 = connection.query_row("PRAGMA page_size", [], |row| row.get(0))?;
    let mut bytes = Bytes {
        text: u64::try_from(text)?,
        file: u64::try_from(page_count * page_size)?,
        messages: None,
        fts: None,
        rows: None,
    };
    let by_name = connection
        .prepare("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<HashMap<String, i64>>>()
        });
    match by_name {
        Ok(by_name) => {
            let sum = |keep: &dyn Fn(&str) -> bool| {
                by_name
                    .iter()
                    .filter(|(name, _)| keep(name))
                    .map(|(_, &size)| u64::try_from(size).unwrap_or(0))
                    .sum::<u64>()
            };
            bytes.messages = Some(sum(&|name| name == "messages"));
            bytes.fts = Some(sum(&|name| name.starts_with("search_text_")));
            bytes.rows = Some(sum(&|name| name.starts_with("search_rows")));
        }
        Err(error) => println!("past: no dbstat in this SQLite ({error}): the file's size alone"),
    }
    Ok(bytes)
}

/// Every message's text, one a line, for grep.
fn dump_texts(db: &Path, file: &Path) -> anyhow::Result<()> {
    let connection = read_only(db)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(file)?);
    let mut statement = connection.prepare("SELECT message FROM messages WHERE kind = 0")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let text: String = row.get(0)?;
        writeln!(out, "{}", text.replace('\n', " "))?;
    }
    out.flush()?;
    Ok(())
}

/// Mean milliseconds per query of each layer under the RPC.
struct Alone {
    fts_ms: f64,
    fts_rows_ms: f64,
    reads_ms: f64,
    hits: f64,
}

/// The FTS5 match alone, the server's query around it, and reading the
/// hits, directly on the file: each probe once untimed, then `repeats`
/// times timed.
fn index_alone(db: &Path, probes: &[Query], repeats: usize) -> anyhow::Result<Alone> {
    let connection = read_only(db)?;
    let room_ids: HashMap<String, i64> = connection
        .prepare("SELECT name, id FROM rooms")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut fts = connection.prepare(
        "SELECT rowid FROM search_text WHERE search_text MATCH ?1 ORDER BY rowid DESC LIMIT 21",
    )?;
    // The server's `search::index::find` for words in every room.
    let mut joined = connection.prepare(
        "SELECT r.seq, rooms.name, r.id FROM search_text CROSS JOIN search_rows r
             ON r.seq = search_text.rowid
         JOIN rooms ON rooms.id = r.room WHERE search_text MATCH ?1
         ORDER BY search_text.rowid DESC LIMIT 21",
    )?;
    let mut read = connection.prepare(
        "SELECT username, message, timestamp, reactions FROM messages WHERE room = ?1 AND id = ?2",
    )?;
    let (mut fts_total, mut joined_total, mut reads_total) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut hits = 0usize;
    for probe in probes {
        for repeat in 0..=repeats {
            let started = std::time::Instant::now();
            let rowids = fts
                .query_map([&probe.fts], |row| row.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let fts_took = started.elapsed();
            let started = std::time::Instant::now();
            let found = joined
                .query_map([&probe.fts], |row| {
                    Ok((row.get::<_, String>(1)?, row.get::<_, i64>(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let joined_took = started.elapsed();
            // The server reads the page's 20, not the 21st it asks for to
            // know there is more.
            let started = std::time::Instant::now();
            for (room, id) in found.iter().take(20) {
                let room = room_ids.get(room).context("a hit in an unknown room")?;
                read.query_row(params![room, id], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })?;
            }
            let reads_took = started.elapsed();
            if rowids.len() != found.len() {
                bail!(
                    "{:?}: {} rowids but {} joined rows",
                    probe.fts,
                    rowids.len(),
                    found.len()
                );
            }
            if repeat > 0 {
                fts_total += fts_took;
                joined_total += joined_took;
                reads_total += reads_took;
                hits += found.len().min(20);
            }
        }
    }
    let n = (probes.len() * repeats).max(1) as f64;
    let per = |d: Duration| d.as_secs_f64() * 1e3 / n;
    Ok(Alone {
        fts_ms: per(fts_total),
        fts_rows_ms: per(joined_total),
        reads_ms: per(reads_total),
        hits: hits as f64 / n,
    })
}

/// `grep -F -i` for each probe's two words, piped, over the texts: mean
/// milliseconds and matching lines per query (after one untimed run that
/// brings the file into the page cache).
fn grep_floor(texts: &Path, probes: &[Query]) -> anyhow::Result<(f64, f64)> {
    let file = texts.to_str().context("a UTF-8 path")?;
    let grep = |[w1, w2]: &[String; 2]| -> anyhow::Result<u64> {
        // The words are letters only: safe in single quotes.
        let script = format!("grep -F -i -e '{w1}' '{file}' | grep -F -i -e '{w2}' | wc -l");
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("LC_ALL", "C")
            .output()?;
        if !output.status.success() {
            bail!("{script}: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
    };
    let first = probes.first().context("no probes")?;
    grep(&first.grep)?;
    let (mut total, mut lines) = (Duration::ZERO, 0u64);
    for probe in probes {
        let started = std::time::Instant::now();
        lines += grep(&probe.grep)?;
        total += started.elapsed();
    }
    let n = probes.len() as f64;
    Ok((total.as_secs_f64() * 1e3 / n, lines as f64 / n))
}

// ------------------------------------------------------- through the RPC

/// The probes through `Search`, one at a time, each once untimed, then
/// `repeats` times.
async fn searches_one_at_a_time(
    server: &ServerProcess,
    probes: &[Query],
    repeats: usize,
) -> anyhow::Result<Rpc> {
    let mut client = clients::native(&server.url()).await?;
    let mut latency = new_histogram();
    let cpu_before = server.cpu_time()?;
    for probe in probes {
        for repeat in 0..=repeats {
            let started = Instant::now();
            client
                .search(SearchRequest {
                    query: probe.rpc.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|status| {
                    anyhow::anyhow!("Search {:?}: {}", probe.rpc, describe(&status))
                })?;
            if repeat > 0 {
                latency.record(micros(started.elapsed()))?;
            }
        }
    }
    let calls = (probes.len() * (repeats + 1)).max(1) as f64;
    Ok(Rpc {
        latency,
        cpu_ms: (server.cpu_time()? - cpu_before).as_secs_f64() * 1e3 / calls,
    })
}

/// `Search` one at a time: its latency, and the server's CPU per call.
struct Rpc {
    latency: Histogram<u64>,
    cpu_ms: f64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// grep, the index alone, the server's query, the reads, the RPC.
fn where_time_goes(alone: &Alone, (grep_ms, grep_lines): &(f64, f64), rpc: &Rpc) -> Row {
    let Rpc { latency, cpu_ms } = rpc;
    Row::new("past_where")
        .num("queries", PROBES)
        .num("grep_ms", format!("{grep_ms:.2}"))
        .num("grep_lines", format!("{grep_lines:.0}"))
        .num("fts_ms", format!("{:.3}", alone.fts_ms))
        .num("fts_rows_ms", format!("{:.3}", alone.fts_rows_ms))
        .num("read_hits_ms", format!("{:.3}", alone.reads_ms))
        .num("hits", format!("{:.1}", alone.hits))
        .num("rpc_mean_ms", format!("{:.3}", latency.mean() / 1000.0))
        .num("rpc_p50_ms", ms(latency.value_at_quantile(0.5)))
        .num("rpc_p99_ms", ms(latency.value_at_quantile(0.99)))
        .num("rpc_server_cpu_ms", format!("{cpu_ms:.3}"))
}

struct History {
    calls: usize,
    latency: Histogram<u64>,
    messages: u64,
    problem: Option<String>,
}

impl History {
    fn row(&self) -> Row {
        Row::new("past_history")
            .num("calls", self.calls)
            .num("limit", 50)
            .num("p50_ms", ms(self.latency.value_at_quantile(0.5)))
            .num("p99_ms", ms(self.latency.value_at_quantile(0.99)))
            .num("max_ms", ms(self.latency.max()))
            .num(
                "messages_per_page",
                format!("{:.1}", self.messages as f64 / self.calls.max(1) as f64),
            )
            .num("load1", load())
    }
}

/// Sequential pages of 50 before random ids of random rooms; each page
/// must hold exactly the ids just before (no changes in these rooms: ids
/// are the messages', 1 to the room's count).
async fn history(url: &str, rooms: &[String], sizes: &Sizes) -> anyhow::Result<History> {
    let mut client = clients::native(url).await?;
    let mut rng = Rng::seeded(0x4157);
    let mut out = History {
        calls: sizes.history_calls,
        latency: new_histogram(),
        messages: 0,
        problem: None,
    };
    for _ in 0..sizes.history_calls {
        let k = rng.below(rooms.len());
        let count = sizes.in_room(k);
        // 2..=count+1: at least one message before it.
        let before = 2 + rng.next() % count.max(1);
        let started = Instant::now();
        let reply = client
            .history(HistoryRequest {
                room: rooms[k].clone(),
                before_id: before,
                limit: 50,
                around_id: 0,
            })
            .await
            .map_err(|status| {
                anyhow::anyhow!(
                    "History of {} before {before}: {}",
                    rooms[k],
                    describe(&status)
                )
            })?
            .into_inner();
        out.latency.record(micros(started.elapsed()))?;
        out.messages += reply.messages.len() as u64;
        let ids: Vec<u64> = reply.messages.iter().map(|m| m.id).collect();
        let expected: Vec<u64> = (before.saturating_sub(50).max(1)..before).collect();
        if ids != expected && out.problem.is_none() {
            out.problem = Some(format!(
                "past History of {} before {before}: ids {:?}..{:?} ({}), expected {}..{}",
                rooms[k],
                ids.first(),
                ids.last(),
                ids.len(),
                expected.first().unwrap_or(&0),
                before
            ));
        }
    }
    Ok(out)
}

fn fanout_row(outcome: &fanout::Outcome, plan: Plan, searches: bool) -> Row {
    let elapsed = outcome.elapsed.as_secs_f64().max(1e-9);
    Row::new("past_fanout")
        .text("searches", if searches { "yes" } else { "no" })
        .num("clients", plan.clients)
        .num("senders", plan.senders)
        .num("rate", plan.rate.unwrap_or(0.0))
        .num("delivered", outcome.delivered)
        .num("lost", outcome.lost())
        .num(
            "deliveries_per_s",
            format!("{:.0}", outcome.delivered as f64 / elapsed),
        )
        .num("p50_ms", ms(outcome.latency_us.value_at_quantile(0.5)))
        .num("p99_ms", ms(outcome.latency_us.value_at_quantile(0.99)))
        .num("load1", load())
}

/// The searches beside the fan-out.
struct Searched {
    latency: Histogram<u64>,
    searches: u64,
    hits: u64,
    errors: u64,
    first_error: Option<String>,
    /// From the first firing to the last reply.
    elapsed: Duration,
}

impl Searched {
    fn row(&self, target: f64) -> Row {
        Row::new("past_search")
            .num("target_per_s", target)
            .num("searches", self.searches)
            .num("errors", self.errors)
            .num(
                "achieved_per_s",
                format!(
                    "{:.1}",
                    self.searches as f64 / self.elapsed.as_secs_f64().max(1e-9)
                ),
            )
            .num("p50_ms", ms(self.latency.value_at_quantile(0.5)))
            .num("p99_ms", ms(self.latency.value_at_quantile(0.99)))
            .num("max_ms", ms(self.latency.max()))
            .num(
                "hits_per_search",
                format!("{:.1}", self.hits as f64 / self.searches.max(1) as f64),
            )
    }
}

/// Open-loop two-word searches of every room at `rate` for `seconds`
/// from when `start` fires (the fan-out's timed phase): [`FIRING`] tasks,
/// each on its own fixed interval, staggered, each search its own task
/// so a slow reply never delays the next.
async fn search_load(
    url: &str,
    queries: Arc<Vec<Query>>,
    rate: f64,
    seconds: f64,
    start: oneshot::Receiver<()>,
) -> anyhow::Result<Searched> {
    let mut connections = Vec::new();
    for _ in 0..SEARCH_CONNECTIONS {
        connections.push(clients::native(url).await?);
    }
    start
        .await
        .context("the fan-out ended before its timed phase")?;
    let began = Instant::now();
    let end = began + Duration::from_secs_f64(seconds);
    let gap = Duration::from_secs_f64(FIRING as f64 / rate);
    let mut firing = JoinSet::new();
    for t in 0..FIRING {
        let client = connections[t % SEARCH_CONNECTIONS].clone();
        let queries = Arc::clone(&queries);
        firing.spawn(async move {
            let first = began + gap.mul_f64(t as f64 / FIRING as f64);
            let mut ticker = tokio::time::interval_at(first, gap);
            // Keep the rate if this task is briefly descheduled.
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut calls = JoinSet::new();
            let mut n = 0;
            loop {
                if ticker.tick().await >= end {
                    break;
                }
                let query = queries[(n * FIRING + t) % queries.len()].rpc.clone();
                n += 1;
                let mut client = client.clone();
                calls.spawn(async move {
                    let sent = Instant::now();
                    let reply = client
                        .search(SearchRequest {
                            query,
                            ..Default::default()
                        })
                        .await;
                    let done = Instant::now();
                    let reply = reply
                        .map(|r| r.into_inner().hits.len() as u64)
                        .map_err(|status| describe(&status));
                    (done - sent, done, reply)
                });
            }
            calls.join_all().await
        });
    }
    let mut out = Searched {
        latency: new_histogram(),
        searches: 0,
        hits: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    let mut last = began;
    for calls in firing.join_all().await {
        for (took, done, reply) in calls {
            last = last.max(done);
            match reply {
                Ok(hits) => {
                    out.searches += 1;
                    out.hits += hits;
                    out.latency.record(micros(took))?;
                }
                Err(error) => {
                    out.errors += 1;
                    out.first_error.get_or_insert(error);
                }
            }
        }
    }
    out.elapsed = last - began;
    Ok(out)
}

// ------------------------------------------------------------ the texts

/// The most frequent words, of any chat.
const COMMON: &[&str] = &[
    "the", "to", "and", "a", "I", "it", "is", "that", "you", "of", "in", "we", "for", "this", "on",
    "be", "so", "just", "have", "but", "not", "with", "at", "are", "my", "can", "do", "was", "if",
    "me", "all", "what", "will", "about", "get", "like", "up", "out", "one", "no", "there", "now",
    "know", "think", "how", "when", "from", "your", "they", "good", "some", "going", "would",
    "today", "time", "then", "yes", "ok", "still", "here", "see", "back", "more", "really",
    "right", "also", "maybe", "much", "need", "want",
];

/// Words of a chat's topics, by rank after [`COMMON`].
const TOPICS: &[&str] = &[
    "meeting",
    "deploy",
    "server",
    "coffee",
    "lunch",
    "release",
    "bug",
    "build",
    "test",
    "train",
    "weekend",
    "pizza",
    "music",
    "football",
    "weather",
    "rain",
    "office",
    "holiday",
    "ticket",
    "review",
    "merge",
    "branch",
    "database",
    "index",
    "search",
    "query",
    "phone",
    "email",
    "dinner",
    "budget",
    "report",
    "morning",
    "evening",
    "night",
    "week",
    "month",
    "year",
    "team",
    "project",
    "design",
    "issue",
    "client",
    "customer",
    "price",
    "market",
    "city",
    "street",
    "bridge",
    "river",
    "mountain",
    "beach",
    "garden",
    "kitchen",
    "bread",
    "cheese",
    "wine",
    "beer",
    "tea",
    "sugar",
    "apple",
    "orange",
    "banana",
    "tomato",
    "pepper",
    "salad",
    "soup",
    "cake",
    "chocolate",
    "breakfast",
    "flight",
    "airport",
    "hotel",
    "station",
    "bus",
    "car",
    "bike",
    "road",
    "map",
    "travel",
    "trip",
    "museum",
    "concert",
    "movie",
    "book",
    "story",
    "game",
    "match",
    "score",
    "goal",
    "player",
    "coach",
    "season",
    "league",
    "cup",
    "final",
    "summer",
    "winter",
    "spring",
    "autumn",
    "snow",
    "storm",
    "wind",
    "cloud",
    "sunny",
    "cold",
    "warm",
    "hot",
    "quiet",
    "busy",
    "late",
    "early",
    "fast",
    "slow",
    "happy",
    "tired",
    "ready",
    "great",
    "small",
    "big",
    "old",
    "new",
    "first",
    "last",
    "next",
    "long",
    "short",
    "red",
    "blue",
    "green",
    "black",
    "white",
    "yellow",
    "dog",
    "cat",
    "bird",
    "horse",
    "fish",
    "tree",
    "flower",
    "forest",
    "lake",
    "island",
    "window",
    "door",
    "table",
    "chair",
    "desk",
    "screen",
    "keyboard",
    "laptop",
    "cable",
    "battery",
    "charger",
    "printer",
    "network",
    "router",
    "cluster",
    "replica",
    "backup",
    "log",
    "metric",
    "alert",
    "dashboard",
    "latency",
    "memory",
    "disk",
    "cpu",
    "thread",
    "socket",
    "packet",
    "request",
    "response",
    "token",
    "session",
    "password",
    "login",
    "account",
    "profile",
    "message",
    "channel",
    "room",
    "thanks",
    "sorry",
    "please",
    "welcome",
    "hello",
    "bye",
    "birthday",
    "party",
    "gift",
    "family",
    "friend",
    "brother",
    "sister",
    "mother",
    "father",
    "baby",
    "doctor",
    "school",
    "teacher",
    "lesson",
    "homework",
    "exam",
    "question",
    "answer",
    "idea",
    "plan",
    "problem",
    "reason",
    "chance",
    "money",
    "bank",
    "shop",
    "store",
    "paper",
    "letter",
    "picture",
    "photo",
    "video",
    "song",
    "radio",
    "news",
    "article",
    "blog",
    "draft",
    "version",
    "feature",
    "commit",
    "patch",
    "fix",
    "crash",
    "error",
    "warning",
    "config",
    "setting",
    "option",
    "script",
    "shell",
    "grep",
    "docker",
    "kernel",
    "compiler",
    "parser",
    "schema",
    "column",
    "row",
    "cursor",
    "page",
    "limit",
    "offset",
];

/// Names and words with diacritics, as written and as the index folds
/// them (case and diacritics dropped), placed among [`TOPICS`].
const FLAVOUR: &[(&str, &str)] = &[
    ("Saša", "sasa"),
    ("ćevapi", "cevapi"),
    ("Zürich", "zurich"),
    ("façade", "facade"),
    ("café", "cafe"),
    ("naïve", "naive"),
    ("jalapeño", "jalapeno"),
    ("Kraków", "krakow"),
    ("crème", "creme"),
    ("brûlée", "brulee"),
    ("Müller", "muller"),
    ("São", "sao"),
    ("smörgåsbord", "smorgasbord"),
    ("fiancée", "fiancee"),
    ("résumé", "resume"),
    ("über", "uber"),
    ("Škoda", "skoda"),
    ("Đorđe", "dorde"),
    ("piñata", "pinata"),
    ("Ångström", "angstrom"),
    ("Málaga", "malaga"),
    ("Zoë", "zoe"),
    ("José", "jose"),
    ("Dvořák", "dvorak"),
    ("Gdańsk", "gdansk"),
    ("Reykjavík", "reykjavik"),
    ("Tromsø", "tromso"),
    ("Curaçao", "curacao"),
    ("Ljubljana", "ljubljana"),
    ("Miloš", "milos"),
    ("Björk", "bjork"),
    ("Chloé", "chloe"),
    ("Łódź", "lodz"),
];

/// First names; with [`SUFFIXES`], the ~200 people who write.
const NAMES: &[&str] = &[
    "ana",
    "ben",
    "carla",
    "dario",
    "eva",
    "filip",
    "greta",
    "hugo",
    "iris",
    "jan",
    "katja",
    "luka",
    "mia",
    "nikola",
    "olga",
    "petar",
    "quinn",
    "rosa",
    "sven",
    "tara",
    "uma",
    "vid",
    "wanda",
    "xena",
    "yusuf",
    "zara",
    "saša",
    "zoë",
    "josé",
    "đorđe",
    "françois",
    "jürgen",
    "søren",
    "łukasz",
    "inês",
    "chloé",
    "miloš",
    "björn",
    "agnès",
    "renée",
    "marko",
    "lena",
    "omar",
    "priya",
    "kenji",
    "amara",
    "diego",
    "freya",
    "noah",
    "ida",
];
const SUFFIXES: &[&str] = &["", "_k", "42", "_m"];

/// The words messages are made of, most frequent first, and how often each
/// is drawn (rank r about 1/r).
struct Vocabulary {
    /// As written.
    words: Vec<String>,
    /// As the index holds them: lower case, no diacritics.
    folded: Vec<String>,
    /// Where each word's share of [0, 1) ends.
    cumulative: Vec<f64>,
    /// Ranks of the words from [`FLAVOUR`].
    flavour: Vec<usize>,
}

impl Vocabulary {
    /// [`COMMON`], then [`TOPICS`] with a [`FLAVOUR`] word after every
    /// seventh, then generated words (two or three syllables) up to
    /// [`VOCABULARY`].
    fn new() -> Self {
        let mut vocabulary = Self {
            words: Vec::new(),
            folded: Vec::new(),
            cumulative: Vec::new(),
            flavour: Vec::new(),
        };
        let mut seen = HashSet::new();
        let mut add = |v: &mut Self, written: &str, folded: &str| {
            if seen.insert(folded.to_owned()) {
                v.words.push(written.to_owned());
                v.folded.push(folded.to_owned());
                true
            } else {
                false
            }
        };
        for word in COMMON {
            add(&mut vocabulary, word, &word.to_lowercase());
        }
        let mut flavour = FLAVOUR.iter();
        for (i, word) in TOPICS.iter().enumerate() {
            add(&mut vocabulary, word, word);
            if i % 7 == 6
                && let Some((written, folded)) = flavour.next()
                && add(&mut vocabulary, written, folded)
            {
                vocabulary.flavour.push(vocabulary.words.len() - 1);
            }
        }
        for (written, folded) in flavour {
            if add(&mut vocabulary, written, folded) {
                vocabulary.flavour.push(vocabulary.words.len() - 1);
            }
        }
        const ONSETS: &[&str] = &[
            "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr",
        ];
        const VOWELS: &[&str] = &["a", "e", "i", "o", "u"];
        const CODAS: &[&str] = &["", "", "n", "r", "s", "l"];
        let mut rng = Rng::seeded(0x5EED);
        while vocabulary.words.len() < VOCABULARY {
            let mut word = String::new();
            for _ in 0..2 + rng.below(2) {
                word.push_str(ONSETS[rng.below(ONSETS.len())]);
                word.push_str(VOWELS[rng.below(VOWELS.len())]);
            }
            word.push_str(CODAS[rng.below(CODAS.len())]);
            add(&mut vocabulary, &word, &word);
        }
        let weights: Vec<f64> = (0..vocabulary.words.len())
            .map(|r| 1.0 / ((r + 1) as f64).powf(ZIPF))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut sum = 0.0;
        vocabulary.cumulative = weights
            .iter()
            .map(|w| {
                sum += w / total;
                sum
            })
            .collect();
        vocabulary
    }

    fn draw(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.words.len() - 1)
    }

    /// Message `i`: its room, author and text.
    fn message(&self, i: u64, rooms: &[String]) -> ChatMessage {
        let mut rng = Rng::seeded(i);
        let words = 5 + rng.below(16);
        let mut text = String::new();
        for w in 0..words {
            let word = &self.words[self.draw(&mut rng)];
            if w == 0 {
                let mut chars = word.chars();
                text.extend(chars.next().into_iter().flat_map(char::to_uppercase));
                text.push_str(chars.as_str());
            } else {
                text.push(' ');
                text.push_str(word);
            }
            if w + 1 < words && rng.below(10) == 0 {
                text.push(',');
            }
        }
        text.push(['.', '.', '.', '?', '!'][rng.below(5)]);
        let person = rng.below(NAMES.len() * SUFFIXES.len());
        ChatMessage {
            username: format!(
                "{}{}",
                NAMES[person % NAMES.len()],
                SUFFIXES[person / NAMES.len()]
            ),
            message: text,
            room: rooms[(i % rooms.len() as u64) as usize].clone(),
            ..Default::default()
        }
    }

    /// `count` two-word queries of medium-frequency words; every eighth
    /// two words with diacritics, asked for folded (the first is always
    /// "sasa cevapi").
    fn queries(&self, count: usize, seed: u64) -> Vec<Query> {
        let mut rng = Rng::seeded(seed);
        let mut queries = Vec::with_capacity(count);
        for j in 0..count {
            let (a, b, folded) = if j % 8 == 0 {
                let (a, b) = if j == 0 {
                    (self.flavour[0], self.flavour[1])
                } else {
                    let a = self.flavour[rng.below(self.flavour.len())];
                    let mut b = a;
                    while b == a {
                        b = self.flavour[rng.below(self.flavour.len())];
                    }
                    (a, b)
                };
                (a, b, true)
            } else {
                let a = MEDIUM.start + rng.below(MEDIUM.len());
                let mut b = a;
                while b == a {
                    b = MEDIUM.start + rng.below(MEDIUM.len());
                }
                (a, b, false)
            };
            let spelled = |k: usize| {
                if folded {
                    self.folded[k].clone()
                } else {
                    self.words[k].clone()
                }
            };
            let mut fts = String::new();
            let _ = write!(fts, "\"{}\" AND \"{}\"", self.folded[a], self.folded[b]);
            queries.push(Query {
                rpc: format!("{} {}", spelled(a), spelled(b)),
                fts,
                grep: [self.words[a].clone(), self.words[b].clone()],
            });
        }
        queries
    }
}

/// One two-word query, as each of its askers takes it.
#[derive(Debug, Clone)]
struct Query {
    /// `Search`'s query (words as written, or folded).
    rpc: String,
    /// The FTS5 expression the server makes of it.
    fts: String,
    /// The two words as the texts have them, for grep.
    grep: [String; 2],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_deterministic_and_varied() {
        let vocabulary = Vocabulary::new();
        assert_eq!(vocabulary.words.len(), VOCABULARY);
        assert_eq!(vocabulary.folded[vocabulary.flavour[0]], "sasa");
        assert_eq!(vocabulary.folded[vocabulary.flavour[1]], "cevapi");
        let rooms = vec!["a".to_owned(), "b".to_owned()];
        let one = vocabulary.message(7, &rooms);
        assert_eq!(one, vocabulary.message(7, &rooms));
        assert_eq!(one.room, "b");
        let words = one.message.split(' ').count();
        assert!((5..=20).contains(&words), "{words} words: {}", one.message);
        let queries = vocabulary.queries(16, 1);
        assert_eq!(queries[0].rpc, "sasa cevapi");
        assert_eq!(queries[0].grep, ["Saša".to_owned(), "ćevapi".to_owned()]);
        assert!(
            queries
                .iter()
                .all(|q| q.grep.iter().all(|w| !w.contains('\'')))
        );
    }

    #[test]
    fn rooms_split_the_messages() {
        let sizes = Sizes {
            messages: 1_003,
            rooms: 10,
            ..Sizes::quick()
        };
        assert_eq!((0..10).map(|k| sizes.in_room(k)).sum::<u64>(), 1_003);
        assert_eq!(sizes.in_room(2), 101);
        assert_eq!(sizes.in_room(3), 100);
    }
}
