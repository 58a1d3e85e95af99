//! The node doctor: checks faultd's prerequisites and scans every network namespace on the node
//! for residue faultd could have left (qdiscs carrying faultd's `faXX:` handles, and nft tables
//! `inet faultd`, that no active fault accounts for), and the process table for
//! `faultd stress-worker` processes of no active fault. With `fix`, faultd's own residue is
//! removed. Kernel features (qdisc kinds, nf_tables) are probed in a throwaway network namespace
//! ([`probes`]).
pub mod probes;

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

/// The text `faultd ctl doctor` prints: one line per check (`ok`/`FAIL`), then the residue.
pub fn render_text(checks: &[Check], residue: &[Residue]) -> String {
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<4} {:<18} {}\n",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.detail
        ));
    }
    if residue.is_empty() {
        out.push_str("no residue found\n");
    }
    for x in residue {
        out.push_str(&format!(
            "residue {:<6} {} {}{}\n",
            x.kind,
            x.location,
            x.detail,
            if x.removed { " (removed)" } else { "" }
        ));
    }
    out
}

/// The names of the checks that failed (a non-empty list makes `faultd ctl doctor` exit 1).
pub fn failed_checks(checks: &[Check]) -> Vec<&str> {
    checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.as_str())
        .collect()
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

/// The capabilities `deploy/README.md` documents that this process lacks, each with what
/// will not work.
fn capabilities_check() -> Check {
    let r = crate::privilege::check();
    let detail = if r.ok() || r.error.is_some() {
        r.summary()
    } else {
        r.missing
            .iter()
            .map(|n| format!("{} missing: {} will not work", n.cap, n.for_what))
            .collect::<Vec<_>>()
            .join("; ")
    };
    check("capabilities", r.ok(), detail)
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
    // What another live faultd on this node holds is its own, never residue here.
    let live: Vec<_> = active
        .iter()
        .cloned()
        .chain(other_daemons_faults())
        .collect();
    report.checks.push(check(
        "journal",
        true,
        format!(
            "{} active fault(s) in {}",
            active.len(),
            state_dir.display()
        ),
    ));
    // Journal integrity: what replay skipped when this daemon opened the journal.
    let replay = engine.journal_replay();
    report.checks.push(check(
        "journal integrity",
        !replay.is_corrupt(),
        replay.summary(),
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
    report.checks.push(capabilities_check());
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
    // What the kernel can do, asked of the kernel (see `probes`).
    report.checks.extend(
        probes::probe_kernel()
            .await
            .iter()
            .map(probes::Probe::check),
    );

    // Residue: faultd qdiscs that no active fault accounts for.
    let owned: HashSet<(NsId, String)> = live
        .iter()
        .filter_map(|r| match &r.effect {
            FaultEffect::Qdisc(q) => Some((q.netns.id, q.device.clone())),
            FaultEffect::Firewall(_) => None,
            FaultEffect::Stress(_)
            | FaultEffect::Dns(_)
            | FaultEffect::Time(_)
            | FaultEffect::Http(_)
            | FaultEffect::Io(_)
            | FaultEffect::Jvm(_) => None,
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
    let owners: HashSet<String> = live.iter().map(|r| r.id.clone()).collect();
    for t in crate::faults::firewall::stray_tables(&namespaces, &owners, fix).await {
        report.residue.push(Residue {
            kind: "nft table".into(),
            location: format!("netns {}:{} ({})", t.netns.dev, t.netns.ino, t.label),
            detail: t.detail,
            removed: t.removed,
        });
    }
    // Residue: HTTPChaos interception tables no live fault owns (the proxy died with a previous
    // faultd; the rule fails open, but the table is faultd's to remove).
    for (id, label, found, removed) in
        crate::faults::firewall::tproxy::stray_tables(&namespaces, &owners, fix).await
    {
        report.residue.push(Residue {
            kind: "nft table".into(),
            location: format!("netns {}:{} ({label})", id.dev, id.ino),
            detail: format!(
                "table inet faultd_http (owner marker: {})",
                if found.is_empty() {
                    "none".into()
                } else {
                    found.join(", ")
                }
            ),
            removed,
        });
    }
    // Residue: HTTPChaos's reply route (fwmark rule, table 64023) in a namespace where no live
    // HTTPChaos fault needs it (its table was removed above, or lost with a previous daemon).
    let http_live: HashSet<NsId> = live
        .iter()
        .filter_map(|r| match &r.effect {
            FaultEffect::Http(h) => Some(h.netns.id),
            _ => None,
        })
        .collect();
    for (id, ns, label) in &namespaces {
        if http_live.contains(id) {
            continue;
        }
        let Ok(true) = in_netns(ns, crate::faults::http::route::present).await else {
            continue;
        };
        let removed = fix
            && in_netns(ns, crate::faults::http::route::remove)
                .await
                .is_ok();
        report.residue.push(Residue {
            kind: "policy route".into(),
            location: format!("netns {}:{} ({label})", id.dev, id.ino),
            detail: format!(
                "HTTPChaos reply route (fwmark {:#x} lookup {}) no active fault needs",
                crate::faults::http::route::MARK,
                crate::faults::http::route::TABLE
            ),
            removed,
        });
    }
    // Residue: `faultd stress-worker` processes whose fault is not active (a previous daemon's
    // workers survive only if PDEATHSIG could not fire).
    // Workers whose parent is another live faultd daemon (test hosts) are that daemon's.
    let active_ids: HashSet<&str> = live.iter().map(|r| r.id.as_str()).collect();
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
    // Residue: resolv.conf files carrying faultd's DNSChaos mark that no active fault wrote.
    let tokens: HashSet<String> = live
        .iter()
        .filter_map(|r| match &r.effect {
            FaultEffect::Dns(d) => Some(d.token.clone()),
            _ => None,
        })
        .collect();
    let files = tokio::task::spawn_blocking(move || crate::faults::dns::stray_files(&tokens))
        .await
        .unwrap_or_default();
    for (file, pid, token) in files {
        report.residue.push(Residue {
            kind: "resolv.conf".into(),
            location: format!("file {file} (seen by pid {pid})"),
            detail: format!(
                "holds faultd DNSChaos content (token {token}) no active fault wrote; its original is in the journal's ended records, if any (`faultd ctl list --all`)"
            ),
            removed: false,
        });
    }
    // Residue: processes running faultd's fake clock for a fault that is not active. The
    // pristine bytes are faultd's own vDSO's, so fixing needs no journal.
    let tokens: HashSet<u64> = live
        .iter()
        .filter_map(|r| match &r.effect {
            FaultEffect::Time(t) => Some(t.token),
            _ => None,
        })
        .collect();
    let stray =
        tokio::task::spawn_blocking(move || crate::faults::time::stray_processes(&tokens, fix))
            .await
            .unwrap_or_default();
    for (pid, token, removed) in stray {
        report.residue.push(Residue {
            kind: "fake clock".into(),
            location: format!("pid {pid}"),
            detail: format!(
                "its vDSO jumps to faultd's fake clock (token {token:#x}) for a fault that is not active"
            ),
            removed,
        });
    }
    // Residue: faultd's IOChaos layers (FUSE mounts `fuse.faultd faultd-io`) no live fault
    // accounts for: a previous daemon's, left by a crash this daemon did not reconcile.
    let owned_layers: HashSet<crate::faults::io::live::Key> = live
        .iter()
        .filter_map(|r| match &r.effect {
            FaultEffect::Io(f) => Some((f.mnt_ns, f.volume.clone())),
            _ => None,
        })
        .collect();
    let stray = tokio::task::spawn_blocking(move || {
        crate::faults::io::live::stray_layers(&owned_layers, fix)
    })
    .await
    .unwrap_or_default();
    for s in stray {
        report.residue.push(Residue {
            kind: "io layer".into(),
            location: format!(
                "mount ns {}:{} (pid {}) {}",
                s.mnt_ns.dev,
                s.mnt_ns.ino,
                s.pid,
                s.volume.display()
            ),
            detail: format!(
                "faultd's FUSE layer (connection {}) on the volume for a fault that is not active",
                s.conn
            ),
            removed: s.removed,
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

/// Active (or failed) faults of the other faultd daemons running on this node (test hosts run
/// several, each on its own state dir), read from the journal each one holds open (found
/// through `/proc/<pid>/fd`, so wherever its state dir is). Records another build cannot
/// decode are skipped.
fn other_daemons_faults() -> Vec<crate::engine::FaultRecord<FaultEffect>> {
    let me = std::process::id();
    let mut latest = std::collections::BTreeMap::new();
    for pid in crate::process::pids() {
        if pid == me || !crate::faults::stress::spawn::is_faultd_daemon(pid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let is_journal = std::fs::read_link(fd.path()).is_ok_and(|t| {
                t.file_name()
                    .is_some_and(|n| n == crate::journal::JOURNAL_FILE)
            });
            if !is_journal {
                continue;
            }
            let records =
                crate::journal::peek::<crate::engine::FaultRecord<FaultEffect>>(&fd.path())
                    .unwrap_or_default();
            for r in records {
                latest.insert(r.id.clone(), r);
            }
        }
    }
    latest
        .into_values()
        .filter(|r| r.phase.is_active() || r.phase == crate::engine::Phase::Failed)
        .collect()
}

/// After start-up reconciliation: reports what the journal's replay skipped (metric, and the
/// line returned for `/readyz`) and, when it skipped corrupt records, removes the kernel state
/// those records may have described. faultd marks everything it creates (qdisc handles
/// `faXX:`, the nft table's owner marker naming the fault, stress workers' `--fault-id`), so the
/// kernel is the backup journal: every marked item that no live fault owns is residue
/// ([`run`] with `fix`), and each removal is logged. A new fault kind must be markable the same
/// way and scanned in [`run`].
pub async fn after_replay(
    engine: &crate::faults::FaultEngine,
    runtimes: &crate::runtime::Runtimes,
    metrics: &crate::metrics::Metrics,
    state_dir: &std::path::Path,
) -> String {
    let replay = engine.journal_replay();
    metrics
        .journal_corrupt_records
        .inc_by(replay.corrupt_lines());
    let mut out = format!("journal: {}\n", replay.summary());
    if !replay.is_corrupt() {
        return out;
    }
    let residue = run(engine, runtimes, state_dir, true).await.residue;
    for r in &residue {
        if r.removed {
            tracing::warn!(kind = %r.kind, location = %r.location, detail = %r.detail, "after journal corruption: removed faultd residue that no live fault owns");
        } else {
            tracing::error!(kind = %r.kind, location = %r.location, detail = %r.detail, "after journal corruption: faultd residue that no live fault owns could not be removed");
        }
    }
    let removed = residue.iter().filter(|r| r.removed).count();
    out += &format!(
        "residue scan after journal corruption: {removed} removed, {} could not be removed\n",
        residue.len() - removed
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_printed_and_failures_are_named() {
        let checks = vec![
            check("journal", true, "0 active fault(s) in /var/lib/faultd"),
            check("sch_netem", false, "missing: the kernel has no sch_netem"),
            check("sch_tbf", true, "works (bandwidth faults)"),
        ];
        let text = render_text(&checks, &[]);
        assert_eq!(
            text,
            "ok   journal            0 active fault(s) in /var/lib/faultd\n\
             FAIL sch_netem          missing: the kernel has no sch_netem\n\
             ok   sch_tbf            works (bandwidth faults)\n\
             no residue found\n"
        );
        assert_eq!(failed_checks(&checks), ["sch_netem"]);
        assert!(failed_checks(&checks[..1]).is_empty());
        let residue = [Residue {
            kind: "qdisc".into(),
            location: "netns 4:1 (pid 7) dev d0".into(),
            detail: "tbf fa01:".into(),
            removed: true,
        }];
        assert!(render_text(&checks[..1], &residue)
            .ends_with("residue qdisc  netns 4:1 (pid 7) dev d0 tbf fa01: (removed)\n"));
    }
}
