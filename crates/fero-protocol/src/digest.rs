//! The order-independent digest of a collection's live rows.

/// FNV-1a 64 over `id`, a zero byte, and the version's little-endian bytes: one row's hash.
///
/// The digest of a set is the wrapping sum of its rows' hashes, so it does not depend on the order
/// rows are read in and can be updated row by row.
pub fn row_digest(id: &str, version: u64) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in id
        .as_bytes()
        .iter()
        .chain(&[0u8])
        .chain(&version.to_le_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// Accumulates `(id, version)` rows into a count and an order-independent digest.
///
/// # Examples
/// ```
/// use fero_protocol::Digest;
/// let mut a = Digest::default();
/// a.add("x", 1);
/// a.add("y", 2);
/// let mut b = Digest::default();
/// b.add("y", 2);
/// b.add("x", 1);
/// assert_eq!(a, b);
/// assert_eq!(a.count(), 2);
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    count: u64,
    sum: u64,
}

impl Digest {
    /// Adds one live row.
    pub fn add(&mut self, id: &str, version: u64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(row_digest(id, version));
    }

    /// Rows added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest as 16 lowercase hex digits (the wire form).
    pub fn hex(&self) -> String {
        format!("{:016x}", self.sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_change_changes_the_digest() {
        let mut a = Digest::default();
        a.add("x", 1);
        let mut b = Digest::default();
        b.add("x", 2);
        assert_ne!(a.hex(), b.hex());
    }
}
