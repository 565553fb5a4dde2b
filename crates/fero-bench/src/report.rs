//! The one JSON line a workload prints (bench-spec), and the process's peak RSS.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::BenchError;

/// One workload's result, printed as one JSON line:
/// `{"workload":"W1","n":200000,"batch":1000,"seconds":0.123,"items_per_s":1626016,"peak_rss_mb":31.2}`.
///
/// W5 adds `fetched_twice` and W6 adds `latency_ms`; the other fields are the same for every
/// workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchLine {
    /// `W1`, `W1-raw`, …
    pub workload: String,
    /// Items (N or M).
    pub n: u64,
    /// Page size.
    pub batch: usize,
    /// Wall-clock seconds of the measured part (the median run when several ran).
    pub seconds: f64,
    /// `n / seconds`.
    pub items_per_s: u64,
    /// The process's peak resident set (VmHWM), in MiB.
    pub peak_rss_mb: f64,
    /// W5: items the restarted client fetched that the killed one had already fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_twice: Option<u64>,
    /// W6: milliseconds of one pull + push round (the median round).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

impl BenchLine {
    /// A line for `n` items done in `elapsed`, with the peak RSS read now.
    ///
    /// # Errors
    /// [`BenchError::Rss`] when `/proc/self/status` cannot be read.
    pub fn new(
        workload: &str,
        n: u64,
        batch: usize,
        elapsed: Duration,
    ) -> Result<Self, BenchError> {
        Ok(BenchLine {
            workload: workload.to_owned(),
            n,
            batch,
            seconds: round_to(elapsed.as_secs_f64(), 1_000.0),
            items_per_s: crate::workload::per_second(n, elapsed),
            peak_rss_mb: round_to(peak_rss_mb()?, 10.0),
            fetched_twice: None,
            latency_ms: None,
        })
    }

    /// The line as printed: compact JSON, no trailing newline.
    pub fn to_json(&self) -> String {
        // A struct of numbers and strings always serialises.
        serde_json::to_string(self).expect("a BenchLine has only strings and numbers")
    }
}

fn round_to(value: f64, scale: f64) -> f64 {
    (value * scale).round() / scale
}

/// The process's peak resident set size in MiB, from `VmHWM` in `/proc/self/status`.
///
/// # Errors
/// [`BenchError::Rss`] when the file cannot be read or has no `VmHWM` line (not Linux).
pub fn peak_rss_mb() -> Result<f64, BenchError> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|source| BenchError::Rss {
            reason: format!("cannot read /proc/self/status: {source}"),
        })?;
    parse_vm_hwm_kb(&status)
        .map(|kb| kb as f64 / 1024.0)
        .ok_or_else(|| BenchError::Rss {
            reason: "/proc/self/status has no VmHWM line; peak RSS is measured on Linux only"
                .into(),
        })
}

fn parse_vm_hwm_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_kilobytes() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t   31948 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(parse_vm_hwm_kb(status), Some(31_948));
        assert_eq!(parse_vm_hwm_kb("Name:\tx\n"), None);
    }

    #[test]
    fn the_line_has_the_spec_fields_in_order() {
        let line = BenchLine {
            workload: "W1".into(),
            n: 200_000,
            batch: 1_000,
            seconds: 0.123,
            items_per_s: 1_626_016,
            peak_rss_mb: 31.2,
            fetched_twice: None,
            latency_ms: None,
        };
        assert_eq!(
            line.to_json(),
            r#"{"workload":"W1","n":200000,"batch":1000,"seconds":0.123,"items_per_s":1626016,"peak_rss_mb":31.2}"#
        );
    }
}
