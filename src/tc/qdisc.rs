//! Qdisc operations over a [`RouteSocket`]: link lookup, qdisc dump, add/replace, idempotent
//! delete and exact restore of a dumped root qdisc.
//!
//! netlink-packet-route 0.34 models options only for fq_codel and ingress, so qdiscs travel as
//! `kind + raw TCA_OPTIONS bytes` ([`Qdisc`]): outgoing options are the encoders' payloads, sent as
//! `TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, bytes))` (which emits them verbatim), and
//! dumped options are turned back into the exact payload the kernel sent.
//!
//! # Restoring a dumped root qdisc ([`restore_root_qdisc`])
//!
//! * **Kernel defaults** (`handle` major 0: `noqueue`, `pfifo_fast`, `mq`, or the
//!   `net.core.default_qdisc` qdisc the kernel attached itself): restored by deleting whatever root
//!   faultd installed. The kernel then re-attaches its default (for a multi-queue device that is
//!   `mq` with one child per TX queue, which no netlink request can create). Exact as long as
//!   `net.core.default_qdisc` did not change meanwhile.
//! * **Explicitly configured qdiscs** (`fq_codel`, `tbf`, `htb`, `netem`, ...): re-created at the
//!   root with the saved kind, handle and dumped `TCA_OPTIONS`. For most kinds the dump is exactly
//!   what the kernel's `init` parses, so a verbatim re-send is exact: fq_codel dumps every tunable;
//!   tbf dumps `TCA_TBF_PARMS` (+`RATE64`/`PRATE64`), and without `TCA_TBF_BURST` the kernel takes
//!   the bucket from the tick field, i.e. rounded to 64 ns of transmit time (`tc qdisc show` is
//!   identical); netem dumps everything except a custom delay distribution table, which is lost.
//!   The exception is **htb**, whose dump carries a version its own init rejects; see
//!   [`restorable_options`] for the one-field fix. Statistics (packet counters) restart from zero.
//!   **Classful qdiscs** (`htb`, `prio`, `hfsc`, ...) get their root back but not their classes,
//!   filters or child qdiscs ([`Qdisc::is_classful`]): those would have to be dumped and restored
//!   separately (not done here; upstream's `SetTcs` deletes them too).
//! * Atomicity: if the current root has a different handle the saved qdisc is grafted with
//!   `NLM_F_CREATE|NLM_F_REPLACE` in one step. If it has the same handle (faultd's `1:` replacing a
//!   user's `htb 1:`), the kernel would treat a replace as a parameter change of the wrong kind, so
//!   the root is deleted first and the saved qdisc added; between the two the device briefly runs
//!   its default qdisc.
//!
//! # Namespaces
//!
//! Every function works in the namespace of the socket it is given; see [`super::socket`] for
//! how a socket is opened inside a pod's namespace without a tokio worker ever calling `setns`.
use netlink_packet_core::{
    DefaultNla, Emitable, NetlinkMessage, Nla, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
use netlink_packet_route::RouteNetlinkMessage;

use super::netem::{encode_netem_options, NetemSpec};
use super::prio::{encode_prio_options, PrioSpec};
use super::socket::RouteSocket;
use super::tbf::{encode_tbf_options, TbfSpec};
use super::{Result, TcError, TCA_OPTIONS, TC_H_ROOT};

/// Qdisc kinds whose options netlink-packet-route parses into typed values (everything else
/// arrives as one opaque `TCA_OPTIONS` blob).
const TYPED_KINDS: &[&str] = &["fq_codel", "ingress"];

/// Classful qdisc kinds: restoring the root alone loses their classes and filters.
const CLASSFUL_KINDS: &[&str] = &[
    "atm", "cbq", "cbs", "drr", "dsmark", "ets", "hfsc", "htb", "mq", "mqprio", "multiq", "prio",
    "qfq", "taprio",
];

/// A qdisc: what to install, or what a dump found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Qdisc {
    pub kind: String,
    /// `major:minor` as a u32 (see [`super::tc_handle`]); 0 lets the kernel pick for a new qdisc.
    pub handle: u32,
    /// [`TC_H_ROOT`] or the parent class.
    pub parent: u32,
    /// Raw `TCA_OPTIONS` payload; `None` when the qdisc has no options attribute (or was read
    /// back from a record that does not keep them).
    #[serde(default, with = "crate::hex::opt")]
    pub options: Option<Vec<u8>>,
}

impl Qdisc {
    pub fn netem(parent: u32, handle: u32, spec: &NetemSpec) -> Qdisc {
        Qdisc {
            kind: "netem".into(),
            handle,
            parent,
            options: Some(encode_netem_options(spec)),
        }
    }

    pub fn tbf(parent: u32, handle: u32, spec: &TbfSpec) -> Result<Qdisc> {
        Ok(Qdisc {
            kind: "tbf".into(),
            handle,
            parent,
            options: Some(encode_tbf_options(spec)?),
        })
    }

    pub fn prio(parent: u32, handle: u32, spec: &PrioSpec) -> Qdisc {
        Qdisc {
            kind: "prio".into(),
            handle,
            parent,
            options: Some(encode_prio_options(spec)),
        }
    }

    /// Decodes a dumped `RTM_NEWQDISC`: kind, handle, parent and the exact `TCA_OPTIONS` payload.
    pub fn from_message(msg: &TcMessage) -> Result<Qdisc> {
        let kind = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                TcAttribute::Kind(k) => Some(k.clone()),
                _ => None,
            })
            .ok_or_else(|| TcError::Protocol {
                op: "dump qdisc",
                detail: "qdisc without TCA_KIND".into(),
            })?;
        let options = msg.attributes.iter().find_map(|a| match a {
            TcAttribute::Options(opts) => Some(raw_options(&kind, opts)),
            TcAttribute::Other(nla) if nla.kind() == TCA_OPTIONS => Some(nla_value(nla)),
            _ => None,
        });
        Ok(Qdisc {
            kind,
            handle: msg.header.handle.into(),
            parent: msg.header.parent.into(),
            options,
        })
    }

    /// Whether the kernel created this qdisc itself (handle major 0).
    pub fn is_kernel_default(&self) -> bool {
        self.handle >> 16 == 0
    }

    /// Whether restoring this qdisc alone loses classes, filters or children.
    pub fn is_classful(&self) -> bool {
        CLASSFUL_KINDS.contains(&self.kind.as_str())
    }

    /// The options to send when re-creating this dumped qdisc: the dump, with the per-kind
    /// corrections the kernel's init needs (see [`restorable_options`]).
    pub fn restore_options(&self) -> Option<Vec<u8>> {
        self.options
            .as_deref()
            .map(|o| restorable_options(&self.kind, o))
    }

    /// The same qdisc with [`Qdisc::restore_options`], ready for [`apply_qdisc`].
    pub fn for_restore(&self) -> Qdisc {
        Qdisc {
            options: self.restore_options(),
            ..self.clone()
        }
    }
}

const TCA_HTB_INIT: u16 = 2;
const TCA_FQ_CODEL_TARGET: u16 = 1;
const TCA_FQ_CODEL_INTERVAL: u16 = 3;
const TCA_FQ_CODEL_CE_THRESHOLD: u16 = 7;

/// Dumped `TCA_OPTIONS` turned into what the kernel accepts when creating the qdisc again.
///
/// Only htb needs a change: its dump reports `tc_htb_glob.version = HTB_VER` (0x30011) while
/// `htb_init` insists on `HTB_VER >> 16` (3, what tc sends) and refuses anything else with
/// `EINVAL`; its `direct_pkts` field is a statistic the kernel ignores on init, zeroed so that
/// two dumps of the same configuration compare equal. Every other kind's dump is accepted back
/// as is (tbf verified live, see `live_tests`).
pub fn restorable_options(kind: &str, options: &[u8]) -> Vec<u8> {
    let mut out = options.to_vec();
    if kind == "fq_codel" {
        // Times are kept in codel units (1024 ns) and dumped as floor(units * 1024 / 1000) µs;
        // sending that value back would store one unit less each round trip. Dumped value + 1
        // maps back to exactly the same internal value (see the test below).
        for (t, range) in super::nla::attrs(options) {
            if matches!(
                t,
                TCA_FQ_CODEL_TARGET | TCA_FQ_CODEL_INTERVAL | TCA_FQ_CODEL_CE_THRESHOLD
            ) && range.len() == 4
            {
                let v = u32::from_ne_bytes(out[range.clone()].try_into().expect("4 bytes"));
                out[range].copy_from_slice(&v.saturating_add(1).to_ne_bytes());
            }
        }
    }
    if kind == "htb" {
        for (t, range) in super::nla::attrs(options) {
            // struct tc_htb_glob { version, rate2quantum, defcls, debug, direct_pkts }
            if t == TCA_HTB_INIT && range.len() >= 20 {
                let field = |i: usize| range.start + 4 * i..range.start + 4 * i + 4;
                let version = u32::from_ne_bytes(out[field(0)].try_into().expect("4 bytes"));
                if version > 0xffff {
                    out[field(0)].copy_from_slice(&(version >> 16).to_ne_bytes());
                }
                out[field(4)].copy_from_slice(&0u32.to_ne_bytes());
            }
        }
    }
    out
}

fn nla_value<T: Nla>(nla: &T) -> Vec<u8> {
    let mut v = vec![0; nla.value_len()];
    nla.emit_value(&mut v);
    v
}

/// The `TCA_OPTIONS` payload netlink-packet-route parsed into `opts`, re-emitted byte for byte.
fn raw_options(kind: &str, opts: &[TcOption]) -> Vec<u8> {
    match opts {
        // Unknown kinds: the parser kept the whole attribute (header kind = TCA_OPTIONS).
        [TcOption::Other(nla)] if !TYPED_KINDS.contains(&kind) => nla_value(nla),
        _ => {
            let mut v = vec![0; opts.buffer_len()];
            opts.emit(&mut v);
            v
        }
    }
}

/// How to install a qdisc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddMode {
    /// `tc qdisc add`: `NLM_F_CREATE|NLM_F_EXCL`, fails with `EEXIST` if something is there.
    Exclusive,
    /// `tc qdisc replace`: `NLM_F_CREATE|NLM_F_REPLACE`, grafts over what is there.
    Replace,
}

fn ifindex_i32(ifindex: u32) -> Result<i32> {
    i32::try_from(ifindex)
        .map_err(|_| TcError::invalid("ifindex", ifindex.to_string(), "out of range"))
}

/// The `RTM_NEWQDISC` request for `q` on `ifindex` (sequence number 0; the socket assigns its
/// own when sending).
pub fn new_qdisc_message(
    ifindex: u32,
    q: &Qdisc,
    mode: AddMode,
) -> Result<NetlinkMessage<RouteNetlinkMessage>> {
    let mut tc = TcMessage::with_index(ifindex_i32(ifindex)?);
    tc.header.handle = TcHandle::from(q.handle);
    tc.header.parent = TcHandle::from(q.parent);
    tc.attributes.push(TcAttribute::Kind(q.kind.clone()));
    if let Some(opts) = &q.options {
        tc.attributes.push(TcAttribute::Other(DefaultNla::new(
            TCA_OPTIONS,
            opts.clone(),
        )));
    }
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(tc));
    msg.header.flags = NLM_F_REQUEST
        | NLM_F_ACK
        | NLM_F_CREATE
        | match mode {
            AddMode::Exclusive => NLM_F_EXCL,
            AddMode::Replace => NLM_F_REPLACE,
        };
    msg.finalize();
    Ok(msg)
}

/// Whether `name` is an interface name faultd accepts: the kernel's `dev_valid_name` rules
/// (1-15 bytes, IFNAMSIZ being 16 with the NUL; no '/', ':' or whitespace; not "." or "..")
/// restricted to printable ASCII.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// The index of the network device `name` in the socket's namespace.
pub fn link_index(sock: &mut RouteSocket, name: &str) -> Result<u32> {
    if !valid_ifname(name) {
        return Err(TcError::invalid(
            "device",
            name,
            "not a valid interface name",
        ));
    }
    sock.ifindex(name)?.ok_or_else(|| TcError::LinkNotFound {
        name: name.to_string(),
    })
}

/// Every network device of the socket's namespace: `(index, name)`.
pub fn links(sock: &mut RouteSocket) -> Result<Vec<(u32, String)>> {
    let msg = NetlinkMessage::from(RouteNetlinkMessage::GetLink(LinkMessage::default()));
    Ok(sock
        .request("dump links", msg, true)?
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => {
                let name = l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                })?;
                Some((l.header.index, name))
            }
            _ => None,
        })
        .collect())
}

/// Every qdisc attached to `ifindex` (root, its children, ingress/clsact).
pub fn dump_qdiscs(sock: &mut RouteSocket, ifindex: u32) -> Result<Vec<Qdisc>> {
    let index = ifindex_i32(ifindex)?;
    let msg = NetlinkMessage::from(RouteNetlinkMessage::GetQueueDiscipline(
        TcMessage::with_index(index),
    ));
    let mut out = Vec::new();
    for m in sock.request("dump qdiscs", msg, true)? {
        if let RouteNetlinkMessage::NewQueueDiscipline(q) = m {
            if q.header.index == index {
                out.push(Qdisc::from_message(&q)?);
            }
        }
    }
    Ok(out)
}

/// The root qdisc of `ifindex` (`None` only for devices without one).
pub fn root_qdisc(sock: &mut RouteSocket, ifindex: u32) -> Result<Option<Qdisc>> {
    Ok(dump_qdiscs(sock, ifindex)?
        .into_iter()
        .find(|q| q.parent == TC_H_ROOT))
}

/// Installs `q` on `ifindex`. A kind the kernel does not know is [`TcError::KindMissing`]: the
/// kernel answers `ENOENT` for it, as it does for a missing parent, so on `ENOENT` the parent is
/// looked up (the root always exists; a class's qdisc must be on the device).
pub fn apply_qdisc(sock: &mut RouteSocket, ifindex: u32, q: &Qdisc, mode: AddMode) -> Result<()> {
    match sock.request_ack("add qdisc", new_qdisc_message(ifindex, q, mode)?) {
        Err(TcError::Kernel { errno, .. })
            if errno == libc::EOPNOTSUPP
                || (errno == libc::ENOENT && parent_exists(sock, ifindex, q.parent)) =>
        {
            Err(TcError::KindMissing {
                kind: q.kind.clone(),
                errno,
            })
        }
        other => other,
    }
}

/// Whether `parent` (the root, or a class `major:minor` of a qdisc `major:`) exists on `ifindex`.
fn parent_exists(sock: &mut RouteSocket, ifindex: u32, parent: u32) -> bool {
    parent == TC_H_ROOT
        || dump_qdiscs(sock, ifindex)
            .is_ok_and(|qs| qs.iter().any(|q| q.handle == parent & 0xFFFF_0000))
}

/// Deletes the root qdisc of `ifindex` (`tc qdisc del dev X root`). Returns whether something was
/// deleted; a root that is already the kernel's default (`ENOENT`: "Cannot delete qdisc with
/// handle of zero") counts as success, so the call is idempotent.
pub fn delete_root_qdisc(sock: &mut RouteSocket, ifindex: u32) -> Result<bool> {
    let mut tc = TcMessage::with_index(ifindex_i32(ifindex)?);
    tc.header.parent = TcHandle::ROOT;
    let msg = NetlinkMessage::from(RouteNetlinkMessage::DelQueueDiscipline(tc));
    match sock.request_ack("delete root qdisc", msg) {
        Ok(()) => Ok(true),
        Err(TcError::Kernel { errno, .. }) if errno == libc::ENOENT => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the root qdisc of `ifindex` only if its handle is `handle`: the kernel compares the
/// handle under the same lock that deletes (`tc_get_qdisc`: "Invalid handle", `EINVAL`), so a
/// root someone else installed is never removed. Returns whether something was deleted;
/// `EINVAL` (another root) and `ENOENT` (the kernel's default root) delete nothing.
pub fn delete_root_qdisc_if(sock: &mut RouteSocket, ifindex: u32, handle: u32) -> Result<bool> {
    let mut tc = TcMessage::with_index(ifindex_i32(ifindex)?);
    tc.header.parent = TcHandle::ROOT;
    tc.header.handle = TcHandle::from(handle);
    let msg = NetlinkMessage::from(RouteNetlinkMessage::DelQueueDiscipline(tc));
    match sock.request_ack("delete root qdisc", msg) {
        Ok(()) => Ok(true),
        Err(TcError::Kernel { errno, .. }) if errno == libc::ENOENT || errno == libc::EINVAL => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Puts a root qdisc saved with [`root_qdisc`] back (see the module docs for what is exact).
/// Idempotent: restoring twice, or restoring what is already there, succeeds.
pub fn restore_root_qdisc(sock: &mut RouteSocket, ifindex: u32, saved: &Qdisc) -> Result<()> {
    if saved.parent != TC_H_ROOT {
        return Err(TcError::invalid(
            "qdisc.parent",
            format!("{:#x}", saved.parent),
            "not a root qdisc",
        ));
    }
    let current = root_qdisc(sock, ifindex)?;
    if saved.is_kernel_default() {
        if current.is_some_and(|c| !c.is_kernel_default()) {
            delete_root_qdisc(sock, ifindex)?;
        }
        return Ok(());
    }
    let wanted = saved.for_restore();
    match current {
        Some(c) if c.for_restore() == wanted => Ok(()),
        Some(c) if c.handle == saved.handle => {
            delete_root_qdisc(sock, ifindex)?;
            apply_qdisc(sock, ifindex, &wanted, AddMode::Exclusive)
        }
        _ => apply_qdisc(sock, ifindex, &wanted, AddMode::Replace),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's codel time conversion: µs in → units of 1024 ns → µs out.
    fn codel_store(us: u32) -> u64 {
        (u64::from(us) * 1000) >> 10
    }
    fn codel_dump(units: u64) -> u32 {
        ((units << 10) / 1000) as u32
    }

    #[test]
    fn fq_codel_times_survive_a_restore_round_trip() {
        for us in [
            1u32, 999, 1000, 2999, 3000, 5000, 100_000, 123_457, 10_000_000,
        ] {
            let stored = codel_store(us);
            let dumped = codel_dump(stored);
            let mut opts = Vec::new();
            crate::tc::nla::put_u32(&mut opts, TCA_FQ_CODEL_TARGET, dumped);
            crate::tc::nla::put_u32(&mut opts, 2, 10240);
            crate::tc::nla::put_u32(&mut opts, TCA_FQ_CODEL_INTERVAL, dumped);
            let sent = restorable_options("fq_codel", &opts);
            let attrs = crate::tc::nla::attrs(&sent);
            let v = |i: usize| u32::from_ne_bytes(sent[attrs[i].1.clone()].try_into().unwrap());
            assert_eq!(codel_store(v(0)), stored, "target {us} µs");
            assert_eq!(v(1), 10240, "limit untouched");
            assert_eq!(codel_store(v(2)), stored, "interval {us} µs");
        }
    }

    fn parse(bytes: &[u8]) -> TcMessage {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).unwrap();
        match msg.payload {
            netlink_packet_core::NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewQueueDiscipline(tc),
            ) => tc,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decode_roundtrips_opaque_and_typed_options() {
        // An opaque kind (tbf-like nested attributes) and a typed one (fq_codel).
        let mut nested = Vec::new();
        crate::tc::nla::put_u32(&mut nested, 6, 32768);
        crate::tc::nla::put_u32(&mut nested, 1, 7);
        let mut fq = Vec::new();
        for (t, v) in [
            (1u16, 5000u32),
            (2, 10240),
            (3, 100_000),
            (4, 1),
            (5, 1514),
            (6, 1024),
        ] {
            crate::tc::nla::put_u32(&mut fq, t, v);
        }
        for (kind, opts) in [("tbf", nested), ("fq_codel", fq), ("htb", vec![1, 2, 3, 4])] {
            let q = Qdisc {
                kind: kind.into(),
                handle: 0x8001_0000,
                parent: TC_H_ROOT,
                options: Some(opts),
            };
            let mut msg = new_qdisc_message(3, &q, AddMode::Replace).unwrap();
            // Pretend it is a dump reply.
            msg.header.flags = 0;
            let mut buf = vec![0; msg.buffer_len()];
            msg.serialize(&mut buf);
            let back = Qdisc::from_message(&parse(&buf)).unwrap();
            assert_eq!(back, q, "{kind}");
        }
    }

    #[test]
    fn htb_dump_is_fixed_for_init() {
        // What the kernel dumps for `tc qdisc add … htb default 10 r2q 5` (captured live).
        let dumped: [u8; 32] = [
            24, 0, 2, 0, 17, 0, 3, 0, 5, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 8, 0, 5, 0,
            232, 3, 0, 0,
        ];
        let fixed = restorable_options("htb", &dumped);
        // What tc sends: version 3, direct_pkts 0; TCA_HTB_DIRECT_QLEN kept.
        assert_eq!(&fixed[4..8], &3u32.to_ne_bytes());
        assert_eq!(&fixed[20..24], &0u32.to_ne_bytes());
        assert_eq!(&fixed[..4], &dumped[..4]);
        assert_eq!(&fixed[8..20], &dumped[8..20]);
        assert_eq!(&fixed[24..], &dumped[24..]);
        assert_eq!(restorable_options("htb", &fixed), fixed, "idempotent");
        assert_eq!(restorable_options("tbf", &dumped), dumped);
        assert_eq!(
            restorable_options("htb", &[1, 2, 3]),
            [1, 2, 3],
            "malformed input is left alone"
        );
    }

    #[test]
    fn defaults_and_classful() {
        let q = |kind: &str, handle| Qdisc {
            kind: kind.into(),
            handle,
            parent: TC_H_ROOT,
            options: None,
        };
        assert!(q("noqueue", 0).is_kernel_default());
        assert!(q("mq", 0).is_kernel_default());
        assert!(!q("htb", 0x1_0000).is_kernel_default());
        assert!(q("htb", 0x1_0000).is_classful());
        assert!(!q("tbf", 0x1_0000).is_classful());
    }

    #[test]
    fn serde_hex() {
        let q = Qdisc {
            kind: "tbf".into(),
            handle: 0x10000,
            parent: TC_H_ROOT,
            options: Some(vec![0, 0xab, 0x10]),
        };
        let j = serde_json::to_string(&q).unwrap();
        assert!(j.contains("\"00ab10\""), "{j}");
        assert_eq!(serde_json::from_str::<Qdisc>(&j).unwrap(), q);
        let none = Qdisc { options: None, ..q };
        assert_eq!(
            serde_json::from_str::<Qdisc>(&serde_json::to_string(&none).unwrap()).unwrap(),
            none
        );
        assert!(serde_json::from_str::<Qdisc>(
            r#"{"kind":"x","handle":0,"parent":0,"options":"abc"}"#
        )
        .is_err());
    }

    #[test]
    fn interface_names_are_validated() {
        // Refused before anything is sent: no privileges needed.
        let mut s = RouteSocket::open().unwrap();
        for bad in ["", "a/b", "sixteen_chars_xx", "..", "a b"] {
            let e = link_index(&mut s, bad).unwrap_err();
            assert!(matches!(e, TcError::InvalidArgument { .. }), "{bad:?}: {e}");
        }
    }
}
