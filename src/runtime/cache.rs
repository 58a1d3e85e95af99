//! PID cache keyed by container reference. An entry is only returned after re-reading the
//! process's start time from procfs: a PID that now belongs to another process (reuse) or that
//! has exited is evicted and reported as a miss, so a stale PID is never handed out.
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::process::ProcessIdentity;

/// Past this many entries, dead ones are purged on insert (and everything if that is not enough).
const MAX_ENTRIES: usize = 4096;

/// Counters for metrics; read them with `load(Ordering::Relaxed)`.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache after a successful start-time check.
    pub hits: AtomicU64,
    /// Lookups that had to ask the runtime (no entry, or an entry that failed the check).
    pub misses: AtomicU64,
    /// Entries dropped because the PID had exited or now names another process.
    pub stale_evictions: AtomicU64,
    /// Resolutions answered by the `/proc` cgroup scan because the runtime was unreachable.
    pub proc_fallbacks: AtomicU64,
}

#[derive(Debug, Default)]
pub(super) struct PidCache {
    map: Mutex<HashMap<String, ProcessIdentity>>,
    pub(super) stats: CacheStats,
}

impl PidCache {
    /// Returns the cached identity if its PID still has the same start time under `proc_root`.
    pub(super) fn get(&self, key: &str, proc_root: &Path) -> Option<ProcessIdentity> {
        let cached = self.lock().get(key).copied();
        let Some(cached) = cached else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        match ProcessIdentity::of_in(proc_root, cached.pid) {
            Ok(now) if now.start_ticks == cached.start_ticks => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                Some(cached)
            }
            _ => {
                let mut map = self.lock();
                // Only drop the entry we checked; a concurrent caller may have refreshed it.
                if map.get(key) == Some(&cached) {
                    map.remove(key);
                }
                drop(map);
                self.stats.stale_evictions.fetch_add(1, Ordering::Relaxed);
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    key,
                    pid = cached.pid,
                    "cached pid is stale (exited or reused)"
                );
                None
            }
        }
    }

    pub(super) fn insert(&self, key: &str, who: ProcessIdentity, proc_root: &Path) {
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
            map.retain(|_, p| {
                matches!(ProcessIdentity::of_in(proc_root, p.pid), Ok(now) if now.start_ticks == p.start_ticks)
            });
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key.to_string(), who);
    }

    pub(super) fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProcessIdentity>> {
        // A panic while holding this lock cannot leave the map inconsistent; keep going.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::procfs::fake;

    #[test]
    fn hit_then_reuse_then_exit() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake::init(root);
        fake::process(root, 42, 1, 100, "0::/k8s.io/c1\n");
        let c = PidCache::default();
        assert!(c.get("containerd://c1", root).is_none());
        let who = ProcessIdentity::of_in(root, 42).unwrap();
        c.insert("containerd://c1", who, root);
        assert_eq!(c.get("containerd://c1", root), Some(who));
        // PID 42 now belongs to another process: not returned, entry evicted.
        fake::process(root, 42, 1, 777, "0::/\n");
        assert_eq!(c.get("containerd://c1", root), None);
        assert_eq!(c.len(), 0);
        // Exited.
        c.insert("containerd://c1", who, root);
        fake::remove(root, 42);
        assert_eq!(c.get("containerd://c1", root), None);
        let s = &c.stats;
        assert_eq!(s.hits.load(Ordering::Relaxed), 1);
        assert_eq!(s.misses.load(Ordering::Relaxed), 3);
        assert_eq!(s.stale_evictions.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake::init(root);
        fake::process(root, 7, 1, 1, "0::/\n");
        let live = ProcessIdentity::of_in(root, 7).unwrap();
        let dead = ProcessIdentity { pid: 8, ..live };
        let c = PidCache::default();
        c.insert("live", live, root);
        for i in 0..MAX_ENTRIES + 10 {
            c.insert(&format!("dead{i}"), dead, root);
        }
        assert!(c.len() <= MAX_ENTRIES);
    }
}
