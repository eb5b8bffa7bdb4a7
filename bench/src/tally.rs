//! What one receiving client saw: every message checked against what was
//! sent, so loss, duplicates and reordering are counted, not guessed.
//!
//! Senders put `sender:seq:sent_us` in the text; `sent_us` is microseconds
//! on this process's monotonic clock, so latency is exact without clock
//! sync (sender and receiver are the same process).

use std::sync::OnceLock;
use std::time::Instant;

use hdrhistogram::Histogram;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the load generator started.
pub fn now_us() -> u64 {
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The text of message `seq` from `sender`, sent at `sent_us` (now).
pub fn payload(sender: usize, seq: usize, sent_us: u64) -> String {
    format!("{sender}:{seq}:{sent_us}")
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 min at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

pub struct Tally {
    seen: Vec<Vec<bool>>,
    last_seq: Vec<Option<usize>>,
    pub unique: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub foreign: u64,
    pub last_receipt_us: u64,
    pub latency_us: Histogram<u64>,
    /// When each message was received (`[sender][seq]`, 0 if not), kept
    /// only if asked for ([`keep_times`](Self::keep_times)).
    pub received_us: Option<Vec<Vec<u64>>>,
}

impl Tally {
    pub fn new(senders: usize, messages: usize) -> Self {
        Self {
            seen: vec![vec![false; messages]; senders],
            last_seq: vec![None; senders],
            unique: 0,
            duplicated: 0,
            out_of_order: 0,
            foreign: 0,
            last_receipt_us: 0,
            latency_us: new_histogram(),
            received_us: None,
        }
    }

    /// Also keeps when each message arrived, for figures computed after
    /// the run (the time from a `Send`'s reply to each receipt).
    pub fn keep_times(mut self) -> Self {
        self.received_us = Some(self.seen.iter().map(|s| vec![0; s.len()]).collect());
        self
    }

    pub fn record(&mut self, text: &str) {
        let now = now_us();
        let mut parts = text.splitn(3, ':').map(str::parse::<u64>);
        let (Some(Ok(sender)), Some(Ok(seq)), Some(Ok(sent))) =
            (parts.next(), parts.next(), parts.next())
        else {
            self.foreign += 1;
            return;
        };
        let (sender, seq) = (sender as usize, seq as usize);
        let Some(slot) = self.seen.get_mut(sender).and_then(|s| s.get_mut(seq)) else {
            self.foreign += 1;
            return;
        };
        if *slot {
            self.duplicated += 1;
            return;
        }
        *slot = true;
        self.unique += 1;
        if self.last_seq[sender].is_some_and(|last| seq < last) {
            self.out_of_order += 1;
        }
        self.last_seq[sender] = Some(seq);
        self.last_receipt_us = now;
        if let Some(times) = self.received_us.as_mut() {
            times[sender][seq] = now;
        }
        let _ = self.latency_us.record(now.saturating_sub(sent).max(1));
    }
}
