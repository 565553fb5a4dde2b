//! [`CompactStore`]: the in-memory local store the in-process workloads apply pages into.
//!
//! W1's goal is a peak RSS at N = 1M of at most 1/20 of RxDB's (≤ 222 MB). The item's text alone
//! is 162 bytes, so per-item heap objects (four `String`s, a map node, allocator headers) would
//! blow the budget. Each document is instead one length-prefixed record appended to a byte arena
//! (integers as LEB128 varints, strings with a varint length), and a hash index maps an id to its
//! record's offset: about 186 bytes per item in the arena and 9 bytes per index slot.
//!
//! The arena is a list of fixed-size chunks, so growing it never copies (or briefly doubles)
//! what it holds; a record never straddles two chunks. An index slot packs the record's offset
//! (36 bits) with 28 bits of the id's hash, so growing the index rehashes from the slots alone:
//! reading a million ids back from the arena, one cache miss each, made up a third of W1's time
//! at 1M before.
//! A rewrite appends a new record and leaves the old one as garbage; the arena is compacted when
//! garbage outweighs live data, so updates cost amortised O(record).
//!
//! Pending local edits are listed from an outbox ordered by edit sequence (oldest first) that
//! holds each edit's record offset, so listing them neither scans the store nor looks ids up.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use fero::{PushAccepted, SyncId, SyncPayload, Timestamp, Version};
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;

use crate::data::{BenchDoc, BenchItem, DocText};

/// Below this much garbage the arena is never compacted: copying a small arena to reclaim a few
/// records costs more than it saves.
const MIN_GARBAGE_TO_COMPACT: usize = 1 << 20;

/// Offsets take the low 36 bits of an index slot (an arena of up to 64 GiB, well beyond this
/// machine's memory); the id's hash tag the high 28. The wider the tag, the rarer a new id's tag
/// equals a stored one's, which costs reading that record's id from the arena (a cache miss):
/// with 24 bits that was 6% of the inserts at 1M documents, with 28 bits it is 0.4%.
const OFFSET_BITS: u32 = 36;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;

/// An arena chunk holds 1 MiB of records: small enough that the last, partly filled chunk wastes
/// little, large enough that a million records need only ~180 chunks. An offset is the chunk's
/// number above `CHUNK_BITS` and the position in the chunk below.
const CHUNK_BITS: u32 = 20;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;

/// Listed documents sharing one text buffer (see [`CompactStore::modified`]): a push page's worth.
pub const SHARED_TEXTS: usize = 1_000;

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
            id: item.id(),
            sync_id: item.sync_id,
            version: item.version,
            base_version: Some(item.version),
            modified: false,
            deleted: false,
            edit_seq: 0,
            updated_at: item.updated_at,
            name: item.name(),
            email: item.email(),
            body: item.body(),
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
            text: DocText::new(self.name, self.email, self.body),
        }
    }
}

/// The record bytes of a store: fixed-size chunks that are filled in turn and never reallocated,
/// so a record's offset stays valid and growth costs no copy.
#[derive(Default)]
struct Arena {
    chunks: Vec<Vec<u8>>,
    /// Bytes of records in all chunks.
    bytes: usize,
}

impl Arena {
    /// The bytes from the record at `offset` to the end of its chunk.
    fn record(&self, offset: u64) -> &[u8] {
        let chunk = &self.chunks[(offset >> CHUNK_BITS) as usize];
        &chunk[offset as usize & (CHUNK_LEN - 1)..]
    }

    /// The same, writable.
    fn record_mut(&mut self, offset: u64) -> &mut [u8] {
        let chunk = &mut self.chunks[(offset >> CHUNK_BITS) as usize];
        &mut chunk[offset as usize & (CHUNK_LEN - 1)..]
    }

    /// Room for a record of `len` bytes: its offset, and the chunk to append exactly `len` bytes
    /// to (it has the capacity, so appending never reallocates). A record longer than a chunk
    /// gets a chunk of its own.
    fn append(&mut self, len: usize) -> (u64, &mut Vec<u8>) {
        let fits = self
            .chunks
            .last()
            .is_some_and(|chunk| chunk.len() + len <= CHUNK_LEN);
        if !fits {
            self.chunks.push(Vec::with_capacity(len.max(CHUNK_LEN)));
        }
        let number = self.chunks.len() - 1;
        let chunk = &mut self.chunks[number];
        let offset = (number as u64) << CHUNK_BITS | chunk.len() as u64;
        assert!(
            offset <= OFFSET_MASK,
            "the compact store's arena is limited to 64 GiB, beyond this machine's memory"
        );
        self.bytes += len;
        (offset, chunk)
    }
}

/// The outbox: the record offset of every pending edit, by edit sequence, oldest first.
///
/// Edit sequences are handed out in increasing order, so a new entry is appended, and
/// acknowledgements mostly arrive oldest first, so a removal is mostly a `pop_front`. An entry
/// removed from the middle is marked and skipped, and the marks are swept once they make up half
/// the entries, so memory stays proportional to the pending edits.
#[derive(Default)]
struct Outbox {
    /// (edit sequence, record offset or [`Outbox::REMOVED`]), in increasing sequence.
    entries: VecDeque<(u64, u64)>,
    /// Entries not marked removed.
    live: usize,
}

impl Outbox {
    /// The offset of a removed entry: no record has it (offsets fit in `OFFSET_BITS`).
    const REMOVED: u64 = u64::MAX;

    fn len(&self) -> usize {
        self.live
    }

    fn position(&self, edit_seq: u64) -> Result<usize, usize> {
        match self.entries.front() {
            Some(&(first, _)) if first == edit_seq => Ok(0),
            _ => self
                .entries
                .binary_search_by_key(&edit_seq, |&(seq, _)| seq),
        }
    }

    /// Records (or moves) the pending edit `edit_seq` at `offset`.
    fn insert(&mut self, edit_seq: u64, offset: u64) {
        if self.entries.back().is_none_or(|&(last, _)| last < edit_seq) {
            self.entries.push_back((edit_seq, offset));
            self.live += 1;
            return;
        }
        match self.position(edit_seq) {
            Ok(at) => {
                let entry = &mut self.entries[at].1;
                if *entry == Self::REMOVED {
                    self.live += 1;
                }
                *entry = offset;
            }
            Err(at) => {
                self.entries.insert(at, (edit_seq, offset));
                self.live += 1;
            }
        }
    }

    /// Drops the pending edit `edit_seq`, if listed.
    fn remove(&mut self, edit_seq: u64) {
        let Ok(at) = self.position(edit_seq) else {
            return;
        };
        let entry = &mut self.entries[at].1;
        if *entry == Self::REMOVED {
            return;
        }
        *entry = Self::REMOVED;
        self.live -= 1;
        while self
            .entries
            .front()
            .is_some_and(|&(_, offset)| offset == Self::REMOVED)
        {
            self.entries.pop_front();
        }
        if self.entries.len() > 2 * self.live + 64 {
            self.entries.retain(|&(_, offset)| offset != Self::REMOVED);
        }
    }

    /// The record offsets of the pending edits, oldest first.
    fn offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries
            .iter()
            .map(|&(_, offset)| offset)
            .filter(|&offset| offset != Self::REMOVED)
    }
}

/// Tables of the index: a tag's top `SHARD_BITS` bits pick its table.
const SHARD_BITS: u32 = 8;

/// The id → record index, split into `1 << SHARD_BITS` hash tables of slots (tag and offset).
///
/// Each table grows on its own, so a resize rehashes a table small enough to stay in cache and
/// holds old and new slots of that table only: one table of a million slots missed the cache on
/// nearly every slot it moved and briefly needed both tables' memory.
struct Index {
    shards: Vec<HashTable<u64>>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: (0..1 << SHARD_BITS).map(|_| HashTable::new()).collect(),
        }
    }
}

impl Index {
    fn shard(&self, tag: u64) -> &HashTable<u64> {
        &self.shards[(tag >> (64 - OFFSET_BITS - SHARD_BITS)) as usize]
    }

    fn shard_mut(&mut self, tag: u64) -> &mut HashTable<u64> {
        &mut self.shards[(tag >> (64 - OFFSET_BITS - SHARD_BITS)) as usize]
    }

    fn len(&self) -> usize {
        self.shards.iter().map(HashTable::len).sum()
    }

    fn slots_mut(&mut self) -> impl Iterator<Item = &mut u64> {
        self.shards.iter_mut().flat_map(HashTable::iter_mut)
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
/// store.edit(item.id(), "Ada Lovelace", "ada@example.com", "hello", false);
/// let pending = store.modified();
/// assert_eq!(pending.len(), 1);
/// assert_eq!(pending[0].base_version, Some(Version(1)));
/// assert_eq!(pending[0].version, Version(2));
/// ```
#[derive(Default)]
pub struct CompactStore {
    arena: Arena,
    index: Index,
    hasher: FxBuildHasher,
    garbage: usize,
    /// Edit sequence → record offset of every document with a pending edit.
    outbox: Outbox,
    next_seq: u64,
    /// Reused buffer for rewriting a record from a record of the same arena.
    scratch: Vec<u8>,
    /// Reused list of (hash tag, offset) of records appended but not yet indexed.
    appended: Vec<(u64, u64)>,
    /// Reused list of the records of a page of acceptances.
    found: Vec<Option<u64>>,
    /// Counts records retired and compactions: while it stands still, an offset found stays
    /// the record of its id.
    moves: u64,
}

impl fmt::Debug for CompactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompactStore")
            .field("documents", &self.index.len())
            .field("pending_edits", &self.outbox.len())
            .field("arena_bytes", &self.arena.bytes)
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
        self.len() == 0
    }

    /// Documents with a pending local edit.
    pub fn modified_count(&self) -> usize {
        self.outbox.len()
    }

    /// Bytes of records, live and garbage.
    pub fn arena_bytes(&self) -> usize {
        self.arena.bytes
    }

    /// The document `id`.
    pub fn get(&self, id: &str) -> Option<DocRef<'_>> {
        self.find(id)
            .map(|offset| decode(self.arena.record(offset)))
    }

    /// Writes the server's state of an item: an unmodified copy, or for a tombstone no copy. A
    /// pending edit of the id is dropped with its outbox entry.
    pub fn apply_server(&mut self, item: &BenchItem, deleted: bool) {
        if deleted {
            self.remove(item.id());
        } else {
            self.put(&DocRef::synced(item));
        }
    }

    /// Writes the server's state of a page of items, in order: the same as [`apply_server`] item
    /// by item. The records are appended first and indexed afterwards in one tight loop, so the
    /// CPU overlaps the index probes (at a million documents each one is a likely cache miss)
    /// instead of waiting for them one record at a time.
    ///
    /// [`apply_server`]: CompactStore::apply_server
    pub fn apply_server_page(&mut self, page: &[SyncPayload<BenchItem>]) {
        let mut appended = std::mem::take(&mut self.appended);
        for payload in page {
            if payload.deleted {
                // A tombstone may remove an id written earlier in this page: index those first.
                self.index_appended(&mut appended);
                self.remove(payload.item.id());
            } else {
                let doc = DocRef::synced(&payload.item);
                let record = Encoded::new(&doc);
                let (offset, chunk) = self.arena.append(record.len());
                record.write(chunk);
                appended.push((self.tag(doc.id), offset));
            }
        }
        self.index_appended(&mut appended);
        self.appended = appended;
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
        if let Some(offset) = self.find(&accepted.id) {
            self.accept_at(accepted, pushed_version, offset);
        }
    }

    /// Records the server's acceptance of a page of pushed changes, each with the version that
    /// was pushed: the same as [`accept`] change by change. The records are looked up first, in
    /// one tight loop whose index probes (each a likely cache miss in a large store) the CPU
    /// overlaps, and patched afterwards.
    ///
    /// [`accept`]: CompactStore::accept
    pub fn accept_page(&mut self, page: &[(&PushAccepted, Version)]) {
        let mut found = std::mem::take(&mut self.found);
        found.clear();
        found.extend(page.iter().map(|(accepted, _)| self.find(&accepted.id)));
        let moves = self.moves;
        for (&(accepted, pushed_version), &offset) in page.iter().zip(&found) {
            // A record was retired or moved since the lookups (the page named an id twice, or
            // the arena was compacted): look again.
            let offset = if self.moves == moves {
                offset
            } else {
                self.find(&accepted.id)
            };
            if let Some(offset) = offset {
                self.accept_at(accepted, pushed_version, offset);
            }
        }
        self.found = found;
    }

    /// [`accept`](CompactStore::accept) of the record of `accepted.id` at `offset`.
    fn accept_at(&mut self, accepted: &PushAccepted, pushed_version: Version, offset: u64) {
        let record = self.arena.record(offset);
        let layout = Layout::of(record);
        let current = Header::decode(record, layout.header);
        if current.version == pushed_version && current.deleted {
            self.remove(&accepted.id);
            return;
        }
        let mut header = current;
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
        self.patch(&accepted.id, offset, &layout, current, header);
    }

    /// The version of `id`'s pending local edit, `None` without one (reads only the record's
    /// header).
    pub fn pending_version(&self, id: &str) -> Option<Version> {
        let record = self.arena.record(self.find(id)?);
        let header = Header::decode(record, Layout::of(record).header);
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
            name: local.name(),
            email: local.email(),
            body: local.body(),
        });
    }

    /// Every document with a pending edit, oldest edit first.
    ///
    /// The texts of up to [`SHARED_TEXTS`] documents are copied into one shared buffer, so a
    /// listed document costs one allocation (its id) and a document kept after the others are
    /// dropped keeps at most that many texts alive.
    pub fn modified(&self) -> Vec<BenchDoc> {
        let offsets: Vec<u64> = self.outbox.offsets().collect();
        let mut docs = Vec::with_capacity(offsets.len());
        let mut parts = Vec::with_capacity(offsets.len().min(SHARED_TEXTS));
        let mut joined = String::new();
        for group in offsets.chunks(SHARED_TEXTS) {
            for &offset in group {
                let record = self.arena.record(offset);
                let layout = Layout::of(record);
                let [id_len, name_len, email_len, _] = layout.lens;
                let (id, fields) = split(text_of(record, &layout), id_len);
                let start = joined.len();
                joined.push_str(fields);
                let header = Header::decode(record, layout.header);
                parts.push((
                    id.to_owned(),
                    header,
                    [start, name_len, email_len, joined.len()],
                ));
            }
            let shared: Arc<str> = Arc::from(joined.as_str());
            joined.clear();
            for (id, header, [start, name_len, email_len, end]) in parts.drain(..) {
                docs.push(BenchDoc {
                    id,
                    version: header.version,
                    base_version: header.base_version,
                    modified: header.modified,
                    deleted: header.deleted,
                    updated_at: header.updated_at,
                    text: DocText::shared(&shared, start, [name_len, email_len], end),
                });
            }
        }
        docs
    }

    /// Drops the document `id`; `false` when there was none.
    pub fn remove(&mut self, id: &str) -> bool {
        let tag = self.tag(id);
        let arena = &self.arena;
        let Ok(entry) = self
            .index
            .shard_mut(tag)
            .find_entry(slot_hash(tag), |&slot| {
                slot >> OFFSET_BITS == tag
                    && id_at(arena.record(slot & OFFSET_MASK)) == id.as_bytes()
            })
        else {
            return false;
        };
        let (slot, _) = entry.remove();
        self.retire(slot & OFFSET_MASK);
        self.maybe_compact();
        true
    }

    /// The 28-bit hash tag of an id.
    fn tag(&self, id: &str) -> u64 {
        self.hasher.hash_one(id.as_bytes()) >> OFFSET_BITS
    }

    fn find(&self, id: &str) -> Option<u64> {
        let tag = self.tag(id);
        self.index
            .shard(tag)
            .find(slot_hash(tag), |&slot| {
                slot >> OFFSET_BITS == tag
                    && id_at(self.arena.record(slot & OFFSET_MASK)) == id.as_bytes()
            })
            .map(|&slot| slot & OFFSET_MASK)
    }

    /// Writes `doc` (which must not borrow this store) as the document of its id.
    fn put(&mut self, doc: &DocRef<'_>) {
        let record = Encoded::new(doc);
        let (offset, chunk) = self.arena.append(record.len());
        record.write(chunk);
        self.link(doc.id, offset, doc.modified.then_some(doc.edit_seq));
    }

    /// Replaces the header `old` of the record of `id` at `offset` (laid out as `layout`) by
    /// `header`: in place when its encoding keeps its length (the common case: accepting a
    /// push), else as a new record.
    fn patch(&mut self, id: &str, offset: u64, layout: &Layout, old: Header, header: Header) {
        let old_len = layout.len - layout.header;
        let mut encoded = [0u8; MAX_HEADER_LEN];
        let len = header.encode(&mut encoded);
        if len == old_len {
            self.arena.record_mut(offset)[layout.header..layout.len]
                .copy_from_slice(&encoded[..len]);
            if old.pending() != header.pending() {
                if let Some(edit_seq) = old.pending() {
                    self.outbox.remove(edit_seq);
                }
                if let Some(edit_seq) = header.pending() {
                    self.outbox.insert(edit_seq, offset);
                }
            }
        } else {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            let doc = decode(self.arena.record(offset));
            let doc = DocRef {
                sync_id: header.sync_id,
                version: header.version,
                base_version: header.base_version,
                modified: header.modified,
                deleted: header.deleted,
                edit_seq: header.edit_seq,
                updated_at: header.updated_at,
                ..doc
            };
            Encoded::new(&doc).write(&mut scratch);
            let (new_offset, chunk) = self.arena.append(scratch.len());
            chunk.extend_from_slice(&scratch);
            self.link(id, new_offset, header.pending());
            self.scratch = scratch;
        }
    }

    /// Points `id` at the record just appended at `offset` (with its pending edit's sequence),
    /// retiring the record it replaces.
    fn link(&mut self, id: &str, offset: u64, pending: Option<u64>) {
        if let Some(old) = self.index_record(self.tag(id), offset) {
            self.retire(old);
        }
        if let Some(edit_seq) = pending {
            self.outbox.insert(edit_seq, offset);
        }
        self.maybe_compact();
    }

    /// Indexes the unmodified records of `appended`, in order (a later record of an id replaces
    /// an earlier one), and empties it. Compacting waits until all are indexed: it moves records.
    fn index_appended(&mut self, appended: &mut Vec<(u64, u64)>) {
        for &(tag, offset) in appended.iter() {
            if let Some(old) = self.index_record(tag, offset) {
                self.retire(old);
            }
        }
        appended.clear();
        self.maybe_compact();
    }

    /// Points the index at the record at `offset`, whose id hashes to `tag`, in one probe that
    /// finds either the id's slot or a free one; the offset of the record it replaces.
    fn index_record(&mut self, tag: u64, offset: u64) -> Option<u64> {
        let arena = &self.arena;
        // The ids are compared only when the hash tags match (an update, or 1 in 16M otherwise).
        let same_id = |slot: u64| {
            slot >> OFFSET_BITS == tag
                && id_at(arena.record(slot & OFFSET_MASK)) == id_at(arena.record(offset))
        };
        match self.index.shard_mut(tag).entry(
            slot_hash(tag),
            |&slot| same_id(slot),
            |&slot| slot_hash(slot >> OFFSET_BITS),
        ) {
            Entry::Occupied(mut entry) => {
                Some(std::mem::replace(entry.get_mut(), tag << OFFSET_BITS | offset) & OFFSET_MASK)
            }
            Entry::Vacant(entry) => {
                entry.insert(tag << OFFSET_BITS | offset);
                None
            }
        }
    }

    /// Counts the record at `offset` as garbage and drops its outbox entry.
    fn retire(&mut self, offset: u64) {
        self.moves += 1;
        let record = self.arena.record(offset);
        let layout = Layout::of(record);
        if let Some(edit_seq) = Header::decode(record, layout.header).pending() {
            self.outbox.remove(edit_seq);
        }
        self.garbage += layout.len;
    }

    fn maybe_compact(&mut self) {
        if self.garbage < MIN_GARBAGE_TO_COMPACT || self.garbage < self.arena.bytes / 2 {
            return;
        }
        let mut compacted = Arena::default();
        for slot in self.index.slots_mut() {
            let record = self.arena.record(*slot & OFFSET_MASK);
            let layout = Layout::of(record);
            let (offset, chunk) = compacted.append(layout.len);
            chunk.extend_from_slice(&record[..layout.len]);
            *slot = (*slot & !OFFSET_MASK) | offset;
            if let Some(edit_seq) = Header::decode(record, layout.header).pending() {
                self.outbox.insert(edit_seq, offset);
            }
        }
        self.arena = compacted;
        self.garbage = 0;
        self.moves += 1;
    }
}

/// The index's hash of a slot with hash tag `tag`: the tag's 28 bits spread over 64, so that
/// both the low bits (bucket) and the top 7 (control byte) of hashbrown's hash vary within a
/// table (whose tags share their top bits).
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
// Positions below are relative to the record's start.
const FLAG_MODIFIED: u8 = 1;
/// The longest header: `sync_id`, four varints of at most 10 bytes, and the flags.
const MAX_HEADER_LEN: usize = 8 + 4 * 10 + 1;
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

    /// Writes the header into `out`; its length.
    fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[..8].copy_from_slice(&self.sync_id.0.to_le_bytes());
        let mut len = 8;
        len += write_varint(&mut out[len..], self.version.0);
        len += write_varint(&mut out[len..], self.base_code());
        out[len] = u8::from(self.modified) * FLAG_MODIFIED + u8::from(self.deleted) * FLAG_DELETED;
        len += 1;
        len += write_varint(&mut out[len..], self.edit_seq);
        len += write_varint(&mut out[len..], self.updated_at.as_millis());
        len
    }

    fn decode(record: &[u8], mut at: usize) -> Header {
        let mut sync_id = [0u8; 8];
        sync_id.copy_from_slice(&record[at..at + 8]);
        at += 8;
        let version = Version(get_varint(record, &mut at));
        let base = get_varint(record, &mut at);
        let flags = record[at];
        at += 1;
        let edit_seq = get_varint(record, &mut at);
        let updated_at = Timestamp(get_varint(record, &mut at));
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

/// Where the parts of a record lie, relative to its start.
struct Layout {
    /// The record's size, its length prefix included (so also where its header ends).
    len: usize,
    /// Where the text span starts.
    text: usize,
    /// Lengths of id, name, email and body.
    lens: [usize; 4],
    /// Where the header starts.
    header: usize,
}

impl Layout {
    fn of(record: &[u8]) -> Layout {
        let mut at = 0;
        let rest = get_varint(record, &mut at) as usize;
        let len = at + rest;
        let mut lens = [0usize; 4];
        for part in &mut lens {
            *part = get_varint(record, &mut at) as usize;
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

/// A document's record with its header encoded (on the stack) and its length known, ready to be
/// appended where it fits.
struct Encoded<'d> {
    doc: &'d DocRef<'d>,
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    /// The record's length after its length prefix.
    rest: usize,
}

impl<'d> Encoded<'d> {
    fn new(doc: &'d DocRef<'d>) -> Encoded<'d> {
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = Header::of(doc).encode(&mut header);
        let rest = [doc.id, doc.name, doc.email, doc.body]
            .iter()
            .map(|t| varint_len(t.len() as u64) + t.len())
            .sum::<usize>()
            + header_len;
        Encoded {
            doc,
            header,
            header_len,
            rest,
        }
    }

    /// The record's length.
    fn len(&self) -> usize {
        varint_len(self.rest as u64) + self.rest
    }

    /// Appends the record to `out`.
    fn write(&self, out: &mut Vec<u8>) {
        let texts = [self.doc.id, self.doc.name, self.doc.email, self.doc.body];
        put_varint(out, self.rest as u64);
        for text in texts {
            put_varint(out, text.len() as u64);
        }
        for text in texts {
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(&self.header[..self.header_len]);
    }
}

/// The text span of a record (id, name, email, body), checked as UTF-8 once.
fn text_of<'a>(record: &'a [u8], layout: &Layout) -> &'a str {
    std::str::from_utf8(&record[layout.text..layout.header])
        .expect("records are only ever encoded from &str")
}

// The lengths split a record's text where the original strings ended, so on char boundaries.
fn split(text: &str, at: usize) -> (&str, &str) {
    text.split_at_checked(at)
        .expect("a record's text splits where its strings were joined")
}

fn decode(record: &[u8]) -> DocRef<'_> {
    let layout = Layout::of(record);
    let [id_len, name_len, email_len, _] = layout.lens;
    let (id, rest) = split(text_of(record, &layout), id_len);
    let (name, rest) = split(rest, name_len);
    let (email, body) = split(rest, email_len);
    let header = Header::decode(record, layout.header);
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

/// The id bytes of a record, without decoding the rest.
fn id_at(record: &[u8]) -> &[u8] {
    let mut at = 0;
    let _rest = get_varint(record, &mut at);
    let id_len = get_varint(record, &mut at) as usize;
    for _ in 0..3 {
        get_varint(record, &mut at); // name, email and body lengths
    }
    &record[at..at + id_len]
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

/// Writes `value` as a varint at the start of `out`; its length.
fn write_varint(out: &mut [u8], mut value: u64) -> usize {
    let mut len = 0;
    while value >= 0x80 {
        out[len] = (value as u8) | 0x80;
        value >>= 7;
        len += 1;
    }
    out[len] = value as u8;
    len + 1
}

fn get_varint(record: &[u8], at: &mut usize) -> u64 {
    // Iterating (rather than indexing byte by byte) leaves one bounds check per varint; most are
    // one byte long, so that case returns first.
    let mut bytes = record[*at..].iter();
    let first = *bytes
        .next()
        .expect("a record's varint lies inside its chunk");
    if first < 0x80 {
        *at += 1;
        return u64::from(first);
    }
    let mut value = u64::from(first & 0x7F);
    for (i, &byte) in bytes.take(9).enumerate() {
        value |= u64::from(byte & 0x7F) << (7 * (i + 1));
        if byte < 0x80 {
            *at += i + 2;
            return value;
        }
    }
    panic!("a record's varint is at most 10 bytes long")
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
        let doc = store.get(original.id()).unwrap();
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
                store.get(item(index, 12).id()).unwrap(),
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

    #[test]
    fn a_page_applies_like_its_items_one_by_one_tombstones_included() {
        let mut paged = CompactStore::new();
        let mut single = CompactStore::new();
        let mut page: Vec<_> = (1..=50)
            .map(|index| SyncPayload::new(item(index, 1)))
            .collect();
        // Item 7 again at version 2, then item 9 deleted after it was written in this page.
        page.push(SyncPayload::new(item(7, 2)));
        page.push(SyncPayload::tombstone(item(9, 2)));
        paged.apply_server_page(&page);
        for payload in &page {
            single.apply_server(&payload.item, payload.deleted);
        }
        assert_eq!(paged.len(), 49);
        for index in 1..=50 {
            let id = crate::data::item_id(index);
            assert_eq!(paged.get(&id), single.get(&id), "{id}");
        }
        assert_eq!(paged.get("item-0000007").unwrap().version, Version(2));
        assert_eq!(paged.get("item-0000009"), None);
    }

    #[test]
    fn a_record_longer_than_a_chunk_gets_a_chunk_of_its_own() {
        let mut store = CompactStore::new();
        let long = "x".repeat(CHUNK_LEN + 10);
        store.apply_server(&item(1, 1), false);
        store.edit("long", "n", "e", &long, false);
        store.apply_server(&item(2, 1), false);
        assert_eq!(store.get("long").unwrap().body, long);
        assert_eq!(
            store.get("item-0000001").unwrap(),
            DocRef::synced(&item(1, 1))
        );
        assert_eq!(
            store.get("item-0000002").unwrap(),
            DocRef::synced(&item(2, 1))
        );
    }

    #[test]
    fn accepting_a_page_matches_accepting_one_by_one_even_with_an_id_twice() {
        let build = || {
            let mut store = CompactStore::new();
            for index in 1..=20 {
                store.apply_server(&item(index, 1), false);
                store.edit(&crate::data::item_id(index), "n", "n@x", "edit", index == 5);
            }
            store
        };
        let (mut paged, mut single) = (build(), build());
        let pushed = paged.modified();
        let mut acks: Vec<_> = pushed
            .iter()
            .map(|doc| {
                let accepted = PushAccepted {
                    id: doc.id.clone(),
                    version: Version(2),
                    sync_id: SyncId(100),
                };
                (accepted, doc.version)
            })
            .collect();
        acks.push(acks[3].clone());
        let page: Vec<_> = acks.iter().map(|(a, v)| (a, *v)).collect();
        paged.accept_page(&page);
        for (accepted, version) in &acks {
            single.accept(accepted, *version);
        }
        assert_eq!(paged.modified_count(), 0);
        assert_eq!(paged.len(), 19, "the pushed deletion of item 5 is gone");
        for index in 1..=20 {
            let id = crate::data::item_id(index);
            assert_eq!(paged.get(&id), single.get(&id), "{id}");
        }
    }

    #[test]
    fn the_outbox_keeps_order_through_removals_from_the_middle_and_sweeps_them() {
        let mut outbox = Outbox::default();
        for seq in 1..=1_000 {
            outbox.insert(seq, seq * 10);
        }
        for seq in (2..=1_000).step_by(2) {
            outbox.remove(seq);
        }
        outbox.remove(2); // twice: no effect
        outbox.insert(3, 31); // a pending edit moved to another record
        assert_eq!(outbox.len(), 500);
        let offsets: Vec<u64> = outbox.offsets().collect();
        assert_eq!(offsets[..3], [10, 31, 50]);
        assert_eq!(offsets.len(), 500);
        for seq in (1..=999).step_by(2) {
            outbox.remove(seq);
        }
        assert_eq!(outbox.len(), 0);
        assert!(
            outbox.entries.is_empty(),
            "marks are swept once nothing is left"
        );
        outbox.insert(1_001, 7);
        assert_eq!(outbox.offsets().collect::<Vec<_>>(), [7]);
    }

    #[test]
    fn listed_documents_read_back_their_fields_across_shared_buffers() {
        let mut store = CompactStore::new();
        let count = SHARED_TEXTS as u64 + 5;
        for index in 1..=count {
            let edit = item(index, 7);
            store.apply_server(&item(index, 1), false);
            store.edit(edit.id(), edit.name(), edit.email(), edit.body(), false);
        }
        let listed = store.modified();
        assert_eq!(listed.len() as u64, count);
        for (doc, index) in listed.iter().zip(1..) {
            let edit = item(index, 7);
            assert_eq!(doc.id, edit.id());
            assert_eq!(
                (doc.name(), doc.email(), doc.body()),
                (edit.name(), edit.email(), edit.body())
            );
            assert_eq!(doc, &store.get(edit.id()).unwrap().to_doc());
        }
    }
}
