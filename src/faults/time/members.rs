//! Which processes one TimeChaos covers, decided once at apply time and re-read at rollback.
//!
//! A container normally has its own pid namespace (its first process is pid 1 there): every
//! process in it is covered, including the children forked after the injection (they inherit
//! the patched vDSO) and processes that appeared meanwhile. A container whose pid namespace is
//! not its own (`hostPID` pods, `shareProcessNamespace` pods whose namespace holds the pause
//! process and every container) is covered by its cgroups instead (every process whose `/proc/<pid>/cgroup` reads the same), and
//! a host process (faultd.v1 `target_pid`) by its process tree. faultd itself is never covered.
use serde::{Deserialize, Serialize};

use crate::process::{self, ProcessIdentity};

/// How the covered processes are found again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Members {
    /// Every process in this pid namespace (its inode number).
    PidNs { ino: u64 },
    /// Every process whose `/proc/<pid>/cgroup` is exactly this text.
    Cgroup { cgroup: String },
    /// A process and its descendants.
    Tree { root: ProcessIdentity },
}

/// The inode of `/proc/<pid>/ns/pid` (`pid` may be `"self"`).
pub fn pidns_ino(pid: &str) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
    link.to_str()?
        .strip_prefix("pid:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The pid of `pid` in its own (innermost) pid namespace: the last field of `NSpid`.
pub fn ns_pid(pid: &str) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

fn cgroup_of(pid: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()
}

impl Members {
    /// The members of the container whose first process is `init`.
    pub fn of_container(init: &ProcessIdentity) -> Members {
        let pid = init.pid.to_string();
        match (pidns_ino(&pid), pidns_ino("self")) {
            (Some(theirs), Some(own)) if theirs != own && ns_pid(&pid) == Some(1) => {
                return Members::PidNs { ino: theirs }
            }
            _ => {}
        }
        match (cgroup_of(&pid), cgroup_of("self")) {
            (Some(theirs), Some(own)) if theirs != own => Members::Cgroup { cgroup: theirs },
            _ => Members::Tree { root: *init },
        }
    }

    /// The live processes covered now, sorted (faultd itself never).
    pub fn scan(&self) -> Vec<u32> {
        let me = std::process::id();
        let all = process::pids();
        let mut out: Vec<u32> = match self {
            Members::PidNs { ino } => all
                .into_iter()
                .filter(|p| pidns_ino(&p.to_string()) == Some(*ino))
                .collect(),
            Members::Cgroup { cgroup } => all
                .into_iter()
                .filter(|p| cgroup_of(&p.to_string()).as_deref() == Some(cgroup.as_str()))
                .collect(),
            Members::Tree { root } if root.is_alive() => {
                let parents: Vec<(u32, u32)> = all
                    .into_iter()
                    .filter_map(|p| Some((p, process::parent_pid(p)?)))
                    .collect();
                descendants(root.pid, &parents)
            }
            Members::Tree { .. } => Vec::new(),
        };
        out.retain(|p| *p != me);
        out.sort_unstable();
        out
    }

    /// Readable form for summaries and logs.
    pub fn describe(&self) -> String {
        match self {
            Members::PidNs { ino } => format!("pid namespace {ino}"),
            Members::Cgroup { .. } => "its cgroups".into(),
            Members::Tree { root } => format!("process {} and its descendants", root.pid),
        }
    }
}

/// `root` and every process below it in the `(pid, parent)` list.
pub fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(c, pp)| *pp == p && *c != p && !out.contains(c))
                .map(|(c, _)| *c)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_walk_the_whole_tree_and_nothing_else() {
        let parents = [(10, 1), (11, 10), (12, 11), (13, 10), (20, 1), (21, 20)];
        let mut d = descendants(10, &parents);
        d.sort_unstable();
        assert_eq!(d, vec![10, 11, 12, 13]);
        assert_eq!(descendants(21, &parents), vec![21]);
    }

    #[test]
    fn faultd_is_never_a_member_and_its_own_namespace_is_found() {
        let own = pidns_ino("self").expect("a pid namespace");
        assert_eq!(ns_pid("1"), Some(1));
        assert_eq!(ns_pid("self"), Some(std::process::id()));
        let m = Members::PidNs { ino: own };
        assert!(!m.scan().contains(&std::process::id()));
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        // faultd's own process: same namespace and cgroups, so a tree.
        assert_eq!(Members::of_container(&me), Members::Tree { root: me });
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"by\":\"pid_ns\""), "{json}");
        assert_eq!(serde_json::from_str::<Members>(&json).unwrap(), m);
    }
}
