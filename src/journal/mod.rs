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
//! * `journal.log.corrupt-<offset>-<unix-secs>` — forensic copy of complete
//!   lines that replay had to discard (see "Corruption policy"); written only
//!   when something other than a torn final line is dropped. Never read back.
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
//! If the write fails the file is truncated back to the last good record. If
//! `fdatasync` fails the on-disk state of the record is unknown (and, on Linux,
//! a retried fsync may falsely succeed), so the journal becomes *poisoned*:
//! every later append fails with [`JournalError::Poisoned`] until a successful
//! [`Journal::compact`] (which writes and fsyncs a brand new file) or a restart
//! (which replays whatever reached the disk). A record whose append returned an
//! error may therefore still show up on replay; the engine must tolerate that
//! (it never acknowledged it, but e.g. a fault may have been half-applied).
//!
//! [`Journal::compact`] writes `journal.log.tmp`, fsyncs it, renames it over
//! `journal.log` and fsyncs the directory, so after a crash at any point the
//! journal is either the complete old file or the complete new file.
//!
//! # Replay and corruption policy
//!
//! [`Journal::open`] reads the file front to back and stops at the first line
//! that is incomplete, malformed, of unknown version, fails its CRC, or whose
//! payload does not deserialize into `T`. That line **and everything after
//! it** is dropped: a `tracing::warn!` names the byte offset and reason, and
//! the file is truncated back to the end of the last good record (and synced)
//! before any new append.
//!
//! Why drop the records after a bad one rather than skip the hole? The
//! journal is an ordered log: later records may update or cancel earlier ones
//! (inject → recover). Replaying with a hole could produce a state that never
//! existed (say, a recovery whose injection was lost, or vice versa), whereas
//! a prefix is always a state the daemon really was in. And because appends
//! are synchronous and a torn tail is truncated on open, in normal operation
//! only the *last* line can ever be bad; anything else means media corruption
//! or a foreign writer, for which no interpretation of the rest is
//! trustworthy. Since that case (and a CRC-valid payload that no longer
//! decodes, e.g. after an incompatible schema change of `T`) loses
//! acknowledged records, the dropped bytes are first copied to a
//! `journal.log.corrupt-*` file for manual recovery. A merely torn final line
//! (no newline) is never copied: it was never acknowledged.
//!
//! # Concurrency
//!
//! All methods take `&mut self` and block on disk I/O (`fdatasync` may take
//! milliseconds); async callers should wrap the journal in a mutex and call it
//! from `spawn_blocking`. All descriptors are opened `O_CLOEXEC` (Rust's
//! default), so spawned helper processes do not inherit the lock.

mod format;
#[cfg(test)]
mod tests;

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

pub use format::MAX_RECORD_LEN;
use format::{BadRecord, EncodeError};

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
    /// An earlier `fdatasync` (or a failed-write rollback) failed, so the
    /// file's contents are unknown; appends are refused until a successful
    /// [`Journal::compact`] or a restart.
    #[error("journal {} is poisoned by an earlier failed sync; compact or restart to recover", path.display())]
    Poisoned {
        /// Path of `journal.log`.
        path: PathBuf,
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

/// What replay dropped when the journal was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTail {
    /// Byte offset of the first bad record (= new file length).
    pub offset: u64,
    /// Number of bytes removed from the end of the file.
    pub bytes: u64,
    /// Human-readable reason the record at `offset` was rejected.
    pub reason: String,
    /// Where the dropped bytes were preserved, if they held complete lines.
    pub saved_to: Option<PathBuf>,
}

/// Counters for metrics export. Obtain with [`Journal::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Records currently in `journal.log` (same as [`Journal::len`]).
    pub records: usize,
    /// Current size of `journal.log` in bytes.
    pub bytes: u64,
    /// Number of successful `fdatasync` calls made by appends.
    pub syncs: u64,
    /// Time spent in the most recent append's `fdatasync`.
    pub last_sync: Duration,
    /// Total time spent in append `fdatasync` calls.
    pub total_sync: Duration,
    /// Wall time [`Journal::open`] spent reading and decoding the file.
    pub replay_time: Duration,
    /// What replay dropped, if anything.
    pub dropped_on_open: Option<DroppedTail>,
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
    poisoned: bool,
    stats: JournalStats,
    /// Exclusive flock on `dir/LOCK`; released on drop.
    _lock: Flock<File>,
    _marker: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Journal<T> {
    /// Open (creating if needed) the journal in `dir`, lock it, and replay it.
    ///
    /// Returns the journal and every valid record in append order. A torn or
    /// corrupt tail is dropped and truncated away (see module docs). Fails
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
        let (records, good_end, bad) = replay::<T>(&buf);
        let replay_time = started.elapsed();

        let mut dropped_on_open = None;
        if let Some(reason) = bad {
            let tail = &buf[good_end..];
            // Preserve complete lines (acknowledged data) before destroying
            // them; a lone newline-free torn line was never acknowledged.
            let saved_to = if tail.contains(&b'\n') {
                Some(save_dropped(dir, good_end as u64, tail)?)
            } else {
                None
            };
            tracing::warn!(
                path = %path.display(),
                offset = good_end,
                dropped_bytes = tail.len(),
                kept_records = records.len(),
                saved_to = ?saved_to,
                "journal: dropping bad record at byte offset {good_end} and everything after it: {reason}"
            );
            file.set_len(good_end as u64)
                .map_err(io_err("truncate", &path))?;
            file.sync_all().map_err(io_err("fsync", &path))?;
            dropped_on_open = Some(DroppedTail {
                offset: good_end as u64,
                bytes: tail.len() as u64,
                reason: reason.to_string(),
                saved_to,
            });
        }

        let journal = Journal {
            dir: dir.to_owned(),
            path,
            file,
            end: good_end as u64,
            records: records.len(),
            poisoned: false,
            stats: JournalStats {
                replay_time,
                dropped_on_open,
                ..JournalStats::default()
            },
            _lock: lock,
            _marker: PhantomData,
        };
        Ok((journal, records))
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
        if self.poisoned {
            return Err(JournalError::Poisoned {
                path: self.path.clone(),
            });
        }
        if recs.is_empty() {
            return Ok(());
        }
        let buf = encode_all(recs)?;

        if let Err(e) = self.file.write_all(&buf) {
            // Roll back a partial write so later appends don't land behind
            // garbage that replay would stop at.
            if self.file.set_len(self.end).is_err() {
                self.poisoned = true;
            }
            return Err(io_err("write", &self.path)(e));
        }
        self.end += buf.len() as u64;
        self.records += recs.len();
        if !sync {
            return Ok(());
        }
        let started = Instant::now();
        if let Err(e) = self.file.sync_data() {
            self.poisoned = true;
            return Err(io_err("fdatasync", &self.path)(e));
        }
        let took = started.elapsed();
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
        // Until the rename is durable, appends to the new file could vanish
        // with it on a crash, so a failed directory sync poisons.
        self.poisoned = true;
        sync_dir(&self.dir)?;
        self.poisoned = false;
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
            ..self.stats.clone()
        }
    }
}

fn encode_all<T: Serialize>(recs: &[T]) -> Result<Vec<u8>, JournalError> {
    let mut buf = Vec::with_capacity(recs.len() * 256);
    for r in recs {
        format::encode_into(&mut buf, r)?;
    }
    Ok(buf)
}

/// Decode the longest valid prefix of `buf`.
///
/// Returns the records, the byte length of the valid prefix, and why the
/// record at that offset was rejected (`None` if the whole buffer is valid).
fn replay<T: DeserializeOwned>(buf: &[u8]) -> (Vec<T>, usize, Option<BadRecord>) {
    let mut records = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        match format::decode_one::<T>(&buf[off..]) {
            Ok((rec, n)) => {
                records.push(rec);
                off += n;
            }
            Err(bad) => return (records, off, Some(bad)),
        }
    }
    (records, off, None)
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

/// Copy bytes that replay is about to discard to a side file, durably.
fn save_dropped(dir: &Path, offset: u64, tail: &[u8]) -> Result<PathBuf, JournalError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path = dir.join(format!("{JOURNAL_FILE}.corrupt-{offset}-{secs}"));
    let mut f = File::create(&path).map_err(io_err("create", &path))?;
    f.write_all(tail).map_err(io_err("write", &path))?;
    f.sync_all().map_err(io_err("fsync", &path))?;
    sync_dir(dir)?;
    Ok(path)
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}
