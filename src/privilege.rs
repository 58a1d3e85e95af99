//! Least privilege: the capabilities faultd needs (exactly the list `deploy/README.md`
//! documents, "Capabilities"), a check of which of them this process holds, and the drop of
//! every capability a stress worker performs before it loads the CPU or memory.
use caps::{CapSet, Capability, CapsHashSet};

/// A capability faultd needs and what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needed {
    pub cap: Capability,
    /// What does not work without it.
    pub for_what: &'static str,
}

/// The capabilities the DaemonSet grants (`deploy/README.md`, "Capabilities"), in that order.
pub const NEEDED: &[Needed] = &[
    Needed {
        cap: Capability::CAP_NET_ADMIN,
        for_what: "network faults (qdiscs and nftables tables in pod network namespaces) and HTTPChaos (transparent sockets, policy routes)",
    },
    Needed {
        cap: Capability::CAP_SYS_ADMIN,
        for_what:
            "entering pod namespaces (setns) and moving stress workers into the target's cgroups",
    },
    Needed {
        cap: Capability::CAP_SYS_PTRACE,
        for_what: "opening /proc/<pid>/ns/* of processes of other UIDs or with more capabilities, and TimeChaos (ptrace of the target's processes)",
    },
    Needed {
        cap: Capability::CAP_SYS_CHROOT,
        for_what: "entering a pod's mount namespace (setns)",
    },
    Needed {
        cap: Capability::CAP_KILL,
        for_what: "ContainerKill's fallback and signalling processes of other UIDs",
    },
    Needed {
        cap: Capability::CAP_SYS_RESOURCE,
        for_what: "a stress worker's oom_score_adj below the floor of faultd's pod",
    },
    Needed {
        cap: Capability::CAP_SETPCAP,
        for_what: "stress faults (a worker empties its capability bounding set before it loads)",
    },
];

/// Which needed capabilities this process lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapReport {
    /// Needed capabilities not held (see [`missing`]).
    pub missing: Vec<Needed>,
    /// Set when the sets could not be read at all.
    pub error: Option<String>,
}

impl CapReport {
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && self.error.is_none()
    }

    /// One line: `all 7 held` or `missing CAP_X, CAP_Y`.
    pub fn summary(&self) -> String {
        if let Some(e) = &self.error {
            return format!("unknown ({e})");
        }
        if self.missing.is_empty() {
            return format!("all {} held", NEEDED.len());
        }
        let names: Vec<String> = self.missing.iter().map(|n| n.cap.to_string()).collect();
        format!("missing {}", names.join(", "))
    }

    /// Logs each missing capability (warn) with what will not work, or that all are held.
    pub fn log(&self) {
        if let Some(e) = &self.error {
            tracing::warn!(error = %e, "cannot read this process's capability sets");
        }
        for n in &self.missing {
            tracing::warn!(
                capability = %n.cap,
                "capability missing: {} will not work",
                n.for_what
            );
        }
        if self.ok() {
            tracing::info!(capabilities = %self.summary(), "capabilities");
        }
    }
}

/// The needed capabilities not held: a capability counts when it is both effective and
/// permitted (faultd never raises one, so a permitted-only capability is as good as none).
pub fn missing(effective: &CapsHashSet, permitted: &CapsHashSet) -> Vec<Needed> {
    NEEDED
        .iter()
        .filter(|n| !(effective.contains(&n.cap) && permitted.contains(&n.cap)))
        .copied()
        .collect()
}

/// Checks the calling thread's effective and permitted sets (every faultd thread has the same).
pub fn check() -> CapReport {
    match (
        caps::read(None, CapSet::Effective),
        caps::read(None, CapSet::Permitted),
    ) {
        (Ok(eff), Ok(prm)) => CapReport {
            missing: missing(&eff, &prm),
            error: None,
        },
        (Err(e), _) | (_, Err(e)) => CapReport {
            missing: Vec::new(),
            error: Some(e.to_string()),
        },
    }
}

/// The capability lines of a `/proc/<pid>/status` text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCaps {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
    pub no_new_privs: bool,
}

impl StatusCaps {
    /// True when every set is empty and `no_new_privs` is set.
    pub fn fully_dropped(&self) -> bool {
        self.inheritable == 0
            && self.permitted == 0
            && self.effective == 0
            && self.bounding == 0
            && self.ambient == 0
            && self.no_new_privs
    }
}

/// The capabilities of a 64-bit mask as `/proc/<pid>/status` prints it (`CapEff`).
pub fn from_mask(mask: u64) -> CapsHashSet {
    caps::all()
        .into_iter()
        .filter(|c| mask & c.bitmask() != 0)
        .collect()
}

/// What `/proc/<pid>/status` says about a process's capabilities, through `procfs`.
pub fn status_caps(pid: u32) -> Result<StatusCaps, procfs::ProcError> {
    let st = procfs::process::Process::new(pid as i32)?.status()?;
    Ok(StatusCaps {
        inheritable: st.capinh,
        permitted: st.capprm,
        effective: st.capeff,
        bounding: st.capbnd.unwrap_or(0),
        ambient: st.capamb.unwrap_or(0),
        no_new_privs: st.nonewprivs == Some(1),
    })
}

/// Why dropping privileges failed.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    #[error("clearing the {set} capability set: {detail}")]
    Clear { set: &'static str, detail: String },
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
    #[error("capabilities still held after the drop ({0:?})")]
    Remains(StatusCaps),
    #[error("reading /proc/self/status to verify the drop: {0}")]
    Verify(String),
}

/// Drops every capability of the calling process (bounding, ambient, inheritable, effective,
/// permitted) and sets `no_new_privs`, then verifies through `/proc/self/status`. Call it
/// single-threaded (capability sets are per thread); children forked afterwards inherit the
/// empty sets. Emptying the bounding set needs `CAP_SETPCAP`, so it goes first.
pub fn drop_all() -> Result<(), DropError> {
    let clear = |set: CapSet, name: &'static str| {
        caps::clear(None, set).map_err(|e| DropError::Clear {
            set: name,
            detail: e.to_string(),
        })
    };
    clear(CapSet::Bounding, "bounding")?;
    // Capabilities newer than the `caps` crate: drop by number until the kernel says EINVAL.
    for cap in 41..64 {
        // SAFETY: PR_CAPBSET_DROP takes a capability number by value; no memory is passed.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            break;
        }
    }
    clear(CapSet::Ambient, "ambient")?;
    clear(CapSet::Inheritable, "inheritable")?;
    clear(CapSet::Effective, "effective")?;
    clear(CapSet::Permitted, "permitted")?;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(DropError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    let now = status_caps(std::process::id()).map_err(|e| DropError::Verify(e.to_string()))?;
    if !now.fully_dropped() {
        return Err(DropError::Remains(now));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_the_one_deploy_readme_documents() {
        // Rows of the "Capabilities" table: "| `NET_ADMIN` | why |".
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/README.md"))
                .unwrap();
        let table = readme.split("## Capabilities").nth(1).unwrap();
        let documented: Vec<String> = table
            .lines()
            .skip_while(|l| !l.starts_with("| Capability"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.split('`').nth(1).unwrap().to_string())
            .collect();
        let ours: Vec<String> = NEEDED
            .iter()
            .map(|n| n.cap.to_string().trim_start_matches("CAP_").to_string())
            .collect();
        assert_eq!(ours, documented);
        assert!(NEEDED.iter().all(|n| !n.for_what.is_empty()));
    }

    #[test]
    fn report_names_what_is_missing() {
        let all: CapsHashSet = NEEDED.iter().map(|n| n.cap).collect();
        assert!(missing(&all, &all).is_empty());
        let r = CapReport {
            missing: missing(&all, &all),
            error: None,
        };
        assert!(r.ok());
        assert_eq!(r.summary(), "all 7 held");

        // A status line as the kernel prints it: NET_ADMIN (12) and SYS_ADMIN (21) only.
        let eff = from_mask(0x0000_0000_0020_1000);
        assert_eq!(
            eff,
            [Capability::CAP_NET_ADMIN, Capability::CAP_SYS_ADMIN].into()
        );
        let r = CapReport {
            missing: missing(&eff, &eff),
            error: None,
        };
        assert!(!r.ok());
        assert_eq!(
            r.summary(),
            "missing CAP_SYS_PTRACE, CAP_SYS_CHROOT, CAP_KILL, CAP_SYS_RESOURCE, CAP_SETPCAP"
        );
        assert_eq!(missing(&from_mask(0), &from_mask(0)).len(), NEEDED.len());
        // Permitted but not effective: not held (faultd never raises a capability).
        assert_eq!(missing(&from_mask(0), &all).len(), NEEDED.len());
        // Docker's default set (0x00000000a80425fb) lacks NET_ADMIN, SYS_ADMIN, SYS_PTRACE,
        // SYS_RESOURCE.
        let docker = from_mask(0x0000_0000_a804_25fb);
        let names: Vec<String> = missing(&docker, &docker)
            .iter()
            .map(|n| n.cap.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "CAP_NET_ADMIN",
                "CAP_SYS_ADMIN",
                "CAP_SYS_PTRACE",
                "CAP_SYS_RESOURCE"
            ]
        );
        let e = CapReport {
            missing: vec![],
            error: Some("capget failure".into()),
        };
        assert!(!e.ok() && e.summary().contains("capget"));
    }

    #[test]
    fn own_status_and_check_agree() {
        let st = status_caps(std::process::id()).unwrap();
        let r = check();
        assert!(r.error.is_none());
        let eff = from_mask(st.effective);
        assert_eq!(r.missing, missing(&eff, &eff));
        assert!(!st.fully_dropped() || r.missing.len() == NEEDED.len());
    }

    #[test]
    fn fully_dropped_needs_every_set_empty_and_no_new_privs() {
        let none = StatusCaps {
            no_new_privs: true,
            ..Default::default()
        };
        assert!(none.fully_dropped());
        assert!(!StatusCaps::default().fully_dropped());
        for s in [
            StatusCaps {
                bounding: 1,
                ..none
            },
            StatusCaps { ambient: 1, ..none },
            StatusCaps {
                effective: 1 << 21,
                ..none
            },
        ] {
            assert!(!s.fully_dropped(), "{s:?}");
        }
    }
}
