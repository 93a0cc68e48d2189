//! Failed-attempt limits for logins, password changes and tunnel handshakes.
//!
//! Policy (documented in config/config.yaml, `uc.limits`): an attempt is charged before the
//! secret is checked and refunded when it was right, so concurrent guesses count at once.
//! Failures count against the client address (the TCP peer; IPv6 by /64) and against the
//! account *from that address*. Past an allowance the address, or the account for that address,
//! is locked: 1 s after the last failure, doubling with each further one, at most
//! `maxLockSecs`; a locked attempt is answered 429 with `Retry-After` without checking the
//! secret. Past `accountFailuresAnyAddress` failures from all addresses together, the account
//! is also locked for every address that has failed on it; an address that never failed on the
//! account (its owner, elsewhere) is not. State lives in bounded moka caches, forgotten
//! `forgetAfterSecs` after the last failure.

use crate::config::LimitsConfig;
use crate::error::ApiError;
use moka::sync::Cache;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const CAPACITY: u64 = 100_000;

#[derive(Debug)]
struct Bucket {
    failures: u32,
    last: Instant,
}

type Shared = Arc<Mutex<Bucket>>;

/// What is being protected: a login account, or a user's tunnel clients.
#[derive(Debug, Clone, Copy)]
pub enum Realm {
    Login,
    Tunnel,
}

pub struct Limiter {
    addresses: Cache<IpAddr, Shared>,
    pairs: Cache<(String, IpAddr), Shared>,
    accounts: Cache<String, Shared>,
    limits: LimitsConfig,
}

fn lock(b: &Shared) -> MutexGuard<'_, Bucket> {
    b.lock().unwrap_or_else(|p| p.into_inner())
}

/// The address a failure counts against: IPv4 as is, IPv6 by its /64 (one host's share).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Limiter {
    pub fn new(limits: &LimitsConfig) -> Limiter {
        let idle = Duration::from_secs(limits.forget_after_secs.max(1));
        Limiter {
            addresses: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_idle(idle)
                .build(),
            pairs: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_idle(idle)
                .build(),
            accounts: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_idle(idle)
                .build(),
            limits: limits.clone(),
        }
    }

    /// How long a bucket with `failures` past an allowance of `allowed` stays locked after its
    /// last failure; `None` when it is under its allowance.
    fn lock_for(&self, failures: u32, allowed: u32) -> Option<Duration> {
        let excess = failures.checked_sub(allowed)?;
        let secs = 1u64
            .checked_shl(excess.min(40))
            .unwrap_or(u64::MAX)
            .min(self.limits.max_lock_secs);
        Some(Duration::from_secs(secs))
    }

    /// Seconds left of a lock, if the bucket is locked now.
    fn locked(&self, b: &Bucket, allowed: u32, now: Instant) -> Option<u64> {
        let until = b.last + self.lock_for(b.failures, allowed)?;
        let left = until.checked_duration_since(now)?;
        Some(left.as_secs() + u64::from(left.subsec_nanos() > 0))
    }

    /// Charges one attempt on `account` from `peer`, or refuses it (429) while locked. The
    /// attempt counts as failed unless [`Attempt::succeeded`] is called.
    pub fn begin(&self, realm: Realm, account: &str, peer: IpAddr) -> Result<Attempt, ApiError> {
        let account: String = match realm {
            Realm::Login => format!("l:{}", account.chars().take(65).collect::<String>()),
            Realm::Tunnel => format!("t:{}", account.chars().take(65).collect::<String>()),
        };
        let ip = address_key(peer);
        let now = Instant::now();
        let fresh = || {
            Arc::new(Mutex::new(Bucket {
                failures: 0,
                last: now,
            }))
        };
        let address = self.addresses.get_with(ip, fresh);
        let pair = self.pairs.get_with((account.clone(), ip), fresh);
        let whole = self.accounts.get_with(account.clone(), fresh);
        {
            // fixed order: address, pair, account
            let (mut a, mut p, mut w) = (lock(&address), lock(&pair), lock(&whole));
            let l = &self.limits;
            let wait = [
                self.locked(&a, l.address_failures, now),
                self.locked(&p, l.account_failures, now),
                if p.failures > 0 {
                    self.locked(&w, l.account_failures_any_address, now)
                } else {
                    None
                },
            ]
            .into_iter()
            .flatten()
            .max();
            if let Some(secs) = wait {
                return Err(ApiError::TooManyRequests(
                    format!("too many failed attempts; retry in {secs} s"),
                    secs,
                ));
            }
            for b in [&mut *a, &mut *p, &mut *w] {
                b.failures = b.failures.saturating_add(1);
                b.last = now;
            }
        }
        Ok(Attempt {
            buckets: Some((address, pair, whole)),
        })
    }
}

/// A charged attempt: dropped, it stays a failure (its lock counts from now); `succeeded`
/// refunds it and clears the account's failures from this address.
pub struct Attempt {
    buckets: Option<(Shared, Shared, Shared)>,
}

impl Attempt {
    pub fn succeeded(mut self) {
        if let Some((address, pair, whole)) = self.buckets.take() {
            let (mut a, mut p, mut w) = (lock(&address), lock(&pair), lock(&whole));
            a.failures = a.failures.saturating_sub(1);
            w.failures = w.failures.saturating_sub(1);
            p.failures = 0;
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some((address, pair, whole)) = self.buckets.take() {
            let now = Instant::now();
            let (mut a, mut p, mut w) = (lock(&address), lock(&pair), lock(&whole));
            for b in [&mut *a, &mut *p, &mut *w] {
                b.last = b.last.max(now);
            }
        }
    }
}

/// The client address of a request: the TCP peer (a proxy in front counts as one address).
pub fn peer_ip(req: &actix_web::HttpRequest) -> IpAddr {
    req.peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            address_failures: 10,
            account_failures: 3,
            account_failures_any_address: 5,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn an_account_locks_for_the_failing_address_only() {
        let l = Limiter::new(&limits());
        let bad: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::V4(0.into()));
        let good: IpAddr = "10.0.0.2".parse().unwrap_or(IpAddr::V4(0.into()));
        for _ in 0..3 {
            assert!(l.begin(Realm::Login, "alice", bad).is_ok());
        }
        match l.begin(Realm::Login, "alice", bad) {
            Err(ApiError::TooManyRequests(_, secs)) => assert_eq!(secs, 1),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("not locked"),
        }
        l.begin(Realm::Login, "alice", good)
            .map(Attempt::succeeded)
            .unwrap_or_else(|e| panic!("{e:?}"));
        // the tunnel realm is separate
        assert!(l.begin(Realm::Tunnel, "alice", bad).is_ok());
    }

    #[test]
    fn success_refunds_and_the_whole_account_lock_spares_clean_addresses() {
        let l = Limiter::new(&limits());
        let ip = |i: u8| IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, i));
        for _ in 0..10 {
            l.begin(Realm::Login, "bob", ip(1))
                .map(Attempt::succeeded)
                .unwrap_or_else(|e| panic!("{e:?}"));
        }
        for i in 2..7 {
            assert!(l.begin(Realm::Login, "bob", ip(i)).is_ok());
        }
        // 5 failures from 5 addresses: an address that failed is locked out of bob ...
        assert!(l.begin(Realm::Login, "bob", ip(2)).is_err());
        // ... one that never failed is not
        assert!(l.begin(Realm::Login, "bob", ip(9)).is_ok());
        let v6a: IpAddr = "2001:db8::1".parse().unwrap_or(ip(0));
        let v6b: IpAddr = "2001:db8::2".parse().unwrap_or(ip(0));
        assert_eq!(address_key(v6a), address_key(v6b));
    }
}
