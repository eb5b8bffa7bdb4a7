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

    /// The seqs of `sender` not received, as ranges (`0-99, 120`); empty
    /// if none is missing.
    pub fn missing(&self, sender: usize) -> String {
        let seen = self.seen.get(sender).map_or(&[][..], Vec::as_slice);
        ranges(
            seen.iter()
                .enumerate()
                .filter(|(_, seen)| !**seen)
                .map(|(seq, _)| seq as u64),
        )
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

/// Increasing numbers as compact ranges: `0-99, 120, 140-150`.
pub fn ranges(sorted: impl IntoIterator<Item = u64>) -> String {
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for n in sorted {
        match spans.last_mut() {
            Some((_, end)) if *end + 1 == n => *end = n,
            _ => spans.push((n, n)),
        }
    }
    spans
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::{Tally, ranges};

    #[test]
    fn ranges_are_compressed() {
        assert_eq!(ranges([]), "");
        assert_eq!(ranges([3]), "3");
        assert_eq!(ranges([0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
    }

    #[test]
    fn missing_lists_what_never_came() {
        let mut tally = Tally::new(2, 5);
        for seq in [0, 1, 3] {
            tally.record(&super::payload(1, seq, 1));
        }
        assert_eq!(tally.missing(0), "0-4");
        assert_eq!(tally.missing(1), "2, 4");
    }
}
