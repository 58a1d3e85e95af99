//! The table as one nf_tables netlink batch: the messages and expressions `nft -f` sends for the
//! text [`super::render`] produces (checked against nft 1.0.6's `--debug=netlink` output and, on
//! the host tier, by comparing `nft list table inet faultd` after loading both).
//!
//! Hand-encoded attributes (constants from `linux/netfilter/nf_tables.h` and
//! `linux/netfilter/nfnetlink.h`), as faultd's tc encoders are: everything the table needs is
//! about 40 attribute types, and the byte-level goldens (`golden/*.nlhex`) pin the result.
//! What nft adds implicitly is explicit here: `meta nfproto` before an `ip`/`ip6` match in an
//! inet table, `meta l4proto tcp` before the `tcp dport` of a concatenation, the interval
//! element encoding (a leading end element at 0, each range as start + end at `hi + 1`), the
//! concatenation encoding (fields padded to 4 bytes, `KEY` + `KEY_END` per element), anonymous
//! sets for port lists and `{ icmp, ipv6-icmp }`, and the register layout of concatenations.
//! nft's userdata (pretty-printing hints) is left out except the "open interval" element flag,
//! which `nft list` needs to print a range ending at the highest address.
use super::model::{Direction, Family, NftSet, Table};
use super::nlwire::*;
pub use super::nlwire::{from_hex_lines, hex_lines, Batch, Msg};
use super::render::{owner_chain, validate_owner, TABLE};
use super::rule::{Reject, Rule, SetMatch, Verdict};
use super::validate::{mask, Net, Protocol};
use super::FirewallError;
/// A set as the kernel gets it: key layout and encoded elements.
struct SetSpec<'a> {
    name: &'a str,
    id: u32,
    flags: u32,
    key_type: u32,
    key_len: u32,
    /// `NFTA_SET_DESC_SIZE` (anonymous sets).
    size: bool,
    /// Field lengths of a concatenation.
    concat: &'a [u32],
    elems: Vec<Elem>,
}

#[derive(Default)]
struct Elem {
    key: Vec<u8>,
    key_end: Option<Vec<u8>>,
    end: bool,
    open: bool,
}

impl Batch {
    fn set(&mut self, s: SetSpec) {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_SET_TABLE, TABLE);
        put_str(&mut a, NFTA_SET_NAME, s.name);
        put_be32(&mut a, NFTA_SET_FLAGS, s.flags);
        put_be32(&mut a, NFTA_SET_KEY_TYPE, s.key_type);
        put_be32(&mut a, NFTA_SET_KEY_LEN, s.key_len);
        put_be32(&mut a, NFTA_SET_ID, s.id);
        if s.size || !s.concat.is_empty() {
            nest(&mut a, NFTA_SET_DESC, |a| {
                if s.size {
                    put_be32(a, NFTA_SET_DESC_SIZE, s.elems.len() as u32);
                }
                if !s.concat.is_empty() {
                    nest(a, NFTA_SET_DESC_CONCAT, |a| {
                        for len in s.concat {
                            nest(a, NFTA_LIST_ELEM, |a| put_be32(a, NFTA_SET_FIELD_LEN, *len));
                        }
                    });
                }
            });
        }
        let anonymous = s.flags & NFT_SET_ANONYMOUS != 0;
        let shown = if anonymous { "anonymous set" } else { s.name };
        self.push(NFT_MSG_NEWSET, NLM_F_CREATE, format!("add set {shown}"), a);
        for chunk in s.elems.chunks(ELEMS_PER_MSG) {
            let mut a = Vec::new();
            put_str(&mut a, NFTA_SET_ELEM_LIST_TABLE, TABLE);
            put_str(&mut a, NFTA_SET_ELEM_LIST_SET, s.name);
            put_be32(&mut a, NFTA_SET_ELEM_LIST_SET_ID, s.id);
            nest(&mut a, NFTA_SET_ELEM_LIST_ELEMENTS, |a| {
                for e in chunk {
                    nest(a, NFTA_LIST_ELEM, |a| {
                        put_data(a, NFTA_SET_ELEM_KEY, &e.key);
                        if let Some(k) = &e.key_end {
                            put_data(a, NFTA_SET_ELEM_KEY_END, k);
                        }
                        if e.end {
                            put_be32(a, NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
                        }
                        if e.open {
                            put(a, NFTA_SET_ELEM_USERDATA, &UDATA_INTERVAL_OPEN);
                        }
                    });
                }
            });
            self.push(
                NFT_MSG_NEWSETELEM,
                NLM_F_CREATE,
                format!("add elements to set {shown}"),
                a,
            );
        }
    }
}

/// Interval elements over big-endian keys of `width` bytes: a leading end element at 0 unless
/// a range starts there, each range as its start and an end element at `hi + 1` (none when the
/// range reaches the top: that start is marked open instead). Ranges are sorted and disjoint.
fn interval_elems(ranges: &[(u128, u128)], width: usize) -> Vec<Elem> {
    let key = |v: u128| v.to_be_bytes()[16 - width..].to_vec();
    let top = if width == 16 {
        u128::MAX
    } else {
        (1u128 << (8 * width)) - 1
    };
    let mut out = Vec::new();
    if ranges.first().is_some_and(|(lo, _)| *lo != 0) {
        out.push(Elem {
            key: key(0),
            end: true,
            ..Default::default()
        });
    }
    for &(lo, hi) in ranges {
        out.push(Elem {
            key: key(lo),
            open: hi == top,
            ..Default::default()
        });
        if hi != top {
            out.push(Elem {
                key: key(hi + 1),
                end: true,
                ..Default::default()
            });
        }
    }
    out
}

fn net_range(n: &Net) -> (u128, u128) {
    let w = n.width();
    let host = !mask(n.prefix, w) & mask(w, w);
    (n.bits, n.bits | host)
}

fn addr_bytes(v: u128, v6: bool) -> Vec<u8> {
    if v6 {
        v.to_be_bytes().to_vec()
    } else {
        (v as u32).to_be_bytes().to_vec()
    }
}

fn named_set(b: &mut Batch, s: &NftSet, id: u32) {
    let v6 = s.kind.family() == Family::V6;
    let (addr_type, addr_len) = if v6 {
        (TYPE_IP6ADDR, 16)
    } else {
        (TYPE_IPADDR, 4)
    };
    if s.kind.has_port() {
        let elems = s
            .keys
            .iter()
            .map(|(n, p)| {
                let (lo, hi) = net_range(n);
                let port = {
                    let mut v = p.unwrap_or(0).to_be_bytes().to_vec();
                    v.resize(4, 0);
                    v
                };
                let mut key = addr_bytes(lo, v6);
                key.extend_from_slice(&port);
                let mut key_end = addr_bytes(hi, v6);
                key_end.extend_from_slice(&port);
                Elem {
                    key,
                    key_end: Some(key_end),
                    ..Default::default()
                }
            })
            .collect();
        b.set(SetSpec {
            name: &s.name,
            id,
            flags: NFT_SET_INTERVAL | NFT_SET_CONCAT,
            key_type: (addr_type << TYPE_BITS) | TYPE_INET_SERVICE,
            key_len: addr_len + 4,
            size: false,
            concat: &[addr_len, 2],
            elems,
        });
    } else {
        let ranges: Vec<(u128, u128)> = s.keys.iter().map(|(n, _)| net_range(n)).collect();
        b.set(SetSpec {
            name: &s.name,
            id,
            flags: NFT_SET_INTERVAL,
            key_type: addr_type,
            key_len: addr_len,
            size: false,
            concat: &[],
            elems: interval_elems(&ranges, addr_len as usize),
        });
    }
}

// ----- expressions -----

pub(super) fn expr(e: &mut Vec<u8>, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
    nest(e, NFTA_LIST_ELEM, |b| {
        put_str(b, NFTA_EXPR_NAME, name);
        nest(b, NFTA_EXPR_DATA, f);
    });
}

pub(super) fn meta_load(e: &mut Vec<u8>, key: u32) {
    expr(e, "meta", |b| {
        put_be32(b, META_KEY, key);
        put_be32(b, META_DREG, REG_1);
    });
}

pub(super) fn cmp(e: &mut Vec<u8>, op: u32, value: &[u8]) {
    expr(e, "cmp", |b| {
        put_be32(b, CMP_SREG, REG_1);
        put_be32(b, CMP_OP, op);
        put_data(b, CMP_DATA, value);
    });
}

pub(super) fn payload(e: &mut Vec<u8>, base: u32, offset: u32, len: u32, dreg: u32) {
    expr(e, "payload", |b| {
        put_be32(b, PAYLOAD_DREG, dreg);
        put_be32(b, PAYLOAD_BASE, base);
        put_be32(b, PAYLOAD_OFFSET, offset);
        put_be32(b, PAYLOAD_LEN, len);
    });
}

fn lookup(e: &mut Vec<u8>, set: &str, id: u32) {
    expr(e, "lookup", |b| {
        put_be32(b, LOOKUP_SREG, REG_1);
        put_str(b, LOOKUP_SET, set);
        put_be32(b, LOOKUP_SET_ID, id);
    });
}

pub(super) fn immediate_verdict(e: &mut Vec<u8>, code: u32, chain: Option<&str>) {
    expr(e, "immediate", |b| {
        put_be32(b, IMMEDIATE_DREG, REG_VERDICT);
        nest(b, IMMEDIATE_DATA, |b| {
            nest(b, NFTA_DATA_VERDICT, |b| {
                put_be32(b, NFTA_VERDICT_CODE, code);
                if let Some(c) = chain {
                    put_str(b, NFTA_VERDICT_CHAIN, c);
                }
            })
        });
    });
}

/// The rule's anonymous sets and expressions, with set ids from `next_id`.
struct RuleBuilder<'a> {
    batch: &'a mut Batch,
    ids: &'a std::collections::HashMap<&'a str, u32>,
    next_id: &'a mut u32,
    e: Vec<u8>,
}

impl RuleBuilder<'_> {
    fn anon_set(&mut self, key_type: u32, key_len: u32, interval: bool, elems: Vec<Elem>) {
        *self.next_id += 1;
        let id = *self.next_id;
        let mut flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT;
        if interval {
            flags |= NFT_SET_INTERVAL;
        }
        self.batch.set(SetSpec {
            name: "__set%d",
            id,
            flags,
            key_type,
            key_len,
            size: true,
            concat: &[],
            elems,
        });
        lookup(&mut self.e, "__set%d", id);
    }

    fn l4proto(&mut self, p: u8) {
        meta_load(&mut self.e, NFT_META_L4PROTO);
        cmp(&mut self.e, NFT_CMP_EQ, &[p]);
    }

    fn set_match(&mut self, m: &SetMatch) {
        let v6 = m.kind.family() == Family::V6;
        meta_load(&mut self.e, NFT_META_NFPROTO);
        cmp(
            &mut self.e,
            NFT_CMP_EQ,
            &[if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }],
        );
        if m.kind.has_port() {
            self.l4proto(libc::IPPROTO_TCP as u8);
        }
        let (offset, len) = match (v6, m.source) {
            (false, true) => (12, 4),
            (false, false) => (16, 4),
            (true, true) => (8, 16),
            (true, false) => (24, 16),
        };
        payload(&mut self.e, NFT_PAYLOAD_NETWORK_HEADER, offset, len, REG_1);
        if m.kind.has_port() {
            let reg = if v6 { REG_2 } else { REG32_01 };
            payload(&mut self.e, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, reg);
        }
        let id = self.ids.get(m.set.as_str()).copied().unwrap_or(0);
        lookup(&mut self.e, &m.set, id);
    }

    fn ports(&mut self, offset: u32, ranges: &[(u16, u16)]) {
        payload(&mut self.e, NFT_PAYLOAD_TRANSPORT_HEADER, offset, 2, REG_1);
        match ranges {
            [(lo, hi)] if lo == hi => cmp(&mut self.e, NFT_CMP_EQ, &lo.to_be_bytes()),
            [(lo, hi)] => {
                cmp(&mut self.e, NFT_CMP_GTE, &lo.to_be_bytes());
                cmp(&mut self.e, NFT_CMP_LTE, &hi.to_be_bytes());
            }
            many => {
                let r: Vec<(u128, u128)> = many
                    .iter()
                    .map(|(l, h)| (u128::from(*l), u128::from(*h)))
                    .collect();
                self.anon_set(TYPE_INET_SERVICE, 2, true, interval_elems(&r, 2));
            }
        }
    }

    fn rule(&mut self, r: &Rule) {
        let key = match r.direction {
            Direction::Input => NFT_META_IIFNAME,
            Direction::Output => NFT_META_OIFNAME,
        };
        meta_load(&mut self.e, key);
        let mut name = [0u8; 16];
        for (d, s) in name.iter_mut().zip(r.device.as_bytes()) {
            *d = *s;
        }
        cmp(&mut self.e, NFT_CMP_EQ, &name);
        match r.nfproto {
            Some(Family::V4) => {
                meta_load(&mut self.e, NFT_META_NFPROTO);
                cmp(&mut self.e, NFT_CMP_EQ, &[NFPROTO_IPV4]);
            }
            Some(Family::V6) => {
                meta_load(&mut self.e, NFT_META_NFPROTO);
                cmp(&mut self.e, NFT_CMP_EQ, &[NFPROTO_IPV6]);
            }
            _ => {}
        }
        if let Some(m) = &r.set {
            self.set_match(m);
        }
        match r.protocol {
            Some(Protocol::Icmp) => {
                meta_load(&mut self.e, NFT_META_L4PROTO);
                let elems = [libc::IPPROTO_ICMP as u8, libc::IPPROTO_ICMPV6 as u8]
                    .into_iter()
                    .map(|p| Elem {
                        key: vec![p],
                        ..Default::default()
                    })
                    .collect();
                self.anon_set(TYPE_INET_PROTOCOL, 1, false, elems);
            }
            Some(p) => self.l4proto(p.number()),
            None => {}
        }
        if r.protocol.is_some() {
            if let Some(sp) = &r.sports {
                self.ports(0, sp);
            }
            if let Some(dp) = &r.dports {
                self.ports(2, dp);
            }
        }
        if let Some((m, c)) = r.flags {
            payload(&mut self.e, NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1, REG_1);
            expr(&mut self.e, "bitwise", |b| {
                put_be32(b, BITWISE_SREG, REG_1);
                put_be32(b, BITWISE_DREG, REG_1);
                put_be32(b, BITWISE_LEN, 1);
                put_data(b, BITWISE_MASK, &[m]);
                put_data(b, BITWISE_XOR, &[0]);
            });
            cmp(&mut self.e, NFT_CMP_EQ, &[c]);
        }
        expr(&mut self.e, "counter", |b| {
            put(b, COUNTER_BYTES, &0u64.to_be_bytes());
            put(b, COUNTER_PACKETS, &0u64.to_be_bytes());
        });
        match r.verdict {
            Verdict::Drop => immediate_verdict(&mut self.e, NF_DROP, None),
            Verdict::Accept => immediate_verdict(&mut self.e, NF_ACCEPT, None),
            Verdict::Reject(rj) => {
                let (ty, code) = match rj {
                    Reject::TcpReset => (NFT_REJECT_TCP_RST, 0),
                    Reject::Icmpx(c, _) => (NFT_REJECT_ICMPX_UNREACH, c),
                    Reject::Icmp(c, _) | Reject::Icmpv6(c, _) => (NFT_REJECT_ICMP_UNREACH, c),
                };
                expr(&mut self.e, "reject", |b| {
                    put_be32(b, REJECT_TYPE, ty);
                    put(b, REJECT_ICMP_CODE, &[code]);
                });
            }
            Verdict::Priority(class) => {
                expr(&mut self.e, "immediate", |b| {
                    put_be32(b, IMMEDIATE_DREG, REG_1);
                    put_data(b, IMMEDIATE_DATA, &class.to_ne_bytes());
                });
                expr(&mut self.e, "meta", |b| {
                    put_be32(b, META_KEY, NFT_META_PRIORITY);
                    put_be32(b, META_SREG, REG_1);
                });
            }
        }
    }
}

fn rule_msg(b: &mut Batch, chain: &str, exprs: Vec<u8>, what: String) {
    let mut a = Vec::new();
    put_str(&mut a, NFTA_RULE_TABLE, TABLE);
    put_str(&mut a, NFTA_RULE_CHAIN, chain);
    nest(&mut a, NFTA_RULE_EXPRESSIONS, |x| {
        x.extend_from_slice(&exprs)
    });
    b.push(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, what, a);
}

/// The base chains with their jumps, as [`super::render::render_table`] lays them out.
fn base_chains(table: &Table) -> Vec<(&'static str, u32, Vec<&str>)> {
    [
        ("input", NF_INET_LOCAL_IN, Direction::Input),
        ("output", NF_INET_LOCAL_OUT, Direction::Output),
    ]
    .into_iter()
    .map(|(name, hook, dir)| {
        let jumps = table
            .chains
            .iter()
            .filter(|c| c.direction == dir)
            .map(|c| c.name.as_str())
            .collect();
        (name, hook, jumps)
    })
    .filter(|(_, _, j): &(_, _, Vec<&str>)| !j.is_empty())
    .collect()
}

/// The batch of [`super::render::apply_batch`]: replaces the table atomically
/// (`NEWTABLE`, `DELTABLE`, then the whole table).
pub fn apply_batch(table: &Table, owner: &str) -> Result<Batch, FirewallError> {
    validate_owner(owner)?;
    let mut b = Batch::default();
    b.table(NFT_MSG_NEWTABLE, NLM_F_CREATE);
    b.table(NFT_MSG_DELTABLE, 0);
    b.table(NFT_MSG_NEWTABLE, NLM_F_CREATE);
    b.chain(NFT_MSG_NEWCHAIN, &owner_chain(owner), None);
    let bases = base_chains(table);
    for (name, hook, _) in &bases {
        b.chain(NFT_MSG_NEWCHAIN, name, Some(*hook));
    }
    for c in &table.chains {
        b.chain(NFT_MSG_NEWCHAIN, &c.name, None);
    }
    let mut ids = std::collections::HashMap::new();
    let mut next_id = 0u32;
    for s in &table.sets {
        next_id += 1;
        ids.insert(s.name.as_str(), next_id);
        named_set(&mut b, s, next_id);
    }
    for (name, _, jumps) in &bases {
        for j in jumps {
            let mut e = Vec::new();
            immediate_verdict(&mut e, NFT_JUMP as u32, Some(j));
            rule_msg(&mut b, name, e, format!("add rule {name} jump {j}"));
        }
    }
    for c in &table.chains {
        for (i, r) in c.rules.iter().enumerate() {
            let mut rb = RuleBuilder {
                batch: &mut b,
                ids: &ids,
                next_id: &mut next_id,
                e: Vec::new(),
            };
            rb.rule(r);
            let e = rb.e;
            rule_msg(
                &mut b,
                &c.name,
                e,
                format!("add rule {} #{}: {}", c.name, i + 1, r.text()),
            );
        }
    }
    Ok(b)
}

/// The batch of [`super::render::delete_owned_batch`]: fails as a whole (`ENOENT` on the
/// `DELCHAIN`) unless fault `owner` wrote the table.
pub fn delete_owned_batch(owner: &str) -> Result<Batch, FirewallError> {
    validate_owner(owner)?;
    let mut b = Batch::default();
    b.chain(NFT_MSG_DELCHAIN, &owner_chain(owner), None);
    b.table(NFT_MSG_DELTABLE, 0);
    Ok(b)
}

/// `add table inet faultd_probe; delete table inet faultd_probe` (doctor's kernel probe).
pub fn probe_batch() -> Batch {
    let mut b = Batch::default();
    for (kind, flags) in [(NFT_MSG_NEWTABLE, NLM_F_CREATE), (NFT_MSG_DELTABLE, 0)] {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_TABLE_NAME, "faultd_probe");
        b.msgs
            .push(Msg::nft(kind, flags, "probe table inet faultd_probe", a));
    }
    b
}

/// The batch of [`super::render::DELETE_ANY_BATCH`].
pub fn delete_any_batch() -> Batch {
    let mut b = Batch::default();
    b.table(NFT_MSG_NEWTABLE, NLM_F_CREATE);
    b.table(NFT_MSG_DELTABLE, 0);
    b
}
