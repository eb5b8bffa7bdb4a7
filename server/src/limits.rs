//! How fast one client may post: a token bucket per connection and one per
//! user name, so neither a second connection nor a second name gets a
//! flooder further.
//!
//! A message takes a token from both buckets or from neither. Over the
//! limit, the caller learns how long to wait: `Send` turns that into
//! `RESOURCE_EXHAUSTED` with a "try again in" sentence, `ChatStream` stops
//! reading the client for that long (HTTP/2 flow control then pushes back on
//! the sender, and nothing is dropped).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Limits;

/// Name buckets kept before full (idle) ones are forgotten.
const MAX_TRACKED_NAMES: usize = 10_000;

/// `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn full(burst: f64) -> Self {
        Self {
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + earned).min(burst);
        self.at = now;
    }

    /// How long until a token is there (zero if one is there now).
    fn wait(&mut self, rate: f64, burst: f64, now: Instant) -> Duration {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / rate)
        }
    }

    /// Takes a token if there is one; otherwise says how long to wait.
    pub fn take(&mut self, rate: f64, burst: f64) -> Result<(), Duration> {
        let wait = self.wait(rate, burst, Instant::now());
        if wait.is_zero() {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(wait)
        }
    }

    fn is_full(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        self.tokens >= burst
    }
}

/// Over the posting limit: wait this long before the next message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TooFast {
    pub retry_after: Duration,
    pub rate: f64,
    pub burst: u32,
}

impl std::fmt::Display for TooFast {
    /// Starts with "sending too fast", which the web app recognises.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Round up to a tenth of a second so "0.0 s" is never said.
        let wait = (self.retry_after.as_secs_f64() * 10.0).ceil() / 10.0;
        write!(
            f,
            "sending too fast: wait {wait:.1} s and try again (limit: a burst of {}, then {} per second)",
            self.burst, self.rate
        )
    }
}

/// The per-name buckets and the limits; one per server.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: u32,
    names: Mutex<HashMap<String, TokenBucket>>,
}

impl RateLimiter {
    pub fn new(limits: &Limits) -> Self {
        Self::with(limits.rate_limit, limits.rate_burst)
    }

    /// `burst` at once, then `rate` per second (0: no limit).
    pub fn with(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst,
            names: Mutex::new(HashMap::new()),
        }
    }

    /// Another limiter with the same limits and buckets of its own: for
    /// what is limited like messages but must not use up their budget
    /// (typing notices, name claims).
    pub fn same_limits(&self) -> Self {
        Self {
            rate: self.rate,
            burst: self.burst,
            names: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_off(&self) -> bool {
        self.rate <= 0.0
    }

    /// A fresh bucket for a new connection.
    pub fn connection_bucket(&self) -> TokenBucket {
        TokenBucket::full(f64::from(self.burst))
    }

    /// Takes one message's token from `connection` (if known) and from
    /// `username`'s bucket, or from neither.
    pub fn check(
        &self,
        connection: Option<&Mutex<TokenBucket>>,
        username: &str,
    ) -> Result<(), TooFast> {
        if self.is_off() {
            return Ok(());
        }
        let (rate, burst) = (self.rate, f64::from(self.burst));
        let now = Instant::now();
        let Ok(mut names) = self.names.lock() else {
            return Ok(());
        };
        if names.len() >= MAX_TRACKED_NAMES && !names.contains_key(username) {
            names.retain(|_, bucket| !bucket.is_full(rate, burst, now));
        }
        // Allocate the key only for a name not seen before.
        if !names.contains_key(username) {
            names.insert(username.to_owned(), TokenBucket::full(burst));
        }
        let Some(name) = names.get_mut(username) else {
            return Ok(());
        };
        let mut own = connection.and_then(|c| c.lock().ok());
        let wait = name.wait(rate, burst, now).max(
            own.as_mut()
                .map_or(Duration::ZERO, |b| b.wait(rate, burst, now)),
        );
        if !wait.is_zero() {
            return Err(TooFast {
                retry_after: wait,
                rate: self.rate,
                burst: self.burst,
            });
        }
        name.tokens -= 1.0;
        if let Some(bucket) = own.as_mut() {
            bucket.tokens -= 1.0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: f64, burst: u32) -> Limits {
        Limits {
            rate_limit: rate,
            rate_burst: burst,
            ..Limits::default()
        }
    }

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::new(&limits(5.0, 3));
        let conn = Mutex::new(limiter.connection_bucket());
        for _ in 0..3 {
            assert_eq!(limiter.check(Some(&conn), "ada"), Ok(()));
        }
        let refused = limiter
            .check(Some(&conn), "ada")
            .expect_err("over the burst");
        assert!(refused.retry_after <= Duration::from_millis(200));
        assert!(
            refused
                .to_string()
                .starts_with("sending too fast: wait 0.2 s")
        );
    }

    #[test]
    fn the_name_and_the_connection_are_both_limited() {
        let limiter = RateLimiter::new(&limits(1.0, 2));
        let (a, b) = (
            Mutex::new(limiter.connection_bucket()),
            Mutex::new(limiter.connection_bucket()),
        );
        // One name from two connections shares the name's bucket.
        assert!(limiter.check(Some(&a), "ada").is_ok());
        assert!(limiter.check(Some(&b), "ada").is_ok());
        assert!(limiter.check(Some(&b), "ada").is_err());
        // Many names from one connection share the connection's bucket.
        let c = Mutex::new(limiter.connection_bucket());
        assert!(limiter.check(Some(&c), "x1").is_ok());
        assert!(limiter.check(Some(&c), "x2").is_ok());
        assert!(limiter.check(Some(&c), "x3").is_err());
        // A refusal takes nothing: x3's own bucket is still full.
        assert!(limiter.check(None, "x3").is_ok());
        assert!(limiter.check(None, "x3").is_ok());
    }

    #[test]
    fn zero_turns_it_off() {
        let limiter = RateLimiter::new(&limits(0.0, 1));
        for _ in 0..1_000 {
            assert!(limiter.check(None, "ada").is_ok());
        }
    }
}
