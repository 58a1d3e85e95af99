//! Kernel probes: whether the kernel really does what faultd's fault kinds need, asked of the
//! kernel itself instead of looked up in `/lib/modules` (a built-in `sch_tbf` is in no
//! `modules.*` file, and a listed module may still fail to load).
//!
//! Every probe runs on one dedicated OS thread that moves into a fresh, empty network namespace
//! (`unshare(CLONE_NEWNET)`; never a tokio worker, whose namespace must not change) and works on
//! that namespace's `lo`: a root qdisc of each kind faultd installs is added and deleted again,
//! and nf_tables is asked to create and delete an `inet` table. The namespace disappears with
//! the thread, so nothing a probe does can be seen anywhere else, even if a delete fails.
use nix::sched::CloneFlags;

use super::Check;
use crate::tc::netem::NetemSpec;
use crate::tc::prio::PrioSpec;
use crate::tc::qdisc::{self, AddMode, Qdisc};
use crate::tc::tbf::{TbfLimit, TbfSpec};
use crate::tc::{tc_handle, RouteSocket, TcError, TC_H_ROOT};

/// The qdisc kinds faultd installs, with what needs them.
pub const QDISC_KINDS: [(&str, &str); 3] = [
    ("netem", "network delay/loss/duplicate/corrupt/rate faults"),
    ("tbf", "bandwidth faults"),
    ("prio", "tc rules filtered by ipset"),
];

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The kernel did it.
    Works,
    /// The kernel lacks the feature (the detail says how it answered).
    Missing(String),
    /// The probe could not tell (no privileges, no netlink socket, ...).
    Unknown(String),
}

/// One probed feature: `sch_netem`, `sch_tbf`, `sch_prio`, `nf_tables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub feature: String,
    /// The faults that need it.
    pub needed_by: String,
    pub verdict: Verdict,
}

impl Probe {
    /// The doctor's line for this probe.
    pub fn check(&self) -> Check {
        let (ok, detail) = match &self.verdict {
            Verdict::Works => (true, format!("works ({})", self.needed_by)),
            Verdict::Missing(why) => (
                false,
                format!(
                    "missing: {why}; {} fail with FAILED_PRECONDITION",
                    self.needed_by
                ),
            ),
            Verdict::Unknown(why) => (false, format!("could not probe: {why}")),
        };
        Check {
            name: self.feature.clone(),
            ok,
            detail,
        }
    }
}

/// `ENOENT (No such file or directory)`.
fn errno_text(errno: i32) -> String {
    let e = nix::errno::Errno::from_raw(errno);
    format!("{e:?} ({})", e.desc())
}

/// A root qdisc of `kind` with options faultd could send.
fn sample_qdisc(kind: &str) -> Result<Qdisc, TcError> {
    let handle = tc_handle(0xFA01, 0);
    match kind {
        "netem" => Ok(Qdisc::netem(
            TC_H_ROOT,
            handle,
            &NetemSpec {
                delay: std::time::Duration::from_millis(1),
                ..Default::default()
            },
        )),
        "tbf" => Qdisc::tbf(
            TC_H_ROOT,
            handle,
            &TbfSpec {
                rate: 125_000,
                burst: 10_000,
                limit: TbfLimit::Bytes(20_000),
                peak: None,
            },
        ),
        "prio" => Ok(Qdisc::prio(TC_H_ROOT, handle, &PrioSpec::chaos_mesh(1)?)),
        other => Err(TcError::invalid("kind", other, "not a qdisc faultd uses")),
    }
}

/// Adds a root qdisc of `kind` to `ifindex` and deletes it again.
fn probe_qdisc(sock: &mut RouteSocket, ifindex: u32, kind: &str) -> Verdict {
    let q = match sample_qdisc(kind) {
        Ok(q) => q,
        Err(e) => return Verdict::Unknown(e.to_string()),
    };
    match qdisc::apply_qdisc(sock, ifindex, &q, AddMode::Exclusive) {
        Ok(()) => match qdisc::delete_root_qdisc(sock, ifindex) {
            Ok(_) => Verdict::Works,
            Err(e) => {
                Verdict::Unknown(format!("added a {kind} qdisc, but deleting it failed: {e}"))
            }
        },
        Err(e @ TcError::KindMissing { errno, .. }) => Verdict::Missing(format!(
            "{e}: adding a {kind} qdisc failed with {}",
            errno_text(errno)
        )),
        Err(e) => Verdict::Unknown(format!("adding a {kind} qdisc: {e}")),
    }
}

/// nf_tables (network partitions, tc rules filtered by ipset): creates and deletes an `inet`
/// table over nf_tables netlink, as faultd's firewall does (one batch), in the calling thread's
/// network namespace.
pub fn probe_nftables() -> Verdict {
    use crate::faults::firewall::FirewallError;
    match crate::faults::firewall::probe_table() {
        Ok(()) => Verdict::Works,
        Err(e @ FirewallError::Kernel { .. })
            if e.kind() == crate::engine::FailureKind::FailedPrecondition =>
        {
            Verdict::Missing(format!("the kernel has no nf_tables: {e}"))
        }
        Err(e) => Verdict::Unknown(e.to_string()),
    }
}

fn all_unknown(why: &str) -> Vec<Probe> {
    let mut out: Vec<Probe> = QDISC_KINDS
        .iter()
        .map(|(kind, needed_by)| Probe {
            feature: format!("sch_{kind}"),
            needed_by: needed_by.to_string(),
            verdict: Verdict::Unknown(why.to_string()),
        })
        .collect();
    out.push(Probe {
        feature: "nf_tables".into(),
        needed_by: NFT_NEEDED_BY.into(),
        verdict: Verdict::Unknown(why.to_string()),
    });
    out
}

const NFT_NEEDED_BY: &str = "network partition faults and tc rules filtered by ipset";

/// The probes, on the calling thread, which must be a dedicated one: it leaves the caller's
/// network namespace for good.
fn probe_in_scratch_netns() -> Vec<Probe> {
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWNET) {
        return all_unknown(&format!(
            "cannot create a scratch network namespace (unshare CLONE_NEWNET: {e}; faultd needs CAP_SYS_ADMIN)"
        ));
    }
    let lo = RouteSocket::open().and_then(|mut s| {
        let idx = qdisc::link_index(&mut s, "lo")?;
        Ok((s, idx))
    });
    let mut out = Vec::new();
    match lo {
        Ok((mut sock, idx)) => {
            for (kind, needed_by) in QDISC_KINDS {
                out.push(Probe {
                    feature: format!("sch_{kind}"),
                    needed_by: needed_by.into(),
                    verdict: probe_qdisc(&mut sock, idx, kind),
                });
            }
        }
        Err(e) => {
            let mut all = all_unknown(&format!("lo of a scratch network namespace: {e}"));
            all.pop();
            out.extend(all);
        }
    }
    out.push(Probe {
        feature: "nf_tables".into(),
        needed_by: NFT_NEEDED_BY.into(),
        verdict: probe_nftables(),
    });
    out
}

/// Runs every probe on a new OS thread in a throwaway network namespace and waits for it
/// (blocking: call it from a thread that may block, see [`probe_kernel`]).
pub fn run_probes() -> Vec<Probe> {
    match std::thread::Builder::new()
        .name("faultd-probe".into())
        .spawn(probe_in_scratch_netns)
    {
        Ok(t) => t
            .join()
            .unwrap_or_else(|_| all_unknown("the probe thread panicked")),
        Err(e) => all_unknown(&format!("cannot start the probe thread: {e}")),
    }
}

/// [`run_probes`] for async callers: the blocking pool only waits for the probe thread.
pub async fn probe_kernel() -> Vec<Probe> {
    tokio::task::spawn_blocking(run_probes)
        .await
        .unwrap_or_else(|e| all_unknown(&format!("the probe task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_lines_say_what_works_and_what_is_missing() {
        let p = |verdict| Probe {
            feature: "sch_netem".into(),
            needed_by: QDISC_KINDS[0].1.into(),
            verdict,
        };
        let ok = p(Verdict::Works).check();
        assert!(ok.ok);
        assert_eq!(ok.name, "sch_netem");
        assert!(
            ok.detail.starts_with("works (network delay"),
            "{}",
            ok.detail
        );
        let missing = p(Verdict::Missing(format!(
            "{}: adding a netem qdisc failed with {}",
            TcError::KindMissing {
                kind: "netem".into(),
                errno: libc::ENOENT
            },
            errno_text(libc::ENOENT)
        )))
        .check();
        assert!(!missing.ok);
        assert_eq!(
            missing.detail,
            "missing: the kernel has no sch_netem (modprobe sch_netem): adding a netem qdisc \
             failed with ENOENT (No such file or directory); network \
             delay/loss/duplicate/corrupt/rate faults fail with FAILED_PRECONDITION"
        );
        let unknown = p(Verdict::Unknown("no privileges".into())).check();
        assert!(!unknown.ok);
        assert_eq!(unknown.detail, "could not probe: no privileges");
    }

    #[test]
    fn every_kind_has_a_sample_faultd_could_send() {
        for (kind, _) in QDISC_KINDS {
            let q = sample_qdisc(kind).unwrap();
            assert_eq!((q.kind.as_str(), q.parent), (kind, TC_H_ROOT));
            assert!(q.options.is_some());
        }
        assert!(sample_qdisc("htb").is_err());
    }

    #[test]
    fn without_privileges_every_probe_says_it_could_not_tell() {
        let all = all_unknown("x");
        let names: Vec<&str> = all.iter().map(|p| p.feature.as_str()).collect();
        assert_eq!(names, ["sch_netem", "sch_tbf", "sch_prio", "nf_tables"]);
        assert!(all.iter().all(|p| !p.check().ok));
    }
}
