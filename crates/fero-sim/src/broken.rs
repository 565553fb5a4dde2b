//! Deliberately broken variants, proof that the simulation finds bugs. Not for users.

/// A deliberately broken part of the simulated world, selected with
/// [`SimBuilder::broken`](crate::SimBuilder::broken). Each one breaks a guarantee that a real
/// store or server must keep; the test `broken_variants_are_caught` asserts that the
/// simulation's invariants catch each within its seed budget.
#[doc(hidden)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Broken {
    /// Nothing broken.
    #[default]
    None,
    /// The device store saves a page's checkpoint, then writes its data in a later step: a crash
    /// in between leaves a checkpoint past data that never arrived.
    CheckpointBeforeData,
    /// The server writes every pushed change, ignoring its `base_version`: concurrent writes
    /// overwrite each other without a conflict.
    BlindOverwrite,
    /// The device store overwrites a pending local edit with a pulled update the engine did not
    /// mark as discarded (it ignores the `RemoteChanges` contract), dropping the edit silently.
    DropUnseenEdit,
}

impl Broken {
    /// Every broken variant (not [`Broken::None`]).
    pub const ALL: [Broken; 3] = [
        Broken::CheckpointBeforeData,
        Broken::BlindOverwrite,
        Broken::DropUnseenEdit,
    ];

    /// The variant's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Broken::None => "none",
            Broken::CheckpointBeforeData => "checkpoint-before-data",
            Broken::BlindOverwrite => "blind-overwrite",
            Broken::DropUnseenEdit => "drop-unseen-edit",
        }
    }

    /// The variant named `name` (see [`name`](Self::name)).
    pub fn from_name(name: &str) -> Option<Broken> {
        [Broken::None]
            .into_iter()
            .chain(Broken::ALL)
            .find(|b| b.name() == name)
    }
}
