//! The demo's data: the three collections, their rows (generated from their index, so every run
//! with the same sizes holds the same data), and their page sizes.

use fero_protocol::MAX_PAGE_SIZE;
use fero_server::SeedRow;
use serde_json::{Value, json};

/// Small settings, synced once on first install (an initial-sync-only feature).
pub const PREFERENCES: &str = "user_preferences";
/// The address book: initial sync, then background sync.
pub const CONTACTS: &str = "contacts";
/// Messages: initial and background sync, after `contacts` (a message names its contact).
pub const MESSAGES: &str = "messages";

/// Every collection, in the order the story shows them.
pub const COLLECTIONS: [&str; 3] = [PREFERENCES, CONTACTS, MESSAGES];

/// The largest page the demo asks for. Pages of this size make per-request costs (HTTP, JSON
/// framing, a SQLite transaction) small next to per-row costs while one page stays well under a
/// megabyte of JSON.
pub const MAX_DEMO_PAGE: u64 = 2_000;

/// Rows per seeding transaction on the server: large transactions make seeding fast, and the
/// rows of one page are all that is held in memory.
pub const SEED_PAGE: usize = 5_000;

/// The fewest pages a collection's initial sync is cut into, so that small runs still show
/// progress and a resume has pages on both sides of the half.
const MIN_PAGES: u64 = 16;

/// The page size for a collection of `rows` rows: at least 16 pages, at most
/// [`MAX_DEMO_PAGE`] rows each.
///
/// # Examples
/// ```
/// assert_eq!(fero_demo::data::page_size(200_000), 2_000);
/// assert_eq!(fero_demo::data::page_size(5_000), 312);
/// assert_eq!(fero_demo::data::page_size(3), 1);
/// ```
pub fn page_size(rows: u64) -> usize {
    let size = (rows / MIN_PAGES).clamp(1, MAX_DEMO_PAGE.min(u64::from(MAX_PAGE_SIZE)));
    usize::try_from(size).unwrap_or(1)
}

/// The preferences every user starts with.
pub fn preference_rows() -> Vec<SeedRow> {
    [
        ("theme", json!("dark")),
        ("language", json!("en-GB")),
        ("timezone", json!("Europe/London")),
        ("notifications", json!({ "email": true, "push": false })),
        ("message_preview", json!(true)),
        ("contacts_sort", json!("last_name")),
        ("sync_on_cellular", json!(false)),
        ("font_scale", json!(1.1)),
    ]
    .into_iter()
    .map(|(key, value)| SeedRow::new(format!("pref-{key}"), json!({ "key": key, "value": value })))
    .collect()
}

/// The id of contact `index`.
pub fn contact_id(index: u64) -> String {
    format!("contact-{index:06}")
}

/// The display name of contact `index` as seeded.
pub fn contact_name(index: u64) -> String {
    const FIRST: [&str; 8] = [
        "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken",
    ];
    const LAST: [&str; 8] = [
        "Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
    ];
    let first = FIRST[(index % 8) as usize];
    let last = LAST[((index / 8) % 8) as usize];
    format!("{first} {last} {index}")
}

/// Contact `index` as seeded.
pub fn contact_data(index: u64) -> Value {
    json!({
        "name": contact_name(index),
        "email": format!("contact{index}@example.com"),
        "phone": format!("+44 20 7946 {:04}", index % 10_000),
    })
}

/// The seeded contacts `0..count`, generated lazily (seeding streams them page by page).
pub fn contact_rows(count: u64) -> impl Iterator<Item = SeedRow> {
    (0..count).map(|index| SeedRow::new(contact_id(index), contact_data(index)))
}

/// The id of seeded message `index`.
pub fn message_id(index: u64) -> String {
    format!("message-{index:07}")
}

/// A message to contact `contact` with `text`.
pub fn message_data(contact: u64, text: &str) -> Value {
    json!({ "contact_id": contact_id(contact), "body": text })
}

/// The seeded messages `0..count`, each to contact `index % contacts`, generated lazily.
pub fn message_rows(count: u64, contacts: u64) -> impl Iterator<Item = SeedRow> {
    let contacts = contacts.max(1);
    (0..count).map(move |index| {
        let contact = index % contacts;
        let text = format!(
            "Message {index} to {}: see you at the sync meetup, I'll bring the slides.",
            contact_name(contact)
        );
        SeedRow::new(message_id(index), message_data(contact, &text))
    })
}

/// A short display form of a document's content: its `name` (contacts), `body` (messages) or
/// `value` (preferences), else the compact JSON, cut to `max` characters.
pub fn display_value(data: &Value, max: usize) -> String {
    let text = ["name", "body", "value"]
        .iter()
        .find_map(|field| data.get(field))
        .map(|value| match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| data.to_string());
    if text.chars().count() <= max {
        text
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_generated_from_their_index_alone() {
        let first: Vec<SeedRow> = contact_rows(3).collect();
        let again: Vec<SeedRow> = contact_rows(3).collect();
        assert_eq!(first, again);
        assert_eq!(first[2].id, "contact-000002");
        let messages: Vec<SeedRow> = message_rows(5, 2).collect();
        assert_eq!(messages[3].data["contact_id"], "contact-000001");
    }

    #[test]
    fn every_seeded_row_is_a_json_object_with_a_valid_collection_name() {
        for collection in COLLECTIONS {
            assert!(fero_protocol::validate_collection_name(collection).is_ok());
        }
        let rows = preference_rows()
            .into_iter()
            .chain(contact_rows(10))
            .chain(message_rows(10, 10));
        for row in rows {
            assert!(row.data.is_object(), "{}", row.id);
        }
    }

    #[test]
    fn a_display_value_prefers_the_named_field_and_is_cut_to_length() {
        assert_eq!(display_value(&json!({ "name": "Ada", "x": 1 }), 10), "Ada");
        assert_eq!(display_value(&json!({ "value": 1.5 }), 10), "1.5");
        assert_eq!(display_value(&json!({ "body": "abcdefghij" }), 5), "abcd…");
        assert_eq!(display_value(&json!({ "y": 2 }), 20), r#"{"y":2}"#);
    }

    #[test]
    fn page_sizes_give_at_least_sixteen_pages_and_never_exceed_the_cap() {
        for rows in [100, 5_000, 50_000, 200_000, 10_000_000] {
            let size = page_size(rows) as u64;
            assert!(size <= MAX_DEMO_PAGE);
            assert!(
                rows.div_ceil(size) >= MIN_PAGES,
                "{rows} rows, {size} per page"
            );
        }
    }
}
