//! Crash-safe, append-only record journal: the storage layer under faultd's
//! rollback journal.
//!
//! # What this module owns
//!
//! Everything under the daemon's state directory that concerns the journal:
//!
//! * `LOCK` — advisory `flock(2)` guaranteeing one daemon per state directory,
//!   holding the owner's pid (as `<pid>\n`) so a second daemon can say who is
//!   in the way. The lock is held for the lifetime of the [`Journal`] value; the
//!   file itself is left in place (a stale pid in it is harmless).
//! * `journal.log` — the append-only record file (format below).
//! * `journal.log.tmp` — transient file used by [`Journal::compact`]; never
//!   authoritative, deleted on open if found.
//! * `journal.log.corrupt-<offset>-<unix-secs>` — forensic copy of one region
//!   replay had to skip (see "Replay and corruption policy"), `<offset>` being
//!   its byte offset in the file as found; written only for corruption, never
//!   for a torn final line. Never read back.
//!
//! It does **not** know what a record means: it is generic over any
//! `T: Serialize + DeserializeOwned`. Deciding which records are live, when to
//! compact and what to do with replayed records is the fault engine's job.
//!
//! # On-disk format of `journal.log` (version 1)
//!
//! A sequence of records, one per line, each exactly:
//!
//! ```text
//! FJ1 <len> <crc> <payload>\n
//! ```
//!
//! * `FJ` — ASCII magic; `1` — format version in canonical decimal (records
//!   with any other version are treated as unreadable).
//! * `<len>` — byte length of `<payload>`, canonical decimal (no sign, no
//!   leading zeros), at most 8 digits and at most [`MAX_RECORD_LEN`].
//! * `<crc>` — CRC-32 (IEEE 802.3 / zlib polynomial, as computed by
//!   `crc32fast`) of the `<payload>` bytes, exactly 8 lowercase hex digits.
//! * `<payload>` — compact JSON encoding of the record (`serde_json::to_vec`),
//!   never containing a raw `\n` byte (enforced on write).
//! * Fields are separated by exactly one ASCII space; the line ends with a
//!   single `\n` located exactly `<len>` bytes after the payload start.
//!
//! Example, for the payload `{"a":1}`: `FJ1 7 561bacaf {"a":1}`. The file
//! is plain text: `cut -d' ' -f4- journal.log | jq .` dumps the payloads.
//! There is no file header; an empty file is an empty journal.
//!
//! # Durability contract
//!
//! [`Journal::append`] / [`Journal::append_many`] build the complete line(s)
//! in memory, issue them with a single `write_all` on an `O_APPEND` descriptor
//! and `fdatasync(2)` before returning `Ok`. Only after `Ok` may the caller
//! acknowledge the operation. If the process or machine dies earlier, the
//! record is either fully present or forms a torn tail that replay drops.
//!
//! [`Journal::append_unsynced`] writes the line without the `fdatasync`;
//! [`Journal::has_unsynced`] says whether such bytes wait for the disk and
//! [`Journal::sync`] flushes them (one `fdatasync`, none when nothing waits);
//! a background syncer that must not hold the journal while the disk works
//! splits it into [`Journal::begin_sync`], [`SyncTicket::run`] and
//! [`Journal::finish_sync`]. Any synced append also makes the earlier unsynced
//! ones durable. [`JournalStats::syncs`] counts every `fdatasync` performed.
//!
//! If a write fails the file is truncated back to the last good record; if
//! `fdatasync` fails the on-disk state of the record is unknown (and, on Linux,
//! a retried fsync may falsely succeed). Either way the journal becomes
//! *poisoned*: every later append or sync fails with
//! [`JournalError::Poisoned`], which names the first failure, until a
//! successful [`Journal::compact`] (which writes and fsyncs a brand new file)
//! or a restart (which replays whatever reached the disk). A record whose append
//! returned an error may therefore still show up on replay; the engine must
//! tolerate that (it never acknowledged it, but e.g. a fault may have been
//! half-applied).
//!
//! [`is_volatile_fs`] says whether a directory lives in memory (tmpfs, ramfs),
//! where no `fdatasync` survives a reboot.
//!
//! [`Journal::compact`] writes `journal.log.tmp`, fsyncs it, renames it over
//! `journal.log` and fsyncs the directory, so after a crash at any point the
//! journal is either the complete old file or the complete new file.
//!
//! # Replay and corruption policy
//!
//! [`Journal::open`] reads the file front to back. A line that is malformed,
//! of unknown version, fails its CRC, or whose CRC-valid payload does not
//! deserialize into `T` starts a *corrupt region*; replay resynchronizes at the
//! next record whose framing and CRC check out (found by its magic, so a
//! flipped newline costs only its own record) and keeps **every** later valid
//! record. Each region is copied to `journal.log.corrupt-<offset>-<secs>`,
//! logged with `tracing::error!` naming its byte range and reason, and returned
//! in the [`Replay`] report ([`Journal::last_replay`]); the file is then
//! rewritten atomically (as [`Journal::compact`] does) with the kept records
//! only, byte for byte, so the same corruption is reported once.
//!
//! An incomplete final line (no newline: an append cut short by a crash,
//! never acknowledged) is the normal case, not corruption: it is truncated
//! away silently (reported only as [`Replay::torn_tail`]) and never copied.
//!
//! Why keep the records after a hole? Every record is a complete snapshot of
//! one item (the engine keeps the latest per fault id), so a hole can only
//! (a) make an item replay an earlier snapshot of itself, which the engine must
//! already tolerate (an unsynced later record may be lost), or (b) lose an item
//! whose every record was in the hole. Dropping everything after the hole, as
//! this journal once did, turned one flipped byte into (b) for every later item.
//! Callers that care about (b) check [`Replay::is_corrupt`] and look for what
//! the lost records described elsewhere (faultd scans the kernel for its marks).
//!
//! # Concurrency
//!
//! All methods take `&mut self` and block on disk I/O (`fdatasync` may take
//! milliseconds); async callers should wrap the journal in a mutex and call it
//! from `spawn_blocking`. All descriptors are opened `O_CLOEXEC` (Rust's
//! default), so spawned helper processes do not inherit the lock.

mod format;
mod replay;
#[cfg(test)]
mod replay_tests;
#[cfg(test)]
mod tests;
mod volatile;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::Serialize;

use format::EncodeError;
pub use format::MAX_RECORD_LEN;
pub use replay::{CorruptRange, Replay};
pub use volatile::{fs_type, is_volatile_fs};

/// Name of the lock file inside the state directory.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the journal file inside the state directory.
pub const JOURNAL_FILE: &str = "journal.log";
/// Name of the compaction temporary file inside the state directory.
pub const TMP_FILE: &str = "journal.log.tmp";

/// Errors returned by [`Journal`].
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An I/O operation on a journal file failed.
    #[error("journal: failed to {op} {}", path.display())]
    Io {
        /// What was being done, e.g. `"fdatasync"`.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another journal (in this or another process) holds the state dir lock.
    #[error("state dir {} is in use by another faultd (pid {})", dir.display(), fmt_pid(*holder_pid))]
    Locked {
        /// The state directory passed to [`Journal::open`].
        dir: PathBuf,
        /// Pid recorded in `LOCK` by the holder, if it could be read.
        holder_pid: Option<u32>,
    },
    /// A record could not be serialized (or serialized to a raw newline).
    #[error("journal: failed to encode record")]
    Encode(#[source] serde_json::Error),
    /// A record's JSON encoding exceeds [`MAX_RECORD_LEN`].
    #[error("journal: record of {len} bytes exceeds the {max}-byte limit")]
    RecordTooLarge {
        /// Encoded payload length.
        len: usize,
        /// [`MAX_RECORD_LEN`].
        max: usize,
    },
    /// An earlier write or `fdatasync` failed, so what the disk holds is
    /// unknown; appends and syncs are refused until a successful
    /// [`Journal::compact`] or a restart.
    #[error("journal {} is poisoned since an earlier failure ({first}); compact or restart to recover", path.display())]
    Poisoned {
        /// Path of `journal.log`.
        path: PathBuf,
        /// The first failure, e.g. `"fdatasync: Input/output error (os error 5)"`.
        first: String,
    },
}

fn fmt_pid(pid: Option<u32>) -> String {
    pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
}

impl From<EncodeError> for JournalError {
    fn from(e: EncodeError) -> Self {
        match e {
            EncodeError::Json(e) => JournalError::Encode(e),
            EncodeError::TooLarge(len) => JournalError::RecordTooLarge {
                len,
                max: MAX_RECORD_LEN,
            },
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Points at which [`Journal::compact_crashing_at`] stops, simulating a crash.
/// Test-only; not part of the supported API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Half of the new contents written to `journal.log.tmp`.
    MidTmpWrite,
    /// `journal.log.tmp` fully written, not yet fsynced.
    AfterTmpWrite,
    /// `journal.log.tmp` fsynced, not yet renamed.
    AfterTmpSync,
    /// Renamed over `journal.log`, directory not yet fsynced.
    AfterRename,
}

impl CrashPoint {
    /// Every crash point, in execution order.
    pub const ALL: [CrashPoint; 4] = [
        CrashPoint::MidTmpWrite,
        CrashPoint::AfterTmpWrite,
        CrashPoint::AfterTmpSync,
        CrashPoint::AfterRename,
    ];
}

/// Counters for metrics export. Obtain with [`Journal::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Records currently in `journal.log` (same as [`Journal::len`]).
    pub records: usize,
    /// Current size of `journal.log` in bytes.
    pub bytes: u64,
    /// Number of successful `fdatasync` calls (by synced appends and [`Journal::sync`]).
    pub syncs: u64,
    /// Bytes written since the last successful `fdatasync`.
    pub unsynced_bytes: u64,
    /// Time spent in the most recent `fdatasync`.
    pub last_sync: Duration,
    /// Total time spent in `fdatasync` calls.
    pub total_sync: Duration,
    /// Wall time [`Journal::open`] spent reading and decoding the file.
    pub replay_time: Duration,
}

/// A background `fdatasync` of the journal, taken by [`Journal::begin_sync`] and run without
/// holding the journal.
#[derive(Debug)]
pub struct SyncTicket {
    file: File,
    upto: u64,
    epoch: u64,
    /// Test hook: fail with this errno instead of syncing.
    fail: Option<Errno>,
}

impl SyncTicket {
    /// `fdatasync`s the journal file (blocking); how long it took.
    pub fn run(&self) -> io::Result<Duration> {
        let started = Instant::now();
        match self.fail {
            Some(errno) => Err(io::Error::from(errno)),
            None => self.file.sync_data().map(|()| started.elapsed()),
        }
    }
}

/// An open, exclusively locked journal of records of type `T`.
///
/// See the [module docs](self) for the format and guarantees.
#[derive(Debug)]
pub struct Journal<T> {
    dir: PathBuf,
    path: PathBuf,
    /// `journal.log`, opened read + `O_APPEND`.
    file: File,
    /// Length of the valid prefix of `file` (= file length unless poisoned).
    end: u64,
    records: usize,
    /// The first failed write or sync, once there was one (see [`JournalError::Poisoned`]).
    poisoned: Option<String>,
    /// Bytes written since the last successful `fdatasync`.
    unsynced: u64,
    /// Bytes written by this value since it was opened (a background sync covers those written
    /// before it started).
    written: u64,
    /// Changes when a compaction replaces the file (a background sync of the old file is then
    /// moot: the new one was synced whole).
    epoch: u64,
    /// Test hook: the next `fdatasync` fails with this errno instead of running.
    fail_next_sync: Option<Errno>,
    /// Test hook: the next write writes half its bytes, then fails with this errno.
    fail_next_write: Option<Errno>,
    replay: Replay,
    stats: JournalStats,
    /// Exclusive flock on `dir/LOCK`; released on drop.
    _lock: Flock<File>,
    _marker: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Journal<T> {
    /// Open (creating if needed) the journal in `dir`, lock it, and replay it.
    ///
    /// Returns the journal and every valid record in append order. A torn
    /// final line is truncated away; corrupt regions are skipped, copied and
    /// reported in [`Journal::last_replay`] (see module docs). Fails
    /// with [`JournalError::Locked`] if another `Journal` — in this or any
    /// other process — has `dir` open.
    pub fn open(dir: &Path) -> Result<(Journal<T>, Vec<T>), JournalError> {
        let dir_existed = dir.is_dir();
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        if !dir_existed {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }

        let lock = lock_dir(dir)?;

        let tmp = dir.join(TMP_FILE);
        match fs::remove_file(&tmp) {
            Ok(()) => tracing::warn!(
                path = %tmp.display(),
                "journal: removed stale compaction file (crash before rename); using {JOURNAL_FILE}"
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove stale", &tmp)(e)),
        }

        let path = dir.join(JOURNAL_FILE);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        if !existed {
            sync_dir(dir)?;
        }

        let started = Instant::now();
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(io_err("read", &path))?;
        let scan = replay::scan::<T>(&buf);
        let replay_time = started.elapsed();
        let mut report = Replay {
            records: scan.records.len(),
            file_len: buf.len() as u64,
            corrupt: Vec::new(),
            torn_tail: scan.torn.is_some(),
            torn_tail_bytes: scan.torn.as_ref().map_or(0, |t| t.len() as u64),
        };
        let mut end = buf.len() as u64;
        if !scan.corrupt.is_empty() {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            for (range, reason) in &scan.corrupt {
                let saved = replay::save_region(dir, range.start, secs, &buf[range.clone()])?;
                tracing::error!(
                    path = %path.display(),
                    offset = range.start,
                    end = range.end,
                    bytes = range.len(),
                    saved_to = %saved.display(),
                    "journal: skipped corrupt bytes {}..{} of {JOURNAL_FILE}: {reason}; kept every valid record after them",
                    range.start,
                    range.end
                );
                report.corrupt.push(CorruptRange {
                    offset: range.start as u64,
                    len: range.len() as u64,
                    lines: buf[range.clone()]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count()
                        .max(1) as u64,
                    reason: reason.clone(),
                    saved_to: Some(saved),
                });
            }
            sync_dir(dir)?;
            // Rewrite the file with the kept records, byte for byte, so later appends do not
            // follow garbage and the corruption is reported once.
            let mut kept = Vec::with_capacity(buf.len());
            for r in &scan.kept {
                kept.extend_from_slice(&buf[r.clone()]);
            }
            file = replace_file(dir, &path, &kept)?;
            end = kept.len() as u64;
        } else if let Some(torn) = &scan.torn {
            tracing::info!(
                path = %path.display(),
                offset = torn.start,
                bytes = torn.len(),
                "journal: dropping the incomplete final line of an append cut short by a crash"
            );
            file.set_len(torn.start as u64)
                .map_err(io_err("truncate", &path))?;
            file.sync_all().map_err(io_err("fsync", &path))?;
            end = torn.start as u64;
        }

        let journal = Journal {
            dir: dir.to_owned(),
            path,
            file,
            end,
            records: scan.records.len(),
            poisoned: None,
            unsynced: 0,
            written: 0,
            epoch: 0,
            fail_next_sync: None,
            fail_next_write: None,
            replay: report,
            stats: JournalStats {
                replay_time,
                ..JournalStats::default()
            },
            _lock: lock,
            _marker: PhantomData,
        };
        Ok((journal, scan.records))
    }

    /// Durably append one record: one write of the full line, then
    /// `fdatasync`. Acknowledge the operation only after this returns `Ok`.
    pub fn append(&mut self, rec: &T) -> Result<(), JournalError> {
        self.append_many(std::slice::from_ref(rec))
    }

    /// Append one record without waiting for the disk: the line is written (so it reaches the
    /// disk with the next sync, or with the page cache if the process dies), but a power loss may
    /// drop it. For records whose loss replays as an earlier, still-safe state: the fault engine
    /// syncs only the intent written before it touches the kernel; a lost "applied" or
    /// "reverted" replays as "intent"/"applied", which reconciliation undoes again.
    pub fn append_unsynced(&mut self, rec: &T) -> Result<(), JournalError> {
        self.write_many(std::slice::from_ref(rec), false)
    }

    /// Durably append a batch with a single write and a single `fdatasync`.
    /// All-or-nothing with respect to the return value; an empty batch is a
    /// no-op that does not sync.
    pub fn append_many(&mut self, recs: &[T]) -> Result<(), JournalError> {
        self.write_many(recs, true)
    }

    fn write_many(&mut self, recs: &[T], sync: bool) -> Result<(), JournalError> {
        self.check_poisoned()?;
        if recs.is_empty() {
            return Ok(());
        }
        let buf = encode_all(recs)?;

        let written = match self.fail_next_write.take() {
            Some(errno) => self
                .file
                .write_all(&buf[..buf.len() / 2])
                .and(Err(io::Error::from(errno))),
            None => self.file.write_all(&buf),
        };
        if let Err(e) = written {
            // Roll back a partial write so later appends don't land behind garbage; whether or
            // not that worked, what reached the disk is unknown until a compaction or restart.
            let rollback = match self.file.set_len(self.end) {
                Ok(()) => String::new(),
                Err(t) => format!(" (and truncating back failed: {t})"),
            };
            self.poison(format!("write: {e}{rollback}"));
            return Err(io_err("write", &self.path)(e));
        }
        self.end += buf.len() as u64;
        self.records += recs.len();
        self.unsynced += buf.len() as u64;
        self.written += buf.len() as u64;
        if sync {
            self.fdatasync()?;
        }
        Ok(())
    }

    /// Whether appends wait for an `fdatasync` ([`Journal::append_unsynced`]). Cheap: no
    /// system call.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced > 0
    }

    /// Makes every earlier append durable: one `fdatasync` if any bytes wait for it, nothing
    /// otherwise. Fails with [`JournalError::Poisoned`] after an earlier failure; a failing
    /// `fdatasync` poisons the journal.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        match self.begin_sync()? {
            Some(ticket) => {
                let done = ticket.run();
                self.finish_sync(ticket, done)
            }
            None => Ok(()),
        }
    }

    /// The first half of [`Journal::sync`] for a caller that must not hold the journal while
    /// the disk works (the daemon's background syncer: appends go on meanwhile): what to
    /// `fdatasync`, or `None` when nothing waits. Run the ticket without the journal, then give
    /// its outcome to [`Journal::finish_sync`].
    pub fn begin_sync(&mut self) -> Result<Option<SyncTicket>, JournalError> {
        self.check_poisoned()?;
        if self.unsynced == 0 {
            return Ok(None);
        }
        let file = self.file.try_clone().map_err(io_err("dup", &self.path))?;
        Ok(Some(SyncTicket {
            file,
            upto: self.written,
            epoch: self.epoch,
            fail: self.fail_next_sync.take(),
        }))
    }

    /// Records a [`SyncTicket`]'s outcome: the bytes written before it are durable, or the
    /// journal is poisoned.
    pub fn finish_sync(
        &mut self,
        ticket: SyncTicket,
        done: io::Result<Duration>,
    ) -> Result<(), JournalError> {
        if ticket.epoch != self.epoch {
            return Ok(()); // a compaction replaced (and synced) the file meanwhile
        }
        let took = match done {
            Ok(took) => took,
            Err(e) => {
                self.poison(format!("fdatasync: {e}"));
                return Err(io_err("fdatasync", &self.path)(e));
            }
        };
        self.unsynced = self.unsynced.min(self.written - ticket.upto);
        self.stats.syncs += 1;
        self.stats.last_sync = took;
        self.stats.total_sync += took;
        Ok(())
    }

    fn fdatasync(&mut self) -> Result<(), JournalError> {
        let started = Instant::now();
        let r = match self.fail_next_sync.take() {
            Some(errno) => Err(io::Error::from(errno)),
            None => self.file.sync_data(),
        };
        if let Err(e) = r {
            self.poison(format!("fdatasync: {e}"));
            return Err(io_err("fdatasync", &self.path)(e));
        }
        let took = started.elapsed();
        self.unsynced = 0;
        self.stats.syncs += 1;
        self.stats.last_sync = took;
        self.stats.total_sync += took;
        Ok(())
    }

    /// Atomically replace the journal's contents with exactly `live`.
    ///
    /// Writes `journal.log.tmp`, fsyncs it, renames it over `journal.log`
    /// and fsyncs the directory. A crash at any point leaves either the old
    /// or the new journal, never a mix. On failure before the rename the old
    /// journal stays in use and intact. Success clears a poisoned state.
    pub fn compact(&mut self, live: &[T]) -> Result<(), JournalError> {
        self.compact_impl(live, None)
    }

    /// Test hook: run [`compact`](Self::compact) but stop dead at `at`, as if
    /// the process had been killed there, then drop the journal (releasing
    /// the lock). Not part of the supported API.
    #[doc(hidden)]
    pub fn compact_crashing_at(mut self, live: &[T], at: CrashPoint) -> Result<(), JournalError> {
        self.compact_impl(live, Some(at))
    }

    fn compact_impl(&mut self, live: &[T], crash: Option<CrashPoint>) -> Result<(), JournalError> {
        let buf = encode_all(live)?;
        let tmp = self.dir.join(TMP_FILE);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove stale", &tmp)(e)),
        }
        let mut new = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;

        let prepared = (|| {
            if crash == Some(CrashPoint::MidTmpWrite) {
                new.write_all(&buf[..buf.len() / 2])
                    .map_err(io_err("write", &tmp))?;
                return Ok(true);
            }
            new.write_all(&buf).map_err(io_err("write", &tmp))?;
            if crash == Some(CrashPoint::AfterTmpWrite) {
                return Ok(true);
            }
            new.sync_all().map_err(io_err("fsync", &tmp))?;
            if crash == Some(CrashPoint::AfterTmpSync) {
                return Ok(true);
            }
            fs::rename(&tmp, &self.path).map_err(io_err("rename over journal", &tmp))?;
            Ok(false)
        })();
        match prepared {
            Ok(true) => return Ok(()), // simulated crash: leave everything as is
            Ok(false) => {}
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        if crash == Some(CrashPoint::AfterRename) {
            return Ok(());
        }

        // The renamed file is now journal.log; keep appending through it.
        self.file = new;
        self.end = buf.len() as u64;
        self.records = live.len();
        self.unsynced = 0;
        self.epoch += 1;
        // Until the rename is durable, appends to the new file could vanish
        // with it on a crash, so a failed directory sync poisons.
        if let Err(e) = sync_dir(&self.dir) {
            self.poisoned = Some(format!("{e}"));
            return Err(e);
        }
        self.poisoned = None;
        Ok(())
    }
}

impl<T> Journal<T> {
    /// Number of records currently in `journal.log`.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether `journal.log` holds no records.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Path of `journal.log`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state directory this journal locks.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Time the most recent successful append spent in `fdatasync`
    /// (zero before the first append). Feed this to the latency histogram.
    pub fn last_sync(&self) -> Duration {
        self.stats.last_sync
    }

    /// Snapshot of counters for metrics export.
    pub fn stats(&self) -> JournalStats {
        JournalStats {
            records: self.records,
            bytes: self.end,
            unsynced_bytes: self.unsynced,
            ..self.stats.clone()
        }
    }

    /// What replay found when this journal was opened (corrupt regions skipped, torn tail).
    pub fn last_replay(&self) -> &Replay {
        &self.replay
    }

    /// The first failed write or sync, if the journal is poisoned.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Test hook: the next `fdatasync` (by a synced append or [`Journal::sync`]) fails with
    /// `errno` instead of running, as a failing disk would make it. Not part of the supported
    /// API.
    #[doc(hidden)]
    pub fn inject_sync_failure(&mut self, errno: Errno) {
        self.fail_next_sync = Some(errno);
    }

    /// Test hook: the next append writes half of its bytes and then fails with `errno`, as a
    /// full disk would make it. Not part of the supported API.
    #[doc(hidden)]
    pub fn inject_write_failure(&mut self, errno: Errno) {
        self.fail_next_write = Some(errno);
    }

    fn check_poisoned(&self) -> Result<(), JournalError> {
        match &self.poisoned {
            Some(first) => Err(JournalError::Poisoned {
                path: self.path.clone(),
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records the first failure; later ones do not overwrite it.
    fn poison(&mut self, what: String) {
        if self.poisoned.is_none() {
            tracing::error!(path = %self.path.display(), failure = %what, "journal poisoned: appends are refused until a compaction or restart");
            self.poisoned = Some(what);
        }
    }
}

/// Reads the valid records of a journal file without locking or repairing it: for looking at
/// the journal another live process holds (doctor: faults of other daemons on the node).
/// Unreadable records and a torn final line are skipped silently.
pub fn peek<T: DeserializeOwned>(path: &Path) -> io::Result<Vec<T>> {
    Ok(replay::scan::<T>(&fs::read(path)?).records)
}

fn encode_all<T: Serialize>(recs: &[T]) -> Result<Vec<u8>, JournalError> {
    let mut buf = Vec::with_capacity(recs.len() * 256);
    for r in recs {
        format::encode_into(&mut buf, r)?;
    }
    Ok(buf)
}

/// Take the exclusive non-blocking flock on `dir/LOCK` and record our pid.
fn lock_dir(dir: &Path) -> Result<Flock<File>, JournalError> {
    let path = dir.join(LOCK_FILE);
    // No truncation before the lock is ours: the holder's pid lives there.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open", &path))?;
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut s = String::new();
            let holder_pid = file
                .read_to_string(&mut s)
                .ok()
                .and_then(|_| s.trim().parse().ok());
            return Err(JournalError::Locked {
                dir: dir.to_owned(),
                holder_pid,
            });
        }
        Err((_, errno)) => return Err(io_err("flock", &path)(errno.into())),
    };
    // Overwrite in place then trim, so a concurrent reader never sees an
    // empty file. Not synced: the pid is only diagnostic.
    let pid = format!("{}\n", std::process::id());
    lock.write_all_at(pid.as_bytes(), 0)
        .and_then(|()| lock.set_len(pid.len() as u64))
        .map_err(io_err("write pid to", &path))?;
    Ok(lock)
}

/// Atomically replaces `path` with `bytes` (tmp file, fsync, rename, directory fsync) and
/// returns the new file opened for appending.
fn replace_file(dir: &Path, path: &Path, bytes: &[u8]) -> Result<File, JournalError> {
    let tmp = dir.join(TMP_FILE);
    let mut new = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .truncate(false)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    new.set_len(0).map_err(io_err("truncate", &tmp))?;
    new.write_all(bytes).map_err(io_err("write", &tmp))?;
    new.sync_all().map_err(io_err("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename over journal", &tmp))?;
    sync_dir(dir)?;
    Ok(new)
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}
