//! Per-feature settings: [`FeatureSyncConfig`].

use std::sync::Arc;

use crate::conflict::ConflictResolutionStrategy;
use crate::item::FeatureKey;
use crate::retry::BackoffStrategy;

/// The default page size: large enough that per-page costs vanish, small enough that memory stays
/// flat (one page in flight and one being applied).
pub const DEFAULT_BATCH_SIZE: usize = 1_000;

/// How one feature syncs: priority, dependencies, page size, and optional overrides of the
/// engine's retry backoff and conflict strategy.
///
/// # Examples
/// ```
/// use fero::{ConflictResolutionStrategy, FeatureSyncConfig};
/// let messages = FeatureSyncConfig::new()
///     .priority(5)
///     .depends_on("contacts")
///     .batch_size(500)
///     .conflict_strategy(ConflictResolutionStrategy::ServerWins);
/// assert_eq!(messages.dependencies()[0].as_str(), "contacts");
/// ```
#[derive(Clone, Debug)]
pub struct FeatureSyncConfig {
    pub(crate) priority: i32,
    pub(crate) dependencies: Vec<FeatureKey>,
    pub(crate) batch_size: usize,
    pub(crate) backoff: Option<Arc<dyn BackoffStrategy>>,
    pub(crate) strategy: Option<ConflictResolutionStrategy>,
}

impl Default for FeatureSyncConfig {
    fn default() -> Self {
        FeatureSyncConfig {
            priority: 0,
            dependencies: Vec::new(),
            batch_size: DEFAULT_BATCH_SIZE,
            backoff: None,
            strategy: None,
        }
    }
}

impl FeatureSyncConfig {
    /// Priority 0, no dependencies, batch size [`DEFAULT_BATCH_SIZE`], engine defaults otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Among features ready at the same time, higher priority starts first.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// This feature starts only after `feature` completed in the same run.
    pub fn depends_on(mut self, feature: impl Into<FeatureKey>) -> Self {
        self.dependencies.push(feature.into());
        self
    }

    /// Items per page (validated non-zero by `build()`).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// A backoff for this feature instead of the engine's.
    pub fn backoff(mut self, backoff: impl BackoffStrategy) -> Self {
        self.backoff = Some(Arc::new(backoff));
        self
    }

    /// A conflict strategy for this feature instead of the engine's.
    pub fn conflict_strategy(mut self, strategy: ConflictResolutionStrategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// The configured dependencies.
    pub fn dependencies(&self) -> &[FeatureKey] {
        &self.dependencies
    }

    /// The configured priority.
    pub fn get_priority(&self) -> i32 {
        self.priority
    }

    /// The configured batch size.
    pub fn get_batch_size(&self) -> usize {
        self.batch_size
    }
}
