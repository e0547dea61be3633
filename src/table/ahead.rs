//! Lookups of a batch of query names fetched into the CPU caches ahead of answering them.
//!
//! At 100 000 names every lookup misses the caches three times in a row, each miss waiting
//! for the one before: the shard's table header, the hash table's control bytes, the index
//! node (96 bytes, two lines, the name compared in it; a name longer than it holds is a fourth
//! miss, its own allocation) (profiled under load: ~11 % of the server's CPU). One query's
//! misses cannot overlap, but a batch's can: [`Table::ahead`] hashes each name of a batch
//! (noting the hash in [`Ahead`]) and prefetches its shard's header, then [`Table::fetch`]
//! walks the batch once to find and prefetch each name's node (and once more for the bytes of
//! long names), so that the answers that follow find every line cached. Nothing is decided
//! here: a prefetch of a line that turns out not to be needed (a name not in the index, a
//! control byte that matched another name) only costs its instructions. Small tables are not
//! fetched ahead ([`Table::fetches_ahead`]): their index stays cached.
//!
//! Tried and not kept: prefetching the control bytes and the home bucket's node from
//! [`Table::ahead`] already, from addresses of hashbrown's layout (not its API): no less CPU
//! per query under load (5.08 and 5.75 µs against 5.01 and 5.73), more of it stalled on the
//! prefetches' page walks.

use std::hash::BuildHasher;

use super::{Table, live};

/// Names per batch fetched ahead: the UDP listener's batch (`dns::batch::BATCH`).
pub const AHEAD: usize = 32;

/// The hashes of a batch's query names, in the order [`Table::ahead`] was given them.
#[derive(Debug, Clone)]
pub struct Ahead {
    hashes: [u64; AHEAD],
    /// Whether each name is longer than a node holds in place.
    long: [bool; AHEAD],
    len: usize,
}

impl Default for Ahead {
    fn default() -> Self {
        Ahead {
            hashes: [0; AHEAD],
            long: [false; AHEAD],
            len: 0,
        }
    }
}

impl Ahead {
    /// Forgets the names of the last batch.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// How many names of the batch are noted.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no name of the batch is noted.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn hashes(&self) -> &[u64] {
        &self.hashes[..self.len]
    }
}

/// Hosts from which a table's lookups are fetched ahead: below, the index (96 bytes a name in
/// the hash table, the name's bytes in it) stays in the caches between batches, and the work
/// ahead (a second parse of every query) would only add to each answer.
pub const AHEAD_FROM_HOSTS: usize = 4096;

impl Table {
    /// Whether lookups are worth fetching ahead: the table holds [`AHEAD_FROM_HOSTS`] hosts or
    /// more.
    #[inline]
    pub fn fetches_ahead(&self) -> bool {
        self.host_count >= AHEAD_FROM_HOSTS
    }

    /// Notes the lower-case wire name `qname` as one to be looked up soon, and starts fetching
    /// the first line its lookup reads (its shard's table header). Past [`AHEAD`] names of a
    /// batch, does nothing.
    #[inline]
    pub fn ahead(&self, ahead: &mut Ahead, qname: &[u8]) {
        let Some(slot) = ahead.hashes.get_mut(ahead.len) else {
            return;
        };
        let hash = self.hasher.hash_one(qname);
        *slot = hash;
        ahead.long[ahead.len] = !live::key_in_place(qname.len());
        ahead.len += 1;
        prefetch(std::sync::Arc::as_ptr(&self.shards[live::shard_of(hash)]));
    }

    /// Fetches the rest of what the lookups of the names of `ahead` read: for each name, the
    /// first index node whose control byte matches, prefetched, both its lines (one pass over
    /// the batch: it reads the control bytes, a short loop whose misses the CPU overlaps);
    /// then, for the rare name longer than a node holds, that node's name bytes (a second
    /// pass: the nodes have arrived by then).
    pub fn fetch(&self, ahead: &Ahead) {
        let mut nodes: [Option<&live::Node>; AHEAD] = [None; AHEAD];
        for (node, &hash) in nodes.iter_mut().zip(ahead.hashes()) {
            *node = self.shards[live::shard_of(hash)].iter_hash(hash).next();
            if let Some(node) = node {
                let at: *const live::Node = *node;
                prefetch(at);
                prefetch(at.cast::<u8>().wrapping_add(64));
            }
        }
        for (node, _) in nodes.iter().zip(ahead.long).filter(|(_, long)| *long) {
            if let Some(node) = node {
                prefetch(node.wire.as_ptr());
            }
        }
    }
}

/// Asks the CPU to bring the cache line of `at` into its caches, without waiting for it.
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing the program sees, never faults (not even
    // for an invalid address) and has no effect but on the caches; `at` comes from a reference
    // anyway. SSE, its target feature, is part of every x86_64 CPU. Measured: `Table::fetch`.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}
