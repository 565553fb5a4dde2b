//! The opaque pull cursor: what a client stores and sends back unchanged.
//!
//! A cursor is `s1-` followed by the decimal `sync_id` of the last row handed out. The `s1`
//! names the technique behind it (scheme 1: a serialised per-user counter assigns `sync_id` inside
//! the write transaction, so `sync_id` order is commit order and "everything after this
//! `sync_id`" never skips a row). Clients must not parse it: a later server may hand out another
//! scheme (a snapshot watermark pair, say) and keep accepting this one.

use fero::SyncId;

/// The prefix of scheme 1 cursors.
const SCHEME_1: &str = "s1-";

/// The cursor for the position after `sync_id`.
pub(crate) fn encode(sync_id: SyncId) -> String {
    format!("{SCHEME_1}{}", sync_id.0)
}

/// The position a cursor stands for.
///
/// # Errors
/// A message saying why the cursor is not one this server handed out.
pub(crate) fn decode(cursor: &str) -> Result<SyncId, String> {
    let Some(digits) = cursor.strip_prefix(SCHEME_1) else {
        return Err(format!(
            "cursor {cursor:?} was not issued by this server; send back the checkpoint's cursor \
             unchanged, or omit it to pull from `last_sync_id`"
        ));
    };
    // `u64::from_str` accepts a leading '+', which no cursor we issue carries.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "cursor {cursor:?} is damaged: expected digits after {SCHEME_1:?}"
        ));
    }
    digits
        .parse::<u64>()
        .map(SyncId)
        .map_err(|_| format!("cursor {cursor:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_decodes_to_the_sync_id_it_was_made_from() {
        for n in [0, 1, 42, u64::MAX] {
            assert_eq!(decode(&encode(SyncId(n))), Ok(SyncId(n)));
        }
    }

    #[test]
    fn foreign_or_damaged_cursors_are_refused() {
        for bad in [
            "",
            "42",
            "s1-",
            "s1-+4",
            "s1-4x",
            "s2-4",
            "s1-99999999999999999999999",
        ] {
            assert!(decode(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
