//! What one user or one address may use (docs/security.md): token buckets
//! for handshakes, mutations and ephemeral messages per user, and the
//! number of connections open per user and per address.
//!
//! Buckets are shared by every shard (one user's sessions may live on
//! several); users whose buckets are full again are forgotten now and
//! then, so a stream of new users does not grow memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::Config;

/// Handshakes between two sweeps of full buckets.
const SWEEP_EVERY: u64 = 1024;

/// The server's quotas.
pub struct Quotas {
    handshakes: DefaultKeyedRateLimiter<Arc<str>>,
    mutations: DefaultKeyedRateLimiter<Arc<str>>,
    ephemeral: DefaultKeyedRateLimiter<Arc<str>>,
    clock: DefaultClock,
    checked: AtomicU64,
    /// Users whose session was closed for bad input (1008), and until when
    /// their handshakes are refused.
    benched: Mutex<HashMap<Arc<str>, std::time::Instant>>,
    bench_for: Duration,
    /// Connections open per user.
    pub per_user: Arc<Counts<Arc<str>>>,
    /// Connections open per client address.
    pub per_ip: Arc<Counts<IpAddr>>,
}

impl Quotas {
    /// The quotas the configuration sets.
    pub fn new(config: &Config) -> Self {
        let quota = |rate: u32| Quota::per_second(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN));
        Quotas {
            handshakes: DefaultKeyedRateLimiter::keyed(quota(config.handshake_rate_per_user)),
            mutations: DefaultKeyedRateLimiter::keyed(quota(config.mutation_rate_per_user)),
            ephemeral: DefaultKeyedRateLimiter::keyed(quota(config.ephemeral_rate_per_user)),
            clock: DefaultClock::default(),
            checked: AtomicU64::new(0),
            benched: Mutex::default(),
            bench_for: Duration::from_millis(config.policy_close_cooldown_ms),
            per_user: Arc::default(),
            per_ip: Arc::default(),
        }
    }

    /// Takes one handshake of `user`'s, or says how long to wait.
    ///
    /// # Errors
    /// The wait before the next one is allowed.
    pub fn handshake(&self, user: &Arc<str>) -> Result<(), Duration> {
        let now = std::time::Instant::now();
        let mut benched = self.benched.lock().unwrap_or_else(PoisonError::into_inner);
        if self.checked.fetch_add(1, Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            for limiter in [&self.handshakes, &self.mutations, &self.ephemeral] {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
            benched.retain(|_, until| *until > now);
        }
        if let Some(until) = benched.get(user).filter(|until| **until > now) {
            return Err(*until - now);
        }
        drop(benched);
        self.take(&self.handshakes, user)
    }

    /// Refuses `user`'s handshakes for a while: one of its sessions was
    /// closed for bad input (1008), and reconnecting at once would start
    /// the same again with a fresh budget.
    pub fn bench(&self, user: &Arc<str>) {
        let until = std::time::Instant::now() + self.bench_for;
        self.benched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(Arc::clone(user), until);
    }

    /// Takes one mutation of `user`'s.
    ///
    /// # Errors
    /// The wait before the next one is allowed.
    pub fn mutation(&self, user: &Arc<str>) -> Result<(), Duration> {
        self.take(&self.mutations, user)
    }

    /// Takes one presence, cursor or selection message of `user`'s.
    ///
    /// # Errors
    /// The wait before the next one is allowed.
    pub fn ephemeral(&self, user: &Arc<str>) -> Result<(), Duration> {
        self.take(&self.ephemeral, user)
    }

    fn take(
        &self,
        limiter: &DefaultKeyedRateLimiter<Arc<str>>,
        user: &Arc<str>,
    ) -> Result<(), Duration> {
        limiter
            .check_key(user)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// Open connections per key; a [`Slot`] counts one until dropped.
#[derive(Debug)]
pub struct Counts<K: Hash + Eq>(Mutex<HashMap<K, usize>>);

impl<K: Hash + Eq> Default for Counts<K> {
    fn default() -> Self {
        Counts(Mutex::default())
    }
}

impl<K: Hash + Eq + Clone> Counts<K> {
    /// Counts one more for `key`, unless it has `max` already.
    pub fn take(self: &Arc<Self>, key: K, max: usize) -> Option<Slot<K>> {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: Arc::clone(self),
            key,
        })
    }

    fn release(&self, key: &K) {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                open.remove(key);
            }
        }
    }
}

/// One connection counted under its key until dropped.
#[derive(Debug)]
pub struct Slot<K: Hash + Eq + Clone> {
    counts: Arc<Counts<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        self.counts.release(&self.key);
    }
}

/// A wait in whole seconds for `Retry-After`, at least one.
pub fn retry_after_s(wait: Duration) -> u32 {
    u32::try_from(wait.as_millis().div_ceil(1000))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// A wait in milliseconds for `retryAfterMs`, at least one.
pub fn retry_after_ms(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_users_bucket_empties_and_says_how_long_to_wait() {
        let config = Config {
            mutation_rate_per_user: 5,
            ..Config::default()
        };
        let quotas = Quotas::new(&config);
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        for _ in 0..5 {
            quotas.mutation(&alice).unwrap();
        }
        let wait = quotas.mutation(&alice).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        assert!(quotas.mutation(&bob).is_ok(), "each user has a bucket");
        quotas.bench(&alice);
        let wait = quotas.handshake(&alice).unwrap_err();
        assert!(wait > Duration::from_secs(9), "{wait:?}");
        assert!(quotas.handshake(&bob).is_ok());
    }

    #[test]
    fn slots_count_until_dropped() {
        let counts: Arc<Counts<&str>> = Arc::default();
        let a = counts.take("u", 2).unwrap();
        let _b = counts.take("u", 2).unwrap();
        assert!(counts.take("u", 2).is_none());
        drop(a);
        assert!(counts.take("u", 2).is_some());
        assert_eq!(retry_after_s(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_s(Duration::from_millis(1500)), 2);
    }
}
