//! The node doctor: checks faultd's prerequisites and scans every network namespace on the node
//! for residue faultd could have left (qdiscs carrying faultd's `faXX:` handles, and nft tables
//! `inet faultd`, that no active fault accounts for), and the process table for
//! `faultd stress-worker` processes of no active fault. With `fix`, faultd's own residue is
//! removed.
use std::collections::HashSet;

use crate::engine::Effect;
use crate::faults::qdisc::is_faultd_handle;
use crate::faults::FaultEffect;
use crate::ns::{Namespace, NsId, NsKind};
use crate::tc::{in_netns, qdisc};

#[derive(Debug, Clone)]
pub struct Residue {
    pub kind: String,
    pub location: String,
    pub detail: String,
    pub removed: bool,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub residue: Vec<Residue>,
    pub checks: Vec<Check>,
}

fn check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
    }
}

/// Every distinct network namespace on the node, with a process (or bind mount) that holds it.
pub fn network_namespaces() -> Vec<(NsId, Namespace, String)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut consider = |path: std::path::PathBuf, label: String| {
        if let Ok(ns) = Namespace::open(&path, NsKind::Net) {
            if seen.insert(ns.id()) {
                out.push((ns.id(), ns, label));
            }
        }
    };
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            consider(
                e.path(),
                format!("netns {}", e.file_name().to_string_lossy()),
            );
        }
    }
    for pid in crate::process::pids() {
        consider(
            std::path::PathBuf::from(format!("/proc/{pid}/ns/net")),
            format!("pid {pid}"),
        );
    }
    out
}

/// Runs every check and the residue scan.
pub async fn run(
    engine: &crate::faults::FaultEngine,
    runtimes: &crate::runtime::Runtimes,
    state_dir: &std::path::Path,
    fix: bool,
) -> Report {
    let mut report = Report::default();
    let active = engine.list(false);
    report.checks.push(check(
        "journal",
        true,
        format!(
            "{} active fault(s) in {}",
            active.len(),
            state_dir.display()
        ),
    ));
    let found = runtimes.discovered();
    report.checks.push(check(
        "container runtime",
        !found.is_empty(),
        if found.is_empty() {
            "no runtime socket answered; container ids are resolved through /proc only".to_string()
        } else {
            runtimes.describe()
        },
    ));
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    report.checks.push(check(
        "cgroup",
        true,
        if v2 {
            "cgroup v2 (unified)"
        } else {
            "cgroup v1 (legacy or hybrid)"
        },
    ));
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    for (module, what) in [
        ("sch_netem", "network delay/loss"),
        ("sch_tbf", "bandwidth"),
    ] {
        let loaded = std::path::Path::new("/sys/module").join(module).exists();
        let shipped = std::fs::read_to_string(format!("/lib/modules/{release}/modules.dep"))
            .map(|d| d.contains(&format!("/{module}.ko")))
            .unwrap_or(false);
        let builtin = std::fs::read_to_string(format!("/lib/modules/{release}/modules.builtin"))
            .map(|d| d.contains(&format!("/{module}.ko")))
            .unwrap_or(false);
        report.checks.push(check(
            module,
            loaded || shipped || builtin,
            if loaded || shipped || builtin {
                format!("available ({what} faults)")
            } else {
                format!("not found: {what} faults will fail with FAILED_PRECONDITION")
            },
        ));
    }

    // Residue: faultd qdiscs that no active fault accounts for.
    let owned: HashSet<(NsId, String)> = active
        .iter()
        .filter_map(|r| match &r.effect {
            FaultEffect::Qdisc(q) => Some((q.netns.id, q.device.clone())),
            FaultEffect::Firewall(_) => None,
            FaultEffect::Stress(_) => None,
        })
        .collect();
    let namespaces = network_namespaces();
    for (id, ns, label) in &namespaces {
        let (id, label) = (*id, label);
        // One namespace thread per namespace: list the devices and their faultd qdiscs, and
        // delete the unaccounted ones when fixing.
        let owned_here: HashSet<String> = owned
            .iter()
            .filter(|(ns_id, _)| *ns_id == id)
            .map(|(_, dev)| dev.clone())
            .collect();
        let Ok(found) = in_netns(ns, move |s| {
            let mut found = Vec::new();
            for (idx, name) in qdisc::links(s)? {
                let Ok(qs) = qdisc::dump_qdiscs(s, idx) else {
                    continue;
                };
                let ours: Vec<_> = qs.iter().filter(|q| is_faultd_handle(q.handle)).collect();
                if ours.is_empty() || owned_here.contains(&name) {
                    continue;
                }
                let detail = ours
                    .iter()
                    .map(|q| format!("{} {:x}:", q.kind, q.handle >> 16))
                    .collect::<Vec<_>>()
                    .join(", ");
                let removed = fix && qdisc::delete_root_qdisc(s, idx).is_ok();
                found.push((name, detail, removed));
            }
            Ok(found)
        })
        .await
        else {
            continue;
        };
        for (name, detail, removed) in found {
            report.residue.push(Residue {
                kind: "qdisc".into(),
                location: format!("netns {}:{} ({label}) dev {name}", id.dev, id.ino),
                detail,
                removed,
            });
        }
    }
    // Residue: faultd nft tables whose owner marker names no fault the journal accounts for.
    let nf_tables = tokio::task::spawn_blocking(crate::faults::firewall::kernel_support)
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    report.checks.push(check(
        "nf_tables",
        nf_tables.is_ok(),
        match &nf_tables {
            Ok(()) => "netlink reachable (network partition faults)".to_string(),
            Err(e) => format!("{e}: network partition faults will fail"),
        },
    ));
    let owners: HashSet<String> = active.iter().map(|r| r.id.clone()).collect();
    for t in crate::faults::firewall::stray_tables(&namespaces, &owners, fix).await {
        report.residue.push(Residue {
            kind: "nft table".into(),
            location: format!("netns {}:{} ({})", t.netns.dev, t.netns.ino, t.label),
            detail: t.detail,
            removed: t.removed,
        });
    }
    // Residue: `faultd stress-worker` processes whose fault is not active (a previous daemon's
    // workers survive only if PDEATHSIG could not fire).
    // Workers whose parent is another live faultd daemon (test hosts) are that daemon's.
    let active_ids: HashSet<&str> = active.iter().map(|r| r.id.as_str()).collect();
    let workers = tokio::task::spawn_blocking(crate::faults::stress::spawn::scan_workers)
        .await
        .unwrap_or_default();
    let foreign = crate::faults::stress::spawn::foreign_fault_ids(&workers, std::process::id());
    let strays: Vec<_> = workers
        .into_iter()
        .filter(|p| !active_ids.contains(p.fault_id.as_str()) && !foreign.contains(&p.fault_id))
        .collect();
    for p in strays {
        let removed = fix && crate::faults::stress::spawn::kill_worker_process(&p);
        report.residue.push(Residue {
            kind: "stress worker".into(),
            location: format!("pid {}", p.pid),
            detail: format!("fault {} is not active: {}", p.fault_id, p.cmdline),
            removed,
        });
    }
    for r in &active {
        if r.effect.target_gone(&r.ctx()) {
            report.checks.push(check(
                "fault target",
                false,
                format!("fault {} targets a namespace or process that is gone", r.id),
            ));
        }
    }
    report
}
