//! The command line: [`Options`] and the conflict [`Strategy`] it chooses.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use fero::ConflictResolutionStrategy;

use crate::error::DemoError;

/// The fewest contacts a run accepts: the offline edits touch 47 distinct contacts (conflicts,
/// edits on one side only, a deletion), and they must not overlap.
pub const MIN_CONTACTS: u64 = 100;

/// The fewest messages a run accepts: device B's initial sync of `messages` is cancelled half way,
/// which needs pages before and after the half.
pub const MIN_MESSAGES: u64 = 100;

/// The whole sync story in one command: a server, two devices, a cancelled and resumed initial
/// sync, offline edits with conflicts, a live change, a convergence check, and a team's data
/// shared between two users.
///
/// # Examples
/// ```
/// use clap::Parser;
/// let options = fero_demo::Options::parse_from(["fero-demo", "--contacts", "2000", "--json"]);
/// assert_eq!(options.contacts, 2_000);
/// assert_eq!(options.messages, 200_000);
/// assert!(options.json);
/// ```
#[derive(Clone, Debug, Parser)]
#[command(name = "fero-demo", version, about, long_about = None)]
pub struct Options {
    /// Contacts seeded on the server (an initial and background feature).
    #[arg(long, default_value_t = 50_000)]
    pub contacts: u64,

    /// Messages seeded on the server (initial and background; depends on contacts).
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,

    /// How conflicting offline edits are resolved.
    #[arg(long, value_enum, default_value_t = Strategy::HighestVersion)]
    pub strategy: Strategy,

    /// Keep the server's and devices' SQLite files in DIR (default: a temporary folder removed at
    /// exit). DIR must not hold files of an earlier run.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Print one JSON summary object on stdout instead of the human output.
    #[arg(long)]
    pub json: bool,

    /// Seeds which items get edited offline and fero's retry jitter: the same seed replays the
    /// same story.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl Options {
    /// Options with the defaults of the command line (50k contacts, 200k messages, highest
    /// version wins, a temporary folder, human output, seed 42).
    pub fn new() -> Self {
        Options {
            contacts: 50_000,
            messages: 200_000,
            strategy: Strategy::HighestVersion,
            data_dir: None,
            json: false,
            seed: 42,
        }
    }

    /// Checks the sizes.
    ///
    /// # Errors
    /// [`DemoError::TooSmall`] when `contacts` or `messages` is below [`MIN_CONTACTS`] or
    /// [`MIN_MESSAGES`].
    pub fn validate(&self) -> Result<(), DemoError> {
        for (option, value, min, why) in [
            (
                "--contacts",
                self.contacts,
                MIN_CONTACTS,
                "the offline edits touch 47 distinct contacts",
            ),
            (
                "--messages",
                self.messages,
                MIN_MESSAGES,
                "the resumed initial sync needs pages before and after the half",
            ),
        ] {
            if value < min {
                return Err(DemoError::TooSmall {
                    option,
                    value,
                    min,
                    why,
                });
            }
        }
        Ok(())
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

/// The conflict strategy, as the command line names it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// The higher version wins; a tie goes to the server.
    HighestVersion,
    /// The server's state always wins.
    Server,
    /// The local edit always wins.
    Client,
}

impl Strategy {
    /// fero's strategy.
    pub fn to_fero(self) -> ConflictResolutionStrategy {
        match self {
            Strategy::HighestVersion => ConflictResolutionStrategy::HighestVersionWins,
            Strategy::Server => ConflictResolutionStrategy::ServerWins,
            Strategy::Client => ConflictResolutionStrategy::ClientWins,
        }
    }

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::HighestVersion => "highest-version",
            Strategy::Server => "server",
            Strategy::Client => "client",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_parses_from_its_command_line_name() {
        for strategy in [Strategy::HighestVersion, Strategy::Server, Strategy::Client] {
            let options = Options::parse_from(["fero-demo", "--strategy", strategy.name()]);
            assert_eq!(options.strategy, strategy);
        }
    }

    #[test]
    fn sizes_below_the_minimum_are_refused_with_the_option_named() {
        let options = Options {
            contacts: 10,
            ..Options::new()
        };
        let error = options.validate().unwrap_err().to_string();
        assert!(error.contains("--contacts 10"), "{error}");
        assert!(Options::new().validate().is_ok());
    }

    #[test]
    fn the_defaults_of_new_match_the_command_line_defaults() {
        let parsed = Options::parse_from(["fero-demo"]);
        let new = Options::new();
        assert_eq!(
            (
                parsed.contacts,
                parsed.messages,
                parsed.strategy,
                parsed.seed
            ),
            (new.contacts, new.messages, new.strategy, new.seed)
        );
        assert_eq!((parsed.json, parsed.data_dir), (new.json, new.data_dir));
    }
}
