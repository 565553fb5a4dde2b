//! Step 4's offline edits: which contacts each device edits, deletes or both edit (the
//! conflicts), and the new messages. Drawn from the seed, so a seed replays the same story.

use std::collections::BTreeSet;

use fero::{RandomSource, SeededRandom};
use serde_json::Value;

use crate::data::{self, CONTACTS, MESSAGES};
use crate::device::Device;
use crate::error::DemoError;
use crate::options::Strategy;

/// Contacts both devices edit offline: each one is a conflict.
pub const SHARED_EDITS: usize = 6;
/// Of those, how many device B edits twice (its local version then beats A's under
/// highest-version-wins).
pub const EDITED_TWICE_ON_B: usize = 3;
/// Contacts only one device edits, per device.
pub const SOLO_EDITS: usize = 20;
/// New messages written offline, per device.
pub const NEW_MESSAGES: u64 = 25;

/// The offline edits of step 4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EditPlan {
    /// Contacts both devices edit (B edits the first [`EDITED_TWICE_ON_B`] twice).
    pub shared: Vec<u64>,
    /// Contacts only A edits.
    pub only_a: Vec<u64>,
    /// Contacts only B edits.
    pub only_b: Vec<u64>,
    /// The contact A deletes.
    pub deleted: u64,
    /// The contact A edits once more during the live step.
    pub live: u64,
}

/// How many conflicts of each outcome a strategy gives for this plan: B meets every shared
/// contact as a conflict when it pulls A's accepted edit.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExpectedOutcomes {
    /// B's edit kept (and pushed).
    pub local_kept: usize,
    /// A's edit kept; B's dropped.
    pub server_kept: usize,
}

impl EditPlan {
    /// Draws distinct contacts out of `contacts` (at least 48) from `seed`.
    pub fn draw(seed: u64, contacts: u64) -> EditPlan {
        let mut random = SeededRandom::new(seed);
        let mut taken = BTreeSet::new();
        let wanted = SHARED_EDITS + 2 * SOLO_EDITS + 1;
        let mut order = Vec::with_capacity(wanted);
        // Draws until enough distinct contacts; with contacts >= MIN_CONTACTS the duplicates are
        // few, and the bound keeps a tiny address book from looping for long.
        let mut draws = 0;
        while order.len() < wanted && draws < 100_000 {
            draws += 1;
            let index = random.next_u64() % contacts.max(1);
            if taken.insert(index) {
                order.push(index);
            }
        }
        // Only reached for an address book too small for the story, refused by Options::validate.
        let mut next = 0;
        while order.len() < wanted {
            if taken.insert(next) {
                order.push(next);
            }
            next += 1;
        }
        let mut drawn = order.into_iter();
        let shared = drawn.by_ref().take(SHARED_EDITS).collect();
        let only_a: Vec<u64> = drawn.by_ref().take(SOLO_EDITS).collect();
        let only_b = drawn.by_ref().take(SOLO_EDITS).collect();
        let deleted = drawn.next().unwrap_or(0);
        let live = only_a.first().copied().unwrap_or(0);
        EditPlan {
            shared,
            only_a,
            only_b,
            deleted,
            live,
        }
    }

    /// The conflicts the plan sets up.
    pub fn conflicts(&self) -> usize {
        self.shared.len()
    }

    /// The outcomes `strategy` gives: B's twice-edited copies carry local version 3 against A's
    /// accepted version 2; the others tie at 2, and a tie goes to the server.
    pub fn expected_outcomes(&self, strategy: Strategy) -> ExpectedOutcomes {
        let twice = EDITED_TWICE_ON_B.min(self.shared.len());
        match strategy {
            Strategy::HighestVersion => ExpectedOutcomes {
                local_kept: twice,
                server_kept: self.shared.len() - twice,
            },
            Strategy::Server => ExpectedOutcomes {
                local_kept: 0,
                server_kept: self.shared.len(),
            },
            Strategy::Client => ExpectedOutcomes {
                local_kept: self.shared.len(),
                server_kept: 0,
            },
        }
    }

    /// Applies device A's offline edits: the shared and its own contacts, the deletion, and
    /// [`NEW_MESSAGES`] messages. Returns the number of local changes.
    ///
    /// # Errors
    /// [`DemoError::Store`].
    pub async fn apply_on_a(&self, device: &Device) -> Result<u64, DemoError> {
        let mut changes = 0;
        for &index in self.shared.iter().chain(&self.only_a) {
            edit_contact(device, index, "A").await?;
            changes += 1;
        }
        let id = data::contact_id(self.deleted);
        let deleted = device
            .store
            .delete(CONTACTS, &id)
            .await
            .map_err(store_error(device, format!("delete {id}")))?;
        changes += u64::from(deleted);
        changes += add_messages(device, "a", &self.only_a).await?;
        Ok(changes)
    }

    /// Applies device B's offline edits: the shared contacts (the first
    /// [`EDITED_TWICE_ON_B`] twice), its own contacts, and [`NEW_MESSAGES`] messages. Returns the
    /// number of local changes.
    ///
    /// # Errors
    /// [`DemoError::Store`].
    pub async fn apply_on_b(&self, device: &Device) -> Result<u64, DemoError> {
        let mut changes = 0;
        for (n, &index) in self.shared.iter().enumerate() {
            if n < EDITED_TWICE_ON_B {
                edit_contact(device, index, "B, draft").await?;
                edit_contact(device, index, "B, 2nd edit").await?;
                changes += 2;
            } else {
                edit_contact(device, index, "B").await?;
                changes += 1;
            }
        }
        for &index in &self.only_b {
            edit_contact(device, index, "B").await?;
            changes += 1;
        }
        changes += add_messages(device, "b", &self.only_b).await?;
        Ok(changes)
    }

    /// Device A's edit of the live step. Returns the new name.
    ///
    /// # Errors
    /// [`DemoError::Store`].
    pub async fn apply_live_edit(&self, device: &Device) -> Result<String, DemoError> {
        edit_contact(device, self.live, "A, live").await
    }
}

fn store_error(device: &Device, action: String) -> impl FnOnce(fero_sqlite::Error) -> DemoError {
    DemoError::store(device.name, action)
}

/// Renames contact `index` to "<seeded name> (<who>)" as a local edit; returns the new name.
async fn edit_contact(device: &Device, index: u64, who: &str) -> Result<String, DemoError> {
    let name = format!("{} ({who})", data::contact_name(index));
    let mut contact = data::contact_data(index);
    if let Value::Object(fields) = &mut contact {
        fields.insert("name".to_owned(), Value::String(name.clone()));
    }
    let id = data::contact_id(index);
    device
        .store
        .put(CONTACTS, &id, contact)
        .await
        .map_err(store_error(device, format!("edit {id}")))?;
    Ok(name)
}

/// Writes [`NEW_MESSAGES`] new messages `message-<prefix>-NNNN`, to the given contacts in turn.
async fn add_messages(device: &Device, prefix: &str, to: &[u64]) -> Result<u64, DemoError> {
    for n in 0..NEW_MESSAGES {
        let contact = to.get((n as usize) % to.len().max(1)).copied().unwrap_or(0);
        let id = format!("message-{prefix}-{n:04}");
        let text = format!(
            "Offline message {n} from device {}: written on the train, synced later.",
            prefix.to_uppercase()
        );
        device
            .store
            .put(MESSAGES, &id, data::message_data(contact, &text))
            .await
            .map_err(store_error(device, format!("write {id}")))?;
    }
    Ok(NEW_MESSAGES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_draws_distinct_contacts_and_replays_from_its_seed() {
        let plan = EditPlan::draw(7, 100);
        assert_eq!(plan, EditPlan::draw(7, 100));
        assert_ne!(plan, EditPlan::draw(8, 100));
        let mut all: Vec<u64> = plan
            .shared
            .iter()
            .chain(&plan.only_a)
            .chain(&plan.only_b)
            .copied()
            .collect();
        all.push(plan.deleted);
        let distinct: BTreeSet<u64> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len());
        assert!(all.iter().all(|&index| index < 100));
        assert_eq!(plan.conflicts(), SHARED_EDITS);
        assert!(!plan.shared.contains(&plan.live) && plan.live != plan.deleted);
    }

    #[test]
    fn expected_outcomes_add_up_to_the_conflicts_for_every_strategy() {
        let plan = EditPlan::draw(1, 1_000);
        for strategy in [Strategy::HighestVersion, Strategy::Server, Strategy::Client] {
            let outcomes = plan.expected_outcomes(strategy);
            assert_eq!(
                outcomes.local_kept + outcomes.server_kept,
                plan.conflicts(),
                "{strategy:?}"
            );
        }
        assert_eq!(
            plan.expected_outcomes(Strategy::HighestVersion),
            ExpectedOutcomes {
                local_kept: EDITED_TWICE_ON_B,
                server_kept: SHARED_EDITS - EDITED_TWICE_ON_B
            }
        );
    }
}
