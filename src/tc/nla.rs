//! Minimal netlink attribute writer for the raw `TCA_OPTIONS` payloads. Netlink is host byte
//! order; the golden files are little-endian (x86-64, aarch64).

/// `NLA_ALIGNTO`.
const ALIGN: usize = 4;

/// Appends one attribute `{u16 len, u16 type, payload}` padded to 4 bytes, as iproute2's
/// `addattr_l` does.
pub(crate) fn put(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    let len16 = u16::try_from(len).expect("tc attributes are far below 64 KiB");
    buf.extend_from_slice(&len16.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + (len.next_multiple_of(ALIGN) - len), 0);
}

/// Appends a `u32` attribute.
pub(crate) fn put_u32(buf: &mut Vec<u8>, kind: u16, v: u32) {
    put(buf, kind, &v.to_ne_bytes());
}

/// Appends a `u64` attribute.
pub(crate) fn put_u64(buf: &mut Vec<u8>, kind: u16, v: u64) {
    put(buf, kind, &v.to_ne_bytes());
}

/// The attributes in `buf` as `(type without flags, payload range)`; stops at the first malformed
/// header.
pub(crate) fn attrs(buf: &[u8]) -> Vec<(u16, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= buf.len() {
        let len = usize::from(u16::from_ne_bytes([buf[off], buf[off + 1]]));
        let kind = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & 0x3fff;
        if len < 4 || off + len > buf.len() {
            break;
        }
        out.push((kind, off + 4..off + len));
        off += len.next_multiple_of(ALIGN);
    }
    out
}

/// Concatenates native-endian `u32`s (for C structs made only of 32-bit fields).
pub(crate) fn u32s(fields: &[u32]) -> Vec<u8> {
    fields.iter().flat_map(|f| f.to_ne_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_four_bytes() {
        let mut b = Vec::new();
        put(&mut b, 1, b"netem\0");
        assert_eq!(b, [10, 0, 1, 0, b'n', b'e', b't', b'e', b'm', 0, 0, 0]);
        put(&mut b, 2, &[]);
        assert_eq!(&b[12..], [4, 0, 2, 0]);
    }
}
