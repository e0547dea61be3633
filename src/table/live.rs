//! The table kept current change by change: one changed entry recomputes the hosts it names,
//! not the whole table.
//!
//! [`Live`] holds every source's entries, indexed by the hosts they name. A change marks those
//! hosts dirty; [`Live::commit`] recomputes each dirty host from the entries of every source
//! that names it (the per-host rules of [`rules`](super::rules)) and writes it into a
//! table split into [`SHARDS`] copy-on-write shards. A published [`Table`] shares every
//! shard; the first write to a shard after a publish copies that shard only, so publishing
//! one change costs a shard copy (a few hundred names), whatever the table's size.
//!
//! A host's derived records (SRV owners, PTR owners in reverse zones: [`derived`](super::derived))
//! are brought up to date with it in the same commit (`live/derive.rs`).
//!
//! Exceptions, by nature: `--auto-allocate istio-legacy` numbers all of a source's entries
//! together, so a change to such a source recomputes every host that source names; and a
//! whole set replaced (a relist, a file reloaded) is compared entry by entry first, so only
//! entries that differ count as changes.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::sync::Arc;

use super::derived::Ptr;
use super::rules::{Allocation, allocation, merge, named_hosts, source_host};
use super::{Conflict, Host, Map, Skipped, Table, TableSettings, Version, Zone, zone_of};
use crate::name;
use crate::serviceentry::{Entry, EntryId};

/// Copy-on-write shards of the name index.
pub(super) const SHARDS: usize = 256;

/// What a name of the index owns.
#[derive(Debug, Clone, Default)]
pub(super) enum Owner {
    /// Nothing: an empty non-terminal.
    #[default]
    None,
    /// A host (held for operators even without addresses: then it is a name only when
    /// `below > 0`).
    Host(Arc<Host>),
    /// PTR records (in a reverse zone).
    Ptr(Arc<Ptr>),
}

impl Owner {
    /// Whether it owns records (a host only with addresses).
    fn has_records(&self) -> bool {
        match self {
            Owner::None => false,
            Owner::Host(host) => host.has_addresses(),
            Owner::Ptr(_) => true,
        }
    }

    pub(super) fn host(&self) -> Option<&Arc<Host>> {
        match self {
            Owner::Host(host) => Some(host),
            _ => None,
        }
    }
}

/// A name in the index: an owner, an empty non-terminal, or both (an owner with owners below).
///
/// 96 bytes (32-aligned: two cache lines), so that a lookup touches the hash table's control
/// bytes and this node only: the name compared ([`Key`], when it is short, as most names
/// are), and an A or AAAA answer of a host with few addresses finds them
/// here ([`Inline`]) instead of more pointers away (the name's own allocation, the host, its
/// address vector): at 100 000 names each of those is a cache and TLB miss.
#[derive(Debug, Clone)]
#[repr(C, align(32))]
pub(super) struct Node {
    pub(super) wire: Arc<[u8]>,
    pub(super) owner: Owner,
    /// Owners of records (hosts with addresses, wildcards included, and PTR owners) strictly
    /// below this name within its zone; a host's SRV owners are not counted (nor stored: they
    /// are derived from it, [`super::derived`]), as it counts already.
    pub(super) below: u32,
    /// The host's addresses (none for other owners).
    pub(super) addresses: Inline,
    /// `wire` again, in the node's second line, when short enough.
    key: Key,
}

/// Bytes of addresses a [`Node`] holds inline: what its first cache line has left.
const INLINE_BYTES: usize = 24;
const _: () = assert!(size_of::<Node>() == 96, "a node is 96 bytes");

impl Node {
    /// A node named `wire` (a copy of it when `shared` is not given), owning nothing.
    fn new(wire: &[u8], shared: Option<&Arc<[u8]>>) -> Self {
        Node {
            wire: shared.cloned().unwrap_or_else(|| wire.into()),
            owner: Owner::None,
            below: 0,
            addresses: Inline::default(),
            key: Key::of(wire),
        }
    }

    /// Whether the node is named `wire`: compared in the node itself, or in the name's own
    /// allocation when it is longer than a [`Key`] holds.
    #[inline]
    pub(super) fn is(&self, wire: &[u8]) -> bool {
        match self.key.name() {
            Some(name) => name == wire,
            None => *self.wire == *wire,
        }
    }
}

/// A lower-case wire name of at most [`Key::MAX`] bytes held in place: its length, then its
/// bytes; a length of 0 (no name is empty) when it is longer.
#[derive(Debug, Clone)]
struct Key([u8; Key::MAX + 1]);

impl Key {
    /// The longest name held in place: what 32 bytes hold. A 128-byte node holding 63 was
    /// faster still fetched ahead (128 ns a query in batches of 8 at 100 000 names, against
    /// 144 ns; 161 ns with the name behind its pointer) but took 4 MiB more RSS at 100 000
    /// names, which this size does not (`cargo bench --bench answer`, `batch/100k/*`).
    const MAX: usize = 31;

    fn of(wire: &[u8]) -> Self {
        let mut key = [0; Key::MAX + 1];
        if key_in_place(wire.len()) {
            key[1..=wire.len()].copy_from_slice(wire);
            key[0] = wire.len() as u8;
        }
        Key(key)
    }

    /// The name, if held here.
    #[inline]
    fn name(&self) -> Option<&[u8]> {
        let (&len, bytes) = self.0.split_first()?;
        (len > 0).then(|| &bytes[..usize::from(len)])
    }
}

/// Whether a node named `wire` holds its name in place ([`Node::is`] reads nothing else).
#[inline]
pub(super) fn key_in_place(wire_len: usize) -> bool {
    (1..=Key::MAX).contains(&wire_len)
}

/// A host's address counts and, when they fit, its addresses in network order: the A records
/// first (when 4 bytes each fit), then the AAAA records (when 16 bytes each fit after them).
/// A count above `u16::MAX` is held as `u16::MAX`, never inline.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inline {
    a: u16,
    aaaa: u16,
    bytes: [u8; INLINE_BYTES],
}

impl Inline {
    fn of(host: &Host) -> Self {
        let count = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        let mut inline = Inline {
            a: count(host.a.len()),
            aaaa: count(host.aaaa.len()),
            bytes: [0; INLINE_BYTES],
        };
        if inline.a().is_some() {
            for (chunk, ip) in inline.bytes.chunks_exact_mut(4).zip(&host.a) {
                chunk.copy_from_slice(&ip.octets());
            }
            if inline.aaaa().is_some() {
                let at = 4 * host.a.len();
                for (chunk, ip) in inline.bytes[at..].chunks_exact_mut(16).zip(&host.aaaa) {
                    chunk.copy_from_slice(&ip.octets());
                }
            }
        }
        inline
    }

    /// Whether the host has any address.
    pub(super) fn any(&self) -> bool {
        self.a > 0 || self.aaaa > 0
    }

    /// The A records, if inline.
    #[inline]
    pub(super) fn a(&self) -> Option<&[[u8; 4]]> {
        self.bytes.as_chunks().0.get(..usize::from(self.a))
    }

    /// The AAAA records, if inline (after the A records, which then are too).
    #[inline]
    pub(super) fn aaaa(&self) -> Option<&[[u8; 16]]> {
        let at = 4 * usize::from(self.a);
        self.bytes.get(at..)?.as_chunks().0.get(..usize::from(self.aaaa))
    }
}

/// One shard of the name index.
pub(super) type Shard = hashbrown::HashTable<Node>;

/// The shard of a hash: bits clear of those hashbrown uses for buckets (low) and tags (top 7).
pub(super) fn shard_of(hash: u64) -> usize {
    (hash >> 32) as usize % SHARDS
}

/// A source's key: its precedence (`Ord`, highest first) and its name.
pub trait Source: Ord + Clone {
    /// The name shown in `/debug`, conflicts and logs.
    fn name(&self) -> &Arc<str>;
}

/// An entry within a source: its `namespace/name`, and which occurrence of that ID it is
/// (files may repeat one; a cluster never does).
type EntryKey = (EntryId, u32);

/// An entry as a host's index holds it: the entry itself (so recomputing the host needs no
/// lookup) and its place among the source's entries of the same ID.
#[derive(Debug, Clone)]
struct Held {
    n: u32,
    entry: Arc<Entry>,
}

impl Held {
    fn key(&self) -> (&EntryId, u32) {
        (&self.entry.id, self.n)
    }

    fn is(&self, key: &EntryKey) -> bool {
        self.n == key.1 && self.entry.id == key.0
    }
}

/// The entries of one source that name one host, sorted by key; almost always one, kept inline
/// (the rare list is boxed: 16 bytes a host instead of 32, in a map of every host).
#[derive(Debug)]
enum Naming {
    One(Held),
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Held>>),
}
const _: () = assert!(size_of::<Naming>() == 16, "a naming is a held entry's size");

impl Naming {
    fn held(&self) -> &[Held] {
        match self {
            Naming::One(h) => std::slice::from_ref(h),
            Naming::Many(held) => held,
        }
    }

    fn add(&mut self, new: &Held) {
        let held = match self {
            Naming::One(h) if h.key() == new.key() => return,
            Naming::One(h) => {
                *self = Naming::Many(Box::new(vec![h.clone()]));
                let Naming::Many(held) = self else { unreachable!() };
                held
            }
            Naming::Many(held) => held,
        };
        if let Err(at) = held.binary_search_by(|h| h.key().cmp(&new.key())) {
            held.insert(at, new.clone());
        }
    }

    /// Removes the entry of `key`; whether any is left.
    fn remove(&mut self, key: &EntryKey) -> bool {
        match self {
            Naming::One(h) => !h.is(key),
            Naming::Many(held) => {
                held.retain(|h| !h.is(key));
                let left = !held.is_empty();
                if let [only] = &held[..] {
                    *self = Naming::One(only.clone());
                }
                left
            }
        }
    }
}

#[derive(Debug)]
struct SourceSet {
    name: Arc<str>,
    /// By key, hashed with the `Live`'s hasher ([`Live::key_hash`]).
    entries: hashbrown::HashTable<Held>,
    naming: HashMap<Arc<[u8]>, Naming>,
    skipped: HashMap<EntryKey, Vec<Skipped>>,
    allocated: Allocation,
    reallocate: bool,
}

/// What a commit changed.
#[derive(Debug, Default)]
pub struct Commit {
    /// Whether any served record changed (a name appeared or went, or its addresses changed).
    pub records_changed: bool,
    /// Conflicts that did not exist before.
    pub new_conflicts: Vec<Conflict>,
    /// Owner names whose records may have changed (lower-case wire format, a wildcard as
    /// `*.suffix`): changed hosts (their SRV owners with them: [`Table::owner_records`]) and
    /// their addresses' PTR owners, before and after. What changed is their records'
    /// difference between the tables before and after ([`super::advance`]). A host's name is
    /// the index's own copy (no allocation a host: freed after a load of 100 000 they would
    /// leave as many holes in the heap).
    pub touched: Vec<Arc<[u8]>>,
}

/// Every source's entries and the table they make, kept current incrementally.
#[derive(Debug)]
pub struct Live<K> {
    settings: TableSettings,
    zones: Arc<[Zone]>,
    sources: BTreeMap<K, SourceSet>,
    hasher: foldhash::fast::RandomState,
    shards: Vec<Arc<Shard>>,
    /// Wildcard hosts by the name below `*.`.
    wildcards: Arc<Map<Arc<Host>>>,
    dirty: HashSet<Arc<[u8]>>,
    /// Every entry held, once: replicated clusters hold the same entries, which the sources'
    /// sets share.
    interned: HashSet<Arc<Entry>>,
    hosts: usize,
    conflicts: usize,
    skipped: Arc<[Skipped]>,
    skipped_changed: bool,
    commit: Commit,
}

impl<K: Source> Live<K> {
    /// No sources, no names.
    pub fn new(settings: TableSettings) -> Self {
        Live {
            zones: settings.zones().into(),
            settings,
            sources: BTreeMap::new(),
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Arc::new(Shard::new())).collect(),
            wildcards: Arc::default(),
            dirty: HashSet::new(),
            interned: HashSet::new(),
            hosts: 0,
            conflicts: 0,
            skipped: Arc::new([]),
            skipped_changed: false,
            commit: Commit::default(),
        }
    }

    /// The sources that have sent a complete set, with how many entries each holds.
    pub fn sources(&self) -> impl Iterator<Item = (&K, usize)> {
        self.sources.iter().map(|(k, set)| (k, set.entries.len()))
    }

    /// Whether `source` has sent a complete set (it may be empty).
    pub fn has_source(&self, source: &K) -> bool {
        self.sources.contains_key(source)
    }

    fn set(&mut self, source: &K) -> &mut SourceSet {
        self.sources.entry(source.clone()).or_insert_with(|| SourceSet {
            name: source.name().clone(),
            entries: hashbrown::HashTable::new(),
            naming: HashMap::new(),
            skipped: HashMap::new(),
            allocated: Allocation::new(),
            reallocate: false,
        })
    }

    /// Replaces a source's whole set; only entries that differ count as changes.
    pub fn replace(&mut self, source: &K, entries: impl IntoIterator<Item = Entry>) {
        // Compared key by key against the held set, without a second copy of the list: at
        // 100 000 entries a map of them was ~44 MB on top of the list at the peak.
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut ns: Vec<u32> = Vec::with_capacity(entries.len());
        let gone: Vec<EntryKey> = {
            // Each entry's key: its id and how many entries of that id came before it.
            let mut new: HashSet<(&EntryId, u32)> = HashSet::with_capacity(entries.len());
            for entry in &entries {
                let mut n = 0;
                while !new.insert((&entry.id, n)) {
                    n += 1;
                }
                ns.push(n);
            }
            self.set(source)
                .entries
                .iter()
                .filter(|h| !new.contains(&(&h.entry.id, h.n)))
                .map(|h| (h.entry.id.clone(), h.n))
                .collect()
        };
        for key in gone {
            self.remove_entry(source, &key);
        }
        self.reserve_first(source, entries.len());
        for (entry, n) in entries.into_iter().zip(ns) {
            self.put(source, (entry.id.clone(), n), entry);
        }
    }

    /// Sizes the maps a first load of `n` entries into an empty `source` fills at once: grown
    /// by doubling instead, each growth hashes every key again (for the interned set, an
    /// entry's whole contents) and holds both tables at its peak. The sizes reached are the
    /// same. Only the interned set of the first source: later ones mostly share its entries.
    fn reserve_first(&mut self, source: &K, n: usize) {
        let hasher = &self.hasher;
        let Some(set) = self.sources.get_mut(source).filter(|s| s.entries.is_empty()) else {
            return;
        };
        set.entries.reserve(n, |h| hasher.hash_one(h.key()));
        set.naming.reserve(n);
        self.dirty.reserve(n);
        if self.interned.is_empty() {
            self.interned.reserve(n);
        }
    }

    /// Adds or replaces one entry of a source.
    pub fn upsert(&mut self, source: &K, entry: Entry) {
        self.put(source, (entry.id.clone(), 0), entry);
    }

    /// Removes one entry of a source.
    pub fn delete(&mut self, source: &K, id: &EntryId) {
        self.remove_entry(source, &(id.clone(), 0));
    }

    /// Removes a source and its entries.
    pub fn remove_source(&mut self, source: &K) {
        if let Some(set) = self.sources.remove(source) {
            self.dirty.extend(set.naming.into_keys());
            self.skipped_changed |= !set.skipped.is_empty();
            for held in set.entries {
                self.release(held.entry);
            }
        }
    }

    /// `entry`, shared with every source that holds the same.
    fn intern(&mut self, entry: Entry) -> Arc<Entry> {
        if let Some(held) = self.interned.get(&entry) {
            return held.clone();
        }
        let entry = Arc::new(entry);
        self.interned.insert(entry.clone());
        entry
    }

    /// A source no longer holds `entry`: forgotten when no other does.
    fn release(&mut self, entry: Arc<Entry>) {
        if Arc::strong_count(&entry) == 2 {
            self.interned.remove(&*entry);
        }
    }

    fn key_hash(&self, key: &EntryKey) -> u64 {
        self.hasher.hash_one((&key.0, key.1))
    }

    fn put(&mut self, source: &K, key: EntryKey, entry: Entry) {
        let hash = self.key_hash(&key);
        match self.set(source).entries.find(hash, |h| h.is(&key)) {
            Some(old) if *old.entry == entry => return,
            Some(_) => self.remove_entry(source, &key),
            None => {}
        }
        let entry = self.intern(entry);
        let name = self.set(source).name.clone();
        let (named, skipped) = named_hosts(&self.settings, &name, &entry);
        let named: Vec<Arc<[u8]>> = named.into_iter().map(|wire| self.shared_wire(wire)).collect();
        let settings = &self.settings;
        let set = self.sources.get_mut(source).expect("created above");
        for wire in named {
            let held = Held {
                n: key.1,
                entry: entry.clone(),
            };
            match set.naming.get_mut(&wire) {
                Some(naming) => naming.add(&held),
                None => {
                    set.naming.insert(wire.clone(), Naming::One(held));
                }
            }
            self.dirty.insert(wire);
        }
        if !skipped.is_empty() {
            set.skipped.insert(key.clone(), skipped);
            self.skipped_changed = true;
        }
        set.reallocate |= settings.auto_allocate != super::AutoAllocate::None;
        let hasher = &self.hasher;
        set.entries
            .insert_unique(hash, Held { n: key.1, entry }, |h| hasher.hash_one(h.key()));
    }

    /// `wire` as the name already held (to change, or in the index), else as a new one: every
    /// source naming a host shares one copy of its name with the index.
    fn shared_wire(&self, wire: Vec<u8>) -> Arc<[u8]> {
        if let Some(held) = self.dirty.get(&wire[..]) {
            return held.clone();
        }
        match self.node(&wire) {
            Some(node) => node.wire.clone(),
            None => wire.into(),
        }
    }

    fn remove_entry(&mut self, source: &K, key: &EntryKey) {
        let hash = self.key_hash(key);
        let settings = &self.settings;
        let Some(set) = self.sources.get_mut(source) else {
            return;
        };
        let Ok(found) = set.entries.find_entry(hash, |h| h.is(key)) else {
            return;
        };
        let old = found.remove().0.entry;
        let (named, _) = named_hosts(settings, &set.name, &old);
        for wire in named {
            let Some((wire, _)) = set.naming.get_key_value(&wire[..]) else {
                continue;
            };
            let wire = wire.clone();
            if !set.naming.get_mut(&wire).expect("just found").remove(key) {
                set.naming.remove(&wire);
            }
            self.dirty.insert(wire);
        }
        self.skipped_changed |= set.skipped.remove(key).is_some();
        set.reallocate |= settings.auto_allocate != super::AutoAllocate::None;
        self.release(old);
    }

    /// Recomputes every host changed since the last commit and reports what changed.
    pub fn commit(&mut self) -> Commit {
        for set in self.sources.values_mut().filter(|s| s.reallocate) {
            set.reallocate = false;
            let allocated = allocation(&self.settings, set.entries.iter().map(|h| &*h.entry));
            if allocated != set.allocated {
                set.allocated = allocated;
                self.dirty.extend(set.naming.keys().cloned());
            }
        }
        // In the order the names sit in memory, about the order they were put in (a file's order
        // on a first load): each recompute then finds its name, and the entries naming it, next
        // to the last one's. In hash order each was a cache miss: 5–8 % of a start with 100 000
        // names (perf samples, 3 runs each).
        let mut dirty: Vec<Arc<[u8]>> = std::mem::take(&mut self.dirty).into_iter().collect();
        dirty.sort_unstable_by_key(|wire| wire.as_ptr());
        self.reserve_index(dirty.len());
        for wire in dirty {
            self.recompute(&wire);
        }
        if std::mem::take(&mut self.skipped_changed) {
            let mut skipped: Vec<Skipped> = self
                .sources
                .values()
                .flat_map(|s| s.skipped.values().flatten().cloned())
                .collect();
            skipped.sort_by(|a, b| (&a.source, &a.entry, &a.host).cmp(&(&b.source, &b.entry, &b.host)));
            self.skipped = skipped.into();
        }
        std::mem::take(&mut self.commit)
    }

    /// The current table, every zone at `serial` with no change history.
    pub fn table(&self, serial: u32, synced: bool) -> Table {
        self.table_at(self.zones.iter().map(|_| Version::new(serial)).collect(), synced)
    }

    /// The current table, its zones at `versions` (index-aligned with the settings' zones).
    pub fn table_at(&self, versions: Arc<[Version]>, synced: bool) -> Table {
        Table {
            zones: self.zones.clone(),
            hasher: self.hasher.clone(),
            shards: self.shards.clone(),
            wildcards: self.wildcards.clone(),
            host_count: self.hosts,
            conflict_count: self.conflicts,
            skipped: self.skipped.clone(),
            ttl: self.settings.ttl,
            versions,
            negative_ttl: self.settings.negative_ttl,
            synced,
            stale: Arc::new([]),
        }
    }

    fn recompute(&mut self, wire: &Arc<[u8]>) {
        let settings = &self.settings;
        let zone = zone_of(&self.zones, wire);
        let host = name::to_text(wire);
        let host = host.trim_end_matches('.');
        let accs: Vec<_> = self
            .sources
            .values()
            .filter_map(|set| {
                let entries = set.naming.get(wire)?.held().iter().map(|h| &*h.entry);
                Some(source_host(settings, &set.name, host, zone?, entries, &set.allocated))
            })
            .collect();
        let new = merge(accs);
        let wildcard = wire.starts_with(b"\x01*");
        let old = if wildcard {
            self.wildcards.get(&wire[2..]).cloned()
        } else {
            self.node(wire).and_then(|n| n.owner.host().cloned())
        };
        if old.as_deref() == new.as_ref() {
            return;
        }
        // The records served, whatever their order (answers are shuffled anyway): addresses, and
        // the named ports its SRV records come from (kept sorted).
        let served = |h: Option<&Host>| {
            h.filter(|h| h.has_addresses()).map(|h| {
                let mut addresses = h.addresses();
                addresses.sort();
                (addresses, h.ports.clone())
            })
        };
        let served_changed = served(old.as_deref()) != served(new.as_ref());
        self.commit.records_changed |= served_changed;
        if let Some(host) = &new
            && !fits_one_message(host, wire.len())
        {
            tracing::warn!(
                host = %host.name,
                a = host.a.len(),
                aaaa = host.aaaa.len(),
                "more addresses than one DNS message of 65535 bytes holds: answers carry those that fit"
            );
        }
        let old_conflicts = old.as_ref().map_or(&[][..], |h| &h.conflicts[..]);
        let new_conflicts = new.as_ref().map_or(&[][..], |h| &h.conflicts[..]);
        for c in new_conflicts.iter().filter(|c| !old_conflicts.contains(c)) {
            self.commit.new_conflicts.push(c.clone());
        }
        self.conflicts = self.conflicts + new_conflicts.len() - old_conflicts.len();
        self.hosts = self.hosts + usize::from(new.is_some()) - usize::from(old.is_some());
        // Only a host with addresses is a name, and makes its ancestors empty non-terminals.
        let is_name = |h: Option<&Host>| i64::from(h.is_some_and(Host::has_addresses));
        let name_change = is_name(new.as_ref()) - is_name(old.as_deref());
        self.count_below(wire, name_change);
        let new = new.map(Arc::new);
        if served_changed {
            self.commit.touched.push(wire.clone());
        }
        if wildcard {
            let wildcards = Arc::make_mut(&mut self.wildcards);
            match new {
                Some(host) => wildcards.insert(wire[2..].into(), host),
                None => wildcards.remove(&wire[2..]),
            };
        } else {
            let owner = new.clone().map_or(Owner::None, Owner::Host);
            self.update_node(wire, Some(wire), |n| n.owner = owner);
            self.commit.records_changed |= self.derive(wire, old.as_ref(), new.as_ref());
        }
    }

    /// Adds `change` to the count of owners below each proper ancestor of `wire` within its
    /// zone (each created as an empty non-terminal when missing, removed when it ends up
    /// owning nothing with nothing below).
    fn count_below(&mut self, wire: &[u8], change: i64) {
        if change == 0 {
            return;
        }
        let zone_len = zone_of(&self.zones, wire).map_or(1, |z| z.wire.len());
        for start in name::label_starts(wire).skip(1) {
            if wire.len() - start <= zone_len {
                break;
            }
            self.update_node(&wire[start..], None, |n| n.below = (n.below as i64 + change) as u32);
        }
    }

    /// Sizes an empty index's shards for `names` at once: grown by doubling instead, each
    /// growth hashes its nodes again (~1.5 % of a start with 100 000 names). Only when empty:
    /// the names of a later commit are mostly in the index already.
    fn reserve_index(&mut self, names: usize) {
        if self.shards.iter().any(|shard| !shard.is_empty()) {
            return;
        }
        let hasher = &self.hasher;
        for shard in &mut self.shards {
            Arc::make_mut(shard).reserve(names / SHARDS, |n| hasher.hash_one(&*n.wire));
        }
    }

    fn node(&self, wire: &[u8]) -> Option<&Node> {
        let hash = self.hasher.hash_one(wire);
        self.shards[shard_of(hash)].find(hash, |n| n.is(wire))
    }

    /// Applies `f` to the node of `wire` (created if missing, with `shared` as its name when
    /// given; removed when it ends up neither a host nor above one).
    fn update_node(&mut self, wire: &[u8], shared: Option<&Arc<[u8]>>, f: impl FnOnce(&mut Node)) {
        let hash = self.hasher.hash_one(wire);
        let shard = Arc::make_mut(&mut self.shards[shard_of(hash)]);
        // The hash is not kept in the node (its line has no room): a growing shard hashes again.
        let hasher = &self.hasher;
        let entry = shard.entry(hash, |n| n.is(wire), |n| hasher.hash_one(&*n.wire));
        let mut occupied = entry.or_insert_with(|| Node::new(wire, shared));
        let node = occupied.get_mut();
        f(node);
        node.addresses = node.owner.host().map_or_else(Inline::default, |h| Inline::of(h));
        if matches!(node.owner, Owner::None) && node.below == 0 {
            occupied.remove();
        }
    }
}

/// One source's entries; sources are given in precedence order, highest first.
#[derive(Debug, Clone, Copy)]
pub struct SourceInput<'a> {
    /// Name of the source (a cluster ID, or `files`).
    pub name: &'a Arc<str>,
    /// Its entries.
    pub entries: &'a [Entry],
}

/// A source of [`Live::build`]: its position and name.
impl Source for (usize, Arc<str>) {
    fn name(&self) -> &Arc<str> {
        &self.1
    }
}

impl Live<(usize, Arc<str>)> {
    /// Builds the table from the sources, highest precedence first (the rules of DESIGN.md
    /// "ServiceEntry → records": per host, the highest source that gives it addresses wins, a
    /// lower one with other addresses is a [`Conflict`]). Within a source, entries are taken
    /// in `namespace/name` order. Every zone is at `serial`, with no history.
    pub fn build(settings: &TableSettings, sources: &[SourceInput<'_>], serial: u32, synced: bool) -> Table {
        let mut live = Live::new(settings.clone());
        for (i, source) in sources.iter().enumerate() {
            live.replace(&(i, source.name.clone()), source.entries.iter().cloned());
        }
        live.commit();
        live.table(serial, synced)
    }
}

/// Whether `host`'s A records, and its AAAA records, each fit one DNS message over TCP
/// asked under its name of `wire_len` bytes (65 535 bytes: header 12, question, 16 or 28
/// bytes per record with its owner compressed, an OPT of 11). A wildcard's answers are
/// owned by longer names, so a few fewer of its records fit.
fn fits_one_message(host: &Host, wire_len: usize) -> bool {
    let room = u16::MAX as usize - 12 - (wire_len + 4) - 11;
    host.a.len() <= room / 16 && host.aaaa.len() <= room / 28
}

mod derive;
#[cfg(test)]
mod tests;
