//! What a run did: [`RunReport`], one [`FeatureOutcome`] per feature that took part.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::item::FeatureKey;
use crate::page::SyncKind;

/// Counters of one feature's run.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeatureCounts {
    /// Pages applied.
    pub pages: u64,
    /// Server items applied.
    pub pulled: u64,
    /// Local changes the server accepted.
    pub pushed: u64,
    /// Conflicts met (each one emitted an event).
    pub conflicts: u64,
    /// Changes quarantined.
    pub quarantined: u64,
    /// Time taken on tokio's clock.
    pub duration: Duration,
}

/// How one feature's part of a run ended.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum FeatureResult {
    /// It ran to the end.
    Completed(FeatureCounts),
    /// Its initial sync had completed in an earlier run; nothing to do.
    AlreadyCompleted,
    /// It failed.
    Failed(Arc<Error>),
    /// A dependency did not complete.
    Skipped {
        /// The dependency.
        dependency: FeatureKey,
    },
    /// The run was cancelled before it finished.
    Cancelled,
}

/// One feature's part of a run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FeatureOutcome {
    /// The feature.
    pub feature: FeatureKey,
    /// Initial or background.
    pub kind: SyncKind,
    /// How it ended.
    pub result: FeatureResult,
}

impl FeatureOutcome {
    /// `true` unless it failed, was skipped or cancelled.
    pub fn is_success(&self) -> bool {
        matches!(
            self.result,
            FeatureResult::Completed(_) | FeatureResult::AlreadyCompleted
        )
    }
}

/// What a run did, feature by feature, in the order the features finished.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// One entry per feature and kind that took part, in finishing order.
    pub outcomes: Vec<FeatureOutcome>,
}

impl RunReport {
    /// `true` when every feature completed.
    pub fn is_success(&self) -> bool {
        self.outcomes.iter().all(FeatureOutcome::is_success)
    }

    /// The outcomes that did not complete.
    pub fn failures(&self) -> impl Iterator<Item = &FeatureOutcome> {
        self.outcomes.iter().filter(|o| !o.is_success())
    }

    /// The outcome of `feature` for `kind`, if it took part.
    pub fn outcome(&self, feature: &str, kind: SyncKind) -> Option<&FeatureOutcome> {
        self.outcomes
            .iter()
            .find(|o| o.feature.as_str() == feature && o.kind == kind)
    }

    /// Sums the counters of every completed feature.
    pub fn totals(&self) -> FeatureCounts {
        let mut total = FeatureCounts::default();
        for outcome in &self.outcomes {
            if let FeatureResult::Completed(c) = &outcome.result {
                total.pages += c.pages;
                total.pulled += c.pulled;
                total.pushed += c.pushed;
                total.conflicts += c.conflicts;
                total.quarantined += c.quarantined;
                total.duration = total.duration.max(c.duration);
            }
        }
        total
    }

    pub(crate) fn into_result(self) -> Result<RunReport, Error> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(Error::FeaturesFailed {
                report: Box::new(self),
            })
        }
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for outcome in self.failures() {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            let kind = match outcome.kind {
                SyncKind::Initial => "initial",
                SyncKind::Background => "background",
            };
            write!(f, "{} ({kind}): ", outcome.feature)?;
            match &outcome.result {
                FeatureResult::Failed(e) => write!(f, "{e}")?,
                FeatureResult::Skipped { dependency } => {
                    write!(f, "skipped, dependency {dependency} did not complete")?
                }
                FeatureResult::Cancelled => f.write_str("cancelled")?,
                FeatureResult::Completed(_) | FeatureResult::AlreadyCompleted => {}
            }
        }
        Ok(())
    }
}
