//! The benchmark's data (bench-spec "Data"): one item shape, generated deterministically from its
//! index, so a "server" can build any page on demand instead of holding N items in memory.
//!
//! Item `i` (1-based) has the id `item-0000001`…, `sync_id` = `i` plus the feed's offset, the
//! feed's `version`, an `updated_at` one second after item `i - 1`, and a name of 20, an email of
//! 30 and a body of 100 characters drawn from a SplitMix64 stream seeded by `(i, version)`: the
//! same index and version always give the same item, another version gives other content (an
//! edit).

use fero::{LocalItem, ServerItem, SyncId, Timestamp, Version};
use serde::{Deserialize, Serialize};

/// Characters in a generated name.
pub const NAME_LEN: usize = 20;
/// Characters in a generated email.
pub const EMAIL_LEN: usize = 30;
/// Characters in a generated body.
pub const BODY_LEN: usize = 100;

/// `updated_at` of item 0: 2024-01-01T00:00:00Z, in milliseconds since the Unix epoch.
pub const EPOCH_MILLIS: u64 = 1_704_067_200_000;

/// The domain every generated email ends with.
const EMAIL_DOMAIN: &str = "@example.com";

/// Body text: lowercase letters and, one character in 14, a space, so bodies read like
/// (meaningless) words and do not compress like a constant would.
const TEXT_SYMBOLS: u16 = 28;

/// An item as the server sends it (bench-spec's item).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchItem {
    /// `item-0000001`….
    pub id: String,
    /// Its place in the feed.
    pub sync_id: SyncId,
    /// Its server version.
    pub version: Version,
    /// When the server wrote it; RFC 3339 UTC on the wire.
    #[serde(with = "rfc3339")]
    pub updated_at: Timestamp,
    /// 20 characters.
    pub name: String,
    /// 30 characters.
    pub email: String,
    /// 100 characters.
    pub body: String,
}

impl BenchItem {
    /// Item `index` (1-based) at `version`, at `sync_id`.
    ///
    /// # Examples
    /// ```
    /// use fero::{SyncId, Version};
    /// use fero_bench::data::BenchItem;
    /// let a = BenchItem::generate(7, Version(1), SyncId(7));
    /// assert_eq!(a.id, "item-0000007");
    /// assert_eq!((a.name.len(), a.email.len(), a.body.len()), (20, 30, 100));
    /// assert_eq!(a, BenchItem::generate(7, Version(1), SyncId(7)));
    /// assert_ne!(a.body, BenchItem::generate(7, Version(2), SyncId(7)).body);
    /// ```
    pub fn generate(index: u64, version: Version, sync_id: SyncId) -> BenchItem {
        let mut random = SplitMix64::new(index.wrapping_mul(0x9E37_79B9).wrapping_add(version.0));
        BenchItem {
            id: item_id(index),
            sync_id,
            version,
            updated_at: Timestamp(EPOCH_MILLIS + index * 1_000),
            name: name(&mut random),
            email: email(&mut random),
            body: body(&mut random),
        }
    }
}

impl ServerItem for BenchItem {
    fn id(&self) -> &str {
        &self.id
    }
    fn sync_id(&self) -> SyncId {
        self.sync_id
    }
    fn version(&self) -> Version {
        self.version
    }
    fn updated_at(&self) -> Option<Timestamp> {
        Some(self.updated_at)
    }
}

/// An item as the local store holds it: the server's fields plus the state of a local edit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchDoc {
    /// The id.
    pub id: String,
    /// The local copy's version: the server's, +1 per local edit.
    pub version: Version,
    /// The server version a pending edit was made on (`None` for an item the server never saw).
    pub base_version: Option<Version>,
    /// A pending local edit exists.
    pub modified: bool,
    /// The pending edit deletes the item.
    pub deleted: bool,
    /// When it was last written (informational).
    #[serde(with = "rfc3339")]
    pub updated_at: Timestamp,
    /// 20 characters.
    pub name: String,
    /// 30 characters.
    pub email: String,
    /// 100 characters.
    pub body: String,
}

impl LocalItem for BenchDoc {
    fn id(&self) -> &str {
        &self.id
    }
    fn version(&self) -> Version {
        self.version
    }
    fn locally_modified(&self) -> bool {
        self.modified
    }
    fn base_version(&self) -> Option<Version> {
        self.base_version
    }
}

/// `item-` and the index, zero-padded to 7 digits (wider for indices of 10 million and more).
pub fn item_id(index: u64) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = index;
    while rest > 0 || digits.len() - at < 7 {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let mut id = String::with_capacity(5 + digits.len() - at);
    id.push_str("item-");
    id.extend(digits[at..].iter().map(|&b| char::from(b)));
    id
}

fn name(random: &mut SplitMix64) -> String {
    // "Xxxxxxxxx Yyyyyyyyyy": two capitalised words, 9 + 1 + 10 characters.
    let mut bytes = random.letters(NAME_LEN, 0);
    bytes[0] = bytes[0].to_ascii_uppercase();
    bytes[9] = b' ';
    bytes[10] = bytes[10].to_ascii_uppercase();
    ascii(bytes)
}

fn email(random: &mut SplitMix64) -> String {
    let mut bytes = random.letters(EMAIL_LEN - EMAIL_DOMAIN.len(), EMAIL_DOMAIN.len());
    bytes.extend_from_slice(EMAIL_DOMAIN.as_bytes());
    ascii(bytes)
}

fn body(random: &mut SplitMix64) -> String {
    let mut bytes = random.bytes(BODY_LEN, 0);
    for b in &mut bytes {
        // Multiply-shift maps a random byte onto 0..TEXT_SYMBOLS without a division; written as
        // a select so the loop vectorises.
        let symbol = ((u16::from(*b) * TEXT_SYMBOLS) >> 8) as u8;
        *b = if symbol >= 26 { b' ' } else { b'a' + symbol };
    }
    ascii(bytes)
}

fn ascii(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("generated text uses ASCII alphabets only")
}

/// SplitMix64: tiny, fast and good enough to make text that is not a constant.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `len` random bytes, in a vector with room for `spare` more.
    fn bytes(&mut self, len: usize, spare: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        out.reserve_exact(spare);
        for chunk in out.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        out
    }

    /// `len` random lowercase letters, in a vector with room for `spare` more.
    fn letters(&mut self, len: usize, spare: usize) -> Vec<u8> {
        let mut out = self.bytes(len, spare);
        for b in &mut out {
            *b = b'a' + ((u16::from(*b) * 26) >> 8) as u8;
        }
        out
    }
}

/// `updated_at` as an RFC 3339 UTC string with milliseconds, as bench-spec's item carries it.
mod rfc3339 {
    use std::time::{Duration, UNIX_EPOCH};

    use fero::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(
        at: &Timestamp,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let time = UNIX_EPOCH + Duration::from_millis(at.as_millis());
        serializer.collect_str(&humantime::format_rfc3339_millis(time))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Timestamp, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let time = humantime::parse_rfc3339_weak(&text).map_err(D::Error::custom)?;
        let millis = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| D::Error::custom(format!("{text:?} is before 1970")))?
            .as_millis();
        u64::try_from(millis)
            .map(Timestamp)
            .map_err(|_| D::Error::custom(format!("{text:?} is too far in the future")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_zero_padded_to_seven_digits_and_grow_past_them() {
        assert_eq!(item_id(1), "item-0000001");
        assert_eq!(item_id(1_000_000), "item-1000000");
        assert_eq!(item_id(12_345_678), "item-12345678");
    }

    #[test]
    fn generated_fields_have_the_spec_lengths_and_alphabets() {
        for index in [1, 2, 999, 1_000_000] {
            let item = BenchItem::generate(index, Version(1), SyncId(index));
            assert_eq!(item.name.len(), NAME_LEN);
            assert_eq!(item.email.len(), EMAIL_LEN);
            assert_eq!(item.body.len(), BODY_LEN);
            assert!(item.email.ends_with("@example.com"));
            assert!(item.name.as_bytes()[0].is_ascii_uppercase());
        }
    }

    #[test]
    fn items_serialise_updated_at_as_rfc3339_and_read_back() {
        let item = BenchItem::generate(1, Version(1), SyncId(1));
        let json = serde_json::to_value(&item).unwrap();
        assert_eq!(json["updated_at"], "2024-01-01T00:00:01.000Z");
        let back: BenchItem = serde_json::from_value(json).unwrap();
        assert_eq!(back, item);
    }
}
