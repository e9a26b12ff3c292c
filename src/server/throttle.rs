//! Failed logins counted per peer address: past a few failures within a second, that address's
//! next attempts are refused without looking at their credentials until the second is over, so
//! that guessing passwords from one address goes at a few tries per second at most. One short
//! mutex, taken only at logins; the table is bounded (old entries go first).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Failed logins one address may have within [`WINDOW`]; more are throttled.
pub const MAX_FAILURES: u32 = 5;
/// The window failures are counted in.
const WINDOW: Duration = Duration::from_secs(1);
/// Addresses remembered at most (beyond, the table is cleared of expired windows, or of all).
const MAX_PEERS: usize = 10_000;

#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginThrottle {
    /// Whether `peer` may try to log in at `now`.
    pub fn allows(&self, peer: IpAddr, now: Instant) -> bool {
        match self.failures.lock().get(&peer) {
            Some((since, count)) => now.duration_since(*since) >= WINDOW || *count < MAX_FAILURES,
            None => true,
        }
    }

    /// A login from `peer` failed at `now`.
    pub fn failed(&self, peer: IpAddr, now: Instant) {
        let mut failures = self.failures.lock();
        if failures.len() >= MAX_PEERS && !failures.contains_key(&peer) {
            failures.retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
            if failures.len() >= MAX_PEERS {
                failures.clear();
            }
        }
        let entry = failures.entry(peer).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_few_failures_per_second_per_address() {
        let throttle = LoginThrottle::default();
        let (a, b) = (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        );
        let start = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(throttle.allows(a, start));
            throttle.failed(a, start);
        }
        assert!(!throttle.allows(a, start + Duration::from_millis(500)));
        assert!(
            throttle.allows(b, start),
            "another address is not throttled"
        );
        assert!(
            throttle.allows(a, start + WINDOW),
            "the next second starts afresh"
        );
        throttle.failed(a, start + WINDOW);
        assert!(throttle.allows(a, start + WINDOW));
    }
}
