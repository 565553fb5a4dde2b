//! Live sync: [`LiveTriggers`] turns the change stream into sync triggers, so an edit pushed by
//! one device reaches the others within the time of a pull, with no poll timer.
//!
//! | stream item | triggers |
//! |---|---|
//! | [`StreamEvent::Change`] of a followed collection | that collection's features |
//! | [`StreamEvent::Connected`] (first connection and every reconnect) | every followed feature: notices sent while disconnected are lost, one cycle each catches up |
//! | [`StreamEvent::Disconnected`] | nothing (the reconnect that follows triggers) |
//! | `Err(_)` (the stream ended) | nothing; the task ends and [`LiveTriggers::finished`] returns the error |
//!
//! Triggers coalesce in [`FeroSync::trigger`]: a burst of notices for one collection costs at
//! most one cycle in flight and one queued.

use std::collections::BTreeMap;
use std::fmt;

use fero::{FeatureKey, FeroSync};
use fero_protocol::RemoteError;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::changes::{ChangeStream, StreamEvent};
use crate::remote::HttpRemote;

/// A running task that turns change notices into sync triggers (see the [module docs](self)).
///
/// Dropping the handle stops the task, as do [`stop`](Self::stop) and cancelling its
/// [`cancellation_token`](Self::cancellation_token). The task also ends by itself when the
/// stream ends with an error, or when the trigger reports that the [`FeroSync`] was disposed.
pub struct LiveTriggers {
    token: CancellationToken,
    guard: DropGuard,
    task: JoinHandle<Result<(), RemoteError>>,
}

impl fmt::Debug for LiveTriggers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveTriggers")
            .field("stopped", &self.token.is_cancelled())
            .field("finished", &self.task.is_finished())
            .finish_non_exhaustive()
    }
}

/// Collection name → the feature keys that sync it.
type FeatureMap = BTreeMap<String, Vec<FeatureKey>>;

fn feature_map<I, C, K>(features: I) -> FeatureMap
where
    I: IntoIterator<Item = (C, K)>,
    C: Into<String>,
    K: Into<FeatureKey>,
{
    let mut map = FeatureMap::new();
    for (collection, feature) in features {
        let keys = map.entry(collection.into()).or_default();
        let feature = feature.into();
        if !keys.contains(&feature) {
            keys.push(feature);
        }
    }
    map
}

/// What a trigger call answered.
enum Triggered {
    Done,
    /// The engine is gone: stop listening.
    Disposed,
}

impl LiveTriggers {
    /// Spawns the task on the current tokio runtime: it reads `stream` and calls `trigger` for
    /// the features of `features` (`(collection, feature key)` pairs; a collection may be synced
    /// by several features) as the [module docs](self) describe.
    ///
    /// `trigger` is [`FeroSync::trigger`] in an app (see [`HttpRemote::live_triggers`]); an
    /// `Err(fero::Error::Disposed)` from it stops the task, any other error is logged and the
    /// task goes on.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn<I, C, K, F>(stream: ChangeStream, features: I, trigger: F) -> LiveTriggers
    where
        I: IntoIterator<Item = (C, K)>,
        C: Into<String>,
        K: Into<FeatureKey>,
        F: Fn(&FeatureKey) -> fero::Result<()> + Send + Sync + 'static,
    {
        let token = CancellationToken::new();
        let features = feature_map(features);
        let task = tokio::spawn(listen(stream, features, trigger, token.clone()));
        LiveTriggers {
            guard: token.clone().drop_guard(),
            token,
            task,
        }
    }

    /// Stops the task (it ends at once, closing the stream's connection).
    pub fn stop(&self) {
        self.token.cancel();
    }

    /// The token that stops the task; cancel it to stop, or tie it to an app's own shutdown.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// `true` once the task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the task to end: after [`stop`](Self::stop), when the engine was disposed, or
    /// when the stream ended. Dropping this future stops the task.
    ///
    /// # Errors
    /// The stream's final [`RemoteError`] when it ended for good (a refused token, a server that
    /// has no change stream, a reconnect backoff that gave up).
    pub async fn finished(self) -> Result<(), RemoteError> {
        let LiveTriggers { guard, task, .. } = self;
        let result = task.await;
        drop(guard);
        match result {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Aborted only when the runtime shuts down: nothing is left to report.
            Err(_) => Ok(()),
        }
    }
}

async fn listen<F>(
    mut stream: ChangeStream,
    features: FeatureMap,
    trigger: F,
    token: CancellationToken,
) -> Result<(), RemoteError>
where
    F: Fn(&FeatureKey) -> fero::Result<()> + Send + Sync + 'static,
{
    let every_feature = || features.values().flatten();
    loop {
        let item = tokio::select! {
            () = token.cancelled() => return Ok(()),
            item = stream.next() => item,
        };
        let keys: Vec<&FeatureKey> = match item {
            None => return Ok(()),
            Some(Err(error)) => return Err(error),
            Some(Ok(StreamEvent::Connected)) => {
                tracing::debug!("change stream connected: syncing every followed feature once");
                every_feature().collect()
            }
            Some(Ok(StreamEvent::Change(notice))) => match features.get(&notice.collection) {
                Some(keys) => keys.iter().collect(),
                None => {
                    tracing::trace!(collection = %notice.collection, "notice for an unfollowed collection");
                    Vec::new()
                }
            },
            Some(Ok(StreamEvent::Disconnected { error, retry_in })) => {
                tracing::info!(%error, ?retry_in, "change stream disconnected; reconnecting");
                Vec::new()
            }
        };
        for key in keys {
            if let Triggered::Disposed = call_trigger(&trigger, key) {
                return Ok(());
            }
        }
    }
}

fn call_trigger<F>(trigger: &F, key: &FeatureKey) -> Triggered
where
    F: Fn(&FeatureKey) -> fero::Result<()>,
{
    match trigger(key) {
        Ok(()) => Triggered::Done,
        Err(fero::Error::Disposed) => {
            tracing::debug!("sync engine disposed: live triggers stop");
            Triggered::Disposed
        }
        Err(error) => {
            tracing::warn!(feature = %key, %error, "a live trigger was refused");
            Triggered::Done
        }
    }
}

impl HttpRemote {
    /// Follows this remote's change stream and triggers `sync`'s features as their collections
    /// change: `features` are `(collection, feature key)` pairs, such as `[("contacts",
    /// "contacts")]`. Call it after [`FeroSync::start_sync`] (a trigger also starts the
    /// engine's background loop by itself). See the [`live`](crate::live) module for what
    /// triggers what.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn example(sync: fero::FeroSync) -> Result<(), Box<dyn std::error::Error>> {
    /// let remote = fero_http::HttpRemote::new("http://127.0.0.1:7700", "secret-token")?;
    /// sync.start_sync().await?;
    /// let live = remote.live_triggers(sync.clone(), [("contacts", "contacts")]);
    /// // ... the app runs; edits from other devices arrive within a pull's time ...
    /// live.stop();
    /// # Ok(()) }
    /// # fn main() { let _ = example; }
    /// ```
    pub fn live_triggers<I, C, K>(&self, sync: FeroSync, features: I) -> LiveTriggers
    where
        I: IntoIterator<Item = (C, K)>,
        C: Into<String>,
        K: Into<FeatureKey>,
    {
        LiveTriggers::spawn(self.changes(), features, move |key: &FeatureKey| {
            sync.trigger(key.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collection_maps_to_each_of_its_features_once() {
        let map = feature_map([
            ("contacts", "contacts"),
            ("contacts", "contacts-index"),
            ("contacts", "contacts"),
            ("notes", "notes"),
        ]);
        assert_eq!(
            map["contacts"],
            vec![
                FeatureKey::new("contacts"),
                FeatureKey::new("contacts-index")
            ]
        );
        assert_eq!(map["notes"], vec![FeatureKey::new("notes")]);
    }
}
