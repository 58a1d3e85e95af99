//! The engine's in-memory fault table: every record the journal holds, by id, plus an index per
//! group. Applies and rollbacks ask on every call for a group's active faults, its newest fault
//! and the groups under a prefix. A group keeps every record it ever had until compaction (up
//! to a few hundred, mostly ended ones), so the index keeps the answers themselves: the active
//! ids, the failed ids and the newest record. A lookup then costs what it returns, not the
//! group's history.
//!
//! Every change to a record goes through [`FaultTable::insert`], [`FaultTable::remove`] or
//! [`FaultTable::update`], which keep the index in step with the record's group and phase.
use std::collections::{btree_map, BTreeMap, BTreeSet};

use super::{Effect, FaultRecord, Phase};

pub(super) struct FaultTable<E: Effect> {
    by_id: BTreeMap<String, FaultRecord<E>>,
    by_group: BTreeMap<String, GroupIndex>,
}

/// What the table knows of one group without reading its records.
#[derive(Default)]
struct GroupIndex {
    /// Every record of the group, in any phase.
    all: BTreeSet<String>,
    /// Records whose phase is active (intent, applied, reverting).
    active: BTreeSet<String>,
    /// Records that failed to roll back (listed with the active ones).
    failed: BTreeSet<String>,
    /// The newest record by `(created_unix_ms, id)`.
    newest: Option<(i64, String)>,
}

impl GroupIndex {
    fn file(&mut self, id: &str, rec_phase: Phase, created_unix_ms: i64) {
        self.all.insert(id.to_string());
        if rec_phase.is_active() {
            self.active.insert(id.to_string());
        }
        if rec_phase == Phase::Failed {
            self.failed.insert(id.to_string());
        }
        let key = (created_unix_ms, id);
        if self
            .newest
            .as_ref()
            .is_none_or(|(ms, nid)| (*ms, nid.as_str()) <= key)
        {
            self.newest = Some((created_unix_ms, id.to_string()));
        }
    }

    /// Whether an active or failed record remains ([`super::Engine::list`] shows the group).
    fn listed(&self) -> bool {
        !self.active.is_empty() || !self.failed.is_empty()
    }
}

impl<E: Effect> Default for FaultTable<E> {
    fn default() -> Self {
        FaultTable {
            by_id: BTreeMap::new(),
            by_group: BTreeMap::new(),
        }
    }
}

impl<E: Effect> FaultTable<E> {
    /// Adds or replaces the record `id`.
    pub(super) fn insert(&mut self, id: String, rec: FaultRecord<E>) {
        let (group, phase, created) = (rec.group.clone(), rec.phase, rec.created_unix_ms);
        if let Some(old) = self.by_id.insert(id.clone(), rec) {
            if old.group == group && old.created_unix_ms == created {
                // The usual case, a new phase of the same fault: only its phase sets change
                // (whether it is the group's newest does not).
                if let Some(g) = self.by_group.get_mut(&group) {
                    g.active.remove(&id);
                    g.failed.remove(&id);
                }
            } else {
                self.unfile(&old.group, &id);
            }
        }
        self.by_group
            .entry(group)
            .or_default()
            .file(&id, phase, created);
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<FaultRecord<E>> {
        let rec = self.by_id.remove(id)?;
        self.unfile(&rec.group, id);
        Some(rec)
    }

    /// Changes the record `id` (its phase, its fields) through `change` on a copy, then stores
    /// the copy with [`FaultTable::insert`], which re-files it.
    pub(super) fn update<R>(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut FaultRecord<E>) -> R,
    ) -> Option<R> {
        let mut rec = self.by_id.get(id)?.clone();
        let out = change(&mut rec);
        self.insert(id.to_string(), rec);
        Some(out)
    }

    /// Takes `id` out of `group`'s index (its record is already out of `by_id` or was replaced
    /// there by one of another group). Walks the group only when `id` was its newest record,
    /// which compaction alone removes.
    fn unfile(&mut self, group: &str, id: &str) {
        let Some(g) = self.by_group.get_mut(group) else {
            return;
        };
        g.all.remove(id);
        g.active.remove(id);
        g.failed.remove(id);
        if g.all.is_empty() {
            self.by_group.remove(group);
            return;
        }
        if g.newest.as_ref().is_some_and(|(_, n)| n == id) {
            // Only compaction removes a group's newest record: find the next one.
            let by_id = &self.by_id;
            g.newest = g
                .all
                .iter()
                .filter_map(|i| by_id.get(i).map(|r| (r.created_unix_ms, i)))
                .max()
                .map(|(ms, i)| (ms, i.clone()));
        }
    }

    pub(super) fn get(&self, id: &str) -> Option<&FaultRecord<E>> {
        self.by_id.get(id)
    }

    pub(super) fn values(&self) -> btree_map::Values<'_, String, FaultRecord<E>> {
        self.by_id.values()
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The active records of one group, in id order.
    pub(super) fn active_in<'a>(
        &'a self,
        group: &str,
    ) -> impl Iterator<Item = &'a FaultRecord<E>> + 'a {
        self.by_group
            .get(group)
            .into_iter()
            .flat_map(|g| g.active.iter())
            .filter_map(|id| self.by_id.get(id))
    }

    /// The newest record of one group, in any phase.
    pub(super) fn newest_in(&self, group: &str) -> Option<&FaultRecord<E>> {
        let (_, id) = self.by_group.get(group)?.newest.as_ref()?;
        self.by_id.get(id)
    }

    /// The groups starting with `prefix` that hold an active or failed record, sorted.
    pub(super) fn listed_groups_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.by_group
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(g, _)| g.starts_with(prefix))
            .filter(|(_, idx)| idx.listed())
            .map(|(g, _)| g.clone())
            .collect()
    }
}
