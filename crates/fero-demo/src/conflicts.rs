//! The conflict table of step 4: one [`ConflictRow`] per `ConflictResolved` event.

use fero::{ConflictEvent, ConflictOutcome};
use serde::Serialize;
use serde_json::Value;

use crate::data::display_value;

/// The widest value shown in the table.
const VALUE_WIDTH: usize = 38;

/// One conflict, as the table and the JSON summary show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConflictRow {
    /// The device that met it.
    pub device: String,
    /// The collection.
    pub feature: String,
    /// The item.
    pub id: String,
    /// The local copy's version.
    pub local_version: u64,
    /// The local copy's value (its `name`, for a contact).
    pub local_value: String,
    /// The server's version (`None` when the server has no such item).
    pub server_version: Option<u64>,
    /// The server's value (`"(deleted)"` for a tombstone, `"(none)"` when absent).
    pub server_value: String,
    /// The strategy that decided it.
    pub strategy: String,
    /// What became of it ("local kept", "server kept", "merged", "parked").
    pub outcome: String,
}

impl ConflictRow {
    /// The row of `event`, met by `device`.
    pub fn new(device: &str, event: &ConflictEvent) -> Self {
        let server_value = if event.server.is_null() {
            "(none)".to_owned()
        } else if event.server_deleted {
            "(deleted)".to_owned()
        } else {
            value_of(&event.server)
        };
        ConflictRow {
            device: device.to_owned(),
            feature: event.feature.to_string(),
            id: event.id.clone(),
            local_version: event.local_version.0,
            local_value: value_of(&event.local),
            server_version: event.server_version.map(|version| version.0),
            server_value,
            strategy: event.strategy.to_string(),
            outcome: event.outcome.to_string(),
        }
    }
}

/// The shown value of a serialised item: its content's `name` (or `body`, `value`), cut to the
/// table's width. Both fero-sqlite's local documents and the protocol's documents keep their
/// content under `data`.
fn value_of(item: &Value) -> String {
    display_value(item.get("data").unwrap_or(item), VALUE_WIDTH)
}

/// Conflicts by outcome.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    /// The local edit was kept.
    pub local_kept: usize,
    /// The server's state was kept.
    pub server_kept: usize,
    /// A merge replaced both.
    pub merged: usize,
    /// Parked for the app.
    pub parked: usize,
}

impl OutcomeCounts {
    /// Counts `outcomes`.
    pub fn of(outcomes: impl IntoIterator<Item = ConflictOutcome>) -> Self {
        let mut counts = OutcomeCounts::default();
        for outcome in outcomes {
            match outcome {
                ConflictOutcome::LocalKept => counts.local_kept += 1,
                ConflictOutcome::ServerKept => counts.server_kept += 1,
                ConflictOutcome::Merged => counts.merged += 1,
                // Parked, and any outcome a later fero adds: it did not settle on either side.
                _ => counts.parked += 1,
            }
        }
        counts
    }
}

/// The table's lines: a header, a rule, one line per conflict.
pub fn table(rows: &[ConflictRow]) -> Vec<String> {
    let id_width = rows
        .iter()
        .map(|row| row.id.len())
        .chain([2])
        .max()
        .unwrap_or(2);
    let mut lines = vec![format!(
        "  {:<3} {:<id_width$}  {:<w$}  {:<w$}  {:<19}  {}",
        "dev",
        "id",
        "local (version: value)",
        "server (version: value)",
        "strategy",
        "outcome",
        w = VALUE_WIDTH + 4,
    )];
    lines.push(format!(
        "  {}",
        "─".repeat(3 + 1 + id_width + 2 + 2 * (VALUE_WIDTH + 4 + 2) + 19 + 2 + 11)
    ));
    for row in rows {
        let server = match row.server_version {
            Some(version) => format!("v{version}: {}", row.server_value),
            None => row.server_value.clone(),
        };
        lines.push(format!(
            "  {:<3} {:<id_width$}  {:<w$}  {:<w$}  {:<19}  {}",
            row.device,
            row.id,
            format!("v{}: {}", row.local_version, row.local_value),
            server,
            row.strategy,
            row.outcome,
            w = VALUE_WIDTH + 4,
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(id: &str, server_version: Option<u64>) -> ConflictRow {
        ConflictRow {
            device: "B".into(),
            feature: "contacts".into(),
            id: id.into(),
            local_version: 3,
            local_value: "Ada (B, 2nd edit)".into(),
            server_version,
            server_value: "Ada (A)".into(),
            strategy: "highest-version-wins".into(),
            outcome: "local kept".into(),
        }
    }

    #[test]
    fn outcome_counts_split_by_outcome() {
        let counts = OutcomeCounts::of([
            ConflictOutcome::LocalKept,
            ConflictOutcome::ServerKept,
            ConflictOutcome::ServerKept,
            ConflictOutcome::Parked,
        ]);
        assert_eq!(
            counts,
            OutcomeCounts {
                local_kept: 1,
                server_kept: 2,
                merged: 0,
                parked: 1
            }
        );
    }

    #[test]
    fn the_table_has_a_line_per_conflict_with_both_versions_and_the_outcome() {
        let lines = table(&[row("contact-000007", Some(2)), row("contact-000123", None)]);
        assert_eq!(lines.len(), 4);
        assert!(lines[0].contains("local (version: value)"));
        assert!(lines[2].contains("contact-000007"));
        assert!(lines[2].contains("v3: Ada (B, 2nd edit)"));
        assert!(lines[2].contains("v2: Ada (A)"));
        assert!(lines[2].trim_end().ends_with("local kept"));
        assert!(
            !lines[3].contains("v2:"),
            "no server version, no 'v': {}",
            lines[3]
        );
    }

    #[test]
    fn a_value_is_read_from_the_content_under_data() {
        let local = json!({ "id": "c", "data": { "name": "Grace" }, "version": 2 });
        assert_eq!(value_of(&local), "Grace");
        assert_eq!(value_of(&json!({ "name": "bare" })), "bare");
    }
}
