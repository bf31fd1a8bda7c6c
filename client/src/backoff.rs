//! Reconnect delays: full-jitter exponential backoff.
//!
//! The n-th attempt waits a uniformly random time between 0 and
//! `min(cap, base * 2^n)`, so a crowd of clients that lost the same server
//! spreads its retries over the whole window instead of arriving together.
//! A delay the server asked for (`retryAfterMs`, `Retry-After`) is waited
//! first, with the jitter on top: it is a floor, never a meeting time.

use std::time::Duration;

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The window of the first retry.
    pub base: Duration,
    /// The largest window.
    pub cap: Duration,
    /// Whether to randomize (`false` only for tests that need exact times).
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
            jitter: true,
        }
    }
}

impl Backoff {
    /// The largest delay of attempt `attempt` (0-based), before jitter.
    pub fn window(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before attempt `attempt`, on top of what the server asked.
    pub fn delay(&self, attempt: u32, server_asked: Option<Duration>) -> Duration {
        let window = self.window(attempt);
        let jittered = if self.jitter {
            window.mul_f64(rand::random::<f64>())
        } else {
            window
        };
        server_asked.unwrap_or_default() + jittered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_double_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            jitter: false,
        };
        let w: Vec<u128> = (0..6).map(|a| b.window(a).as_millis()).collect();
        assert_eq!(w, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            b.window(1000),
            Duration::from_secs(1),
            "no overflow for large attempts"
        );
    }

    #[test]
    fn delays_stay_within_their_window_and_above_the_server_floor() {
        let b = Backoff::default();
        for attempt in 0..20 {
            for _ in 0..100 {
                let d = b.delay(attempt, Some(Duration::from_millis(700)));
                assert!(d >= Duration::from_millis(700));
                assert!(d <= Duration::from_millis(700) + b.window(attempt));
            }
        }
    }

    #[test]
    fn five_hundred_clients_do_not_retry_in_the_same_100_ms() {
        // After a restart every client is on attempt 3 with the server asking 1 s.
        let b = Backoff::default();
        let mut delays: Vec<u128> = (0..500)
            .map(|_| b.delay(3, Some(Duration::from_secs(1))).as_millis())
            .collect();
        delays.sort_unstable();
        let busiest = delays
            .iter()
            .map(|start| {
                delays
                    .iter()
                    .filter(|d| **d >= *start && **d < *start + 100)
                    .count()
            })
            .max()
            .unwrap_or(0);
        // The window is 2 s: a uniform spread puts about 25 in any 100 ms.
        assert!(
            busiest < 100,
            "{busiest} of 500 retried within one 100 ms span"
        );
    }
}
