//! placeholder while the orchestrator is written
#![allow(missing_docs, missing_debug_implementations)]
pub struct FeroSync;
pub struct FeroSyncBuilder;
pub struct RunReport;
