//! Reconnection policy: exponential backoff with jitter, as the JavaScript
//! client computes it, shared by the Socket.IO [`Manager`](crate::Manager)
//! and the `/ws` [`WsClient`](crate::ws::WsClient).

use std::time::Duration;

/// When and how often to reconnect. The defaults are the JavaScript
/// client's: unlimited attempts, 1 s doubling up to 5 s, jitter 0.5.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconnection {
    /// Whether to reconnect at all.
    pub enabled: bool,
    /// Attempts before giving up (`None`: never give up).
    pub attempts: Option<u32>,
    /// The first delay.
    pub delay: Duration,
    /// The largest delay.
    pub delay_max: Duration,
    /// Randomization factor in `0.0..=1.0`: each delay moves by up to this
    /// fraction of itself, up or down.
    pub randomization: f64,
}

impl Default for Reconnection {
    fn default() -> Self {
        Reconnection {
            enabled: true,
            attempts: None,
            delay: Duration::from_millis(1000),
            delay_max: Duration::from_millis(5000),
            randomization: 0.5,
        }
    }
}

impl Reconnection {
    /// No reconnection.
    pub fn disabled() -> Self {
        Reconnection {
            enabled: false,
            ..Reconnection::default()
        }
    }

    /// The delay before attempt `attempt` (0 for the first retry), with a
    /// fresh random jitter: `delay * 2^attempt`, moved by up to
    /// `randomization` of itself, capped at `delay_max`.
    pub fn delay_for(&self, attempt: u32) -> Duration {
        let base = self.delay.as_secs_f64() * 2f64.powi(attempt.min(62) as i32);
        let jitter = self.randomization.clamp(0.0, 1.0);
        let mut secs = base;
        if jitter > 0.0 {
            let r = random_unit();
            let deviation = r * jitter * base;
            // The JS client picks the direction from another digit of the
            // same draw; a second bit of our draw does the same job.
            if random_bit() {
                secs = base - deviation;
            } else {
                secs = base + deviation;
            }
        }
        let max = self.delay_max.as_secs_f64();
        Duration::from_secs_f64(secs.clamp(0.0, max.max(0.0)))
    }
}

/// A uniform draw in `[0, 1)`.
fn random_unit() -> f64 {
    let bits = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

fn random_bit() -> bool {
    getrandom::u32().map(|b| b & 1 == 1).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        let policy = Reconnection::default();
        for attempt in 0..20 {
            let base = (1000f64 * 2f64.powi(attempt as i32)).min(f64::MAX);
            for _ in 0..50 {
                let d = policy.delay_for(attempt).as_secs_f64() * 1000.0;
                assert!(d <= 5000.0 + 1e-6, "{d}");
                assert!(d >= (base * 0.5).min(5000.0) - 1e-6, "{attempt} {d}");
            }
        }
        let flat = Reconnection {
            randomization: 0.0,
            ..Reconnection::default()
        };
        assert_eq!(flat.delay_for(0), Duration::from_secs(1));
        assert_eq!(flat.delay_for(1), Duration::from_secs(2));
        assert_eq!(flat.delay_for(2), Duration::from_secs(4));
        assert_eq!(flat.delay_for(3), Duration::from_secs(5));
    }

    #[test]
    fn jitter_varies_the_delay() {
        let policy = Reconnection::default();
        let draws: std::collections::HashSet<u128> =
            (0..100).map(|_| policy.delay_for(0).as_micros()).collect();
        assert!(draws.len() > 10);
    }
}
