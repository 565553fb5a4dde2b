//! [`DataFolder`]: where the SQLite files live, a temporary folder removed at exit unless the
//! user chose one with `--data-dir`.

use std::path::{Path, PathBuf};

use crate::error::DemoError;

/// The server's database file.
pub const SERVER_DB: &str = "server.db";
/// Device A's store.
pub const DEVICE_A_DB: &str = "device-a.db";
/// Device B's store.
pub const DEVICE_B_DB: &str = "device-b.db";
/// Alice's device's store (step 6).
pub const ALICE_DB: &str = "alice.db";
/// Bob's device's store (step 6).
pub const BOB_DB: &str = "bob.db";

/// Every database the demo creates.
pub const DATABASES: [&str; 5] = [SERVER_DB, DEVICE_A_DB, DEVICE_B_DB, ALICE_DB, BOB_DB];

/// The folder of the run's SQLite files.
#[derive(Debug)]
pub enum DataFolder {
    /// Removed (with every file in it) when dropped.
    Temporary(tempfile::TempDir),
    /// The user's folder: kept.
    Kept(PathBuf),
}

impl DataFolder {
    /// A new temporary folder, or `dir` (created if needed) when given.
    ///
    /// # Errors
    /// [`DemoError::DataDir`] when the folder cannot be created, [`DemoError::DataDirInUse`]
    /// when `dir` already holds one of the demo's databases: the demo never writes over a file it
    /// did not create.
    pub fn prepare(dir: Option<&Path>) -> Result<DataFolder, DemoError> {
        match dir {
            None => tempfile::Builder::new()
                .prefix("fero-demo-")
                .tempdir()
                .map(DataFolder::Temporary)
                .map_err(|source| DemoError::DataDir {
                    path: std::env::temp_dir(),
                    source,
                }),
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| DemoError::DataDir {
                    path: dir.to_owned(),
                    source,
                })?;
                for file in DATABASES {
                    let path = dir.join(file);
                    if path.exists() {
                        return Err(DemoError::DataDirInUse { file: path });
                    }
                }
                Ok(DataFolder::Kept(dir.to_owned()))
            }
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        match self {
            DataFolder::Temporary(dir) => dir.path(),
            DataFolder::Kept(dir) => dir,
        }
    }

    /// `true` for the user's folder.
    pub fn is_kept(&self) -> bool {
        matches!(self, DataFolder::Kept(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_folder_is_removed_when_dropped() {
        let folder = DataFolder::prepare(None).unwrap();
        let path = folder.path().to_owned();
        std::fs::write(path.join(SERVER_DB), b"x").unwrap();
        assert!(!folder.is_kept());
        drop(folder);
        assert!(!path.exists());
    }

    #[test]
    fn a_chosen_folder_with_an_earlier_run_is_refused_and_kept_intact() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("run");
        let folder = DataFolder::prepare(Some(&dir)).unwrap();
        assert!(folder.is_kept());
        std::fs::write(dir.join(DEVICE_B_DB), b"earlier").unwrap();
        drop(folder);
        assert!(dir.join(DEVICE_B_DB).exists());
        let error = DataFolder::prepare(Some(&dir)).unwrap_err();
        assert!(matches!(error, DemoError::DataDirInUse { .. }), "{error}");
        assert_eq!(std::fs::read(dir.join(DEVICE_B_DB)).unwrap(), b"earlier");
    }
}
