//! The opaque pull cursor: what a client stores and sends back unchanged.
//!
//! A cursor is `s1-` followed by the decimal `sync_id` of the last row handed out. The `s1`
//! names the technique behind it (scheme 1: a serialised per-user counter assigns `sync_id` inside
//! the write transaction, so `sync_id` order is commit order and "everything after this
//! `sync_id`" never skips a row). Clients must not parse it: a later server may hand out another
//! scheme (a snapshot watermark pair, say) and keep accepting this one.
//!
//! A second form, `s1-<sync_id>-h<horizon>`, also records the purge horizon the client's copy
//! accounts for. The server issues it only when the position is below the collection's purge
//! horizon, which happens only during a scan that began at the origin (or continues one): such a
//! scan saw every row that existed when it started, so it cannot have missed a tombstone purged
//! up to that horizon, and its later pages are served while the horizon has not moved past it
//! ([`FeedPosition::horizon`]).
//!
//! Either form may end in `-e<epoch>`: the restore epoch of the database that issued it
//! ([`FeedPosition::epoch`]). A cursor of another epoch than the database's current one was
//! issued before the database was restored from a backup, and is refused with 410
//! `resync_required` (`server_behind`). Cursors without it (issued before epochs existed) keep
//! working, checked against the feed's length only.

use fero::SyncId;

use crate::storage::FeedPosition;

/// The prefix of scheme 1 cursors.
const SCHEME_1: &str = "s1-";

/// Separates the position from the recorded horizon in the second form.
const HORIZON: &str = "-h";

/// Separates the rest from the restore epoch, last.
const EPOCH: &str = "-e";

/// The cursor for the position after `sync_id`, in a collection whose purge horizon is
/// `horizon` (`SyncId(0)`: none), issued by a database of restore epoch `epoch` (`None`: the
/// backend keeps none). The page that issues it was served legitimately, so the client's copy
/// accounts for `horizon`; it is recorded only when the position is below it.
pub(crate) fn encode(sync_id: SyncId, horizon: SyncId, epoch: Option<u64>) -> String {
    let mut text = if sync_id < horizon {
        format!("{SCHEME_1}{}{HORIZON}{}", sync_id.0, horizon.0)
    } else {
        format!("{SCHEME_1}{}", sync_id.0)
    };
    if let Some(epoch) = epoch {
        text.push_str(&format!("{EPOCH}{epoch}"));
    }
    text
}

/// The position a cursor stands for.
///
/// # Errors
/// A message saying why the cursor is not one this server handed out.
pub(crate) fn decode(cursor: &str) -> Result<FeedPosition, String> {
    let Some(rest) = cursor.strip_prefix(SCHEME_1) else {
        return Err(format!(
            "cursor {cursor:?} was not issued by this server; send back the checkpoint's cursor \
             unchanged, or omit it to pull from `last_sync_id`"
        ));
    };
    let (rest, epoch) = match rest.split_once(EPOCH) {
        Some((rest, epoch)) => (rest, Some(epoch)),
        None => (rest, None),
    };
    let (position, horizon) = match rest.split_once(HORIZON) {
        Some((position, horizon)) => (position, Some(horizon)),
        None => (rest, None),
    };
    let number = |digits: &str| {
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
    };
    Ok(FeedPosition {
        after: number(position)?,
        horizon: horizon.map(number).transpose()?,
        epoch: epoch.map(number).transpose()?.map(|epoch| epoch.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_decodes_to_the_sync_id_it_was_made_from() {
        for n in [0, 1, 42, u64::MAX] {
            let position = decode(&encode(SyncId(n), SyncId(0), None)).unwrap();
            assert_eq!(position, FeedPosition::from(SyncId(n)));
        }
        assert_eq!(encode(SyncId(42), SyncId(0), None), "s1-42");
        assert_eq!(
            encode(SyncId(42), SyncId(42), None),
            "s1-42",
            "at the horizon: plain"
        );
    }

    #[test]
    fn a_cursor_below_the_horizon_records_it() {
        let text = encode(SyncId(3), SyncId(9), None);
        assert_eq!(text, "s1-3-h9");
        assert_eq!(
            decode(&text),
            Ok(FeedPosition {
                after: SyncId(3),
                horizon: Some(SyncId(9)),
                epoch: None,
            })
        );
    }

    #[test]
    fn a_cursor_records_the_restore_epoch_last() {
        assert_eq!(encode(SyncId(42), SyncId(0), Some(7)), "s1-42-e7");
        assert_eq!(encode(SyncId(3), SyncId(9), Some(7)), "s1-3-h9-e7");
        assert_eq!(
            decode("s1-3-h9-e7"),
            Ok(FeedPosition {
                after: SyncId(3),
                horizon: Some(SyncId(9)),
                epoch: Some(7),
            })
        );
        assert_eq!(
            decode(&encode(SyncId(5), SyncId(0), Some(u64::MAX >> 1))),
            Ok(FeedPosition {
                after: SyncId(5),
                horizon: None,
                epoch: Some(u64::MAX >> 1),
            })
        );
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
            "s1-4-h",
            "s1--h4",
            "s1-4-h+5",
            "s1-4-h5-h6",
            "s1-4-x5",
            "s1-4-e",
            "s1-4-e+1",
            "s1-4-e1-h2",
            "s1-4-e1-e2",
            "s1--e1",
        ] {
            assert!(decode(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
