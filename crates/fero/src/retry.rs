//! Retry in three parts: a [`BackoffStrategy`] computes the delay before an attempt, the policy
//! ([`decide`]) chooses between retrying and giving up, and the engine waits on tokio's clock and
//! runs the attempt again. Jitter draws from a seedable [`RandomSource`], so a test or a simulation
//! replays exactly.

use std::fmt;
use std::time::Duration;

use crate::handler::HandlerError;

/// A source of random numbers for jitter, seedable so runs replay.
pub trait RandomSource: Send + fmt::Debug {
    /// The next 64 random bits.
    fn next_u64(&mut self) -> u64;
}

/// A small, fast, seedable generator (SplitMix64). Not for cryptography.
///
/// # Examples
/// ```
/// use fero::{RandomSource, SeededRandom};
/// let (mut a, mut b) = (SeededRandom::new(7), SeededRandom::new(7));
/// assert_eq!(a.next_u64(), b.next_u64());
/// ```
#[derive(Clone, Debug)]
pub struct SeededRandom {
    state: u64,
}

impl SeededRandom {
    /// A generator that yields the same sequence for the same seed.
    pub fn new(seed: u64) -> Self {
        SeededRandom { state: seed }
    }

    /// A generator seeded from the process's hash randomness: different on every run, for
    /// production use where devices should not retry in lockstep.
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, RandomState};
        SeededRandom::new(RandomState::new().hash_one(0x5eed_u64))
    }
}

impl RandomSource for SeededRandom {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A backoff's parameters were invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackoffError {
    /// The growth factor was below 1.0 or not finite.
    #[error("backoff factor must be a finite number >= 1.0, got {factor}")]
    InvalidFactor {
        /// The factor given.
        factor: String,
    },
    /// The cap was below the base delay.
    #[error(
        "backoff cap {cap:?} is below its base delay {base:?}: raise the cap or lower the base"
    )]
    CapBelowBase {
        /// The base delay.
        base: Duration,
        /// The cap.
        cap: Duration,
    },
}

/// Computes the delay before a retry.
///
/// `attempt` counts failed attempts so far (1 after the first failure). `None` means give up: the
/// attempts are used up.
pub trait BackoffStrategy: Send + Sync + fmt::Debug + 'static {
    /// The delay before the next attempt, or `None` to give up.
    fn delay(&self, attempt: u32, random: &mut dyn RandomSource) -> Option<Duration>;
}

/// The same delay before every retry, up to `max_attempts` attempts in all.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use fero::{BackoffStrategy, FixedBackoff, SeededRandom};
/// let backoff = FixedBackoff::new(Duration::from_millis(500), 3);
/// let mut random = SeededRandom::new(1);
/// assert_eq!(backoff.delay(1, &mut random), Some(Duration::from_millis(500)));
/// assert_eq!(backoff.delay(3, &mut random), None); // three attempts made
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedBackoff {
    delay: Duration,
    max_attempts: u32,
}

impl FixedBackoff {
    /// `delay` between attempts, `max_attempts` attempts in all (the first one included).
    pub fn new(delay: Duration, max_attempts: u32) -> Self {
        FixedBackoff {
            delay,
            max_attempts,
        }
    }
}

impl BackoffStrategy for FixedBackoff {
    fn delay(&self, attempt: u32, _random: &mut dyn RandomSource) -> Option<Duration> {
        (attempt < self.max_attempts).then_some(self.delay)
    }
}

/// Delays that grow by `factor` from `base` up to `cap`, with optional full jitter, up to
/// `max_attempts` attempts in all.
///
/// Without jitter the delay before retry `n` is `min(cap, base * factor^(n-1))`. With full jitter
/// it is a uniform draw from `0..=` that value, so many devices that failed together do not retry
/// together.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use fero::{BackoffStrategy, ExponentialBackoff, SeededRandom};
/// let backoff = ExponentialBackoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(1), 10)?
///     .with_jitter(false);
/// let mut random = SeededRandom::new(1);
/// assert_eq!(backoff.delay(1, &mut random), Some(Duration::from_millis(100)));
/// assert_eq!(backoff.delay(3, &mut random), Some(Duration::from_millis(400)));
/// assert_eq!(backoff.delay(9, &mut random), Some(Duration::from_secs(1)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ExponentialBackoff {
    base: Duration,
    factor: f64,
    cap: Duration,
    max_attempts: u32,
    jitter: bool,
}

impl ExponentialBackoff {
    /// Growth from `base` by `factor` up to `cap`, `max_attempts` attempts in all; full jitter on.
    ///
    /// # Errors
    /// [`BackoffError::InvalidFactor`] for a factor below 1.0 or not finite,
    /// [`BackoffError::CapBelowBase`] for a cap below the base.
    pub fn new(
        base: Duration,
        factor: f64,
        cap: Duration,
        max_attempts: u32,
    ) -> Result<Self, BackoffError> {
        if !factor.is_finite() || factor < 1.0 {
            return Err(BackoffError::InvalidFactor {
                factor: factor.to_string(),
            });
        }
        if cap < base {
            return Err(BackoffError::CapBelowBase { base, cap });
        }
        Ok(ExponentialBackoff {
            base,
            factor,
            cap,
            max_attempts,
            jitter: true,
        })
    }

    /// Turns full jitter on or off.
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }
}

impl Default for ExponentialBackoff {
    /// 200 ms doubling up to 30 s, 6 attempts, full jitter.
    fn default() -> Self {
        ExponentialBackoff {
            base: Duration::from_millis(200),
            factor: 2.0,
            cap: Duration::from_secs(30),
            max_attempts: 6,
            jitter: true,
        }
    }
}

impl BackoffStrategy for ExponentialBackoff {
    fn delay(&self, attempt: u32, random: &mut dyn RandomSource) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let exponent = attempt.saturating_sub(1).min(1_000) as i32;
        let grown = self.base.as_secs_f64() * self.factor.powi(exponent);
        let ceiling = if grown.is_finite() {
            Duration::from_secs_f64(grown.min(self.cap.as_secs_f64()))
        } else {
            self.cap
        };
        if !self.jitter {
            return Some(ceiling);
        }
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let drawn = if nanos == u64::MAX {
            random.next_u64()
        } else {
            random.next_u64() % (nanos + 1)
        };
        Some(Duration::from_nanos(drawn))
    }
}

/// What the engine does after a failed attempt.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Stop and report the error.
    GiveUp,
}

/// The retry policy: permanent errors are never retried; transient ones are retried after the
/// backoff's delay, or the remote's `Retry-After` if that is longer, until the backoff gives up.
pub fn decide(
    error: &HandlerError,
    attempt: u32,
    backoff: &dyn BackoffStrategy,
    random: &mut dyn RandomSource,
) -> RetryDecision {
    if !error.is_transient() {
        return RetryDecision::GiveUp;
    }
    match backoff.delay(attempt, random) {
        Some(delay) => RetryDecision::Retry(delay.max(error.retry_after().unwrap_or_default())),
        None => RetryDecision::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_rejects_bad_parameters() {
        let base = Duration::from_secs(1);
        assert!(matches!(
            ExponentialBackoff::new(base, 0.5, base, 3),
            Err(BackoffError::InvalidFactor { .. })
        ));
        assert!(matches!(
            ExponentialBackoff::new(base, 2.0, Duration::from_millis(1), 3),
            Err(BackoffError::CapBelowBase { .. })
        ));
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling_and_replays_from_the_seed() {
        let b =
            ExponentialBackoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(2), 50)
                .unwrap();
        let draw = |seed| {
            let mut r = SeededRandom::new(seed);
            (1..20)
                .map(|a| b.delay(a, &mut r).unwrap())
                .collect::<Vec<_>>()
        };
        let first = draw(9);
        assert_eq!(first, draw(9));
        assert_ne!(first, draw(10));
        for (i, d) in first.iter().enumerate() {
            let ceiling =
                Duration::from_millis(100 * 2u64.pow(i as u32)).min(Duration::from_secs(2));
            assert!(*d <= ceiling, "attempt {}: {d:?} > {ceiling:?}", i + 1);
        }
    }

    #[test]
    fn permanent_errors_are_never_retried_and_retry_after_is_honoured() {
        let b = FixedBackoff::new(Duration::from_millis(10), 5);
        let mut r = SeededRandom::new(0);
        assert_eq!(
            decide(&HandlerError::permanent("no"), 1, &b, &mut r),
            RetryDecision::GiveUp
        );
        let slow = HandlerError::transient("429").with_retry_after(Duration::from_secs(3));
        assert_eq!(
            decide(&slow, 1, &b, &mut r),
            RetryDecision::Retry(Duration::from_secs(3))
        );
        assert_eq!(
            decide(&HandlerError::transient("x"), 5, &b, &mut r),
            RetryDecision::GiveUp
        );
    }
}
