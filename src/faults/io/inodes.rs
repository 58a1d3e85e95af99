//! The layer's inode table: which underlying file each FUSE node id stands for, as passthrough
//! file systems keep it (virtiofsd, fuse-backend-rs's `PassthroughFs`): one `O_PATH` descriptor
//! per node, found again by the file's `(st_dev, st_ino)` so that two names of one file are one
//! node, counted by lookups and dropped when the kernel forgets the last of them. Holding the
//! descriptor pins the inode, so its `(st_dev, st_ino)` cannot be reused by another file while
//! the node lives.
//!
//! Node ids: the file's own `st_ino` when that id is free (so `stat` through the layer shows the
//! real inode number even right after a `lookup`, whose reply carries the node id as `ino`),
//! else (another device's file holds it, or it is 0 or 1, FUSE's root) a synthetic id with the
//! top bit set. The root is node 1, the volume root.
//!
//! Every node also keeps the path it was last reached by, relative to the volume (`""` for the
//! root), for the injectors' globs; a rename moves the paths of the renamed node and of
//! everything below it. A file with several links is known by the name of its latest lookup.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The FUSE root node id.
pub const ROOT: u64 = 1;

/// A file's identity on the host: `(st_dev, st_ino)`.
pub type Key = (u64, u64);

#[derive(Debug)]
struct Node<F> {
    fd: Arc<F>,
    key: Key,
    /// Lookups the kernel has not forgotten (the root is never forgotten).
    refs: u64,
    path: PathBuf,
}

/// Node ids → underlying files (`F` is an `OwnedFd` in the layer).
#[derive(Debug)]
pub struct Inodes<F> {
    nodes: HashMap<u64, Node<F>>,
    by_key: HashMap<Key, u64>,
    next_synthetic: u64,
}

const SYNTHETIC: u64 = 1 << 63;

impl<F> Inodes<F> {
    /// A table holding only the root.
    pub fn new(root: F, key: Key) -> Inodes<F> {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                fd: Arc::new(root),
                key,
                refs: 1,
                path: PathBuf::new(),
            },
        );
        Inodes {
            nodes,
            by_key: HashMap::from([(key, ROOT)]),
            next_synthetic: SYNTHETIC,
        }
    }

    /// The descriptor of node `id`.
    pub fn fd(&self, id: u64) -> Option<Arc<F>> {
        self.nodes.get(&id).map(|n| n.fd.clone())
    }

    /// The path node `id` was last reached by (relative to the volume).
    pub fn path(&self, id: u64) -> Option<&Path> {
        self.nodes.get(&id).map(|n| n.path.as_path())
    }

    /// The underlying identity of node `id`.
    pub fn key(&self, id: u64) -> Option<Key> {
        self.nodes.get(&id).map(|n| n.key)
    }

    /// The node of an identity, if the kernel knows it.
    pub fn id_of(&self, key: Key) -> Option<u64> {
        self.by_key.get(&key).copied()
    }

    /// Counts one lookup of the file `key` reached as `path` and returns its node id. A known
    /// file keeps its descriptor (`fd` is dropped) and takes the new path; a new one gets a
    /// node.
    pub fn remember(&mut self, key: Key, path: PathBuf, fd: F) -> u64 {
        if let Some(&id) = self.by_key.get(&key) {
            let n = self.nodes.get_mut(&id).expect("by_key and nodes agree");
            n.refs = n.refs.saturating_add(1);
            if id != ROOT {
                n.path = path;
            }
            return id;
        }
        let id = if key.1 > ROOT && !self.nodes.contains_key(&key.1) {
            key.1
        } else {
            self.synthetic()
        };
        self.nodes.insert(
            id,
            Node {
                fd: Arc::new(fd),
                key,
                refs: 1,
                path,
            },
        );
        self.by_key.insert(key, id);
        id
    }

    fn synthetic(&mut self) -> u64 {
        loop {
            let id = self.next_synthetic;
            self.next_synthetic = if id == u64::MAX { SYNTHETIC } else { id + 1 };
            if !self.nodes.contains_key(&id) {
                return id;
            }
        }
    }

    /// The kernel forgot `n` lookups of node `id`; at 0 the node and its descriptor go.
    pub fn forget(&mut self, id: u64, n: u64) {
        if id == ROOT {
            return;
        }
        let gone = match self.nodes.get_mut(&id) {
            Some(node) => {
                node.refs = node.refs.saturating_sub(n);
                node.refs == 0
            }
            None => false,
        };
        if gone {
            if let Some(node) = self.nodes.remove(&id) {
                self.by_key.remove(&node.key);
            }
        }
    }

    /// `from` was renamed to `to`: every node at `from` or below it moves.
    pub fn renamed(&mut self, from: &Path, to: &Path) {
        for n in self.nodes.values_mut() {
            if let Ok(rest) = n.path.strip_prefix(from) {
                if !n.path.as_os_str().is_empty() {
                    n.path = if rest.as_os_str().is_empty() {
                        to.to_path_buf()
                    } else {
                        to.join(rest)
                    };
                }
            }
        }
    }

    /// `a` and `b` were exchanged (`RENAME_EXCHANGE`).
    pub fn exchanged(&mut self, a: &Path, b: &Path) {
        for n in self.nodes.values_mut() {
            if n.path.as_os_str().is_empty() {
                continue;
            }
            if let Ok(rest) = n.path.strip_prefix(a) {
                n.path = join(b, rest);
            } else if let Ok(rest) = n.path.strip_prefix(b) {
                n.path = join(a, rest);
            }
        }
    }

    /// Nodes held (the root included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

fn join(base: &Path, rest: &Path) -> PathBuf {
    if rest.as_os_str().is_empty() {
        base.to_path_buf()
    } else {
        base.join(rest)
    }
}

/// The path of `name` in the directory at `parent` (relative to the volume).
pub fn child(parent: &Path, name: &std::ffi::OsStr) -> PathBuf {
    if parent.as_os_str().is_empty() {
        PathBuf::from(name)
    } else {
        parent.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: u64 = 64;

    #[test]
    fn lookups_count_and_forget_drops_at_zero() {
        let mut t = Inodes::new("root", (DEV, 2));
        let a = t.remember((DEV, 100), "a".into(), "fd-a");
        assert_eq!(a, 100, "a free st_ino is the node id");
        assert_eq!(t.remember((DEV, 100), "a".into(), "fd-a2"), 100);
        assert_eq!(*t.fd(100).unwrap(), "fd-a", "the first descriptor is kept");
        t.forget(100, 1);
        assert!(t.fd(100).is_some());
        t.forget(100, 1);
        assert!(t.fd(100).is_none());
        assert_eq!(t.id_of((DEV, 100)), None);
        // The root is never forgotten.
        t.forget(ROOT, 10);
        assert_eq!(t.path(ROOT), Some(Path::new("")));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn colliding_inode_numbers_get_synthetic_ids() {
        let mut t = Inodes::new("root", (DEV, 2));
        let a = t.remember((DEV, 7), "a".into(), "a");
        let b = t.remember((DEV + 1, 7), "sub/b".into(), "b");
        assert_eq!(a, 7);
        assert!(b & SYNTHETIC != 0, "{b:#x}");
        // st_ino 1 would be FUSE's root id; 0 is no id.
        let c = t.remember((DEV + 1, 1), "sub".into(), "c");
        let z = t.remember((DEV, 0), "z".into(), "z");
        assert!(c & SYNTHETIC != 0 && z & SYNTHETIC != 0 && c != z && b != c);
        // The root's own identity found again is the root.
        assert_eq!(t.remember((DEV, 2), "loop".into(), "r"), ROOT);
        assert_eq!(t.path(ROOT), Some(Path::new("")));
    }

    #[test]
    fn rename_moves_the_node_and_everything_below() {
        let mut t = Inodes::new("root", (DEV, 2));
        t.remember((DEV, 10), "d".into(), "");
        t.remember((DEV, 11), "d/f".into(), "");
        t.remember((DEV, 12), "d/e/g".into(), "");
        t.remember((DEV, 13), "dd".into(), "");
        t.renamed(Path::new("d"), Path::new("x/y"));
        assert_eq!(t.path(10), Some(Path::new("x/y")));
        assert_eq!(t.path(11), Some(Path::new("x/y/f")));
        assert_eq!(t.path(12), Some(Path::new("x/y/e/g")));
        assert_eq!(
            t.path(13),
            Some(Path::new("dd")),
            "a sibling sharing a prefix"
        );
        t.exchanged(Path::new("x/y"), Path::new("dd"));
        assert_eq!(t.path(10), Some(Path::new("dd")));
        assert_eq!(t.path(11), Some(Path::new("dd/f")));
        assert_eq!(t.path(13), Some(Path::new("x/y")));
        assert_eq!(t.path(ROOT), Some(Path::new("")));
    }

    #[test]
    fn child_paths_are_relative_to_the_volume() {
        assert_eq!(child(Path::new(""), "a".as_ref()), PathBuf::from("a"));
        assert_eq!(
            child(Path::new("a/b"), "c".as_ref()),
            PathBuf::from("a/b/c")
        );
    }
}
