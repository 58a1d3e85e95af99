//! The engine's in-memory fault table: every record the journal holds, by id, plus an index of
//! the ids in each group. Applies and rollbacks ask for "the faults of this group" on every
//! call; with the index that costs the group's size, not a walk over every record in memory
//! (up to a few hundred between two compactions, mostly ended ones).
//!
//! A record's group never changes after its intent: `get_mut` lets callers change its phase
//! and fields, and [`FaultTable::insert`] re-files a record whose group differs anyway.
use std::collections::{btree_map, BTreeMap, BTreeSet, HashMap};

use super::{Effect, FaultRecord};

pub(super) struct FaultTable<E: Effect> {
    by_id: BTreeMap<String, FaultRecord<E>>,
    by_group: HashMap<String, BTreeSet<String>>,
}

impl<E: Effect> Default for FaultTable<E> {
    fn default() -> Self {
        FaultTable {
            by_id: BTreeMap::new(),
            by_group: HashMap::new(),
        }
    }
}

impl<E: Effect> FaultTable<E> {
    /// Adds or replaces the record `id`.
    pub(super) fn insert(&mut self, id: String, rec: FaultRecord<E>) {
        let group = rec.group.clone();
        if let Some(old) = self.by_id.insert(id.clone(), rec) {
            if old.group != group {
                self.unfile(&old.group, &id);
            }
        }
        self.by_group.entry(group).or_default().insert(id);
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<FaultRecord<E>> {
        let rec = self.by_id.remove(id)?;
        self.unfile(&rec.group, id);
        Some(rec)
    }

    fn unfile(&mut self, group: &str, id: &str) {
        if let Some(ids) = self.by_group.get_mut(group) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_group.remove(group);
            }
        }
    }

    pub(super) fn get(&self, id: &str) -> Option<&FaultRecord<E>> {
        self.by_id.get(id)
    }

    /// The record `id`, to change its phase or fields (not its group: see the module docs).
    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut FaultRecord<E>> {
        self.by_id.get_mut(id)
    }

    pub(super) fn values(&self) -> btree_map::Values<'_, String, FaultRecord<E>> {
        self.by_id.values()
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The records of one group, in any phase.
    pub(super) fn in_group<'a>(
        &'a self,
        group: &str,
    ) -> impl Iterator<Item = &'a FaultRecord<E>> + 'a {
        self.by_group
            .get(group)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }
}
