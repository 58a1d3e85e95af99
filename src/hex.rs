//! Bytes in journal records, as lowercase hex strings (serde helpers): compact, diffable, and
//! safe for any bytes (qdisc options, a file's original content).
use serde::{Deserialize, Deserializer, Serializer};

/// Lowercase hex of `b`, with one allocation (tbf options carry 1 KiB rate tables, and this
/// runs on every journal write of a qdisc fault).
pub fn encode(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(b.len() * 2);
    for x in b {
        hex.push(DIGITS[usize::from(x >> 4)] as char);
        hex.push(DIGITS[usize::from(x & 0xf)] as char);
    }
    hex
}

/// The bytes of an even-length hex string.
pub fn decode(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err("expected an even number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

/// `#[serde(with = "crate::hex")]` for `Vec<u8>`.
pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&encode(v))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    decode(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// `#[serde(with = "crate::hex::opt")]` for `Option<Vec<u8>>`.
pub mod opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&super::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::decode(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_refuses_bad_hex() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(super::decode(&super::encode(&b)).unwrap(), b);
        assert_eq!(super::encode(b"\x00\xfa"), "00fa");
        for bad in ["0", "zz", "0g"] {
            assert!(super::decode(bad).is_err(), "{bad}");
        }
    }
}
