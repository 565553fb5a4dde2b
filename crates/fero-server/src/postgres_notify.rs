//! [`PostgresNotifier`]: change notices across server processes through PostgreSQL's
//! `LISTEN`/`NOTIFY`, with no broker of its own.
//!
//! Every write transaction of [`PostgresStorage`](crate::PostgresStorage) sends
//! `pg_notify('fero_changes', '{"user":…,"collection":…,"sync_id":…}')`, which PostgreSQL
//! delivers only when the transaction commits. Each server process keeps one dedicated
//! connection that runs `LISTEN fero_changes` and feeds every notice into its in-process
//! [`ChangeHub`], where the process's `GET /v1/changes` streams listen. A push handled by one
//! process therefore reaches change streams held by every other.
//!
//! # When the connection drops
//! Notices sent while no `LISTEN` is active are lost, so after reconnecting (with a backoff of
//! 100 ms doubling to 5 s) the listener first runs `LISTEN`, then reads the newest `sync_id` of
//! every collection of every user that has subscribed in this process, and publishes them: a
//! collection that moved during the gap is announced (at worst a notice arrives that a client
//! already knew of; it pulls and finds nothing), and everything committed after that read
//! arrives as a notice again. For shared collections, a bucket's key
//! ([`bucket_key`](crate::shared::bucket_key)) hears the last `seq` that wrote into or moved out
//! of the bucket, and every user's own key hears the head of every shared collection, since a
//! membership change announced on it may have been missed (its streams take the readable set
//! again and the client pulls the shared collections once).

use std::collections::HashSet;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fero::SyncId;
use fero_protocol::ChangeNotice;
use futures::{Stream, StreamExt};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::StorageError;
use crate::notify::{ChangeHub, ChangeNotifier, ChangeSubscription};
use crate::postgres::{CHANGES_CHANNEL, NotifyPayload, describe, full_message, parse_url};
use crate::shared::bucket_key;
use crate::user::UserId;

/// The `application_name` of the listening connection, so an operator can find it in
/// `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "fero-server listener";

/// The first wait before reconnecting; short, since notices are lost while disconnected.
const RECONNECT_MIN: Duration = Duration::from_millis(100);

/// The longest wait between reconnection attempts, so a database that is down is not hammered
/// but is found again within seconds of coming back.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Heads of every collection of one user, for catching up after a reconnect.
const SELECT_HEADS: &str =
    "SELECT collection, MAX(sync_id) FROM fero_rows WHERE owner = $1 GROUP BY collection";

/// Heads of every shared collection: a user's own key hears them after a reconnect, since a
/// membership change (announced on the member's own key) may have been missed; the user's
/// streams then take the readable set again and pull the shared collections.
const SELECT_SHARED_HEADS: &str = "SELECT collection, value FROM fero_shared_counters";

/// Per shared collection, the last `seq` that wrote a row into bucket `$1` or moved one out of
/// it: what a bucket's key ([`bucket_key`]) hears after a reconnect.
const SELECT_BUCKET_HEADS: &str = "SELECT c.collection, GREATEST(
         (SELECT MAX(r.seq) FROM fero_shared_rows r
           WHERE r.collection = c.collection AND r.bucket = $1),
         (SELECT MAX(e.seq) FROM fero_shared_exits e
           WHERE e.collection = c.collection AND e.bucket = $1))
     FROM fero_shared_counters c";

/// The [`ChangeNotifier`] of a PostgreSQL deployment: a local [`ChangeHub`] fed by a `LISTEN`
/// connection.
///
/// `publish` goes straight to the local hub (the process that committed tells its own streams at
/// once); the same commit's `NOTIFY` reaches the hub a moment later and coalesces with it.
/// Dropping the notifier stops the listening task and closes its connection.
///
/// # Examples
/// ```no_run
/// use fero_server::{ChangeNotifier, PostgresNotifier, UserId};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let notifier = PostgresNotifier::listen("postgres://postgres@127.0.0.1:5432/fero").await?;
/// let mut alices = notifier.subscribe(&UserId::new("alice"));
/// // ... another process pushes to alice's "contacts" ...
/// let notice = alices.next().await;
/// # drop(notice);
/// # Ok(()) }
/// ```
pub struct PostgresNotifier {
    shared: Arc<Shared>,
    target: String,
    /// Cancels the listening task when the notifier is dropped.
    _stop: DropGuard,
}

/// What the notifier and its listening task share.
#[derive(Default)]
struct Shared {
    hub: ChangeHub,
    /// Users subscribed in this process: whose heads to re-read after a reconnect.
    users: Mutex<HashSet<UserId>>,
    /// `LISTEN` sessions started so far.
    sessions: AtomicU64,
}

impl fmt::Debug for PostgresNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresNotifier")
            .field("target", &self.target)
            .field("sessions", &self.sessions())
            .field("hub", &self.shared.hub)
            .finish()
    }
}

impl PostgresNotifier {
    /// Connects to the database at `url`, runs `LISTEN fero_changes` and keeps listening (and
    /// reconnecting) in a background task until the notifier is dropped. Must be called inside
    /// a tokio runtime.
    ///
    /// # Errors
    /// [`StorageError::BadUrl`], or [`StorageError::Connect`] when the first connection or its
    /// `LISTEN` fails (later losses are retried in the background and logged).
    pub async fn listen(url: &str) -> Result<PostgresNotifier, StorageError> {
        let mut config = parse_url(url)?;
        config.application_name(LISTENER_APPLICATION_NAME);
        let target = describe(&config);
        let shared = Arc::new(Shared::default());
        let session =
            Session::open(&config, &shared)
                .await
                .map_err(|error| StorageError::Connect {
                    target: target.clone(),
                    source: full_message(&error).into(),
                })?;
        let stop = CancellationToken::new();
        tokio::spawn(listen_until_stopped(
            config,
            Arc::clone(&shared),
            session,
            stop.clone(),
        ));
        Ok(PostgresNotifier {
            shared,
            target,
            _stop: stop.drop_guard(),
        })
    }

    /// How many `LISTEN` sessions have been started: 1 after [`listen`](Self::listen), one more
    /// for each reconnection.
    pub fn sessions(&self) -> u64 {
        self.shared.sessions.load(Ordering::SeqCst)
    }
}

impl ChangeNotifier for PostgresNotifier {
    fn publish(&self, user: &UserId, notice: ChangeNotice) {
        self.shared.hub.publish(user, notice);
    }

    fn subscribe(&self, user: &UserId) -> ChangeSubscription {
        self.shared
            .users
            .lock()
            // Only ever inserted into: a poisoned set is still a valid set.
            .unwrap_or_else(PoisonError::into_inner)
            .insert(user.clone());
        self.shared.hub.subscribe(user)
    }
}

impl Shared {
    fn handle(&self, message: AsyncMessage) {
        let AsyncMessage::Notification(notification) = message else {
            return;
        };
        if notification.channel() != CHANGES_CHANNEL {
            return;
        }
        match serde_json::from_str::<NotifyPayload>(notification.payload()) {
            Ok(payload) => self.hub.publish(
                &UserId::new(payload.user),
                ChangeNotice {
                    collection: payload.collection,
                    sync_id: SyncId(payload.sync_id),
                },
            ),
            Err(error) => tracing::warn!(
                %error,
                payload = notification.payload(),
                "ignoring a malformed notice on {CHANGES_CHANNEL}"
            ),
        }
    }

    fn subscribed_users(&self) -> Vec<UserId> {
        let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        users.iter().cloned().collect()
    }
}

/// Why a `LISTEN` session ended or could not start.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Sql(#[from] tokio_postgres::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("a stored sync_id is negative ({value}) in collection {collection:?}")]
    Corrupt { collection: String, value: i64 },
}

type Messages = Pin<Box<dyn Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Send>>;

/// One listening connection: the client for statements, and the connection's message stream,
/// which must be polled for anything (statements included) to make progress.
struct Session {
    client: Client,
    messages: Messages,
}

impl Session {
    /// Connects, runs `LISTEN`, then publishes the heads of every subscribed user's collections
    /// (see the module docs on reconnecting).
    async fn open(config: &Config, shared: &Shared) -> Result<Session, SessionError> {
        let (client, mut connection) = config.connect(NoTls).await?;
        let messages: Messages = Box::pin(futures::stream::poll_fn(move |cx| {
            connection.poll_message(cx)
        }));
        let mut session = Session { client, messages };
        let listen = format!("LISTEN {CHANGES_CHANNEL}");
        drive(
            &mut session.messages,
            shared,
            session.client.batch_execute(&listen),
        )
        .await?;
        shared.sessions.fetch_add(1, Ordering::SeqCst);
        let users = shared.subscribed_users();
        if !users.is_empty() {
            let select = session.prepare(shared, SELECT_HEADS).await?;
            let select_bucket = session.prepare(shared, SELECT_BUCKET_HEADS).await?;
            // Read once: every user's own key hears the same shared heads.
            let shared_heads = drive(
                &mut session.messages,
                shared,
                session.client.query(SELECT_SHARED_HEADS, &[]),
            )
            .await?;
            let shared_heads = heads(&shared_heads)?;
            let bucket_prefix = bucket_key("");
            for user in users {
                let found = match user.as_str().strip_prefix(bucket_prefix.as_str()) {
                    Some(bucket) => heads(&session.query(shared, &select_bucket, bucket).await?)?,
                    None => {
                        let mut found =
                            heads(&session.query(shared, &select, user.as_str()).await?)?;
                        found.extend(shared_heads.iter().cloned());
                        found
                    }
                };
                for (collection, sync_id) in found {
                    shared.hub.publish(
                        &user,
                        ChangeNotice {
                            collection,
                            sync_id,
                        },
                    );
                }
            }
        }
        Ok(session)
    }

    /// Prepares `statement` while the connection's messages are handled.
    async fn prepare(
        &mut self,
        shared: &Shared,
        statement: &str,
    ) -> Result<tokio_postgres::Statement, SessionError> {
        drive(&mut self.messages, shared, self.client.prepare(statement)).await
    }

    /// Runs `statement` with its one text parameter while the connection's messages are
    /// handled.
    async fn query(
        &mut self,
        shared: &Shared,
        statement: &tokio_postgres::Statement,
        parameter: &str,
    ) -> Result<Vec<tokio_postgres::Row>, SessionError> {
        drive(
            &mut self.messages,
            shared,
            self.client.query(statement, &[&parameter]),
        )
        .await
    }

    /// Forwards notices until the connection fails or closes.
    async fn serve(&mut self, shared: &Shared) -> SessionError {
        loop {
            match self.messages.next().await {
                Some(Ok(message)) => shared.handle(message),
                Some(Err(error)) => return SessionError::Sql(error),
                None => return SessionError::Closed,
            }
        }
    }
}

/// The `(collection, head)` rows of a heads query; a collection without a head (a shared
/// collection that never touched the bucket) is left out.
fn heads(rows: &[tokio_postgres::Row]) -> Result<Vec<(String, SyncId)>, SessionError> {
    let mut found = Vec::with_capacity(rows.len());
    for row in rows {
        let collection: String = row.try_get(0)?;
        let Some(value) = row.try_get::<_, Option<i64>>(1)? else {
            continue;
        };
        let sync_id = u64::try_from(value).map_err(|_| SessionError::Corrupt {
            collection: collection.clone(),
            value,
        })?;
        found.push((collection, SyncId(sync_id)));
    }
    Ok(found)
}

/// Awaits `work` (a statement on the session's client) while polling the connection, handling
/// the notices that arrive meanwhile.
async fn drive<T>(
    messages: &mut Messages,
    shared: &Shared,
    work: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, SessionError> {
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return Ok(result?),
            message = messages.next() => match message {
                Some(Ok(message)) => shared.handle(message),
                Some(Err(error)) => return Err(SessionError::Sql(error)),
                None => return Err(SessionError::Closed),
            },
        }
    }
}

/// The listening task: serves the session, reconnects with backoff when it ends, stops when
/// cancelled.
async fn listen_until_stopped(
    config: Config,
    shared: Arc<Shared>,
    mut session: Session,
    stop: CancellationToken,
) {
    loop {
        let ended = tokio::select! {
            () = stop.cancelled() => return,
            ended = session.serve(&shared) => ended,
        };
        tracing::warn!(error = %full_message(&ended), "lost the LISTEN connection to PostgreSQL; reconnecting");
        let mut delay = RECONNECT_MIN;
        session = loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            let opened = tokio::select! {
                () = stop.cancelled() => return,
                opened = Session::open(&config, &shared) => opened,
            };
            match opened {
                Ok(session) => {
                    tracing::info!("listening to PostgreSQL again");
                    break session;
                }
                Err(error) => {
                    delay = (delay * 2).min(RECONNECT_MAX);
                    tracing::warn!(error = %full_message(&error), retry_in = ?delay, "cannot listen to PostgreSQL yet");
                }
            }
        };
    }
}
