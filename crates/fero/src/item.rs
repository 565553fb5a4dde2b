//! The items fero moves: identifiers, versions, and the traits a local and a server item implement.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The name of a synchronised feature ("contacts", "messages").
///
/// Cheap to clone (an `Arc<str>` inside). Keys are compared by their text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FeatureKey(Arc<str>);

impl FeatureKey {
    /// Creates a key from its name.
    pub fn new(name: impl AsRef<str>) -> Self {
        FeatureKey(Arc::from(name.as_ref()))
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The empty key, so that structs holding a key (such as `FeatureStatus`) can derive `Default`.
impl Default for FeatureKey {
    fn default() -> Self {
        FeatureKey::new("")
    }
}

impl fmt::Debug for FeatureKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for FeatureKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for FeatureKey {
    fn from(value: &str) -> Self {
        FeatureKey::new(value)
    }
}

impl From<String> for FeatureKey {
    fn from(value: String) -> Self {
        FeatureKey(Arc::from(value))
    }
}

impl From<&FeatureKey> for FeatureKey {
    fn from(value: &FeatureKey) -> Self {
        value.clone()
    }
}

// Ord, Eq and Hash all come from the key's text, so a map keyed by FeatureKey can be indexed with
// a plain &str.
impl std::borrow::Borrow<str> for FeatureKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for FeatureKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A server-assigned, monotonic position in a feature's change feed (Dart's `BigInt syncId`).
///
/// Pulls ask for changes after a `SyncId`; the server hands out larger ones for later commits.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SyncId(pub u64);

impl fmt::Display for SyncId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A server-assigned item version: `1` on insert, `+1` for every accepted write.
///
/// Versions, never client clocks, decide conflicts.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(pub u64);

impl Version {
    /// The version an accepted write on top of `self` receives.
    pub fn next(self) -> Version {
        Version(self.0.saturating_add(1))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Milliseconds since the Unix epoch, UTC.
///
/// Informational only (protocol notes §5): two devices' clocks can disagree by hours, so fero never
/// orders or resolves anything by a `Timestamp`.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }
}

/// The bounds every synced item type carries: cloneable, thread-safe, and serialisable so that a
/// parked conflict or a quarantined change can be stored and shown.
pub trait Item: Clone + fmt::Debug + Send + Sync + Serialize + DeserializeOwned + 'static {}

impl<T> Item for T where T: Clone + fmt::Debug + Send + Sync + Serialize + DeserializeOwned + 'static
{}

/// An item as the local store holds it.
///
/// # Contract
/// - [`version`](LocalItem::version) is the version of the local copy: for an unmodified copy the
///   server's version; a local edit makes it higher than [`base_version`](LocalItem::base_version)
///   (stores usually add one per edit). [`ConflictResolutionStrategy::HighestVersionWins`]
///   compares it with the server's version.
/// - [`base_version`](LocalItem::base_version) is the server version a pending local edit was made
///   on (`None` for an item the server has never seen). A pull that brings exactly this version is
///   not a conflict (it is the device's own write, or the state it edited).
///
/// [`ConflictResolutionStrategy::HighestVersionWins`]: crate::ConflictResolutionStrategy::HighestVersionWins
pub trait LocalItem: Item {
    /// The item's id, unique within its feature.
    fn id(&self) -> &str;
    /// The version of the local copy.
    fn version(&self) -> Version;
    /// `true` while the item has a local edit the server has not acknowledged.
    fn locally_modified(&self) -> bool;
    /// The server version the pending local edit was made on; `None` for a new item.
    fn base_version(&self) -> Option<Version>;
}

/// An item as the server sends it.
pub trait ServerItem: Item {
    /// The item's id, unique within its feature.
    fn id(&self) -> &str;
    /// The item's position in the feature's change feed.
    fn sync_id(&self) -> SyncId;
    /// The server-assigned version.
    fn version(&self) -> Version;
    /// When the server last wrote the item (informational).
    fn updated_at(&self) -> Option<Timestamp> {
        None
    }
}

/// An item travelling through a sync, with its tombstone flag: deletions sync like any change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPayload<T> {
    /// The item (for a tombstone, the last state the server knows, or at least its id and version).
    pub item: T,
    /// `true` when the item was deleted.
    #[serde(default)]
    pub deleted: bool,
}

impl<T> SyncPayload<T> {
    /// A live item.
    pub fn new(item: T) -> Self {
        SyncPayload {
            item,
            deleted: false,
        }
    }

    /// A tombstone for a deleted item.
    pub fn tombstone(item: T) -> Self {
        SyncPayload {
            item,
            deleted: true,
        }
    }
}
