//! The procfs side of PID resolution: finding a container's init process from `/proc/*/cgroup`
//! when its runtime cannot be asked, checking that a PID belongs to a container, and sending
//! SIGKILL without ever hitting a reused PID (pidfd + start-time check).
use std::collections::HashSet;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use ::procfs::ProcessCGroup;

use crate::process::{pids_in, stat_in, ProcessError, ProcessIdentity};

/// Cgroup directory name prefixes runtimes put in front of a container id (systemd scopes and
/// cgroupfs leaves). `crio-conmon-<id>` (CRI-O's monitor) deliberately does not match.
const CGROUP_NAME_PREFIXES: &[&str] = &["cri-containerd-", "docker-", "crio-", "libpod-"];

/// True when one cgroup path component of a `/proc/<pid>/cgroup` file (as `procfs` parsed it)
/// names container `id`: `…/k8s.io/<id>`, `…/<id>`, `cri-containerd-<id>.scope`,
/// `docker-<id>.scope`, `crio-<id>.scope`, `crio-<id>`.
pub(super) fn cgroups_name(cgroups: &[ProcessCGroup], id: &str) -> bool {
    !id.is_empty()
        && cgroups
            .iter()
            .any(|cg| cg.pathname.split('/').any(|c| component_names(c, id)))
}

/// `<proc_root>/<pid>/cgroup`, parsed by `procfs`.
fn cgroups_of(proc_root: &Path, pid: u32) -> Option<Vec<ProcessCGroup>> {
    ::procfs::process::Process::new_with_root(proc_root.join(pid.to_string()))
        .and_then(|p| p.cgroups())
        .ok()
        .map(|c| c.0)
}

fn component_names(c: &str, id: &str) -> bool {
    if c == id {
        return true;
    }
    let c = c.strip_suffix(".scope").unwrap_or(c);
    CGROUP_NAME_PREFIXES
        .iter()
        .any(|p| c.strip_prefix(p) == Some(id))
}

/// True when process `pid` (as seen under `proc_root`) lives in a cgroup that names `id`.
pub(super) fn pid_in_container(proc_root: &Path, pid: u32, id: &str) -> bool {
    cgroups_of(proc_root, pid).is_some_and(|c| cgroups_name(&c, id))
}

/// Scans `proc_root` for the init process of container `id`: among the processes whose cgroup
/// names the container, those whose parent is not in it (init, plus `exec`'d processes whose
/// parent is the shim), the one started first. Processes that vanish mid-scan are skipped.
pub(super) fn find_container_init(proc_root: &Path, id: &str) -> Option<ProcessIdentity> {
    // (pid, ppid, start_ticks) of every process in the container's cgroup.
    let mut members: Vec<(u32, u32, u64)> = Vec::new();
    for pid in pids_in(proc_root) {
        if !cgroups_of(proc_root, pid).is_some_and(|c| cgroups_name(&c, id)) {
            continue;
        }
        let Ok(stat) = stat_in(proc_root, pid) else {
            continue;
        };
        members.push((pid, stat.ppid, stat.start_ticks));
    }
    let in_cgroup: HashSet<u32> = members.iter().map(|m| m.0).collect();
    let (pid, _, ticks) = members
        .into_iter()
        .filter(|(_, ppid, _)| !in_cgroup.contains(ppid))
        .min_by_key(|(pid, _, ticks)| (*ticks, *pid))?;
    // Re-read through the shared helper so the identity carries the gopsutil create time; make
    // sure it is still the process we chose.
    ProcessIdentity::of_in(proc_root, pid)
        .ok()
        .filter(|p| p.start_ticks == ticks)
}

/// Why a signal was not delivered.
#[derive(Debug, thiserror::Error)]
pub(super) enum SignalError {
    #[error("process {pid} has exited")]
    Gone { pid: u32 },
    #[error("pid {pid} now belongs to another process (start time changed)")]
    Reused { pid: u32 },
    #[error("signalling pid {pid}: {source}")]
    Os { pid: u32, source: std::io::Error },
}

/// Sends SIGKILL to exactly the process `who` names. A pidfd pins the process first, then its
/// start time is compared, so a PID reused between the check and the signal cannot be hit.
/// Falls back to check-then-`kill(2)` on kernels without pidfd (< 5.3).
pub(super) fn sigkill(proc_root: &Path, who: &ProcessIdentity) -> Result<(), SignalError> {
    let pid = who.pid;
    let same = || match ProcessIdentity::of_in(proc_root, pid) {
        Ok(now) if now.start_ticks == who.start_ticks => Ok(()),
        Ok(_) => Err(SignalError::Reused { pid }),
        Err(ProcessError::NotFound { .. }) => Err(SignalError::Gone { pid }),
        Err(e) => Err(SignalError::Os {
            pid,
            source: std::io::Error::other(e.to_string()),
        }),
    };
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1; no memory
    // is passed.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if raw < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ESRCH) => Err(SignalError::Gone { pid }),
            Some(libc::ENOSYS) => {
                same()?;
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .map_err(|e| match e {
                    nix::errno::Errno::ESRCH => SignalError::Gone { pid },
                    e => SignalError::Os {
                        pid,
                        source: e.into(),
                    },
                })
            }
            _ => Err(SignalError::Os { pid, source: err }),
        };
    }
    // SAFETY: `raw` is a freshly created pidfd that nothing else owns; OwnedFd closes it once.
    let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    same()?;
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal(fd, sig, info = NULL, flags = 0); a NULL siginfo is allowed and
    // `fd` stays open for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::ESRCH) => SignalError::Gone { pid },
            _ => SignalError::Os { pid, source: err },
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod fake {
    //! A fake procfs tree in a temp dir: `<root>/stat` (btime) and `<root>/<pid>/{stat,cgroup}`.
    use std::path::Path;

    pub const BTIME: u64 = 1_700_000_000;

    pub fn init(root: &Path) {
        std::fs::write(
            root.join("stat"),
            format!("cpu  1 2 3 4\ncpu0 1 2 3 4\nctxt 5\nbtime {BTIME}\nprocesses 6\n"),
        )
        .unwrap();
    }

    /// Writes (or rewrites) a process entry.
    pub fn process(root: &Path, pid: u32, ppid: u32, start_ticks: u64, cgroup: &str) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        // Fields after the comm: state(3) ppid(4) … starttime(22) … exit_code(52).
        let mut fields = vec!["S".to_string(), ppid.to_string()];
        fields.extend((5..22).map(|_| "0".to_string()));
        fields.push(start_ticks.to_string());
        fields.extend((23..=52).map(|_| "0".to_string()));
        std::fs::write(
            dir.join("stat"),
            format!("{pid} (we) ird) {}\n", fields.join(" ")),
        )
        .unwrap();
        std::fs::write(dir.join("cgroup"), cgroup).unwrap();
    }

    pub fn remove(root: &Path, pid: u32) {
        std::fs::remove_dir_all(root.join(pid.to_string())).unwrap();
    }

    /// A cgroup v1 + v2 hybrid file placing a process at `path` in every hierarchy.
    pub fn cgroup_at(path: &str) -> String {
        format!("4:memory:{path}\n1:name=systemd:{path}\n0::{path}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;

    const ID: &str = "4c8a3a7b2f0e9d1c6b5a4e3f2d1c0b9a8f7e6d5c4b3a29180716253443526170";

    /// Whether a `/proc/<pid>/cgroup` text names `id` (parsed by `procfs`; unparsable: no).
    fn cgroup_file_names(text: &str, id: &str) -> bool {
        use ::procfs::FromBufRead;
        ::procfs::ProcessCGroups::from_buf_read(text.as_bytes())
            .is_ok_and(|c| cgroups_name(&c.0, id))
    }

    #[test]
    fn cgroup_layouts() {
        for path in [
            format!("/k8s.io/{ID}"),
            format!("/kubepods/besteffort/pod0f3c/{ID}"),
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f3c.slice/cri-containerd-{ID}.scope"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"),
            format!("/kubepods/burstable/pod1/crio-{ID}"),
            format!("/../../kubepods/pod1/{ID}"),
        ] {
            assert!(cgroup_file_names(&cgroup_at(&path), ID), "{path}");
        }
        for path in [
            format!("/kubepods.slice/crio-conmon-{ID}.scope"),
            format!("/k8s.io/{ID}x"),
            format!("/k8s.io/x{ID}"),
            "/k8s.io/other".to_string(),
            "/".to_string(),
        ] {
            assert!(!cgroup_file_names(&cgroup_at(&path), ID), "{path}");
        }
        assert!(!cgroup_file_names("0::/k8s.io/", ""));
        assert!(!cgroup_file_names("garbage", ID));
        // Names (ctr-created containerd containers) match whole components only.
        assert!(cgroup_file_names("0::/k8s.io/c1\n", "c1"));
        assert!(!cgroup_file_names("0::/k8s.io/c12\n", "c1"));
    }

    #[test]
    fn ppid_with_hostile_comm() {
        // The fake's command name is `we) ird`.
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path());
        process(tmp.path(), 7, 42, 5, "0::/\n");
        assert_eq!(stat_in(tmp.path(), 7).unwrap().ppid, 42);
        assert!(stat_in(tmp.path(), 8).is_err());
    }

    #[test]
    fn finds_the_init_not_the_children_nor_execs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        init(root);
        let cg = cgroup_at(&format!("/k8s.io/{ID}"));
        process(root, 1, 0, 1, "0::/\n");
        process(root, 500, 1, 900, "0::/system.slice/containerd\n"); // shim
        process(root, 501, 500, 1000, &cg); // init
        process(root, 502, 501, 1001, &cg); // child of init
        process(root, 503, 500, 5000, &cg); // `exec`'d process, later
        process(root, 600, 500, 10, &cgroup_at("/k8s.io/other")); // other container
        std::fs::write(root.join("self"), "not a pid dir").unwrap();
        let got = find_container_init(root, ID).unwrap();
        assert_eq!(got.pid, 501);
        assert_eq!(got.start_ticks, 1000);
        assert_eq!(
            got.start_time_ms,
            crate::process::gopsutil_create_time_ms(1000, crate::process::clock_ticks(), BTIME)
        );
        assert!(pid_in_container(root, 502, ID));
        assert!(!pid_in_container(root, 600, ID));
        assert!(!pid_in_container(root, 9999, ID));
        assert!(find_container_init(root, "nope").is_none());
    }

    #[test]
    fn init_whose_pid_is_higher_than_a_child_still_wins() {
        // PIDs wrap: the init can have a larger PID than its children. Start time decides.
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        init(root);
        let cg = cgroup_at(&format!("/system.slice/docker-{ID}.scope"));
        process(root, 30000, 10, 100, &cg);
        process(root, 12, 30000, 200, &cg);
        assert_eq!(find_container_init(root, ID).unwrap().pid, 30000);
    }

    #[test]
    fn missing_proc_root_finds_nothing() {
        assert!(find_container_init(Path::new("/nonexistent/proc"), ID).is_none());
    }

    #[test]
    fn sigkill_refuses_a_reused_pid() {
        // Our own PID with a wrong start time: must refuse (and obviously not kill us).
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        let wrong = ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(matches!(
            sigkill(Path::new("/proc"), &wrong),
            Err(SignalError::Reused { .. })
        ));
    }

    #[test]
    fn sigkill_kills_the_right_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let who = ProcessIdentity::of(child.id()).unwrap();
        sigkill(Path::new("/proc"), &who).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        // Reaped: now gone.
        assert!(matches!(
            sigkill(Path::new("/proc"), &who),
            Err(SignalError::Gone { .. })
        ));
    }
}
