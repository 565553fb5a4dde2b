//! Transport counters: [`TransportStats`], for a demo's summary or a debug screen.

use std::sync::atomic::{AtomicU64, Ordering};

/// What an [`HttpRemote`](crate::HttpRemote) (and every clone of it) has done so far.
///
/// Byte counts are of message bodies as they cross the wire: a compressed answer counts its
/// compressed size in `bytes_received` and its decoded size in `bytes_decoded`, so
/// `bytes_decoded / bytes_received` is the compression ratio. Headers are not counted.
///
/// # Examples
/// ```
/// let remote = fero_http::HttpRemote::new("http://127.0.0.1:7700", "token")?;
/// let stats = remote.stats();
/// assert_eq!(stats.requests, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// HTTP requests started: pulls, pushes, digests and change stream connections.
    pub requests: u64,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Answer body bytes received, as sent by the server (compressed where it compressed).
    pub bytes_received: u64,
    /// Answer body bytes after decompression.
    pub bytes_decoded: u64,
    /// Requests that failed with a transient error (timeouts, lost connections, 408, 429,
    /// 5xx): the ones the engine retries.
    pub transient_failures: u64,
    /// Requests that failed with any other error (refusals, protocol violations).
    pub other_failures: u64,
    /// Change stream connections that were established (the first one and every reconnect).
    pub stream_connects: u64,
}

/// The shared atomics behind [`TransportStats`]. Relaxed ordering: each counter is independent
/// and only read for display.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    bytes_decoded: AtomicU64,
    transient_failures: AtomicU64,
    other_failures: AtomicU64,
    stream_connects: AtomicU64,
}

fn add(counter: &AtomicU64, amount: usize) {
    counter.fetch_add(u64::try_from(amount).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn request(&self, body_bytes: usize) {
        add(&self.requests, 1);
        add(&self.bytes_sent, body_bytes);
    }

    pub(crate) fn received(&self, bytes: usize) {
        add(&self.bytes_received, bytes);
    }

    pub(crate) fn decoded(&self, bytes: usize) {
        add(&self.bytes_decoded, bytes);
    }

    pub(crate) fn failure(&self, transient: bool) {
        if transient {
            add(&self.transient_failures, 1);
        } else {
            add(&self.other_failures, 1);
        }
    }

    pub(crate) fn stream_connected(&self) {
        add(&self.stream_connects, 1);
    }

    pub(crate) fn snapshot(&self) -> TransportStats {
        TransportStats {
            requests: self.requests.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            bytes_decoded: self.bytes_decoded.load(Ordering::Relaxed),
            transient_failures: self.transient_failures.load(Ordering::Relaxed),
            other_failures: self.other_failures.load(Ordering::Relaxed),
            stream_connects: self.stream_connects.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_into_the_snapshot() {
        let counters = Counters::default();
        counters.request(10);
        counters.request(5);
        counters.received(7);
        counters.decoded(30);
        counters.failure(true);
        counters.failure(false);
        counters.failure(false);
        counters.stream_connected();
        assert_eq!(
            counters.snapshot(),
            TransportStats {
                requests: 2,
                bytes_sent: 15,
                bytes_received: 7,
                bytes_decoded: 30,
                transient_failures: 1,
                other_failures: 2,
                stream_connects: 1,
            }
        );
    }
}
