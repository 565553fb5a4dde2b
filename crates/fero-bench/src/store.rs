//! [`CompactStore`]: the in-memory local store the in-process workloads apply pages into.
//!
//! W1's goal is a peak RSS at N = 1M of at most 1/20 of RxDB's (≤ 222 MB). The item's text alone
//! is 162 bytes, so per-item heap objects (four `String`s, a map node, allocator headers) would
//! blow the budget. Each document is instead one length-prefixed record appended to a single
//! byte arena (integers as LEB128 varints, strings with a varint length), and a hash index maps
//! an id to its record's offset: about 182 bytes per item in the arena and 9 bytes per index slot.
//! An index slot packs the offset (40 bits) with 24 bits of the id's hash, so growing the index
//! rehashes from the slots alone: reading a million ids back from the arena, one cache miss each,
//! made up a third of W1's time at 1M before.
//! A rewrite appends a new record and leaves the old one as garbage; the arena is compacted when
//! garbage outweighs live data, so updates cost amortised O(record).
//!
//! Pending local edits are listed from an outbox ordered by edit sequence (oldest first), so
//! listing them never scans the store.

use std::collections::BTreeMap;
use std::fmt;

use fero::{PushAccepted, SyncId, SyncPayload, Timestamp, Version};
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;

use crate::data::{BenchDoc, BenchItem};

/// Below this much garbage the arena is never compacted: copying a small arena to reclaim a few
/// records costs more than it saves.
const MIN_GARBAGE_TO_COMPACT: usize = 1 << 20;

/// Offsets take the low 40 bits of an index slot (an arena of up to 1 TiB); the id's hash tag the
/// high 24.
const OFFSET_BITS: u32 = 40;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;

/// A document as a record of the store, borrowed (from the arena, or from an item being written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DocRef<'a> {
    /// The id.
    pub id: &'a str,
    /// The server's feed position of the copy it rests on (0 when the server never sent it).
    pub sync_id: SyncId,
    /// The local copy's version.
    pub version: Version,
    /// The server version a pending edit was made on.
    pub base_version: Option<Version>,
    /// A pending local edit exists.
    pub modified: bool,
    /// The pending edit deletes the document.
    pub deleted: bool,
    /// The pending edit's place in the outbox (meaningful only while `modified`).
    pub edit_seq: u64,
    /// When it was last written.
    pub updated_at: Timestamp,
    /// The name.
    pub name: &'a str,
    /// The email.
    pub email: &'a str,
    /// The body.
    pub body: &'a str,
}

impl<'a> DocRef<'a> {
    /// The server's item, as an unmodified local copy.
    pub fn synced(item: &'a BenchItem) -> DocRef<'a> {
        DocRef {
            id: &item.id,
            sync_id: item.sync_id,
            version: item.version,
            base_version: Some(item.version),
            modified: false,
            deleted: false,
            edit_seq: 0,
            updated_at: item.updated_at,
            name: &item.name,
            email: &item.email,
            body: &item.body,
        }
    }

    /// The document as the sync engine sees it.
    pub fn to_doc(&self) -> BenchDoc {
        BenchDoc {
            id: self.id.to_owned(),
            version: self.version,
            base_version: self.base_version,
            modified: self.modified,
            deleted: self.deleted,
            updated_at: self.updated_at,
            name: self.name.to_owned(),
            email: self.email.to_owned(),
            body: self.body.to_owned(),
        }
    }
}

/// An arena-backed document store with an outbox of pending local edits. See the
/// [module docs](self) for the layout.
///
/// # Examples
/// ```
/// use fero::{SyncId, Version};
/// use fero_bench::data::BenchItem;
/// use fero_bench::store::CompactStore;
///
/// let mut store = CompactStore::new();
/// let item = BenchItem::generate(1, Version(1), SyncId(1));
/// store.apply_server(&item, false);
/// store.edit(&item.id, "Ada Lovelace", "ada@example.com", "hello", false);
/// let pending = store.modified();
/// assert_eq!(pending.len(), 1);
/// assert_eq!(pending[0].base_version, Some(Version(1)));
/// assert_eq!(pending[0].version, Version(2));
/// ```
#[derive(Default)]
pub struct CompactStore {
    arena: Vec<u8>,
    index: HashTable<u64>,
    hasher: FxBuildHasher,
    garbage: usize,
    /// Edit sequence → id of every document with a pending edit.
    outbox: BTreeMap<u64, Box<str>>,
    next_seq: u64,
    /// Reused buffer for rewriting a record from a record of the same arena.
    scratch: Vec<u8>,
}

impl fmt::Debug for CompactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompactStore")
            .field("documents", &self.index.len())
            .field("pending_edits", &self.outbox.len())
            .field("arena_bytes", &self.arena.len())
            .field("garbage_bytes", &self.garbage)
            .finish()
    }
}

impl CompactStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Documents stored (a pending local deletion still counts until it is pushed).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// `true` without documents.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Documents with a pending local edit.
    pub fn modified_count(&self) -> usize {
        self.outbox.len()
    }

    /// Bytes of records, live and garbage.
    pub fn arena_bytes(&self) -> usize {
        self.arena.len()
    }

    /// The document `id`.
    pub fn get(&self, id: &str) -> Option<DocRef<'_>> {
        self.find(id).map(|offset| decode(&self.arena, offset))
    }

    /// Writes the server's state of an item: an unmodified copy, or for a tombstone no copy. A
    /// pending edit of the id is dropped with its outbox entry.
    pub fn apply_server(&mut self, item: &BenchItem, deleted: bool) {
        if deleted {
            self.remove(&item.id);
        } else {
            self.put(&DocRef::synced(item));
        }
    }

    /// A local edit (as an app makes one): new content, version + 1, queued in the outbox. The
    /// base version is the server version the first pending edit was made on.
    pub fn edit(&mut self, id: &str, name: &str, email: &str, body: &str, deleted: bool) {
        self.next_seq += 1;
        let edit_seq = self.next_seq;
        let (sync_id, version, base_version, updated_at) = match self.get(id) {
            Some(old) => (
                old.sync_id,
                old.version.next(),
                if old.modified {
                    old.base_version
                } else {
                    Some(old.version)
                },
                old.updated_at,
            ),
            None => (SyncId(0), Version(1), None, Timestamp(0)),
        };
        self.put(&DocRef {
            id,
            sync_id,
            version,
            base_version,
            modified: true,
            deleted,
            edit_seq,
            updated_at,
            name,
            email,
            body,
        });
    }

    /// Records the server's acceptance of a pushed change (in one step with removing its outbox
    /// entry): a document unchanged since it was pushed is now in sync at the new version; one
    /// edited again meanwhile keeps its new edit, now based on the accepted version.
    pub fn accept(&mut self, accepted: &PushAccepted, pushed_version: Version) {
        let Some(offset) = self.find(&accepted.id) else {
            return;
        };
        let current = Header::decode(&self.arena, Layout::of(&self.arena, offset).header);
        if current.version == pushed_version && current.deleted {
            self.remove(&accepted.id);
            return;
        }
        self.patch(&accepted.id, offset, |header| {
            if header.version == pushed_version {
                header.version = accepted.version;
                header.base_version = Some(accepted.version);
                header.sync_id = accepted.sync_id;
                // The stale edit_seq stays: ignored without the flag, and keeping its width lets
                // the header be patched in place.
                header.modified = false;
            } else {
                header.base_version = Some(accepted.version);
                header.version = header.version.max(accepted.version.next());
            }
        });
    }

    /// The version of `id`'s pending local edit, `None` without one (reads only the record's
    /// header).
    pub fn pending_version(&self, id: &str) -> Option<Version> {
        let offset = self.find(id)?;
        let header = Header::decode(&self.arena, Layout::of(&self.arena, offset).header);
        header.modified.then_some(header.version)
    }

    /// Keeps a local edit that won (or was merged) and rests it on the server's state: it stays
    /// pending, with the server's version as its base.
    pub fn rebase(&mut self, local: &BenchDoc, server: &SyncPayload<BenchItem>) {
        let edit_seq = match self.get(&local.id) {
            Some(current) if current.modified => current.edit_seq,
            _ => {
                self.next_seq += 1;
                self.next_seq
            }
        };
        self.put(&DocRef {
            id: &local.id,
            sync_id: server.item.sync_id,
            version: local.version.max(server.item.version.next()),
            base_version: Some(server.item.version),
            modified: true,
            deleted: local.deleted,
            edit_seq,
            updated_at: local.updated_at,
            name: &local.name,
            email: &local.email,
            body: &local.body,
        });
    }

    /// Every document with a pending edit, oldest edit first.
    pub fn modified(&self) -> Vec<BenchDoc> {
        self.outbox
            .values()
            .filter_map(|id| self.get(id))
            .map(|doc| doc.to_doc())
            .collect()
    }

    /// Drops the document `id`; `false` when there was none.
    pub fn remove(&mut self, id: &str) -> bool {
        let tag = self.tag(id);
        let arena = &self.arena;
        let Ok(entry) = self.index.find_entry(slot_hash(tag), |&slot| {
            slot >> OFFSET_BITS == tag && id_at(arena, slot & OFFSET_MASK) == id.as_bytes()
        }) else {
            return false;
        };
        let (slot, _) = entry.remove();
        self.retire(slot & OFFSET_MASK);
        self.maybe_compact();
        true
    }

    /// The 24-bit hash tag of an id.
    fn tag(&self, id: &str) -> u64 {
        self.hasher.hash_one(id.as_bytes()) >> OFFSET_BITS
    }

    fn find(&self, id: &str) -> Option<u64> {
        let tag = self.tag(id);
        self.index
            .find(slot_hash(tag), |&slot| {
                slot >> OFFSET_BITS == tag
                    && id_at(&self.arena, slot & OFFSET_MASK) == id.as_bytes()
            })
            .map(|&slot| slot & OFFSET_MASK)
    }

    /// Writes `doc` (which must not borrow this store) as the document of its id.
    fn put(&mut self, doc: &DocRef<'_>) {
        let offset = self.arena.len() as u64;
        encode(doc, &mut self.arena);
        self.link(doc.id, offset, doc.modified.then_some(doc.edit_seq));
    }

    /// Changes the numbers and flags of the record of `id` at `offset`: in place when their
    /// encoding keeps its length (the common case: accepting a push), else as a new record.
    fn patch(&mut self, id: &str, offset: u64, change: impl FnOnce(&mut Header)) {
        let layout = Layout::of(&self.arena, offset);
        let old = Header::decode(&self.arena, layout.header);
        let mut header = old;
        change(&mut header);
        let old_len = layout.len - (layout.header - offset as usize);
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        if header.encoded_len() == old_len {
            header.encode(&mut scratch);
            self.arena[layout.header..layout.header + old_len].copy_from_slice(&scratch);
            if old.pending() != header.pending() {
                if let Some(edit_seq) = old.pending() {
                    self.outbox.remove(&edit_seq);
                }
                if let Some(edit_seq) = header.pending() {
                    self.outbox.insert(edit_seq, id.into());
                }
            }
        } else {
            let doc = decode(&self.arena, offset);
            encode(
                &DocRef {
                    sync_id: header.sync_id,
                    version: header.version,
                    base_version: header.base_version,
                    modified: header.modified,
                    deleted: header.deleted,
                    edit_seq: header.edit_seq,
                    updated_at: header.updated_at,
                    ..doc
                },
                &mut scratch,
            );
            let new_offset = self.arena.len() as u64;
            self.arena.extend_from_slice(&scratch);
            self.link(id, new_offset, header.pending());
        }
        self.scratch = scratch;
    }

    /// Points `id` at the record just appended at `offset` (with its pending edit's sequence),
    /// retiring the record it replaces.
    fn link(&mut self, id: &str, offset: u64, pending: Option<u64>) {
        assert!(
            offset <= OFFSET_MASK,
            "the compact store's arena is limited to 1 TiB, far beyond this machine's memory"
        );
        let tag = self.tag(id);
        let new_slot = tag << OFFSET_BITS | offset;
        let arena = &self.arena;
        let replaced = match self.index.find_mut(slot_hash(tag), |&slot| {
            slot >> OFFSET_BITS == tag && id_at(arena, slot & OFFSET_MASK) == id.as_bytes()
        }) {
            Some(slot) => Some(std::mem::replace(slot, new_slot) & OFFSET_MASK),
            None => {
                self.index.insert_unique(slot_hash(tag), new_slot, |&slot| {
                    slot_hash(slot >> OFFSET_BITS)
                });
                None
            }
        };
        if let Some(old) = replaced {
            self.retire(old);
        }
        if let Some(edit_seq) = pending {
            self.outbox.insert(edit_seq, id.into());
        }
        self.maybe_compact();
    }

    /// Counts the record at `offset` as garbage and drops its outbox entry.
    fn retire(&mut self, offset: u64) {
        let layout = Layout::of(&self.arena, offset);
        if let Some(edit_seq) = Header::decode(&self.arena, layout.header).pending() {
            self.outbox.remove(&edit_seq);
        }
        self.garbage += layout.len;
    }

    fn maybe_compact(&mut self) {
        if self.garbage < MIN_GARBAGE_TO_COMPACT || self.garbage < self.arena.len() / 2 {
            return;
        }
        let mut compacted = Vec::with_capacity(self.arena.len() - self.garbage);
        for slot in self.index.iter_mut() {
            let offset = *slot & OFFSET_MASK;
            let len = Layout::of(&self.arena, offset).len;
            *slot = (*slot & !OFFSET_MASK) | compacted.len() as u64;
            let start = offset as usize;
            compacted.extend_from_slice(&self.arena[start..start + len]);
        }
        self.arena = compacted;
        self.garbage = 0;
    }
}

/// The index's hash of a slot with hash tag `tag`: the tag's 24 bits spread over 64, so that
/// both the low bits (bucket) and the top 7 (control byte) of hashbrown's hash vary.
fn slot_hash(tag: u64) -> u64 {
    tag.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

// Record layout:
//   varint(length of the rest)
//   varint(id len) varint(name len) varint(email len) varint(body len)
//   id name email body: one UTF-8 span, validated with one call when read
//   header: sync_id as 8 bytes LE (fixed, so accepting a push patches it in place) |
//           varint version | varint (base_version + 1, 0 for none) | flags | varint edit_seq |
//           varint updated_at
const FLAG_MODIFIED: u8 = 1;
const FLAG_DELETED: u8 = 2;

/// The numbers and flags of a record: everything but the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    sync_id: SyncId,
    version: Version,
    base_version: Option<Version>,
    modified: bool,
    deleted: bool,
    edit_seq: u64,
    updated_at: Timestamp,
}

impl Header {
    fn of(doc: &DocRef<'_>) -> Header {
        Header {
            sync_id: doc.sync_id,
            version: doc.version,
            base_version: doc.base_version,
            modified: doc.modified,
            deleted: doc.deleted,
            edit_seq: doc.edit_seq,
            updated_at: doc.updated_at,
        }
    }

    fn pending(&self) -> Option<u64> {
        self.modified.then_some(self.edit_seq)
    }

    fn base_code(&self) -> u64 {
        self.base_version.map_or(0, |v| v.0.saturating_add(1))
    }

    fn encoded_len(&self) -> usize {
        8 + varint_len(self.version.0)
            + varint_len(self.base_code())
            + 1
            + varint_len(self.edit_seq)
            + varint_len(self.updated_at.as_millis())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.sync_id.0.to_le_bytes());
        put_varint(out, self.version.0);
        put_varint(out, self.base_code());
        out.push(u8::from(self.modified) * FLAG_MODIFIED + u8::from(self.deleted) * FLAG_DELETED);
        put_varint(out, self.edit_seq);
        put_varint(out, self.updated_at.as_millis());
    }

    fn decode(arena: &[u8], mut at: usize) -> Header {
        let mut sync_id = [0u8; 8];
        sync_id.copy_from_slice(&arena[at..at + 8]);
        at += 8;
        let version = Version(get_varint(arena, &mut at));
        let base = get_varint(arena, &mut at);
        let flags = arena[at];
        at += 1;
        let edit_seq = get_varint(arena, &mut at);
        let updated_at = Timestamp(get_varint(arena, &mut at));
        Header {
            sync_id: SyncId(u64::from_le_bytes(sync_id)),
            version,
            base_version: base.checked_sub(1).map(Version),
            modified: flags & FLAG_MODIFIED != 0,
            deleted: flags & FLAG_DELETED != 0,
            edit_seq,
            updated_at,
        }
    }
}

/// Where the parts of the record at `offset` lie.
struct Layout {
    /// The record's size, its length prefix included.
    len: usize,
    /// Where the text span starts.
    text: usize,
    /// Lengths of id, name, email and body.
    lens: [usize; 4],
    /// Where the header starts.
    header: usize,
}

impl Layout {
    fn of(arena: &[u8], offset: u64) -> Layout {
        let start = offset as usize;
        let mut at = start;
        let rest = get_varint(arena, &mut at) as usize;
        let len = at - start + rest;
        let mut lens = [0usize; 4];
        for part in &mut lens {
            *part = get_varint(arena, &mut at) as usize;
        }
        let header = at + lens.iter().sum::<usize>();
        Layout {
            len,
            text: at,
            lens,
            header,
        }
    }
}

fn encode(doc: &DocRef<'_>, out: &mut Vec<u8>) {
    let header = Header::of(doc);
    let texts = [doc.id, doc.name, doc.email, doc.body];
    let rest = texts
        .iter()
        .map(|t| varint_len(t.len() as u64) + t.len())
        .sum::<usize>()
        + header.encoded_len();
    out.reserve(varint_len(rest as u64) + rest);
    put_varint(out, rest as u64);
    for text in texts {
        put_varint(out, text.len() as u64);
    }
    for text in texts {
        out.extend_from_slice(text.as_bytes());
    }
    header.encode(out);
}

fn decode(arena: &[u8], offset: u64) -> DocRef<'_> {
    let layout = Layout::of(arena, offset);
    let text = std::str::from_utf8(&arena[layout.text..layout.header])
        .expect("records are only ever encoded from &str");
    let [id_len, name_len, email_len, _] = layout.lens;
    // The lengths split the span where the original strings ended, so on char boundaries.
    fn split(text: &str, at: usize) -> (&str, &str) {
        text.split_at_checked(at)
            .expect("a record's text splits where its strings were joined")
    }
    let (id, rest) = split(text, id_len);
    let (name, rest) = split(rest, name_len);
    let (email, body) = split(rest, email_len);
    let header = Header::decode(arena, layout.header);
    DocRef {
        id,
        sync_id: header.sync_id,
        version: header.version,
        base_version: header.base_version,
        modified: header.modified,
        deleted: header.deleted,
        edit_seq: header.edit_seq,
        updated_at: header.updated_at,
        name,
        email,
        body,
    }
}

/// The id bytes of the record at `offset`, without decoding the rest.
fn id_at(arena: &[u8], offset: u64) -> &[u8] {
    let mut at = offset as usize;
    let _rest = get_varint(arena, &mut at);
    let id_len = get_varint(arena, &mut at) as usize;
    for _ in 0..3 {
        get_varint(arena, &mut at); // name, email and body lengths
    }
    &arena[at..at + id_len]
}

fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(arena: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = arena[*at];
        *at += 1;
        value |= u64::from(byte & 0x7F) << shift;
        if byte < 0x80 {
            return value;
        }
        shift += 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(index: u64, version: u64) -> BenchItem {
        BenchItem::generate(index, Version(version), SyncId(index))
    }

    #[test]
    fn a_written_item_reads_back_field_for_field() {
        let mut store = CompactStore::new();
        let original = item(42, 3);
        store.apply_server(&original, false);
        let doc = store.get(&original.id).unwrap();
        assert_eq!(doc, DocRef::synced(&original));
        assert_eq!(store.len(), 1);
        assert_eq!(store.get("item-0000043"), None);
    }

    #[test]
    fn varints_round_trip_at_every_length() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value), "{value}");
            let mut at = 0;
            assert_eq!(get_varint(&out, &mut at), value);
        }
    }

    #[test]
    fn multibyte_text_reads_back_intact() {
        let mut store = CompactStore::new();
        store.edit(
            "id-ä",
            "Zoë Ðurić",
            "zoë@exämple.com",
            "日本語のテキスト",
            false,
        );
        let doc = store.get("id-ä").unwrap();
        assert_eq!(
            (doc.name, doc.email, doc.body),
            ("Zoë Ðurić", "zoë@exämple.com", "日本語のテキスト")
        );
    }

    #[test]
    fn rewrites_replace_and_compaction_keeps_every_live_document() {
        let mut store = CompactStore::new();
        for round in 1..=12 {
            for index in 1..=2_000 {
                store.apply_server(&item(index, round), false);
            }
        }
        assert_eq!(store.len(), 2_000);
        // 12 rounds of ~190-byte records would be ~4.5 MB without compaction; with it, garbage
        // stays below the live bytes or the compaction threshold.
        let live = 2_000 * 200;
        assert!(
            store.arena_bytes() < live + live.max(MIN_GARBAGE_TO_COMPACT),
            "{store:?}"
        );
        for index in (1..=2_000).step_by(97) {
            assert_eq!(
                store.get(&item(index, 12).id).unwrap(),
                DocRef::synced(&item(index, 12))
            );
        }
    }

    #[test]
    fn the_outbox_lists_edits_oldest_first_and_acceptance_empties_it() {
        let mut store = CompactStore::new();
        for index in 1..=3 {
            store.apply_server(&item(index, 1), false);
        }
        store.edit("item-0000003", "c", "c@x", "third", false);
        store.edit("item-0000001", "a", "a@x", "first", false);
        store.edit("new-1", "n", "n@x", "brand new", false);
        let ids: Vec<_> = store.modified().into_iter().map(|d| d.id).collect();
        assert_eq!(ids, ["item-0000003", "item-0000001", "new-1"]);

        for doc in store.modified() {
            let accepted = PushAccepted {
                id: doc.id.clone(),
                version: doc.base_version.map_or(Version(1), Version::next),
                sync_id: SyncId(100),
            };
            store.accept(&accepted, doc.version);
        }
        assert_eq!(store.modified_count(), 0);
        let doc = store.get("item-0000003").unwrap();
        assert_eq!(
            (doc.version, doc.modified, doc.body),
            (Version(2), false, "third")
        );
        assert_eq!(store.get("new-1").unwrap().version, Version(1));
    }

    #[test]
    fn an_edit_made_after_the_push_stays_pending_on_the_accepted_version() {
        let mut store = CompactStore::new();
        store.apply_server(&item(1, 1), false);
        store.edit("item-0000001", "a", "a@x", "pushed", false);
        let pushed = store.modified().remove(0);
        store.edit("item-0000001", "a", "a@x", "newer", false);
        store.accept(
            &PushAccepted {
                id: pushed.id.clone(),
                version: Version(2),
                sync_id: SyncId(9),
            },
            pushed.version,
        );
        let doc = store.get("item-0000001").unwrap();
        assert!(doc.modified);
        assert_eq!((doc.base_version, doc.body), (Some(Version(2)), "newer"));
        assert_eq!(store.modified_count(), 1);
    }

    #[test]
    fn server_state_and_tombstones_drop_pending_edits() {
        let mut store = CompactStore::new();
        store.apply_server(&item(1, 1), false);
        store.apply_server(&item(2, 1), false);
        store.edit("item-0000001", "a", "a@x", "mine", false);
        store.edit("item-0000002", "b", "b@x", "mine", false);
        store.apply_server(&item(1, 2), false);
        store.apply_server(&item(2, 2), true);
        assert_eq!(store.modified_count(), 0);
        assert_eq!(store.get("item-0000001").unwrap().version, Version(2));
        assert_eq!(store.get("item-0000002"), None);
        assert_eq!(store.len(), 1);
    }
}
