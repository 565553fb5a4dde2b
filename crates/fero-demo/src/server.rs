//! Step 1: the reference server on a loopback port, with SQLite storage, seeded for one user,
//! and with the demo's sync rules (step 6 shares a team's tasks; see [`crate::sharing`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fero_protocol::{Change, ChangeNotice, ChangeOutcome, MutationId};
use fero_server::shared::{Sharing, bucket_key};
use fero_server::{Rules, SeedRow, Server, SqliteStorage, Tokens, UserId};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::data::{self, SEED_PAGE};
use crate::error::DemoError;

/// The one user both devices sign in as.
pub const USER: &str = "ada";

/// Device A's bearer token (the server maps it to [`USER`]).
pub const TOKEN_A: &str = "demo-token-device-a";
/// Device B's bearer token (the server maps it to [`USER`]).
pub const TOKEN_B: &str = "demo-token-device-b";

/// Alice's bearer token (step 6: a member of the crew).
pub const TOKEN_ALICE: &str = "demo-token-alice";
/// Bob's bearer token (step 6: added to the crew, then removed).
pub const TOKEN_BOB: &str = "demo-token-bob";

/// The device id of the server operator's console, on the membership rows it writes.
const OPERATOR_CONSOLE: &str = "operator-console";

/// How often an idle change stream gets a keep-alive comment. Short, so a dead connection is
/// noticed quickly during the demo's live step.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// What seeding wrote.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct SeedTotals {
    /// Rows written, every collection.
    pub rows: u64,
    /// Time taken.
    pub seconds: f64,
}

/// The running reference server.
#[derive(Debug)]
pub struct DemoServer {
    server: Server,
    rules: Rules,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    serving: JoinHandle<Result<(), fero_server::ServeError>>,
}

impl DemoServer {
    /// Opens (creates) the SQLite database at `db` and serves it on `127.0.0.1`, port 0, with
    /// the demo's sync rules ([`sharing::RULES`](crate::sharing::RULES)): `tasks` and `members`
    /// are shared per team, every other collection stays private to its user.
    ///
    /// # Errors
    /// [`DemoError::Rules`], [`DemoError::ServerStorage`], [`DemoError::Tokens`],
    /// [`DemoError::ServerBuild`] or [`DemoError::Listen`].
    pub async fn start(db: &Path) -> Result<DemoServer, DemoError> {
        let rules = crate::sharing::rules()?;
        let storage = SqliteStorage::open(db).map_err(|source| DemoError::ServerStorage {
            action: format!("open {}", db.display()),
            source,
        })?;
        let tokens = Tokens::from_pairs([
            (TOKEN_A, USER),
            (TOKEN_B, USER),
            (TOKEN_ALICE, crate::sharing::ALICE),
            (TOKEN_BOB, crate::sharing::BOB),
        ])
        .map_err(|source| DemoError::Tokens { source })?;
        let server = Server::builder()
            .storage(storage)
            .tokens(tokens)
            .sharing(Arc::new(rules.clone()))
            .keep_alive(KEEP_ALIVE)
            .build()
            .map_err(|source| DemoError::ServerBuild { source })?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|source| DemoError::Listen { source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DemoError::Listen { source })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.clone().serve(listener, async move {
            // A dropped sender stops the server as well.
            let _ = stopped.await;
        }));
        Ok(DemoServer {
            server,
            rules,
            addr,
            stop: Some(stop),
            serving,
        })
    }

    /// The base URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Seeds the three collections through the server's fast path (one transaction per
    /// [`SEED_PAGE`] rows, no HTTP) and announces them on the change stream.
    ///
    /// # Errors
    /// [`DemoError::ServerStorage`] naming the collection.
    pub async fn seed(&self, contacts: u64, messages: u64) -> Result<SeedTotals, DemoError> {
        let started = Instant::now();
        let mut rows = 0;
        rows += self
            .seed_collection(data::PREFERENCES, data::preference_rows())
            .await?;
        rows += self
            .seed_collection(data::CONTACTS, data::contact_rows(contacts))
            .await?;
        rows += self
            .seed_collection(data::MESSAGES, data::message_rows(messages, contacts))
            .await?;
        Ok(SeedTotals {
            rows,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    async fn seed_collection(
        &self,
        collection: &str,
        rows: impl IntoIterator<Item = SeedRow>,
    ) -> Result<u64, DemoError> {
        let report = self
            .server
            .seed(&UserId::new(USER), collection, rows, SEED_PAGE)
            .await
            .map_err(|source| DemoError::ServerStorage {
                action: format!("seed {collection}"),
                source,
            })?;
        Ok(report.written)
    }

    /// The count and digest of the user's live rows in `collection`, read from storage.
    ///
    /// # Errors
    /// [`DemoError::ServerStorage`].
    pub async fn digest(&self, collection: &str) -> Result<fero_protocol::Digest, DemoError> {
        self.server
            .storage()
            .digest(&UserId::new(USER), collection)
            .await
            .map_err(|source| DemoError::ServerStorage {
                action: format!("digest {collection}"),
                source,
            })
    }

    /// The server operator makes `user` a member of `team`: a `members` row written straight into
    /// storage, as an operator's console would, and announced on the change stream like a push.
    ///
    /// The rules grant a team's bucket to its members, and only members may write a team's
    /// membership rows; the first member of a team therefore cannot come from a device (static
    /// tokens carry no claims). The console's access carries the claim `teams: [team]`, which
    /// the rules' `[access].read` turns into the team's bucket.
    ///
    /// # Errors
    /// [`DemoError::ServerStorage`] when storage fails, [`DemoError::OperatorRefused`] when the
    /// rules refuse the row.
    pub async fn add_member(&self, team: &str, user: &str) -> Result<(), DemoError> {
        let action = format!("write the membership of {user} in {team}");
        let access = self.rules.access(
            &UserId::new("operator"),
            &serde_json::json!({ "teams": [team] }),
        );
        let change = Change {
            id: crate::sharing::member_id(team, user),
            base_version: None,
            mutation_id: MutationId::new(OPERATOR_CONSOLE, 1),
            deleted: false,
            data: crate::sharing::member_data(team, user),
        };
        let pushed = self
            .server
            .storage()
            .shared_push(access, crate::sharing::MEMBERS, vec![change])
            .await
            .map_err(|source| DemoError::ServerStorage {
                action: action.clone(),
                source,
            })?;
        for result in &pushed.outcome.results {
            if !matches!(result.outcome, ChangeOutcome::Accepted { .. }) {
                return Err(DemoError::OperatorRefused {
                    action,
                    outcome: format!("{:?}", result.outcome),
                });
            }
        }
        // As the server's own push does: listeners of the touched buckets, and the users whose
        // memberships changed (their streams subscribe again), hear of the write.
        if let Some(sync_id) = pushed.outcome.last_written {
            let notice = ChangeNotice {
                collection: crate::sharing::MEMBERS.to_owned(),
                sync_id,
            };
            let notifier = self.server.notifier();
            for bucket in &pushed.touched {
                notifier.publish(&bucket_key(bucket), notice.clone());
            }
            for user in &pushed.regranted {
                notifier.publish(&UserId::new(user), notice.clone());
            }
        }
        Ok(())
    }

    /// Stops accepting connections, ends open change streams, finishes requests in flight.
    ///
    /// # Errors
    /// [`DemoError::Serve`] when serving had failed.
    pub async fn shutdown(mut self) -> Result<(), DemoError> {
        if let Some(stop) = self.stop.take() {
            // The receiver is gone only when the server already stopped.
            let _ = stop.send(());
        }
        match (&mut self.serving).await {
            Ok(result) => result.map_err(|source| DemoError::Serve { source }),
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            // Aborted only when the runtime shuts down: nothing is left to stop.
            Err(_) => Ok(()),
        }
    }
}
