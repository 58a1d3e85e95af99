//! Wire compatibility across Chaos Mesh versions. `pb.Netem.time`/`jitter` changed from a
//! `uint32` of microseconds to a Go duration `string` in Chaos Mesh 2.8 on the same field
//! numbers; generated code would reject the old wire type. This hand-written `pb.Netem` (wired
//! in through `extern_path` in build.rs) accepts both and re-encodes whichever it got.
use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

use crate::proto::pb::TcHandle;
use crate::tc::parse::NetemTime;

/// `pb.Netem`, with both encodings of `time` and `jitter`.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Netem {
    pub time: NetemTime,
    pub jitter: NetemTime,
    pub delay_corr: f32,
    pub limit: u32,
    pub loss: f32,
    pub loss_corr: f32,
    pub gap: u32,
    pub duplicate: f32,
    pub duplicate_corr: f32,
    pub reorder: f32,
    pub reorder_corr: f32,
    pub corrupt: f32,
    pub corrupt_corr: f32,
    pub parent: Option<TcHandle>,
    pub handle: Option<TcHandle>,
    pub rate: String,
}

fn time_len(tag: u32, t: &NetemTime) -> usize {
    match t {
        NetemTime::Text(s) if !s.is_empty() => encoding::string::encoded_len(tag, s),
        NetemTime::Micros(v) if *v != 0 => encoding::uint32::encoded_len(tag, v),
        _ => 0,
    }
}

fn time_encode(tag: u32, t: &NetemTime, buf: &mut impl BufMut) {
    match t {
        NetemTime::Text(s) if !s.is_empty() => encoding::string::encode(tag, s, buf),
        NetemTime::Micros(v) if *v != 0 => encoding::uint32::encode(tag, v, buf),
        _ => {}
    }
}

fn time_merge(
    slot: &mut NetemTime,
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    match wire_type {
        WireType::LengthDelimited => {
            let mut s = String::new();
            encoding::string::merge(wire_type, &mut s, buf, ctx)?;
            *slot = NetemTime::Text(s);
        }
        WireType::Varint => {
            let mut v = 0u32;
            encoding::uint32::merge(wire_type, &mut v, buf, ctx)?;
            *slot = NetemTime::Micros(v);
        }
        other => encoding::check_wire_type(WireType::LengthDelimited, other)?,
    }
    Ok(())
}

macro_rules! floats {
    ($m:ident, $self:ident, $($tag:literal => $f:ident),*) => { $( $m!($tag, $self.$f); )* };
}

impl prost::Message for Netem {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        time_encode(1, &self.time, buf);
        time_encode(2, &self.jitter, buf);
        macro_rules! f32_enc {
            ($tag:literal, $v:expr) => {
                if $v != 0.0 {
                    encoding::float::encode($tag, &$v, buf)
                }
            };
        }
        f32_enc!(3, self.delay_corr);
        if self.limit != 0 {
            encoding::uint32::encode(4, &self.limit, buf);
        }
        f32_enc!(5, self.loss);
        f32_enc!(6, self.loss_corr);
        if self.gap != 0 {
            encoding::uint32::encode(7, &self.gap, buf);
        }
        floats!(f32_enc, self, 8 => duplicate, 9 => duplicate_corr, 10 => reorder, 11 => reorder_corr, 12 => corrupt, 13 => corrupt_corr);
        if let Some(p) = &self.parent {
            encoding::message::encode(14, p, buf);
        }
        if let Some(h) = &self.handle {
            encoding::message::encode(15, h, buf);
        }
        if !self.rate.is_empty() {
            encoding::string::encode(16, &self.rate, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => time_merge(&mut self.time, wire_type, buf, ctx),
            2 => time_merge(&mut self.jitter, wire_type, buf, ctx),
            3 => encoding::float::merge(wire_type, &mut self.delay_corr, buf, ctx),
            4 => encoding::uint32::merge(wire_type, &mut self.limit, buf, ctx),
            5 => encoding::float::merge(wire_type, &mut self.loss, buf, ctx),
            6 => encoding::float::merge(wire_type, &mut self.loss_corr, buf, ctx),
            7 => encoding::uint32::merge(wire_type, &mut self.gap, buf, ctx),
            8 => encoding::float::merge(wire_type, &mut self.duplicate, buf, ctx),
            9 => encoding::float::merge(wire_type, &mut self.duplicate_corr, buf, ctx),
            10 => encoding::float::merge(wire_type, &mut self.reorder, buf, ctx),
            11 => encoding::float::merge(wire_type, &mut self.reorder_corr, buf, ctx),
            12 => encoding::float::merge(wire_type, &mut self.corrupt, buf, ctx),
            13 => encoding::float::merge(wire_type, &mut self.corrupt_corr, buf, ctx),
            14 => encoding::message::merge(
                wire_type,
                self.parent.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            15 => encoding::message::merge(
                wire_type,
                self.handle.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            16 => encoding::string::merge(wire_type, &mut self.rate, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let f = |tag: u32, v: f32| {
            if v != 0.0 {
                encoding::float::encoded_len(tag, &v)
            } else {
                0
            }
        };
        let u = |tag: u32, v: u32| {
            if v != 0 {
                encoding::uint32::encoded_len(tag, &v)
            } else {
                0
            }
        };
        time_len(1, &self.time)
            + time_len(2, &self.jitter)
            + f(3, self.delay_corr)
            + u(4, self.limit)
            + f(5, self.loss)
            + f(6, self.loss_corr)
            + u(7, self.gap)
            + f(8, self.duplicate)
            + f(9, self.duplicate_corr)
            + f(10, self.reorder)
            + f(11, self.reorder_corr)
            + f(12, self.corrupt)
            + f(13, self.corrupt_corr)
            + self
                .parent
                .as_ref()
                .map_or(0, |p| encoding::message::encoded_len(14, p))
            + self
                .handle
                .as_ref()
                .map_or(0, |h| encoding::message::encoded_len(15, h))
            + if self.rate.is_empty() {
                0
            } else {
                encoding::string::encoded_len(16, &self.rate)
            }
    }

    fn clear(&mut self) {
        *self = Netem::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn both_time_encodings_decode_and_round_trip() {
        // time as a string (>= 2.8): field 1, wire type 2.
        let new = [
            0x0a, 5, b'1', b'0', b'0', b'm', b's', 0x1d, 0, 0, 0xc8, 0x41,
        ];
        let n = Netem::decode(&new[..]).unwrap();
        assert_eq!(n.time, NetemTime::Text("100ms".into()));
        assert_eq!(n.delay_corr, 25.0);
        assert_eq!(n.encode_to_vec(), new);
        // time as a varint of microseconds (< 2.8): 100000 µs, jitter 10000 µs.
        let old = [0x08, 0xa0, 0x8d, 0x06, 0x10, 0x90, 0x4e];
        let n = Netem::decode(&old[..]).unwrap();
        assert_eq!(n.time, NetemTime::Micros(100_000));
        assert_eq!(n.jitter, NetemTime::Micros(10_000));
        assert_eq!(n.encode_to_vec(), old);
        assert_eq!(n.encoded_len(), old.len());
        // A fixed32 on field 1 is neither encoding.
        assert!(Netem::decode(&[0x0d, 0, 0, 0, 0][..]).is_err());
    }
}
