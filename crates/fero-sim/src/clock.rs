//! [`SimClock`]: wall-clock time derived from tokio's (paused) clock.

use fero::{Clock, Timestamp};

/// The simulated wall clock's reading when a simulation starts: 2024-01-01T00:00:00Z. A fixed
/// origin keeps every recorded timestamp the same on every replay of a seed.
const ORIGIN_MILLIS: u64 = 1_704_067_200_000;

/// A [`fero::Clock`] that reads tokio's clock, so under paused time every device and the server
/// see the same simulated time, and a replay records the same timestamps.
#[derive(Copy, Clone, Debug)]
pub struct SimClock {
    start: tokio::time::Instant,
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock {
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.start);
        let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        Timestamp(ORIGIN_MILLIS.saturating_add(millis))
    }
}
