//! The per-process work of TimeChaos, on the calling (blocking) thread: ptrace ties a tracee to
//! the thread that seized it, so one call seizes, patches and detaches on one thread.
//!
//! Apply: the target's vDSO must be byte-equal to faultd's own outside the patch sites (one
//! 64-bit image per boot; a 32-bit or x32 process maps another), and each site must hold the
//! pristine bytes (read from faultd's own vDSO) or faultd's jump. Then, with every thread
//! stopped and none inside a patch window: reuse the page the jumps point at (write its data
//! block only) or map a new one, write the jumps over the pristine sites, re-read to verify.
//!
//! Rollback: wherever a site holds faultd's jump to a page whose token is the fault's, write
//! the pristine bytes back (with every thread stopped, none inside the window) and verify.
//! The page stays mapped: a thread may still be running in it.
//!
//! Reads that decide whether a process needs stopping at all go through `/proc/<pid>/mem`
//! without stopping it; only writes happen with the process stopped, and the stop is timed.
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::TimeError;
use crate::process::ProcessIdentity;
use crate::ptrace::{PtraceError, Traced};
use crate::vdso::elf::{read_vdso, vdso_range};
use crate::vdso::fake::{DATA_LEN, DATA_OFFSET, PAGE_SIZE};
use crate::vdso::{
    entry_state, jump_patch, EntryState, FakeFn, FakePage, PageData, VdsoError, VdsoImage,
    PATCH_LEN,
};

/// Attempts to find every thread outside the patch windows before giving up.
const WINDOW_ATTEMPTS: u32 = 20;

/// One vDSO entry point faultd may patch: where it is and what it holds in faultd's own vDSO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub func: FakeFn,
    /// Offset from the start of the vDSO.
    pub offset: u64,
    /// The first [`PATCH_LEN`] bytes of the entry in faultd's own vDSO.
    #[serde(with = "crate::hex")]
    pub pristine: Vec<u8>,
}

/// faultd's own vDSO: the pristine image every 64-bit process of this boot maps.
pub struct OwnVdso {
    pub bytes: Vec<u8>,
    /// `bytes` parsed once.
    image: VdsoImage,
    /// Every entry point faultd has a fake for (the symbols present and long enough).
    pub sites: Vec<Site>,
}

impl OwnVdso {
    /// Read once per faultd process.
    pub fn get() -> Result<&'static OwnVdso, TimeError> {
        static OWN: OnceLock<Result<OwnVdso, String>> = OnceLock::new();
        OWN.get_or_init(|| OwnVdso::read().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| TimeError::OwnVdso(e.clone()))
    }

    fn read() -> Result<OwnVdso, VdsoError> {
        let (_, bytes) = read_vdso(Path::new("/proc"), "self")?;
        let image = VdsoImage::parse(&bytes)?;
        let sites = FakeFn::ALL
            .into_iter()
            .filter_map(|func| {
                let sym = image.symbol(func.vdso_symbol())?;
                let start = usize::try_from(sym.offset).ok()?;
                (sym.size >= PATCH_LEN as u64 && start + PATCH_LEN <= bytes.len()).then(|| Site {
                    func,
                    offset: sym.offset,
                    pristine: bytes[start..start + PATCH_LEN].to_vec(),
                })
            })
            .collect();
        Ok(OwnVdso {
            bytes,
            image,
            sites,
        })
    }

    /// The sites a fault with `mask` must patch; refuses a kernel whose vDSO lacks one (or has
    /// it shorter than the patch).
    pub fn needed(&self, mask: u64) -> Result<Vec<Site>, TimeError> {
        crate::vdso::patch_sites(&self.image, mask).map_err(TimeError::Vdso)?;
        Ok(self
            .sites
            .iter()
            .filter(|s| s.func.needed_for(mask))
            .cloned()
            .collect())
    }
}

/// One process stopped by faultd: for reports and the stop-time metric.
#[derive(Debug, Clone, Copy)]
pub struct Stop {
    pub pid: u32,
    pub threads: usize,
    pub stopped: Duration,
}

/// What a process's patch sites hold now.
struct Seen {
    base: u64,
    states: Vec<EntryState>,
}

fn mem(pid: u32) -> Result<File, TimeError> {
    File::open(format!("/proc/{pid}/mem")).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => TimeError::Gone(pid),
        _ => TimeError::Io(format!("/proc/{pid}/mem"), e.to_string()),
    })
}

fn vdso_gone(pid: u32, e: VdsoError) -> TimeError {
    match e {
        // A zombie or an exiting process has no mappings left.
        VdsoError::NoVdso => TimeError::Gone(pid),
        VdsoError::Io(_, ref io) if io.kind() == std::io::ErrorKind::NotFound => {
            TimeError::Gone(pid)
        }
        e => TimeError::Vdso(e),
    }
}

/// Reads the sites of `pid` without stopping it.
fn look(pid: u32, sites: &[Site]) -> Result<Seen, TimeError> {
    let (base, _) =
        vdso_range(Path::new("/proc"), &pid.to_string()).map_err(|e| vdso_gone(pid, e))?;
    let f = mem(pid)?;
    let mut states = Vec::with_capacity(sites.len());
    for s in sites {
        let mut cur = [0u8; PATCH_LEN];
        f.read_exact_at(&mut cur, base + s.offset)
            .map_err(|e| io_or_gone(pid, "reading its vDSO", e))?;
        states.push(entry_state(&cur, &s.pristine));
    }
    Ok(Seen { base, states })
}

fn io_or_gone(pid: u32, what: &str, e: std::io::Error) -> TimeError {
    // ESRCH / EIO on /proc/<pid>/mem: the process exited meanwhile.
    if matches!(e.raw_os_error(), Some(libc::ESRCH) | Some(libc::EIO)) || !alive(pid) {
        TimeError::Gone(pid)
    } else {
        TimeError::Io(format!("process {pid}: {what}"), e.to_string())
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}/maps")).exists()
}

/// The page faultd's jumps in `seen` point at, if any; a site pointing elsewhere than a
/// faultd page entry (or two pages) is foreign.
fn our_page(pid: u32, sites: &[Site], seen: &Seen) -> Result<Option<u64>, TimeError> {
    let mut page = None;
    for (s, st) in sites.iter().zip(&seen.states) {
        match st {
            EntryState::Pristine => {}
            EntryState::Foreign => {
                return Err(TimeError::Foreign {
                    pid,
                    detail: format!(
                        "{} holds neither the kernel's bytes nor faultd's jump (another tool patched it?)",
                        s.func.vdso_symbol()
                    ),
                })
            }
            EntryState::Patched(to) => {
                let p = to.wrapping_sub(s.func.entry() as u64);
                if p % PAGE_SIZE as u64 != 0 || page.is_some_and(|q| q != p) {
                    return Err(TimeError::Foreign {
                        pid,
                        detail: format!("{} jumps to {to:#x}, not into one faultd page", s.func.vdso_symbol()),
                    });
                }
                page = Some(p);
            }
        }
    }
    Ok(page)
}

/// Reads the data block of the page at `page`, if the page holds faultd's code.
fn page_data(f: &File, pid: u32, page: u64) -> Result<Option<PageData>, TimeError> {
    let mut code = vec![0u8; FakePage::CODE_LEN];
    f.read_exact_at(&mut code, page)
        .map_err(|e| io_or_gone(pid, "reading faultd's page", e))?;
    if !FakePage::is_ours(&code) {
        return Ok(None);
    }
    let block: [u8; DATA_LEN] = code[DATA_OFFSET..DATA_OFFSET + DATA_LEN]
        .try_into()
        .unwrap_or([0; DATA_LEN]);
    Ok(PageData::parse(&block))
}

fn traced(pid: u32) -> impl Fn(PtraceError) -> TimeError {
    move |e| match e {
        PtraceError::Gone(_) => TimeError::Gone(pid),
        e => TimeError::Ptrace { pid, source: e },
    }
}

/// Whether a PC is strictly inside one of the `PATCH_LEN`-byte windows starting at `windows`.
pub fn inside_a_window(pcs: &[u64], windows: &[u64]) -> bool {
    pcs.iter().any(|pc| {
        windows
            .iter()
            .any(|w| *pc > *w && *pc < *w + PATCH_LEN as u64)
    })
}

/// Seizes `pid` with no thread strictly inside any of `windows` (a thread at a window's first
/// byte runs the new bytes whole, which is safe). Retries with short pauses, then gives up.
fn seize_clear(pid: u32, windows: &[u64]) -> Result<Traced, TimeError> {
    for attempt in 0..WINDOW_ATTEMPTS {
        let t = Traced::seize(Path::new("/proc"), pid as i32).map_err(traced(pid))?;
        let pcs = t.pcs().map_err(traced(pid))?;
        if !inside_a_window(&pcs, windows) {
            return Ok(t);
        }
        let stopped = t.detach();
        crate::metrics::ptrace_stop_seconds().observe(stopped.as_secs_f64());
        std::thread::sleep(Duration::from_micros(200 << attempt.min(5)));
    }
    Err(TimeError::Busy(pid))
}

/// Checks (without stopping it) that `who` can be patched: same kernel image as faultd's own,
/// every site pristine or faultd's. `Gone` when it exited.
pub fn check(who: &ProcessIdentity, own: &OwnVdso) -> Result<(), TimeError> {
    if !who.is_alive() {
        return Err(TimeError::Gone(who.pid));
    }
    let (_, theirs) =
        read_vdso(Path::new("/proc"), &who.pid.to_string()).map_err(|e| vdso_gone(who.pid, e))?;
    if theirs.len() != own.bytes.len() || !same_outside_sites(&theirs, &own.bytes, &own.sites) {
        return Err(TimeError::Mismatch(who.pid));
    }
    let seen = look(who.pid, &own.sites)?;
    our_page(who.pid, &own.sites, &seen).map(|_| ())
}

fn same_outside_sites(a: &[u8], b: &[u8], sites: &[Site]) -> bool {
    let mut masked_a = a.to_vec();
    let mut masked_b = b.to_vec();
    for s in sites {
        let r = s.offset as usize..s.offset as usize + PATCH_LEN;
        if r.end <= masked_a.len() {
            masked_a[r.clone()].fill(0);
            masked_b[r].fill(0);
        }
    }
    masked_a == masked_b
}

/// Makes `who` run faultd's fake clock with `data`: the jumps over every site of `needed` and
/// the data block of its page. `Err(Gone)` when the process exited (nothing to do).
pub fn apply_one(
    who: &ProcessIdentity,
    own: &OwnVdso,
    needed: &[Site],
    data: &PageData,
) -> Result<Stop, TimeError> {
    check(who, own)?;
    let pid = who.pid;
    let seen = look(pid, &own.sites)?;
    let windows: Vec<u64> = own.sites.iter().map(|s| seen.base + s.offset).collect();
    let mut t = seize_clear(pid, &windows)?;
    let result = (|| {
        // Under the stop: the sites again (nothing else writes them, but be exact).
        let now = reread(&t, pid, own, seen.base)?;
        let page = match our_page(pid, &own.sites, &now)? {
            Some(p) => {
                let f = mem(pid)?;
                if page_data(&f, pid, p)?.is_none() {
                    return Err(TimeError::Foreign {
                        pid,
                        detail: format!("the page at {p:#x} the vDSO jumps to is not faultd's"),
                    });
                }
                t.write(p + DATA_OFFSET as u64, &data.bytes())
                    .map_err(traced(pid))?;
                p
            }
            None => {
                let p = t
                    .mmap_page(PAGE_SIZE as u64, libc::PROT_READ | libc::PROT_EXEC)
                    .map_err(traced(pid))?;
                t.write(p, FakePage::with(data).as_bytes())
                    .map_err(traced(pid))?;
                p
            }
        };
        for s in needed {
            let i = own.sites.iter().position(|o| o.func == s.func);
            if i.is_some_and(|i| now.states[i] == EntryState::Pristine) {
                t.write(
                    seen.base + s.offset,
                    &jump_patch(page + s.func.entry() as u64),
                )
                .map_err(traced(pid))?;
            }
        }
        // Verify by re-reading.
        let after = reread(&t, pid, own, seen.base)?;
        for s in needed {
            let i = own.sites.iter().position(|o| o.func == s.func).unwrap_or(0);
            if after.states[i] != EntryState::Patched(page + s.func.entry() as u64) {
                return Err(TimeError::Verify {
                    pid,
                    detail: format!(
                        "{} does not hold faultd's jump after writing it",
                        s.func.vdso_symbol()
                    ),
                });
            }
        }
        let mut block = [0u8; DATA_LEN];
        t.read(page + DATA_OFFSET as u64, &mut block)
            .map_err(traced(pid))?;
        if block != data.bytes() {
            return Err(TimeError::Verify {
                pid,
                detail: "the page's data block does not read back".into(),
            });
        }
        Ok(())
    })();
    let threads = t.threads();
    let stopped = t.detach();
    crate::metrics::ptrace_stop_seconds().observe(stopped.as_secs_f64());
    result.map(|()| Stop {
        pid,
        threads,
        stopped,
    })
}

fn reread(t: &Traced, pid: u32, own: &OwnVdso, base: u64) -> Result<Seen, TimeError> {
    let mut states = Vec::with_capacity(own.sites.len());
    for s in &own.sites {
        let mut cur = [0u8; PATCH_LEN];
        t.read(base + s.offset, &mut cur).map_err(traced(pid))?;
        states.push(entry_state(&cur, &s.pristine));
    }
    Ok(Seen { base, states })
}

/// Whether `pid` carries faultd's jump to a page with `token` (read without stopping it).
/// A process that is gone carries nothing.
pub fn carries(pid: u32, sites: &[Site], token: u64) -> Result<bool, TimeError> {
    match owned_page(pid, sites, token) {
        Ok(p) => Ok(p.is_some()),
        Err(TimeError::Gone(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The sites of `pid` that jump to a faultd page with `token`, and the vDSO base.
fn owned_page(pid: u32, sites: &[Site], token: u64) -> Result<Option<(Seen, u64)>, TimeError> {
    let seen = match look(pid, sites) {
        Ok(s) => s,
        Err(TimeError::Vdso(VdsoError::BadElf(_))) => return Ok(None),
        Err(e) => return Err(e),
    };
    // Foreign bytes (a 32-bit process's image) are nothing of ours: leave them.
    let Ok(Some(page)) = our_page(pid, sites, &seen) else {
        return Ok(None);
    };
    let f = mem(pid)?;
    match page_data(&f, pid, page)? {
        Some(d) if d.token == token => Ok(Some((seen, page))),
        _ => Ok(None),
    }
}

/// Writes the pristine bytes back over every site of `pid` that holds faultd's jump to the
/// page of the fault with `token`. `Ok(None)`: nothing of this fault there (never stopped).
pub fn revert_one(pid: u32, sites: &[Site], token: u64) -> Result<Option<Stop>, TimeError> {
    let (seen, page) = match owned_page(pid, sites, token) {
        Ok(Some(x)) => x,
        Ok(None) | Err(TimeError::Gone(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let windows: Vec<u64> = sites.iter().map(|s| seen.base + s.offset).collect();
    let t = match seize_clear(pid, &windows) {
        Ok(t) => t,
        Err(TimeError::Gone(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let result = (|| {
        for s in sites {
            let at = seen.base + s.offset;
            let mut cur = [0u8; PATCH_LEN];
            t.read(at, &mut cur).map_err(traced(pid))?;
            if entry_state(&cur, &s.pristine) == EntryState::Patched(page + s.func.entry() as u64) {
                t.write(at, &s.pristine).map_err(traced(pid))?;
                t.read(at, &mut cur).map_err(traced(pid))?;
                if cur[..] != s.pristine[..] {
                    return Err(TimeError::Verify {
                        pid,
                        detail: format!("{} does not read back pristine", s.func.vdso_symbol()),
                    });
                }
            }
        }
        Ok(())
    })();
    let threads = t.threads();
    let stopped = t.detach();
    crate::metrics::ptrace_stop_seconds().observe(stopped.as_secs_f64());
    match result {
        Ok(()) => Ok(Some(Stop {
            pid,
            threads,
            stopped,
        })),
        Err(TimeError::Gone(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every live process whose vDSO jumps to a faultd page, with that page's token (doctor:
/// tokens no active fault owns are residue). Reads only.
pub fn scan_patched(sites: &[Site]) -> Vec<(u32, u64)> {
    let me = std::process::id();
    crate::process::pids()
        .into_iter()
        .filter(|p| *p != me)
        .filter_map(|pid| {
            let seen = look(pid, sites).ok()?;
            let page = our_page(pid, sites, &seen).ok()??;
            let d = page_data(&mem(pid).ok()?, pid, page).ok()??;
            Some((pid, d.token))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pc_strictly_inside_a_window_blocks_the_patch() {
        let w = [0x1000, 0x2000];
        // At the first byte the thread runs the new bytes whole; right after, it is past them.
        assert!(!inside_a_window(&[0x1000, 0x100c, 0x0fff, 0x2000], &w));
        assert!(inside_a_window(&[0x5000, 0x1001], &w));
        assert!(inside_a_window(&[0x200b], &w));
        assert!(!inside_a_window(&[], &w));
    }

    #[test]
    fn image_comparison_ignores_the_patch_sites_only() {
        let sites = [Site {
            func: FakeFn::Time,
            offset: 4,
            pristine: vec![0; PATCH_LEN],
        }];
        let a = vec![1u8; 32];
        let mut b = a.clone();
        b[4..16].fill(0xcc);
        assert!(same_outside_sites(&a, &b, &sites));
        b[16] = 0;
        assert!(!same_outside_sites(&a, &b, &sites));
    }
}
