//! The benchmark's data (bench-spec "Data"): one item shape, generated deterministically from its
//! index, so a "server" can build any page on demand instead of holding N items in memory.
//!
//! Item `i` (1-based) has the id `item-0000001`…, `sync_id` = `i` plus the feed's offset, the
//! feed's `version`, an `updated_at` one second after item `i - 1`, and a name of 20, an email of
//! 30 and a body of 100 characters drawn from a SplitMix64 stream seeded by `(i, version)`: the
//! same index and version always give the same item, another version gives other content (an
//! edit).

use std::fmt;
use std::sync::Arc;

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
///
/// One allocation holds its id, name, email and body side by side: the handler side of W1 is
/// mostly `malloc`/`free`, and an item made with one allocation costs a fraction of one made
/// with four `String`s. It is serialised with every field of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ItemFields", into = "ItemFields")]
pub struct BenchItem {
    /// Its place in the feed.
    pub sync_id: SyncId,
    /// Its server version.
    pub version: Version,
    /// When the server wrote it; RFC 3339 UTC on the wire.
    pub updated_at: Timestamp,
    /// The id, then name (20 characters), email (30) and body (100) in one buffer.
    text: ItemText,
}

/// A [`DocText`] whose buffer starts with the item's id.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ItemText {
    /// `id` lies in `joined[..id_len]`, the rest is `text`.
    text: DocText,
}

impl ItemText {
    fn new(id: &str, name: &str, email: &str, body: &str) -> ItemText {
        let mut joined = String::with_capacity(id.len() + name.len() + email.len() + body.len());
        for part in [id, name, email, body] {
            joined.push_str(part);
        }
        let end = joined.len();
        ItemText {
            text: DocText::shared(&Arc::from(joined), id.len(), [name.len(), email.len()], end),
        }
    }

    fn id(&self) -> &str {
        &self.text.joined[..self.text.start]
    }
}

impl BenchItem {
    /// The id: `item-0000001`….
    pub fn id(&self) -> &str {
        self.text.id()
    }

    /// The name (20 characters when generated).
    pub fn name(&self) -> &str {
        self.text.text.name()
    }

    /// The email (30 characters when generated).
    pub fn email(&self) -> &str {
        self.text.text.email()
    }

    /// The body (100 characters when generated).
    pub fn body(&self) -> &str {
        self.text.text.body()
    }

    /// Item `index` (1-based) at `version`, at `sync_id`.
    ///
    /// # Examples
    /// ```
    /// use fero::{SyncId, Version};
    /// use fero_bench::data::BenchItem;
    /// let a = BenchItem::generate(7, Version(1), SyncId(7));
    /// assert_eq!(a.id(), "item-0000007");
    /// assert_eq!((a.name().len(), a.email().len(), a.body().len()), (20, 30, 100));
    /// assert_eq!(a, BenchItem::generate(7, Version(1), SyncId(7)));
    /// assert_ne!(a.body(), BenchItem::generate(7, Version(2), SyncId(7)).body());
    /// ```
    pub fn generate(index: u64, version: Version, sync_id: SyncId) -> BenchItem {
        let mut random = SplitMix64::new(index.wrapping_mul(0x9E37_79B9).wrapping_add(version.0));
        // The id and all text are written into one stack buffer, checked as UTF-8 once, and
        // copied into one shared allocation of their final size.
        let mut buffer = [0u8; MAX_ID_LEN + TEXT_LEN];
        let id_len = write_item_id(index, &mut buffer);
        let (name, rest) = buffer[id_len..id_len + TEXT_LEN].split_at_mut(NAME_LEN);
        let (email, body) = rest.split_at_mut(EMAIL_LEN);
        fill_name(&mut random, name);
        fill_email(&mut random, email);
        fill_body(&mut random, body);
        let end = id_len + TEXT_LEN;
        let joined =
            std::str::from_utf8(&buffer[..end]).expect("generated text uses ASCII alphabets only");
        BenchItem {
            sync_id,
            version,
            updated_at: Timestamp(EPOCH_MILLIS + index * 1_000),
            text: ItemText {
                text: DocText::shared(&Arc::from(joined), id_len, [NAME_LEN, EMAIL_LEN], end),
            },
        }
    }
}

impl ServerItem for BenchItem {
    fn id(&self) -> &str {
        self.text.id()
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

/// [`BenchItem`] as it is serialised: each field of its own.
#[derive(Clone, Serialize, Deserialize)]
struct ItemFields {
    id: String,
    sync_id: SyncId,
    version: Version,
    #[serde(with = "rfc3339")]
    updated_at: Timestamp,
    name: String,
    email: String,
    body: String,
}

impl From<ItemFields> for BenchItem {
    fn from(fields: ItemFields) -> BenchItem {
        BenchItem {
            sync_id: fields.sync_id,
            version: fields.version,
            updated_at: fields.updated_at,
            text: ItemText::new(&fields.id, &fields.name, &fields.email, &fields.body),
        }
    }
}

impl From<BenchItem> for ItemFields {
    fn from(item: BenchItem) -> ItemFields {
        ItemFields {
            id: item.id().to_owned(),
            sync_id: item.sync_id,
            version: item.version,
            updated_at: item.updated_at,
            name: item.name().to_owned(),
            email: item.email().to_owned(),
            body: item.body().to_owned(),
        }
    }
}

/// An item as the local store holds it: the server's fields plus the state of a local edit.
///
/// Its text lives in a shared, immutable [`DocText`], so listing a pending edit costs one
/// allocation (the id) and a clone one (the id).
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
    /// Name, email and body (serialised as three fields of the document).
    #[serde(flatten)]
    pub text: DocText,
}

impl BenchDoc {
    /// The name (20 characters when generated).
    pub fn name(&self) -> &str {
        self.text.name()
    }

    /// The email (30 characters when generated).
    pub fn email(&self) -> &str {
        self.text.email()
    }

    /// The body (100 characters when generated).
    pub fn body(&self) -> &str {
        self.text.body()
    }
}

/// A document's name, email and body: a span of an immutable buffer that clones share, and that
/// the documents listed together share (see [`CompactStore::modified`]).
///
/// [`CompactStore::modified`]: crate::store::CompactStore::modified
///
/// # Examples
/// ```
/// use fero_bench::data::DocText;
/// let text = DocText::new("Ada Lovelace", "ada@example.com", "hello");
/// assert_eq!((text.name(), text.email(), text.body()), ("Ada Lovelace", "ada@example.com", "hello"));
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "TextFields", into = "TextFields")]
pub struct DocText {
    /// The buffer: name, email and body lie side by side in `start..end`.
    joined: Arc<str>,
    start: usize,
    name_end: usize,
    email_end: usize,
    end: usize,
}

impl DocText {
    /// The text of three fields, in a buffer of its own.
    pub fn new(name: &str, email: &str, body: &str) -> DocText {
        let mut joined = String::with_capacity(name.len() + email.len() + body.len());
        for part in [name, email, body] {
            joined.push_str(part);
        }
        let end = joined.len();
        DocText::shared(&Arc::from(joined), 0, [name.len(), email.len()], end)
    }

    /// The fields lying in `joined[start..end]`: `name_len` bytes of name, `email_len` of email,
    /// then the body.
    ///
    /// # Panics
    /// When the lengths do not split `joined` on character boundaries.
    pub(crate) fn shared(
        joined: &Arc<str>,
        start: usize,
        [name_len, email_len]: [usize; 2],
        end: usize,
    ) -> DocText {
        let name_end = start + name_len;
        let email_end = name_end + email_len;
        assert!(
            email_end <= end
                && [start, name_end, email_end, end]
                    .iter()
                    .all(|&at| joined.is_char_boundary(at)),
            "a document's field lengths must split its text on character boundaries"
        );
        DocText {
            joined: Arc::clone(joined),
            start,
            name_end,
            email_end,
            end,
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.joined[self.start..self.name_end]
    }

    /// The email.
    pub fn email(&self) -> &str {
        &self.joined[self.name_end..self.email_end]
    }

    /// The body.
    pub fn body(&self) -> &str {
        &self.joined[self.email_end..self.end]
    }
}

impl PartialEq for DocText {
    fn eq(&self, other: &DocText) -> bool {
        self.joined[self.start..self.end] == other.joined[other.start..other.end]
            && self.name_end - self.start == other.name_end - other.start
            && self.email_end - self.start == other.email_end - other.start
    }
}

impl Eq for DocText {}

impl fmt::Debug for DocText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DocText")
            .field("name", &self.name())
            .field("email", &self.email())
            .field("body", &self.body())
            .finish()
    }
}

/// [`DocText`] as it is serialised: three string fields.
#[derive(Clone, Serialize, Deserialize)]
struct TextFields {
    name: String,
    email: String,
    body: String,
}

impl From<TextFields> for DocText {
    fn from(fields: TextFields) -> DocText {
        DocText::new(&fields.name, &fields.email, &fields.body)
    }
}

impl From<DocText> for TextFields {
    fn from(text: DocText) -> TextFields {
        TextFields {
            name: text.name().to_owned(),
            email: text.email().to_owned(),
            body: text.body().to_owned(),
        }
    }
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

/// `item-` and at most 20 digits (u64::MAX has 20).
const MAX_ID_LEN: usize = 25;

/// `item-` and the index, zero-padded to 7 digits (wider for indices of 10 million and more).
pub fn item_id(index: u64) -> String {
    let mut id = [0u8; MAX_ID_LEN];
    let len = write_item_id(index, &mut id);
    std::str::from_utf8(&id[..len])
        .expect("an id is ASCII digits after an ASCII prefix")
        .to_owned()
}

/// Writes [`item_id`]'s text at the start of `out`; returns its length.
fn write_item_id(index: u64, out: &mut [u8]) -> usize {
    const PREFIX: &[u8] = b"item-";
    let mut digits = [0u8; MAX_ID_LEN - PREFIX.len()];
    let mut at = digits.len();
    let mut rest = index;
    while rest > 0 || digits.len() - at < 7 {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let digits = &digits[at..];
    out[..PREFIX.len()].copy_from_slice(PREFIX);
    out[PREFIX.len()..PREFIX.len() + digits.len()].copy_from_slice(digits);
    PREFIX.len() + digits.len()
}

/// Bytes of generated text per item: name, email and body.
const TEXT_LEN: usize = NAME_LEN + EMAIL_LEN + BODY_LEN;

fn fill_name(random: &mut SplitMix64, out: &mut [u8]) {
    // "Xxxxxxxxx Yyyyyyyyyy": two capitalised words, 9 + 1 + 10 characters.
    random.letters(out);
    out[0] = out[0].to_ascii_uppercase();
    out[9] = b' ';
    out[10] = out[10].to_ascii_uppercase();
}

fn fill_email(random: &mut SplitMix64, out: &mut [u8]) {
    let (local, domain) = out.split_at_mut(EMAIL_LEN - EMAIL_DOMAIN.len());
    random.letters(local);
    domain.copy_from_slice(EMAIL_DOMAIN.as_bytes());
}

fn fill_body(random: &mut SplitMix64, out: &mut [u8]) {
    random.bytes(out);
    for b in out {
        // Multiply-shift maps a random byte onto 0..TEXT_SYMBOLS without a division; written as
        // a select so the loop vectorises.
        let symbol = ((u16::from(*b) * TEXT_SYMBOLS) >> 8) as u8;
        *b = if symbol >= 26 { b' ' } else { b'a' + symbol };
    }
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

    /// Fills `out` with random bytes, eight per step.
    fn bytes(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    /// Fills `out` with random lowercase letters.
    fn letters(&mut self, out: &mut [u8]) {
        self.bytes(out);
        for b in out {
            *b = b'a' + ((u16::from(*b) * 26) >> 8) as u8;
        }
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
            assert_eq!(item.name().len(), NAME_LEN);
            assert_eq!(item.email().len(), EMAIL_LEN);
            assert_eq!(item.body().len(), BODY_LEN);
            assert!(item.email().ends_with("@example.com"));
            assert!(item.name().as_bytes()[0].is_ascii_uppercase());
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

    #[test]
    fn documents_serialise_their_text_as_three_fields_and_read_back() {
        let doc = BenchDoc {
            id: "item-0000001".into(),
            version: Version(2),
            base_version: Some(Version(1)),
            modified: true,
            deleted: false,
            updated_at: Timestamp(EPOCH_MILLIS),
            text: DocText::new("Ada Lovelace", "ada@example.com", "hello"),
        };
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["name"], "Ada Lovelace");
        assert_eq!(json["email"], "ada@example.com");
        assert_eq!(json["body"], "hello");
        let back: BenchDoc = serde_json::from_value(json).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn texts_are_equal_by_content_whatever_buffer_holds_them() {
        let shared: Arc<str> = Arc::from("xxAdaada@x.orghelloyy");
        let inside = DocText::shared(&shared, 2, [3, 9], 19);
        assert_eq!(inside, DocText::new("Ada", "ada@x.org", "hello"));
        assert_ne!(inside, DocText::new("Ad", "aada@x.org", "hello"));
    }
}
