//! The order-independent digests of a collection's live rows, in two versions.
//!
//! - Version 1 ([`Digest`]): a 64-bit FNV-1a sum over `(id, version)`. It tells whether both
//!   sides hold the same ids at the same versions, and is blind to a row whose content differs at
//!   the same version (a corrupt or hand-edited local copy).
//! - Version 2 ([`ContentDigest`]): a 128-bit XXH3 sum over `(id, version, data)`, `data` in its
//!   [canonical JSON](canonical_json) form, so it also sees content drift.
//!
//! Both are sums of per-row hashes, so neither depends on the order rows are read in. The server
//! and the client compute them with these types, so the two can only differ when the rows do.

use std::fmt;

use serde_json::Value;

/// A digest version a server can compute and a client can ask for (`?version=` of the digest
/// endpoint).
///
/// # Examples
/// ```
/// use fero_protocol::DigestVersion;
/// assert_eq!(DigestVersion::from_number(2), Some(DigestVersion::V2));
/// assert_eq!(DigestVersion::V1.number(), 1);
/// assert_eq!(DigestVersion::default(), DigestVersion::V1);
/// assert_eq!(DigestVersion::from_number(3), None);
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DigestVersion {
    /// [`Digest`]: `(id, version)`, 64 bits, 16 hex digits. The answer without `?version=`, so
    /// that clients older than version 2 keep getting what they compare with.
    #[default]
    V1,
    /// [`ContentDigest`]: `(id, version, canonical data)`, 128 bits, 32 hex digits.
    V2,
}

impl DigestVersion {
    /// The number on the wire.
    pub fn number(self) -> u32 {
        match self {
            DigestVersion::V1 => 1,
            DigestVersion::V2 => 2,
        }
    }

    /// The version numbered `number`; `None` for a version this build does not know.
    pub fn from_number(number: u32) -> Option<DigestVersion> {
        match number {
            1 => Some(DigestVersion::V1),
            2 => Some(DigestVersion::V2),
            _ => None,
        }
    }

    /// The hex digits of a digest of this version.
    pub fn hex_digits(self) -> usize {
        match self {
            DigestVersion::V1 => 16,
            DigestVersion::V2 => 32,
        }
    }
}

impl fmt::Display for DigestVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.number())
    }
}

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

/// Accumulates `(id, version)` rows into a count and an order-independent digest (digest
/// version 1).
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

/// Writes `value` in canonical JSON to `out`: object keys sorted by their UTF-8 bytes, no
/// whitespace, strings escaped as `serde_json` escapes them (`"`, `\` and control characters;
/// everything else as UTF-8), numbers as `serde_json` prints them (integers in decimal, other
/// numbers in the shortest form that reads back to the same `f64`).
///
/// One value has one canonical form whatever the key order or spacing of the text it was read
/// from, so PostgreSQL, the SQLite server and a client's store, each holding its own text of a
/// row, digest it alike.
pub fn write_canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => write_number(number, out),
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical_json(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sorted here rather than relying on the map's order: `serde_json`'s
            // `preserve_order` feature, enabled by any crate of a build, keeps insertion order.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical_json(item, out);
            }
            out.push(b'}');
        }
    }
}

/// `value` in canonical JSON (see [`write_canonical_json`]).
///
/// # Examples
/// ```
/// let value: serde_json::Value = serde_json::from_str(r#"{ "b": [1, 2.50], "a": "é" }"#)?;
/// assert_eq!(fero_protocol::canonical_json(&value), r#"{"a":"é","b":[1,2.5]}"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::new();
    write_canonical_json(value, &mut out);
    // Only UTF-8 strings and ASCII punctuation, digits and escapes were written.
    String::from_utf8(out).unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into())
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    // Serialising a `str` to a `Vec` cannot fail: no I/O error, no non-string key.
    if serde_json::to_writer(&mut *out, text).is_err() {
        unreachable!("serialising a str into a Vec<u8> does not fail");
    }
}

fn write_number(number: &serde_json::Number, out: &mut Vec<u8>) {
    // Normalised through the numeric value, so the same number is written the same way even
    // with `serde_json`'s `arbitrary_precision` feature, which keeps a number's original text.
    let text = if let Some(n) = number.as_u64() {
        n.to_string()
    } else if let Some(n) = number.as_i64() {
        n.to_string()
    } else {
        match number.as_f64().and_then(serde_json::Number::from_f64) {
            Some(float) => float.to_string(),
            None => number.to_string(),
        }
    };
    out.extend_from_slice(text.as_bytes());
}

/// XXH3-128 of one row: the id's byte length (u64, little-endian) and bytes, the version (u64,
/// little-endian), the canonical data's byte length (u64, little-endian) and bytes.
///
/// The length prefixes keep `("ab", …)` and `("a", …)` with shifted bytes apart.
pub fn content_row_digest(id: &str, version: u64, data: &Value) -> u128 {
    let mut canonical = Vec::new();
    write_canonical_json(data, &mut canonical);
    let mut scratch = Vec::new();
    row_hash(&mut scratch, id, version, &canonical)
}

fn row_hash(scratch: &mut Vec<u8>, id: &str, version: u64, canonical: &[u8]) -> u128 {
    scratch.clear();
    scratch.reserve(24 + id.len() + canonical.len());
    scratch.extend_from_slice(&(id.len() as u64).to_le_bytes());
    scratch.extend_from_slice(id.as_bytes());
    scratch.extend_from_slice(&version.to_le_bytes());
    scratch.extend_from_slice(&(canonical.len() as u64).to_le_bytes());
    scratch.extend_from_slice(canonical);
    xxhash_rust::xxh3::xxh3_128(scratch)
}

/// Accumulates `(id, version, data)` rows into a count and an order-independent 128-bit digest
/// (digest version 2): the wrapping sum of [`content_row_digest`] over the rows.
///
/// Unlike [`Digest`] it sees a row whose content differs at the same version, and it does not
/// depend on the key order or spacing of the stored JSON text.
///
/// # Examples
/// ```
/// use fero_protocol::ContentDigest;
/// use serde_json::json;
/// let mut server = ContentDigest::default();
/// server.add_json("x", 1, r#"{"name": "Ada", "tags": ["a"]}"#)?;
/// let mut client = ContentDigest::default();
/// client.add("x", 1, &json!({ "tags": ["a"], "name": "Ada" }));
/// assert_eq!(server, client);
///
/// let mut edited = ContentDigest::default();
/// edited.add("x", 1, &json!({ "tags": ["a"], "name": "Eve" }));
/// assert_ne!(edited.hex(), client.hex());
/// assert_eq!(edited.hex().len(), 32);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct ContentDigest {
    count: u64,
    sum: u128,
    /// Reused between rows, so digesting a collection allocates per row only what parsing does.
    canonical: Vec<u8>,
    scratch: Vec<u8>,
}

impl ContentDigest {
    /// Adds one live row.
    pub fn add(&mut self, id: &str, version: u64, data: &Value) {
        let mut canonical = std::mem::take(&mut self.canonical);
        canonical.clear();
        write_canonical_json(data, &mut canonical);
        self.add_canonical(id, version, &canonical);
        self.canonical = canonical;
    }

    /// Adds one live row whose data is the JSON text `data` (in any key order and spacing).
    ///
    /// # Errors
    /// When `data` is not JSON; nothing is added then.
    pub fn add_json(
        &mut self,
        id: &str,
        version: u64,
        data: &str,
    ) -> Result<(), serde_json::Error> {
        let value: Value = serde_json::from_str(data)?;
        self.add(id, version, &value);
        Ok(())
    }

    /// Adds one live row whose data the caller already holds in canonical form (see
    /// [`write_canonical_json`]). Bytes that are not the canonical form of any value (stored
    /// text that is not JSON at all) make a row hash no server row has: the row shows as drift.
    pub fn add_canonical(&mut self, id: &str, version: u64, canonical: &[u8]) {
        self.count += 1;
        let hash = row_hash(&mut self.scratch, id, version, canonical);
        self.sum = self.sum.wrapping_add(hash);
    }

    /// Rows added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest as 32 lowercase hex digits (the wire form).
    pub fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

impl PartialEq for ContentDigest {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.sum == other.sum
    }
}

impl Eq for ContentDigest {}

impl fmt::Debug for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentDigest")
            .field("count", &self.count)
            .field("digest", &self.hex())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_version_change_changes_the_digest() {
        let mut a = Digest::default();
        a.add("x", 1);
        let mut b = Digest::default();
        b.add("x", 2);
        assert_ne!(a.hex(), b.hex());
    }

    #[test]
    fn a_content_change_at_the_same_version_changes_only_the_content_digest() {
        let (mut v1_a, mut v1_b) = (Digest::default(), Digest::default());
        v1_a.add("x", 3);
        v1_b.add("x", 3);
        assert_eq!(v1_a, v1_b, "version 1 cannot see content");
        let mut a = ContentDigest::default();
        a.add("x", 3, &json!({ "name": "Ada" }));
        let mut b = ContentDigest::default();
        b.add("x", 3, &json!({ "name": "Ada Lovelace" }));
        assert_ne!(a, b);
        assert_ne!(a.hex(), b.hex());
    }

    #[test]
    fn the_content_digest_ignores_key_order_spacing_and_row_order() {
        let mut a = ContentDigest::default();
        a.add_json(
            "x",
            1,
            r#"{"b": {"d": [1, {"f": null, "e": true}], "c": 2.5}, "a": "ü"}"#,
        )
        .unwrap();
        a.add_json("y", 2, r#"{"k":"v"}"#).unwrap();
        let mut b = ContentDigest::default();
        b.add("y", 2, &json!({ "k": "v" }));
        b.add(
            "x",
            1,
            &json!({ "a": "ü", "b": { "c": 2.5, "d": [1, { "e": true, "f": null }] } }),
        );
        assert_eq!(a, b);
        assert_eq!(a.count(), 2);
    }

    #[test]
    fn the_content_digest_tells_id_version_and_data_apart() {
        let row = |id: &str, version: u64, data: Value| content_row_digest(id, version, &data);
        let base = row("ab", 1, json!("c"));
        assert_ne!(base, row("a", 1, json!("bc")));
        assert_ne!(base, row("ab", 2, json!("c")));
        assert_ne!(base, row("ab", 1, json!(["c"])));
        assert_ne!(row("x", 1, json!(1)), row("x", 1, json!(1.0)));
    }

    #[test]
    fn canonical_json_sorts_keys_by_bytes_and_keeps_unicode_as_utf8() {
        let value: Value = serde_json::from_str(
            "{\"\u{e9}\": 1, \"z\": \"\\u0000\\n\\\"\", \"Z\": [], \"a\": {\"y\": -3, \"x\": 1e2}}",
        )
        .unwrap();
        assert_eq!(
            canonical_json(&value),
            "{\"Z\":[],\"a\":{\"x\":100.0,\"y\":-3},\"z\":\"\\u0000\\n\\\"\",\"\u{e9}\":1}"
        );
    }

    #[test]
    fn a_canonical_text_reads_back_to_the_same_canonical_text() {
        let value = json!({ "n": [0.1, -0.0, 1e300, u64::MAX, i64::MIN], "s": "\u{1F600}\t" });
        let text = canonical_json(&value);
        let again: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(canonical_json(&again), text);
    }

    #[test]
    fn the_content_digest_is_pinned() {
        // Pins the row layout and the hash: a change here breaks every deployed client's
        // comparison with the server, so it needs a new digest version instead.
        let mut digest = ContentDigest::default();
        digest.add("contact-1", 3, &json!({ "name": "Ada" }));
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&9u64.to_le_bytes());
        bytes.extend_from_slice(b"contact-1");
        bytes.extend_from_slice(&3u64.to_le_bytes());
        bytes.extend_from_slice(&14u64.to_le_bytes());
        bytes.extend_from_slice(br#"{"name":"Ada"}"#);
        assert_eq!(
            digest.hex(),
            format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes))
        );
        assert_eq!(digest.hex(), PINNED_CONTACT_1);
    }

    /// `ContentDigest` of `("contact-1", 3, {"name": "Ada"})`, as docs/protocol.md shows it.
    const PINNED_CONTACT_1: &str = "99dcd9fe9dabd324031dfc3167ea4004";
}
