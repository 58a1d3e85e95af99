//! The x86_64 remote syscall and what is built on it.
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use super::{ptrace_err, PtraceError, Traced};

/// `syscall`.
const SYSCALL_INSN: [u8; 2] = [0x0f, 0x05];
/// Single steps tried before giving up (each signal that interrupts a step costs one).
const MAX_STEPS: usize = 8;

impl Traced {
    /// The PC of every stopped thread (to check none is inside a window about to be patched).
    pub fn pcs(&self) -> Result<Vec<u64>, PtraceError> {
        self.threads
            .iter()
            .map(|t| {
                Ok(ptrace::getregs(t.tid)
                    .map_err(ptrace_err("PTRACE_GETREGS", t.tid))?
                    .rip)
            })
            .collect()
    }

    /// Runs syscall `nr` with `args` in the main thread and returns its raw result (a
    /// negative errno on failure). The thread's registers and the bytes at its PC are
    /// restored whatever happens after they were changed.
    pub fn syscall(&mut self, nr: i64, args: [u64; 6]) -> Result<i64, PtraceError> {
        let tid = self.pid;
        let saved = ptrace::getregs(tid).map_err(ptrace_err("PTRACE_GETREGS", tid))?;
        let pc = saved.rip;
        let mut text = [0u8; 2];
        self.read(pc, &mut text)?;
        self.write(pc, &SYSCALL_INSN)?;
        let result = self.step_syscall(nr, args, saved);
        let restored_text = self.write(pc, &text);
        let restored_regs = ptrace::setregs(tid, saved).map_err(ptrace_err("PTRACE_SETREGS", tid));
        let rax = result?;
        restored_text?;
        restored_regs?;
        Ok(rax)
    }

    fn step_syscall(
        &mut self,
        nr: i64,
        args: [u64; 6],
        saved: libc::user_regs_struct,
    ) -> Result<i64, PtraceError> {
        let tid = self.pid;
        let mut regs = saved;
        regs.rax = nr as u64;
        regs.orig_rax = u64::MAX;
        (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9) =
            (args[0], args[1], args[2], args[3], args[4], args[5]);
        ptrace::setregs(tid, regs).map_err(ptrace_err("PTRACE_SETREGS", tid))?;
        for _ in 0..MAX_STEPS {
            ptrace::step(tid, None).map_err(ptrace_err("PTRACE_SINGLESTEP", tid))?;
            match waitpid(tid, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Stopped(_, Signal::SIGTRAP)) => {}
                Ok(WaitStatus::Stopped(_, sig)) => {
                    // A signal arrived before the step: hold it for detach, step again.
                    if let Some(t) = self.threads.iter_mut().find(|t| t.tid == tid) {
                        t.pending = Some(sig);
                    }
                }
                Ok(WaitStatus::PtraceEvent(..)) => {}
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => {
                    return Err(PtraceError::Gone(tid.as_raw()));
                }
                Ok(status) => {
                    return Err(PtraceError::Unexpected {
                        tid: tid.as_raw(),
                        status: format!("{status:?}"),
                    });
                }
                Err(errno) => return Err(ptrace_err("waitpid", tid)(errno)),
            }
            let now = ptrace::getregs(tid).map_err(ptrace_err("PTRACE_GETREGS", tid))?;
            if now.rip == saved.rip + SYSCALL_INSN.len() as u64 {
                return Ok(now.rax as i64);
            }
            if now.rip != saved.rip {
                return Err(PtraceError::Unexpected {
                    tid: tid.as_raw(),
                    status: format!("PC moved to {:#x} instead of past the syscall", now.rip),
                });
            }
        }
        Err(PtraceError::Unexpected {
            tid: tid.as_raw(),
            status: "the syscall step never completed".into(),
        })
    }

    /// Maps one anonymous private page with `prot` in the process; its address.
    pub fn mmap_page(&mut self, len: u64, prot: i32) -> Result<u64, PtraceError> {
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let r = self.syscall(libc::SYS_mmap, [0, len, prot as u64, flags, u64::MAX, 0])?;
        if (-4095..0).contains(&r) {
            return Err(PtraceError::Ptrace {
                what: "remote mmap",
                tid: self.pid.as_raw(),
                errno: Errno::from_raw(-r as i32),
            });
        }
        Ok(r as u64)
    }

    /// Unmaps `len` bytes at `addr` in the process.
    pub fn munmap(&mut self, addr: u64, len: u64) -> Result<(), PtraceError> {
        let r = self.syscall(libc::SYS_munmap, [addr, len, 0, 0, 0, 0])?;
        if r != 0 {
            return Err(PtraceError::Ptrace {
                what: "remote munmap",
                tid: self.pid.as_raw(),
                errno: Errno::from_raw(-r as i32),
            });
        }
        Ok(())
    }
}
