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

/// With the `metrics` feature, the same figure goes to the `metrics` facade as a counter named
/// `name` (into the recorder the application installed; nowhere when it installed none).
#[cfg(feature = "metrics")]
fn export(name: &'static str, amount: usize) {
    metrics::counter!(name).increment(u64::try_from(amount).unwrap_or(u64::MAX));
}

#[cfg(not(feature = "metrics"))]
fn export(_name: &'static str, _amount: usize) {}

/// The names of the counters the `metrics` feature records, one per [`TransportStats`] field.
pub mod names {
    /// [`TransportStats::requests`](super::TransportStats::requests).
    pub const REQUESTS: &str = "fero_client_requests_total";
    /// [`TransportStats::bytes_sent`](super::TransportStats::bytes_sent).
    pub const BYTES_SENT: &str = "fero_client_bytes_sent_total";
    /// [`TransportStats::bytes_received`](super::TransportStats::bytes_received).
    pub const BYTES_RECEIVED: &str = "fero_client_bytes_received_total";
    /// [`TransportStats::bytes_decoded`](super::TransportStats::bytes_decoded).
    pub const BYTES_DECODED: &str = "fero_client_bytes_decoded_total";
    /// [`TransportStats::transient_failures`](super::TransportStats::transient_failures).
    pub const TRANSIENT_FAILURES: &str = "fero_client_transient_failures_total";
    /// [`TransportStats::other_failures`](super::TransportStats::other_failures).
    pub const OTHER_FAILURES: &str = "fero_client_other_failures_total";
    /// [`TransportStats::stream_connects`](super::TransportStats::stream_connects).
    pub const STREAM_CONNECTS: &str = "fero_client_stream_connects_total";
}

impl Counters {
    pub(crate) fn request(&self, body_bytes: usize) {
        add(&self.requests, 1);
        add(&self.bytes_sent, body_bytes);
        export(names::REQUESTS, 1);
        export(names::BYTES_SENT, body_bytes);
    }

    pub(crate) fn received(&self, bytes: usize) {
        add(&self.bytes_received, bytes);
        export(names::BYTES_RECEIVED, bytes);
    }

    pub(crate) fn decoded(&self, bytes: usize) {
        add(&self.bytes_decoded, bytes);
        export(names::BYTES_DECODED, bytes);
    }

    pub(crate) fn failure(&self, transient: bool) {
        if transient {
            add(&self.transient_failures, 1);
            export(names::TRANSIENT_FAILURES, 1);
        } else {
            add(&self.other_failures, 1);
            export(names::OTHER_FAILURES, 1);
        }
    }

    pub(crate) fn stream_connected(&self) {
        add(&self.stream_connects, 1);
        export(names::STREAM_CONNECTS, 1);
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

    /// With the feature on, each figure also reaches the facade's recorder.
    #[cfg(feature = "metrics")]
    #[test]
    fn the_metrics_feature_records_the_same_figures() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let counters = Counters::default();
        metrics::with_local_recorder(&recorder, || {
            counters.request(10);
            counters.received(7);
            counters.failure(true);
        });
        let text = handle.render();
        let figures: std::collections::HashMap<&str, u64> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.split_once(' ')?;
                Some((name, value.parse().ok()?))
            })
            .collect();
        assert_eq!(figures.get(names::REQUESTS), Some(&1));
        assert_eq!(figures.get(names::BYTES_SENT), Some(&10));
        assert_eq!(figures.get(names::BYTES_RECEIVED), Some(&7));
        assert_eq!(figures.get(names::TRANSIENT_FAILURES), Some(&1));
    }

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
