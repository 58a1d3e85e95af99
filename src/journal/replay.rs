//! Replay: reading `journal.log` front to back, resynchronizing after a corrupt region at the
//! next record whose framing and CRC check out, and what it reports (see the parent module's
//! "Replay and corruption policy").
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::format::{self, BadRecord};
use super::{io_err, JournalError, JOURNAL_FILE};

/// One region of `journal.log` that replay skipped because it held no readable record: media
/// corruption, a foreign writer, or a CRC-valid payload that no longer decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRange {
    /// Byte offset of the region in the file as replay found it.
    pub offset: u64,
    /// Length of the region in bytes.
    pub len: u64,
    /// Records (lines) the region held as far as can be told: its newlines, at least one.
    pub lines: u64,
    /// Why the record at `offset` was rejected.
    pub reason: String,
    /// The forensic copy of exactly these bytes (`journal.log.corrupt-<offset>-<unix-secs>`).
    pub saved_to: Option<PathBuf>,
}

impl CorruptRange {
    /// One past the last byte of the region.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// What replay found when [`super::Journal::open`] read the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Records kept (and returned by `open`).
    pub records: usize,
    /// Size of `journal.log` as replay found it.
    pub file_len: u64,
    /// Regions skipped, in file order; empty for a healthy journal. Every CRC-valid record
    /// after a region was kept.
    pub corrupt: Vec<CorruptRange>,
    /// Whether an incomplete final line (an append cut short by a crash, never acknowledged)
    /// was dropped. Normal after a crash; not corruption, never copied.
    pub torn_tail: bool,
    /// Bytes of that incomplete final line.
    pub torn_tail_bytes: u64,
}

impl Replay {
    /// Whether replay had to skip anything other than a torn final line.
    pub fn is_corrupt(&self) -> bool {
        !self.corrupt.is_empty()
    }

    /// Records (lines) in the skipped regions: what the corrupt-records metric counts.
    pub fn corrupt_lines(&self) -> u64 {
        self.corrupt.iter().map(|c| c.lines).sum()
    }

    /// Total bytes in the skipped regions.
    pub fn corrupt_bytes(&self) -> u64 {
        self.corrupt.iter().map(|c| c.len).sum()
    }

    /// One line for operators (`/readyz`, doctor): what was skipped and where the copies are.
    pub fn summary(&self) -> String {
        if !self.is_corrupt() {
            let mut s = format!("clean ({} record(s) replayed", self.records);
            if self.torn_tail {
                let _ = write!(
                    s,
                    "; an incomplete final line of {} byte(s) from a crash was dropped",
                    self.torn_tail_bytes
                );
            }
            s.push(')');
            return s;
        }
        let mut s = format!(
            "CORRUPT: {} unreadable record(s) in {} region(s), {} byte(s) skipped, {} record(s) kept:",
            self.corrupt_lines(),
            self.corrupt.len(),
            self.corrupt_bytes(),
            self.records
        );
        for c in &self.corrupt {
            let _ = write!(s, " bytes {}..{} ({})", c.offset, c.end(), c.reason);
            if let Some(p) = &c.saved_to {
                let _ = write!(s, " copied to {}", p.display());
            }
            s.push(';');
        }
        s.pop();
        s
    }
}

/// The result of scanning a journal's bytes.
pub(super) struct Scan<T> {
    pub records: Vec<T>,
    /// Byte ranges of the kept records, in order.
    pub kept: Vec<Range<usize>>,
    /// Skipped regions with the reason the first record in each was rejected.
    pub corrupt: Vec<(Range<usize>, String)>,
    /// The incomplete final line, if any.
    pub torn: Option<Range<usize>>,
}

/// Reads every record of `buf`. A bad record starts a skipped region that ends at the next
/// record whose framing and CRC check out (or at the end of the buffer); a CRC-valid payload
/// that does not decode is a region of its own line. A final line without a newline is a torn
/// append, not corruption.
pub(super) fn scan<T: DeserializeOwned>(buf: &[u8]) -> Scan<T> {
    let mut out = Scan {
        records: Vec::new(),
        kept: Vec::new(),
        corrupt: Vec::new(),
        torn: None,
    };
    let mut off = 0;
    while off < buf.len() {
        match format::decode_one::<T>(&buf[off..]) {
            Ok((rec, n)) => {
                out.records.push(rec);
                out.kept.push(off..off + n);
                off += n;
            }
            Err(BadRecord::Incomplete) => {
                out.torn = Some(off..buf.len());
                break;
            }
            Err(bad) => {
                let end = match bad {
                    BadRecord::BadJson(_) => format::framed_len(&buf[off..]).map(|n| off + n),
                    _ => None,
                }
                .unwrap_or_else(|| resync(buf, off + 1));
                out.corrupt.push((off..end, bad.to_string()));
                off = end;
            }
        }
    }
    out
}

/// Offset of the first record at or after `from` whose framing and CRC check out, or the end
/// of `buf`. Every record starts with the magic, so only its occurrences are tried: a flipped
/// newline merges two lines, and the second record is still found inside the merged one.
fn resync(buf: &[u8], from: usize) -> usize {
    let mut at = from;
    while at + format::MAGIC.len() <= buf.len() {
        match buf[at..]
            .windows(format::MAGIC.len())
            .position(|w| w == format::MAGIC)
        {
            Some(p) => {
                let cand = at + p;
                if format::framed_len(&buf[cand..]).is_some() {
                    return cand;
                }
                at = cand + 1;
            }
            None => break,
        }
    }
    buf.len()
}

/// Copies one skipped region to `journal.log.corrupt-<offset>-<secs>` and fsyncs it (the
/// caller fsyncs the directory once for all of them).
pub(super) fn save_region(
    dir: &Path,
    offset: usize,
    secs: u64,
    bytes: &[u8],
) -> Result<PathBuf, JournalError> {
    let path = dir.join(format!("{JOURNAL_FILE}.corrupt-{offset}-{secs}"));
    let mut f = File::create(&path).map_err(io_err("create", &path))?;
    f.write_all(bytes).map_err(io_err("write", &path))?;
    f.sync_all().map_err(io_err("fsync", &path))?;
    Ok(path)
}
