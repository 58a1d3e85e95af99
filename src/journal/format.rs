//! Pure (no I/O) encoding and decoding of journal lines.
//!
//! See the parent module docs for the authoritative format description.
//! Everything here operates on byte slices and must never panic, whatever the
//! input bytes are: replay feeds it arbitrary file contents.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Magic prefix of every record line.
pub(crate) const MAGIC: &[u8; 2] = b"FJ";
/// The only record format version this code writes and reads.
pub(crate) const VERSION: u32 = 1;
/// Upper bound on a record's payload length, in bytes (16 MiB). Bounds memory
/// use on replay of a corrupt length field and keeps the length at <= 8 digits.
pub const MAX_RECORD_LEN: usize = 16 * 1024 * 1024;
/// Maximum number of decimal digits accepted in the version field.
const MAX_VERSION_DIGITS: usize = 3;
/// Maximum number of decimal digits accepted in the length field.
const MAX_LEN_DIGITS: usize = 8;

/// Why a record could not be read. Carried in the replay warning.
#[derive(Debug)]
pub(crate) enum BadRecord {
    /// The remaining bytes contain no newline: the final line is incomplete.
    /// This is the normal result of a crash in the middle of an append.
    Incomplete,
    /// The line does not start with `FJ<digits> `.
    BadMagic,
    /// The line starts with the magic but carries a version we do not know.
    UnknownVersion(u32),
    /// The length/CRC header fields are malformed.
    BadHeader(&'static str),
    /// The declared length does not end at a newline (or runs past the file).
    BadLength { declared: usize },
    /// The payload's CRC32 does not match the header.
    CrcMismatch { expected: u32, actual: u32 },
    /// The payload is intact (CRC matches) but does not deserialize into `T`.
    BadJson(serde_json::Error),
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRecord::Incomplete => f.write_str("incomplete final line (torn write)"),
            BadRecord::BadMagic => f.write_str("bad magic (expected \"FJ<version> \")"),
            BadRecord::UnknownVersion(v) => write!(f, "unknown record version {v}"),
            BadRecord::BadHeader(what) => write!(f, "malformed header: {what}"),
            BadRecord::BadLength { declared } => {
                write!(f, "declared length {declared} does not end at a newline")
            }
            BadRecord::CrcMismatch { expected, actual } => {
                write!(
                    f,
                    "crc32 mismatch (header {expected:08x}, payload {actual:08x})"
                )
            }
            BadRecord::BadJson(e) => write!(f, "payload does not decode: {e}"),
        }
    }
}

/// Error from [`encode_into`]; mapped onto `JournalError` by the caller.
#[derive(Debug)]
pub(crate) enum EncodeError {
    Json(serde_json::Error),
    TooLarge(usize),
}

/// Append one complete record line for `rec` to `out`.
///
/// On error `out` is left exactly as it was.
pub(crate) fn encode_into<T: Serialize>(out: &mut Vec<u8>, rec: &T) -> Result<(), EncodeError> {
    let payload = serde_json::to_vec(rec).map_err(EncodeError::Json)?;
    if payload.len() > MAX_RECORD_LEN {
        return Err(EncodeError::TooLarge(payload.len()));
    }
    // Compact serde_json output escapes control characters, so this only
    // triggers for hand-written `Serialize` impls or `RawValue`s carrying raw
    // newlines. Rejecting them keeps "one record per line" an invariant.
    if payload.contains(&b'\n') {
        return Err(EncodeError::Json(
            <serde_json::Error as serde::ser::Error>::custom(
                "serialized record contains a raw newline",
            ),
        ));
    }
    let crc = crc32fast::hash(&payload);
    out.reserve(payload.len() + 24);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(format!("{VERSION} {} {crc:08x} ", payload.len()).as_bytes());
    out.extend_from_slice(&payload);
    out.push(b'\n');
    Ok(())
}

/// Decode the record starting at `buf[0]`.
///
/// Returns the record and the total number of bytes it occupies (including
/// the trailing newline).
pub(crate) fn decode_one<T: DeserializeOwned>(buf: &[u8]) -> Result<(T, usize), BadRecord> {
    let has_newline = buf.contains(&b'\n');
    match decode_framed(buf) {
        Ok((payload, total)) => {
            let rec = serde_json::from_slice(payload).map_err(BadRecord::BadJson)?;
            Ok((rec, total))
        }
        // Whatever went wrong, a region without any newline is an unfinished
        // append; report it as such so operators can tell it from corruption.
        Err(_) if !has_newline => Err(BadRecord::Incomplete),
        Err(e) => Err(e),
    }
}

/// The total length of the record line at `buf[0]` if its framing and CRC check out (whether
/// or not its payload decodes). Replay resynchronizes at such a line after a corrupt one.
pub(crate) fn framed_len(buf: &[u8]) -> Option<usize> {
    decode_framed(buf).ok().map(|(_, total)| total)
}

/// Validate framing and CRC; return the payload and the total line length.
fn decode_framed(buf: &[u8]) -> Result<(&[u8], usize), BadRecord> {
    let mut cur = Cursor { buf, pos: 0 };
    if !cur.eat(MAGIC) {
        return Err(BadRecord::BadMagic);
    }
    let version = cur.decimal(MAX_VERSION_DIGITS).ok_or(BadRecord::BadMagic)?;
    if !cur.eat(b" ") {
        return Err(BadRecord::BadMagic);
    }
    if version != u64::from(VERSION) {
        // `version` has at most 3 digits, so it always fits in a u32.
        return Err(BadRecord::UnknownVersion(version as u32));
    }
    let len = cur
        .decimal(MAX_LEN_DIGITS)
        .ok_or(BadRecord::BadHeader("length is not a decimal number"))?;
    if !cur.eat(b" ") {
        return Err(BadRecord::BadHeader("no space after length"));
    }
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > MAX_RECORD_LEN {
        return Err(BadRecord::BadHeader("length exceeds MAX_RECORD_LEN"));
    }
    let expected = cur
        .crc_hex()
        .ok_or(BadRecord::BadHeader("crc is not 8 lowercase hex digits"))?;
    if !cur.eat(b" ") {
        return Err(BadRecord::BadHeader("no space after crc"));
    }
    let start = cur.pos;
    // `start <= buf.len()` and `len <= MAX_RECORD_LEN`, so no overflow.
    let end = start + len;
    if buf.get(end) != Some(&b'\n') {
        return Err(BadRecord::BadLength { declared: len });
    }
    let payload = &buf[start..end];
    let actual = crc32fast::hash(payload);
    if actual != expected {
        return Err(BadRecord::CrcMismatch { expected, actual });
    }
    Ok((payload, end + 1))
}

/// Tiny bounds-checked byte cursor; every method returns `None`/`false`
/// instead of indexing out of range.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn rest(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.rest().starts_with(lit) {
            self.pos += lit.len();
            true
        } else {
            false
        }
    }

    /// 1..=`max_digits` ASCII digits, canonical (no leading zeros except "0").
    fn decimal(&mut self, max_digits: usize) -> Option<u64> {
        let digits = self
            .rest()
            .iter()
            .take(max_digits + 1)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || digits > max_digits {
            return None;
        }
        let s = &self.rest()[..digits];
        if digits > 1 && s[0] == b'0' {
            return None;
        }
        let v = s.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        self.pos += digits;
        Some(v)
    }

    /// Exactly 8 lowercase hex digits.
    fn crc_hex(&mut self) -> Option<u32> {
        let s = self.rest().get(..8)?;
        let mut v = 0u32;
        for &b in s {
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => return None,
            };
            v = (v << 4) | u32::from(d);
        }
        self.pos += 8;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_format_line_is_exact() {
        let mut out = Vec::new();
        encode_into(&mut out, &serde_json::json!({"a": 1})).unwrap();
        let payload = br#"{"a":1}"#;
        let expected = format!(
            "FJ1 {} {:08x} {}\n",
            payload.len(),
            crc32fast::hash(payload),
            std::str::from_utf8(payload).unwrap()
        );
        assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
        assert_eq!(out, b"FJ1 7 561bacaf {\"a\":1}\n"); // the module-docs example
        let (v, n): (serde_json::Value, usize) = decode_one(&out).unwrap();
        assert_eq!(n, out.len());
        assert_eq!(v, serde_json::json!({"a": 1}));
    }

    #[test]
    fn journal_format_rejects_noncanonical_header() {
        let payload = b"1";
        let crc = crc32fast::hash(payload);
        for line in [
            format!("FJ1 01 {crc:08x} 1\n"),
            format!("FJ1 1 {crc:08X} 1\n"),
            format!("FJ01 1 {crc:08x} 1\n"),
            format!("FJ1  1 {crc:08x} 1\n"),
            format!("FJ1 2 {crc:08x} 1\n"),
            format!("FJ2 1 {crc:08x} 1\n"),
            format!("fj1 1 {crc:08x} 1\n"),
            format!("FJ1 999999999 {crc:08x} 1\n"),
        ] {
            assert!(decode_one::<u32>(line.as_bytes()).is_err(), "{line:?}");
        }
        let ok = format!("FJ1 1 {crc:08x} 1\n");
        assert_eq!(decode_one::<u32>(ok.as_bytes()).unwrap(), (1, ok.len()));
    }
}
