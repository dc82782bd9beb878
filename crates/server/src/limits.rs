//! Admission and rate limits: connections overall and per client IP,
//! handshakes per second per IP, and a token bucket per connection for
//! the messages it sends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::LimitsConfig;

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    /// [`TokenBucket::take`] at a given time (for tests).
    pub fn take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full_at(&self, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * self.rate
            >= self.burst
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `limits.max_connections` reached.
    #[error("the server has too many connections")]
    TooManyConnections,
    /// `limits.max_connections_per_ip` reached.
    #[error("too many connections from this address")]
    TooManyConnectionsPerIp,
    /// `limits.handshakes_per_second_per_ip` exceeded.
    #[error("too many connection attempts from this address; retry later")]
    TooManyHandshakes,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl Refused {
    /// The stable code (also the `reason` label of the refusal metric).
    pub fn code(self) -> &'static str {
        match self {
            Refused::TooManyConnections => "too_many_connections",
            Refused::TooManyConnectionsPerIp => "too_many_connections_per_ip",
            Refused::TooManyHandshakes => "too_many_handshakes",
            Refused::ShuttingDown => "shutting_down",
        }
    }
}

/// Connection admission for the whole server.
pub struct Limiter {
    config: LimitsConfig,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    handshakes: Mutex<HashMap<IpAddr, TokenBucket>>,
}

/// An admitted connection; releases its place when dropped.
pub struct Permit {
    limiter: Arc<Limiter>,
    ip: Option<IpAddr>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("ip", &self.ip).finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut per_ip = self
                .limiter
                .per_ip
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

impl Limiter {
    /// A limiter with these limits.
    pub fn new(config: LimitsConfig) -> Arc<Self> {
        Arc::new(Limiter {
            config,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            handshakes: Mutex::new(HashMap::new()),
        })
    }

    /// The limits.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Counts a handshake from `ip` against its rate.
    pub fn handshake(&self, ip: Option<IpAddr>) -> Result<(), Refused> {
        let Some(ip) = ip else { return Ok(()) };
        let rate = self.config.handshakes_per_second_per_ip;
        if rate == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.handshakes.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 10_000 {
            // Forget addresses whose bucket refilled: bounded memory.
            buckets.retain(|_, b| !b.is_full_at(now));
        }
        let burst = f64::from(self.config.handshake_burst.max(1));
        let ok = buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(f64::from(rate), burst))
            .take_at(now);
        if ok {
            Ok(())
        } else {
            Err(Refused::TooManyHandshakes)
        }
    }

    /// Whether one more connection from `ip` would be admitted now.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), Refused> {
        if self.total.load(Ordering::Acquire) >= self.config.max_connections {
            return Err(Refused::TooManyConnections);
        }
        if let Some(ip) = ip {
            let per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if per_ip.get(&ip).copied().unwrap_or(0) >= self.config.max_connections_per_ip {
                return Err(Refused::TooManyConnectionsPerIp);
            }
        }
        Ok(())
    }

    /// Admits a connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Permit, Refused> {
        let before = self.total.fetch_add(1, Ordering::AcqRel);
        if before >= self.config.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::TooManyConnections);
        }
        if let Some(ip) = ip {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= self.config.max_connections_per_ip {
                drop(per_ip);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::TooManyConnectionsPerIp);
            }
            *n += 1;
        }
        Ok(Permit {
            limiter: Arc::clone(self),
            ip,
        })
    }

    /// Connections admitted and still open.
    pub fn connections(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// What the message rate limit says about one message of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// Within the rate.
    Allowed,
    /// Over the rate: refuse this message with an error.
    Refused,
    /// Over the rate for too long: close the connection.
    Abuse,
}

/// The message rate of one connection: a token bucket, and the refusals
/// since the last accepted message.
#[derive(Debug)]
pub struct MessageRate {
    bucket: Option<TokenBucket>,
    refused_in_a_row: u32,
    abuse_after: u32,
}

impl MessageRate {
    /// The rate for these limits (`messages_per_second = 0`: unlimited).
    pub fn new(config: &LimitsConfig) -> Self {
        MessageRate {
            bucket: (config.messages_per_second > 0).then(|| {
                TokenBucket::new(
                    f64::from(config.messages_per_second),
                    f64::from(config.messages_burst.max(1)),
                )
            }),
            refused_in_a_row: 0,
            abuse_after: config.abuse_close_after,
        }
    }

    /// Counts one message.
    pub fn check(&mut self) -> Rate {
        let Some(bucket) = &mut self.bucket else {
            return Rate::Allowed;
        };
        if bucket.take() {
            self.refused_in_a_row = 0;
            return Rate::Allowed;
        }
        self.refused_in_a_row += 1;
        if self.abuse_after > 0 && self.refused_in_a_row >= self.abuse_after {
            Rate::Abuse
        } else {
            Rate::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            max_connections: 3,
            max_connections_per_ip: 2,
            handshakes_per_second_per_ip: 1,
            handshake_burst: 2,
            messages_per_second: 1,
            messages_burst: 2,
            abuse_close_after: 3,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3.0);
        assert!((0..3).all(|_| b.take_at(t0)));
        assert!(!b.take_at(t0));
        assert!(b.take_at(t0 + Duration::from_millis(500)));
        assert!(!b.take_at(t0 + Duration::from_millis(500)));
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take_at(later)), "refilled to the burst");
        assert!(!b.take_at(later), "never beyond it");
    }

    #[test]
    fn connections_are_limited_overall_and_per_ip_and_released_on_drop() {
        let l = Limiter::new(limits());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let p1 = l.admit(Some(a)).unwrap();
        let _p2 = l.admit(Some(a)).unwrap();
        assert_eq!(l.check(Some(a)), Err(Refused::TooManyConnectionsPerIp));
        assert_eq!(
            l.admit(Some(a)).unwrap_err(),
            Refused::TooManyConnectionsPerIp
        );
        let _p3 = l.admit(Some(b)).unwrap();
        assert_eq!(l.admit(Some(b)).unwrap_err(), Refused::TooManyConnections);
        drop(p1);
        assert_eq!(l.connections(), 2);
        assert!(l.admit(Some(a)).is_ok());
    }

    #[test]
    fn handshakes_and_messages_are_rate_limited() {
        let l = Limiter::new(limits());
        let ip = Some("10.0.0.9".parse().unwrap());
        assert!(l.handshake(ip).is_ok() && l.handshake(ip).is_ok());
        assert_eq!(l.handshake(ip), Err(Refused::TooManyHandshakes));
        assert!(l.handshake(Some("10.0.0.8".parse().unwrap())).is_ok());
        let mut r = MessageRate::new(&limits());
        assert_eq!([r.check(), r.check()], [Rate::Allowed, Rate::Allowed]);
        assert_eq!([r.check(), r.check()], [Rate::Refused, Rate::Refused]);
        assert_eq!(r.check(), Rate::Abuse);
    }
}
