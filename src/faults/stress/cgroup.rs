//! The target container's cgroups, by plain file I/O: which directories a stress worker joins,
//! the container's memory limit, and its OOM-kill counter.
//!
//! Paths in `/proc/<pid>/cgroup` are relative to the *reader's* cgroup namespace. Two layouts
//! are supported:
//! * `/host-sys/fs/cgroup` exists (the Chaos Mesh chart mounts the host's `/sys` at
//!   `/host-sys`): paths are read from the host's cgroup namespace (through pid 1's, on a
//!   throwaway thread when faultd runs in its own) and joined from there.
//! * otherwise the cgroup mounts of `/proc/self/mountinfo` (faultd on the host, or in the host
//!   cgroup namespace): the mount's root must be a prefix of the target's path.
//!
//! cgroup v2: the single `0::/path` line. v1 (and hybrid): one line per hierarchy; the worker
//! joins every one, failures only allowed for named hierarchies (`name=systemd`) and the hybrid
//! unified one.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StressError;

/// Where the Chaos Mesh chart mounts the host's cgroup tree.
pub const HOST_SYS_CGROUP: &str = "/host-sys/fs/cgroup";

/// v1 `memory.limit_in_bytes` at or above this means "no limit" (PAGE_COUNTER_MAX pages).
pub const V1_NO_LIMIT: u64 = 0x7FFF_FFFF_FFFF_F000;

/// One line of `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub hierarchy: u32,
    /// Controllers of the hierarchy (`cpu,cpuacct`, `name=systemd`); empty for v2.
    pub controllers: Vec<String>,
    pub path: String,
}

/// The lines of `/proc/<pid>/cgroup` as `procfs` parsed them; every path must be absolute.
pub fn memberships(cgroups: Vec<procfs::ProcessCGroup>) -> Result<Vec<Membership>, StressError> {
    let mut out = Vec::new();
    for cg in cgroups {
        if !cg.pathname.starts_with('/') {
            return Err(StressError::Cgroup(format!(
                "malformed /proc/<pid>/cgroup line {}:{}:{}",
                cg.hierarchy,
                cg.controllers.join(","),
                cg.pathname
            )));
        }
        out.push(Membership {
            hierarchy: cg.hierarchy,
            controllers: cg.controllers,
            path: cg.pathname,
        });
    }
    if out.is_empty() {
        return Err(StressError::Cgroup("/proc/<pid>/cgroup is empty".into()));
    }
    Ok(out)
}

/// A cgroup filesystem mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The hierarchy path mounted there (field 4).
    pub root: String,
    pub mount_point: PathBuf,
    pub v2: bool,
    /// v1 controllers from the super options (`cpu`, `cpuacct`, `name=systemd`).
    pub controllers: Vec<String>,
}

fn unescape_mountinfo(s: &str) -> String {
    // The kernel escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup and cgroup2 mounts among `procfs`'s mountinfo entries.
pub fn cgroup_mounts(
    infos: impl IntoIterator<Item = procfs::process::MountInfo>,
) -> Vec<CgroupMount> {
    const NOT_CONTROLLERS: &[&str] = &[
        "rw",
        "ro",
        "xattr",
        "noprefix",
        "clone_children",
        "cpuset_v2_mode",
        "favordynmods",
        "nsdelegate",
        "memory_localevents",
        "memory_recursiveprot",
        "memory_hugetlb_accounting",
        "pids_localevents",
        "release_agent",
    ];
    let mut out = Vec::new();
    for mi in infos {
        let v2 = match mi.fs_type.as_str() {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let mut controllers: Vec<String> = if v2 {
            Vec::new()
        } else {
            mi.super_options
                .iter()
                .filter(|(k, _)| !k.is_empty() && !NOT_CONTROLLERS.contains(&k.as_str()))
                .map(|(k, v)| match v {
                    // `name=systemd` is a named hierarchy.
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                })
                .collect()
        };
        controllers.sort();
        out.push(CgroupMount {
            root: unescape_mountinfo(&mi.root),
            mount_point: PathBuf::from(unescape_mountinfo(&mi.mount_point.to_string_lossy())),
            v2,
            controllers,
        });
    }
    out
}

/// One cgroup directory the worker joins (by writing to its `cgroup.procs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupJoin {
    pub dir: PathBuf,
    /// Controllers of the hierarchy (`memory`, `cpu,cpuacct`, empty for v2).
    pub controllers: String,
    /// A failure to join aborts the stressor (real controllers); else it is skipped.
    pub required: bool,
}

/// Everything faultd needs about a target's cgroups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetCgroups {
    pub v2: bool,
    pub joins: Vec<CgroupJoin>,
    /// The memory cgroup (v1 memory hierarchy, or the v2 directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_dir: Option<PathBuf>,
    /// Root of the memory hierarchy (limits are looked up from `memory_dir` up to here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_root: Option<PathBuf>,
    /// Joining needs the host's cgroup namespace (faultd runs in its own and uses
    /// `/host-sys/fs/cgroup`).
    #[serde(default)]
    pub host_cgroupns: bool,
}

impl TargetCgroups {
    /// Readable summary: the cgroup path of the memory (or first) hierarchy.
    pub fn describe(&self) -> String {
        self.memory_dir
            .as_ref()
            .or(self.joins.first().map(|j| &j.dir))
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "?".into())
    }
}

/// Where cgroup hierarchies are found.
#[derive(Debug, Clone)]
pub enum Layout {
    /// A host cgroup tree mounted at this directory (`/host-sys/fs/cgroup`).
    HostSys(PathBuf),
    /// The cgroup mounts of this process's mount namespace.
    Mounts(Vec<CgroupMount>),
}

fn join_rel(base: &Path, path: &str) -> PathBuf {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    }
}

fn required(m: &Membership) -> bool {
    !m.controllers.is_empty() && !m.controllers.iter().any(|c| c.starts_with("name="))
}

fn same_set(a: &[String], b: &[String]) -> bool {
    let mut a: Vec<&String> = a.iter().collect();
    let mut b: Vec<&String> = b.iter().collect();
    a.sort();
    b.sort();
    a == b
}

/// Resolves the directories of `memberships` in `layout`. `v2_only` is true when the
/// memberships are a single `0::` line.
pub fn resolve(memberships: &[Membership], layout: &Layout) -> Result<TargetCgroups, StressError> {
    let v2 = memberships.len() == 1 && memberships[0].controllers.is_empty();
    let mut joins = Vec::new();
    let mut memory_dir = None;
    let mut memory_root = None;
    for m in memberships {
        if m.path.split('/').any(|c| c == "..") {
            return Err(StressError::Cgroup(format!(
                "the target's cgroup path {:?} lies outside faultd's cgroup namespace; run faultd in the host cgroup namespace or mount the host's /sys at /host-sys (as the Chaos Mesh chart does)",
                m.path
            )));
        }
        let found: Option<(PathBuf, PathBuf)> = match layout {
            Layout::HostSys(base) => {
                let mut candidates: Vec<PathBuf> = Vec::new();
                if v2 {
                    candidates.push(base.clone());
                } else if m.controllers.is_empty() {
                    candidates.push(base.join("unified"));
                } else {
                    candidates.push(base.join(m.controllers.join(",")));
                    for c in &m.controllers {
                        candidates.push(base.join(c.strip_prefix("name=").unwrap_or(c)));
                    }
                }
                candidates
                    .into_iter()
                    .map(|root| (join_rel(&root, &m.path), root))
                    .find(|(dir, _)| dir.is_dir())
            }
            Layout::Mounts(mounts) => mounts
                .iter()
                .filter(|mt| {
                    if m.controllers.is_empty() {
                        mt.v2
                    } else {
                        !mt.v2 && same_set(&mt.controllers, &m.controllers)
                    }
                })
                .find_map(|mt| {
                    let root = mt.root.trim_end_matches('/');
                    let rest = m.path.strip_prefix(root)?;
                    if !(rest.is_empty() || rest.starts_with('/')) {
                        return None;
                    }
                    Some((join_rel(&mt.mount_point, rest), mt.mount_point.clone()))
                }),
        };
        let label = if m.controllers.is_empty() {
            if v2 {
                "unified (v2)".to_string()
            } else {
                "unified (hybrid)".to_string()
            }
        } else {
            m.controllers.join(",")
        };
        match found {
            Some((dir, root)) => {
                if v2 || m.controllers.iter().any(|c| c == "memory") {
                    memory_dir = Some(dir.clone());
                    memory_root = Some(root);
                }
                joins.push(CgroupJoin {
                    dir,
                    controllers: m.controllers.join(","),
                    required: v2 || required(m),
                });
            }
            None if v2 || required(m) => {
                return Err(StressError::Cgroup(format!(
                    "cgroup {label} {:?} of the target is not found under {}",
                    m.path,
                    match layout {
                        Layout::HostSys(b) => b.display().to_string(),
                        Layout::Mounts(_) => "this mount namespace's cgroup mounts".into(),
                    }
                )));
            }
            None => {}
        }
    }
    if joins.is_empty() {
        return Err(StressError::Cgroup(
            "the target is in no cgroup faultd can join".into(),
        ));
    }
    Ok(TargetCgroups {
        v2,
        joins,
        memory_dir,
        memory_root,
        host_cgroupns: false,
    })
}

fn ns_inode(path: &str) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Whether faultd runs in a cgroup namespace other than pid 1's (needs hostPID to tell).
pub fn in_private_cgroupns() -> bool {
    match (
        ns_inode("/proc/self/ns/cgroup"),
        ns_inode("/proc/1/ns/cgroup"),
    ) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

/// `/proc/<pid>/cgroup` as the host's cgroup namespace shows it.
fn read_proc_cgroup_host_view(pid: u32) -> Result<Vec<Membership>, StressError> {
    if !in_private_cgroupns() {
        return read_proc_cgroup(pid);
    }
    // Read it from a throwaway thread that entered pid 1's cgroup namespace.
    let ns = std::fs::File::open("/proc/1/ns/cgroup")
        .map_err(|e| StressError::Cgroup(format!("opening /proc/1/ns/cgroup: {e}")))?;
    std::thread::Builder::new()
        .name("faultd-cgns".into())
        .spawn(move || {
            use std::os::fd::AsFd;
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWCGROUP).map_err(
                |e| StressError::Cgroup(format!("entering the host cgroup namespace: {e}")),
            )?;
            read_proc_cgroup(pid)
        })
        .map_err(|e| StressError::Cgroup(format!("spawning a thread: {e}")))?
        .join()
        .map_err(|_| StressError::Cgroup("the cgroup reader thread panicked".into()))?
}

/// `/proc/<pid>/cgroup` as the calling thread's cgroup namespace shows it, through `procfs`.
fn read_proc_cgroup(pid: u32) -> Result<Vec<Membership>, StressError> {
    let cgroups = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.cgroups())
        .map_err(|e| match e {
            procfs::ProcError::NotFound(_) => StressError::TargetGone(pid),
            e => StressError::Cgroup(format!("reading /proc/{pid}/cgroup: {e}")),
        })?;
    memberships(cgroups.0)
}

/// The cgroups of process `pid` on this node.
pub fn of_pid(pid: u32) -> Result<TargetCgroups, StressError> {
    let host_sys = Path::new(HOST_SYS_CGROUP);
    if host_sys.is_dir() {
        let memberships = read_proc_cgroup_host_view(pid)?;
        let mut cg = resolve(&memberships, &Layout::HostSys(host_sys.into()))?;
        cg.host_cgroupns = in_private_cgroupns();
        return Ok(cg);
    }
    let memberships = read_proc_cgroup(pid)?;
    let mounts = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map_err(|e| StressError::Cgroup(format!("reading /proc/self/mountinfo: {e}")))?;
    resolve(&memberships, &Layout::Mounts(cgroup_mounts(mounts)))
}

fn read_limit_file(path: &Path, v2: bool) -> Result<Option<u64>, StressError> {
    let raw = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StressError::Cgroup(format!(
                "reading {}: {e}",
                path.display()
            )))
        }
    };
    let v = raw.trim();
    if v2 && v == "max" {
        return Ok(None);
    }
    let n: u64 = v.parse().map_err(|_| {
        StressError::Cgroup(format!("{}: unexpected content {v:?}", path.display()))
    })?;
    Ok((n < V1_NO_LIMIT).then_some(n))
}

/// The memory limit that applies to the target: the smallest of its memory cgroup and every
/// ancestor up to the hierarchy root. `None`: no limit.
pub fn memory_limit(cg: &TargetCgroups) -> Result<Option<u64>, StressError> {
    let (Some(dir), Some(root)) = (&cg.memory_dir, &cg.memory_root) else {
        return Err(StressError::Cgroup(
            "the target has no memory cgroup faultd can read".into(),
        ));
    };
    let file = if cg.v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let mut limit: Option<u64> = None;
    let mut cur = Some(dir.as_path());
    while let Some(d) = cur {
        if let Some(l) = read_limit_file(&d.join(file), cg.v2)? {
            limit = Some(limit.map_or(l, |x| x.min(l)));
        }
        if d == root {
            break;
        }
        cur = d.parent().filter(|p| p.starts_with(root));
    }
    Ok(limit)
}

/// The memory cgroup's OOM-kill counter (`oom_kill` of v2 `memory.events`, v1
/// `memory.oom_control`), if the kernel reports it.
pub fn oom_kills(cg: &TargetCgroups) -> Option<u64> {
    let dir = cg.memory_dir.as_ref()?;
    let file = if cg.v2 {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// The node's memory (`MemTotal` of `/proc/meminfo`), in bytes.
pub fn node_memory() -> Result<u64, StressError> {
    use procfs::Current;
    procfs::Meminfo::current()
        .map(|m| m.mem_total)
        .map_err(|e| StressError::Cgroup(format!("reading /proc/meminfo: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a `/proc/<pid>/cgroup` text with `procfs`, as [`of_pid`] reads it.
    fn parse_proc_cgroup(text: &str) -> Result<Vec<Membership>, StressError> {
        use procfs::FromBufRead;
        let cgroups = procfs::ProcessCGroups::from_buf_read(text.as_bytes())
            .map_err(|e| StressError::Cgroup(format!("malformed /proc/<pid>/cgroup: {e}")))?;
        memberships(cgroups.0)
    }

    /// The cgroup mounts of a mountinfo text parsed by `procfs`, as [`of_pid`] reads it
    /// (unparsable lines skipped).
    fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
        cgroup_mounts(
            text.lines()
                .filter_map(|l| procfs::process::MountInfo::from_line(l).ok()),
        )
    }

    const V1_CGROUP: &str = "\
12:name=systemd:/k8s.io/c1
9:pids:/k8s.io/c1
4:memory:/k8s.io/c1
2:cpu,cpuacct:/k8s.io/c1
1:net_cls:/k8s.io/c1
0::/
";

    const V1_MOUNTINFO: &str = "\
25 1 0:23 / / rw,relatime - overlay overlay rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
37 31 0:34 / /sys/fs/cgroup/net_cls rw,relatime - cgroup cgroup rw,net_cls
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn proc_cgroup_lines() {
        let m = parse_proc_cgroup(V1_CGROUP).unwrap();
        assert_eq!(m.len(), 6);
        assert_eq!(m[3].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(m[3].path, "/k8s.io/c1");
        assert_eq!(m[5].controllers, Vec::<String>::new());
        // Colons inside a path survive.
        let m = parse_proc_cgroup("0::/a:b/c\n").unwrap();
        assert_eq!(m[0].path, "/a:b/c");
        for bad in [
            "",
            "garbage",
            "x:memory:/a",
            "1:memory",
            "1:memory:relative",
        ] {
            assert!(parse_proc_cgroup(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mountinfo_cgroup_mounts() {
        let m = parse_mountinfo(V1_MOUNTINFO);
        assert_eq!(m.len(), 6);
        assert_eq!(m[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(
            m[0].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(m[4].controllers, vec!["name=systemd"]);
        assert!(m[5].v2);
        let esc = parse_mountinfo("1 2 0:1 /a\\040b /mnt/x\\134y rw - cgroup2 none rw\n");
        assert_eq!(esc[0].root, "/a b");
        assert_eq!(esc[0].mount_point, PathBuf::from("/mnt/x\\y"));
    }

    fn fake_tree(dirs: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for d in dirs {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        t
    }

    #[test]
    fn v1_from_mounts() {
        let t = fake_tree(&[]);
        let base = t.path().display().to_string();
        let mi = V1_MOUNTINFO.replace("/sys/fs/cgroup", &format!("{base}/cg"));
        let cg = resolve(
            &parse_proc_cgroup(V1_CGROUP).unwrap(),
            &Layout::Mounts(parse_mountinfo(&mi)),
        )
        .unwrap();
        assert!(!cg.v2);
        let dirs: Vec<String> = cg
            .joins
            .iter()
            .map(|j| j.dir.display().to_string().replace(&base, ""))
            .collect();
        assert_eq!(
            dirs,
            [
                "/cg/systemd/k8s.io/c1",
                "/cg/pids/k8s.io/c1",
                "/cg/memory/k8s.io/c1",
                "/cg/cpu,cpuacct/k8s.io/c1",
                "/cg/net_cls/k8s.io/c1",
                "/cg/unified",
            ]
        );
        let req: Vec<bool> = cg.joins.iter().map(|j| j.required).collect();
        assert_eq!(req, [false, true, true, true, true, false]);
        assert_eq!(
            cg.memory_dir.unwrap(),
            PathBuf::from(format!("{base}/cg/memory/k8s.io/c1"))
        );
        assert_eq!(
            cg.memory_root.unwrap(),
            PathBuf::from(format!("{base}/cg/memory"))
        );
    }

    #[test]
    fn mount_root_is_stripped_and_must_be_a_prefix() {
        let mounts = vec![CgroupMount {
            root: "/kubepods/pod1".into(),
            mount_point: "/sys/fs/cgroup".into(),
            v2: true,
            controllers: vec![],
        }];
        let m = parse_proc_cgroup("0::/kubepods/pod1/ctr\n").unwrap();
        let cg = resolve(&m, &Layout::Mounts(mounts.clone())).unwrap();
        assert!(cg.v2);
        assert_eq!(cg.joins[0].dir, PathBuf::from("/sys/fs/cgroup/ctr"));
        assert!(cg.joins[0].required);
        // A sibling whose name merely starts with the root is not inside it.
        let m = parse_proc_cgroup("0::/kubepods/pod10/ctr\n").unwrap();
        assert!(resolve(&m, &Layout::Mounts(mounts.clone())).is_err());
        // Paths from another cgroup namespace.
        let m = parse_proc_cgroup("0::/../../kubepods/x\n").unwrap();
        let e = resolve(&m, &Layout::Mounts(mounts))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/host-sys"), "{e}");
    }

    #[test]
    fn v2_and_v1_under_host_sys() {
        let t = fake_tree(&["v2/k8s.io/c1"]);
        std::fs::write(t.path().join("v2/cgroup.controllers"), "cpu memory\n").unwrap();
        let cg = resolve(
            &parse_proc_cgroup("0::/k8s.io/c1\n").unwrap(),
            &Layout::HostSys(t.path().join("v2")),
        )
        .unwrap();
        assert!(cg.v2);
        assert_eq!(cg.joins.len(), 1);
        assert_eq!(cg.memory_dir, Some(t.path().join("v2/k8s.io/c1")));

        // v1: "cpu,cpuacct" is found through its own name or either symlink name.
        let t = fake_tree(&[
            "v1/cpu/k8s.io/c1",
            "v1/memory/k8s.io/c1",
            "v1/pids/k8s.io/c1",
            "v1/net_cls/k8s.io/c1",
            "v1/systemd/k8s.io/c1",
        ]);
        let cg = resolve(
            &parse_proc_cgroup(V1_CGROUP).unwrap(),
            &Layout::HostSys(t.path().join("v1")),
        )
        .unwrap();
        assert_eq!(cg.joins.len(), 5, "{:?}", cg.joins); // no unified dir: skipped
        assert_eq!(cg.joins[3].dir, t.path().join("v1/cpu/k8s.io/c1"));
        // A required hierarchy that is missing is an error naming it.
        std::fs::remove_dir_all(t.path().join("v1/pids")).unwrap();
        let e = resolve(
            &parse_proc_cgroup(V1_CGROUP).unwrap(),
            &Layout::HostSys(t.path().join("v1")),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("pids"), "{e}");
    }

    #[test]
    fn memory_limits_v1_and_v2() {
        let t = fake_tree(&["m/k8s.io/c1"]);
        let root = t.path().join("m");
        let dir = root.join("k8s.io/c1");
        let cg = |v2| TargetCgroups {
            v2,
            joins: vec![],
            memory_dir: Some(dir.clone()),
            memory_root: Some(root.clone()),
            host_cgroupns: false,
        };
        // v1: "no limit" is PAGE_COUNTER_MAX pages everywhere.
        std::fs::write(dir.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(
            root.join("k8s.io/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(root.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(memory_limit(&cg(false)).unwrap(), None);
        std::fs::write(dir.join("memory.limit_in_bytes"), "67108864\n").unwrap();
        assert_eq!(memory_limit(&cg(false)).unwrap(), Some(64 << 20));
        // A smaller limit on an ancestor (the pod) wins.
        std::fs::write(root.join("k8s.io/memory.limit_in_bytes"), "33554432\n").unwrap();
        assert_eq!(memory_limit(&cg(false)).unwrap(), Some(32 << 20));
        // v2: "max" means none.
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        assert_eq!(memory_limit(&cg(true)).unwrap(), None);
        std::fs::write(dir.join("memory.max"), "134217728\n").unwrap();
        assert_eq!(memory_limit(&cg(true)).unwrap(), Some(128 << 20));
        std::fs::write(dir.join("memory.max"), "lots\n").unwrap();
        assert!(memory_limit(&cg(true)).is_err());

        std::fs::write(
            dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )
        .unwrap();
        assert_eq!(oom_kills(&cg(false)), Some(3));
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(oom_kills(&cg(true)), Some(2));
    }

    #[test]
    fn own_cgroups_resolve_on_this_host() {
        let cg = of_pid(std::process::id()).unwrap();
        assert!(!cg.joins.is_empty());
        assert!(cg.joins.iter().all(|j| j.dir.is_dir()));
        assert!(node_memory().unwrap() > 0);
    }
}
