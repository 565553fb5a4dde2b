//! The one connection every handle shares, and how work reaches it: a `std::sync::Mutex` taken
//! only inside `tokio::task::spawn_blocking`, never on an async worker thread and never across an
//! `.await`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use fero::Clock;
use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::error::{Error, Result};

/// The shared database: one connection behind a mutex, and the facts read once at open.
#[derive(Debug)]
pub(crate) struct Db {
    conn: Mutex<Connection>,
    /// This database's device id (see `schema::device_id`).
    pub(crate) device_id: String,
    /// The file, `None` in memory.
    pub(crate) path: Option<PathBuf>,
    /// Where conflict log records read their time.
    pub(crate) clock: Arc<dyn Clock>,
}

impl Db {
    pub(crate) fn new(
        conn: Connection,
        device_id: String,
        path: Option<PathBuf>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Db {
            conn: Mutex::new(conn),
            device_id,
            path,
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A poisoned lock means a closure panicked while holding the connection. Any transaction
        // it had open was rolled back when its guard dropped during the unwind, so the connection
        // is in autocommit mode with committed state only: safe to keep using.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with the connection on tokio's blocking pool.
    ///
    /// A panic inside `f` is resumed in the caller: it is a bug, not an error to report.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, operation: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let db = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || f(&mut db.lock()));
        match task.await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(Error::TaskCancelled {
                operation: operation.to_owned(),
            }),
        }
    }

    /// Runs `f` inside one `BEGIN IMMEDIATE` transaction on the blocking pool: committed when `f`
    /// returns `Ok`, rolled back (by the transaction guard's drop) when it returns `Err` or panics.
    ///
    /// IMMEDIATE takes the write lock up front, so a transaction that reads and then writes can
    /// never fail halfway with "database is locked" when another process wrote in between.
    pub(crate) async fn write<T, F>(self: &Arc<Self>, operation: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let op = operation.to_owned();
        self.run(operation, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(Error::sqlite(format!("begin a transaction to {op}")))?;
            let value = f(&tx)?;
            tx.commit()
                .map_err(Error::sqlite(format!("commit the transaction to {op}")))?;
            Ok(value)
        })
        .await
    }

    /// Runs `f` inside one read (deferred) transaction, so its statements see one snapshot.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, operation: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let op = operation.to_owned();
        self.run(operation, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .map_err(Error::sqlite(format!("begin a read to {op}")))?;
            f(&tx)
        })
        .await
    }
}
