//! The encoder's side of the dynamic table (RFC 7541 §2.3.2, §4): fields weir sent before on
//! a connection go out again as one- or two-byte indexes, so the peer decodes (and receives)
//! far less per message.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

/// Entry overhead counted towards the table size (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;
/// Values longer than this are sent as literals that are not indexed: one would take a
/// large part of the table and is unlikely to repeat.
const MAX_INDEXED_VALUE: usize = 512;

struct Entry {
    name: Box<str>,
    value: Box<[u8]>,
    size: usize,
    /// Its insertion number: the newest entry has index 62, older ones count up from there.
    id: u64,
    hash: u64,
}

/// What the encoder does with one field.
pub(super) enum Code {
    /// Sent before and still in the table: its index.
    Indexed(usize),
    /// Sent as a literal and added to the table.
    Insert,
    /// Sent as a literal that is not added.
    Literal,
}

pub(crate) struct Encoder {
    entries: VecDeque<Entry>,
    size: usize,
    max: usize,
    inserted: u64,
    by_field: HashMap<u64, u64, foldhash::fast::FixedState>,
    hasher: foldhash::fast::FixedState,
}

impl Encoder {
    /// A table of `max` bytes: the peer's decoder limit (4,096 unless it announced less).
    pub(crate) fn new(max: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max,
            inserted: 0,
            by_field: HashMap::default(),
            hasher: foldhash::fast::FixedState::default(),
        }
    }

    /// Stops indexing and empties the table (after a size update to 0 was sent).
    pub(crate) fn disable(&mut self) {
        self.max = 0;
        self.entries.clear();
        self.by_field.clear();
        self.size = 0;
    }

    /// Decides how `name: value` goes out, updating the table as the peer's decoder will.
    /// `name` is a lower-case field name or a pseudo-header (`:authority`).
    pub(super) fn code(&mut self, name: &str, value: &[u8]) -> Code {
        if self.max == 0 || value.len() > MAX_INDEXED_VALUE {
            return Code::Literal;
        }
        let hash = self.hasher.hash_one((name, value));
        if let Some(&id) = self.by_field.get(&hash) {
            let newest = self.inserted - 1;
            let at = (newest - id) as usize;
            if let Some(e) = self.entries.get(at) {
                if e.id == id && &*e.name == name && &*e.value == value {
                    return Code::Indexed(62 + at);
                }
            }
        }
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max {
            return Code::Literal;
        }
        while self.size + size > self.max {
            self.evict();
        }
        let id = self.inserted;
        self.inserted += 1;
        self.entries.push_front(Entry {
            name: name.into(),
            value: value.into(),
            size,
            id,
            hash,
        });
        self.size += size;
        self.by_field.insert(hash, id);
        Code::Insert
    }

    fn evict(&mut self) {
        if let Some(e) = self.entries.pop_back() {
            self.size -= e.size;
            if self.by_field.get(&e.hash) == Some(&e.id) {
                self.by_field.remove(&e.hash);
            }
        }
    }
}
