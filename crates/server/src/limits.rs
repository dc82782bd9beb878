//! Admission and rate limits: connections overall and per client IP,
//! handshakes per second per IP, and a token bucket per connection for
//! the messages it sends.
//!
//! Per-IP limits count an IPv6 client by its /64 (one subscriber's
//! network: a host picks any address in it at will) and an IPv4-mapped
//! IPv6 address as the IPv4 address it carries.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many handshake buckets the limiter keeps before it forgets those
/// that refilled.
const HANDSHAKE_SWEEP_ABOVE: usize = 10_000;
/// The least time between two such sweeps (a sweep walks every bucket).
const HANDSHAKE_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The key per-IP limits count a client under: its IPv4 address, or its
/// IPv6 /64.
pub(crate) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

/// Handshake buckets by IP key, swept now and then.
struct Handshakes {
    buckets: HashMap<IpAddr, TokenBucket>,
    swept: Instant,
}

use crate::config::LimitsConfig;

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    /// [`TokenBucket::take`] at a given time (for tests).
    pub(crate) fn take_at(&mut self, now: Instant) -> bool {
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
pub(crate) enum Refused {
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
    pub(crate) fn code(self) -> &'static str {
        match self {
            Refused::TooManyConnections => "too_many_connections",
            Refused::TooManyConnectionsPerIp => "too_many_connections_per_ip",
            Refused::TooManyHandshakes => "too_many_handshakes",
            Refused::ShuttingDown => "shutting_down",
        }
    }
}

/// Connection admission for the whole server.
pub(crate) struct Limiter {
    config: LimitsConfig,
    /// False once shutdown began: every admission is refused.
    open: std::sync::atomic::AtomicBool,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    handshakes: Mutex<Handshakes>,
}

/// An admitted connection; releases its place when dropped.
pub(crate) struct Permit {
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
    pub(crate) fn new(config: LimitsConfig) -> Arc<Self> {
        Arc::new(Limiter {
            config,
            open: std::sync::atomic::AtomicBool::new(true),
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            handshakes: Mutex::new(Handshakes {
                buckets: HashMap::new(),
                swept: Instant::now(),
            }),
        })
    }

    /// The limits.
    pub(crate) fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Counts a handshake from `ip` against its rate.
    pub(crate) fn handshake(&self, ip: Option<IpAddr>) -> Result<(), Refused> {
        self.handshake_at(ip, Instant::now())
    }

    /// [`Limiter::handshake`] at a given time (for tests).
    pub(crate) fn handshake_at(&self, ip: Option<IpAddr>, now: Instant) -> Result<(), Refused> {
        let Some(ip) = ip.map(ip_key) else {
            return Ok(());
        };
        let rate = self.config.handshakes_per_second_per_ip;
        if rate == 0 {
            return Ok(());
        }
        let mut handshakes = self.handshakes.lock().unwrap_or_else(|e| e.into_inner());
        if handshakes.buckets.len() > HANDSHAKE_SWEEP_ABOVE
            && now.saturating_duration_since(handshakes.swept) >= HANDSHAKE_SWEEP_EVERY
        {
            // Forget addresses whose bucket refilled (bounded memory), at
            // most once a second: a flood of new addresses does not make
            // every handshake walk the whole map.
            handshakes.swept = now;
            handshakes.buckets.retain(|_, b| !b.is_full_at(now));
        }
        let burst = f64::from(self.config.handshake_burst.max(1));
        let ok = handshakes
            .buckets
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
    #[cfg(test)]
    pub(crate) fn check(&self, ip: Option<IpAddr>) -> Result<(), Refused> {
        if self.total.load(Ordering::Acquire) >= self.config.max_connections {
            return Err(Refused::TooManyConnections);
        }
        if let Some(ip) = ip.map(ip_key) {
            let per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if per_ip.get(&ip).copied().unwrap_or(0) >= self.config.max_connections_per_ip {
                return Err(Refused::TooManyConnectionsPerIp);
            }
        }
        Ok(())
    }

    /// Whether connections are admitted (false once shutdown began).
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Refuses every admission from now on (shutdown).
    pub(crate) fn close(&self) {
        self.open.store(false, Ordering::Release);
    }

    /// Admits a connection from `ip`, or says why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Permit, Refused> {
        if !self.is_open() {
            return Err(Refused::ShuttingDown);
        }
        let ip = ip.map(ip_key);
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
    pub(crate) fn connections(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// What the message rate limit says about one message of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rate {
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
pub(crate) struct MessageRate {
    bucket: Option<TokenBucket>,
    refused_in_a_row: u32,
    abuse_after: u32,
}

impl MessageRate {
    /// The rate for these limits (`messages_per_second = 0`: unlimited).
    pub(crate) fn new(config: &LimitsConfig) -> Self {
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
    pub(crate) fn check(&mut self) -> Rate {
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

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let l = Limiter::new(limits());
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // Two addresses of one /64 share the per-IP limit (2)...
        let _a = l.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = l.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(
            l.admit(ip("2001:db8:1:2:abcd::1")).unwrap_err(),
            Refused::TooManyConnectionsPerIp
        );
        assert_eq!(
            l.check(ip("2001:db8:1:2::7")),
            Err(Refused::TooManyConnectionsPerIp)
        );
        // ... another /64 does not.
        assert!(l.check(ip("2001:db8:1:3::1")).is_ok());
        // Handshakes: the /64's burst (2) is spent by any of its addresses.
        let t0 = Instant::now();
        assert!(l.handshake_at(ip("2001:db8::1"), t0).is_ok());
        assert!(l.handshake_at(ip("2001:db8::2"), t0).is_ok());
        assert_eq!(
            l.handshake_at(ip("2001:db8::3"), t0),
            Err(Refused::TooManyHandshakes)
        );
        assert!(l.handshake_at(ip("2001:db8:0:1::1"), t0).is_ok());
        // An IPv4-mapped IPv6 address is its IPv4 address.
        assert_eq!(
            ip_key("::ffff:10.0.0.5".parse().unwrap()),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
        assert!(l.handshake_at(ip("10.0.0.5"), t0).is_ok());
        assert!(l.handshake_at(ip("::ffff:10.0.0.5"), t0).is_ok());
        assert_eq!(
            l.handshake_at(ip("10.0.0.5"), t0),
            Err(Refused::TooManyHandshakes)
        );
    }

    #[test]
    fn handshake_buckets_are_swept_at_most_once_a_second_and_stay_bounded() {
        let l = Limiter::new(limits());
        let len = || l.handshakes.lock().unwrap().buckets.len();
        let t0 = Instant::now();
        let addr = |i: u32| Some(IpAddr::V4(std::net::Ipv4Addr::from_bits(0x0a00_0000 + i)));
        for i in 0..=HANDSHAKE_SWEEP_ABOVE as u32 {
            l.handshake_at(addr(i), t0).unwrap();
        }
        assert_eq!(len(), HANDSHAKE_SWEEP_ABOVE + 1);
        // Within a second of the last sweep: no walk over the map, every
        // new address is just added.
        let soon = t0 + Duration::from_millis(500);
        l.handshake_at(addr(1_000_000), soon).unwrap();
        assert_eq!(len(), HANDSHAKE_SWEEP_ABOVE + 2);
        // Later every bucket has refilled (rate 1/s, one token taken): one
        // sweep forgets them all but the new address.
        let later = t0 + Duration::from_secs(5);
        l.handshake_at(addr(2_000_000), later).unwrap();
        assert_eq!(len(), 1);
    }
}
