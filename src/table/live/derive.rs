//! A host's derived records kept current with it: when a commit recomputes a host, its
//! addresses' PTR owners go from what the old host gave to what the new one gives, and the
//! names above them count them ([`Node::below`]); the owners it touched go to the commit
//! ([`super::Commit::touched`]), for the zones' versions. Its SRV owners are not stored: the
//! lookup derives them from the host, and a change of the host is theirs (zones do not nest,
//! so they lie in its zone, and [`crate::table::Table::owner_records`] of the host holds them).

use std::sync::Arc;

use super::super::derived::{Ptr, ptr_owners};
use super::{Live, Node, Owner, Source};
use crate::table::Host;

impl<K: Source> Live<K> {
    /// Brings the PTR owners derived from the exact host named `wire` from `old` to `new` (both
    /// as the index holds them); whether the records they serve changed.
    pub(super) fn derive(&mut self, wire: &Arc<[u8]>, old: Option<&Arc<Host>>, new: Option<&Arc<Host>>) -> bool {
        let mut old_ptr = old.map(|h| ptr_owners(&self.zones, h, wire)).unwrap_or_default();
        let mut new_ptr = new.map(|h| ptr_owners(&self.zones, h, wire)).unwrap_or_default();
        old_ptr.sort();
        new_ptr.sort();
        for owner in &old_ptr {
            self.change_ptr(owner, |ptr| ptr.remove(wire));
        }
        if let Some(host) = new {
            for owner in &new_ptr {
                self.change_ptr(owner, |ptr| ptr.insert(wire.clone(), host.source.clone()));
            }
        }
        // Other hosts share addresses and the cap keeps only some: the records of each owner
        // are diffed as served, between the tables before and after.
        if old.is_some() || new.is_some() {
            let owners = old_ptr.iter().chain(&new_ptr).map(|o| o[..].into());
            self.commit.touched.extend(owners);
        }
        old_ptr != new_ptr
    }

    /// Applies `f` to the PTR records of `owner` (none yet: an empty set), counting it in the
    /// names above when it starts or stops owning records.
    fn change_ptr(&mut self, owner: &[u8], f: impl FnOnce(&mut Ptr)) {
        let mut change = 0;
        self.update_node(owner, None, |n: &mut Node| {
            let had = n.owner.has_records();
            let mut ptr = match std::mem::take(&mut n.owner) {
                Owner::Ptr(ptr) => ptr,
                _ => Arc::default(),
            };
            f(Arc::make_mut(&mut ptr));
            if !ptr.is_empty() {
                n.owner = Owner::Ptr(ptr);
            }
            change = i64::from(n.owner.has_records()) - i64::from(had);
        });
        self.count_below(owner, change);
    }
}
