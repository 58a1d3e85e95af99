//! The nfnetlink wire format faultd's batches use: constants from `linux/netfilter/nf_tables.h`
//! and `linux/netfilter/nfnetlink.h`, a netlink attribute writer, messages and batches, and the
//! hex form of the goldens (`golden/*.nlhex`).
use super::render::{PRIORITY, TABLE};

// nfnetlink
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(super) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(super) const NFNL_MSG_BATCH_END: u16 = 0x11;
pub const NFPROTO_INET: u8 = 1;
pub(super) const NFPROTO_IPV4: u8 = 2;
pub(super) const NFPROTO_IPV6: u8 = 10;

// nf_tables message types
pub const NFT_MSG_NEWTABLE: u8 = 0;
pub const NFT_MSG_GETTABLE: u8 = 1;
pub const NFT_MSG_DELTABLE: u8 = 2;
pub const NFT_MSG_NEWCHAIN: u8 = 3;
pub const NFT_MSG_GETCHAIN: u8 = 4;
pub const NFT_MSG_DELCHAIN: u8 = 5;
pub const NFT_MSG_NEWRULE: u8 = 6;
pub const NFT_MSG_GETRULE: u8 = 7;
pub const NFT_MSG_NEWSET: u8 = 9;
pub const NFT_MSG_GETSET: u8 = 10;
pub const NFT_MSG_NEWSETELEM: u8 = 12;

// netlink flags
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_APPEND: u16 = 0x800;
pub(super) const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLA_F_NESTED: u16 = 0x8000;

// attributes
pub const NFTA_TABLE_NAME: u16 = 1;
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub(super) const NFTA_CHAIN_HOOK: u16 = 4;
pub(super) const NFTA_CHAIN_POLICY: u16 = 5;
pub(super) const NFTA_CHAIN_TYPE: u16 = 7;
pub(super) const NFTA_HOOK_HOOKNUM: u16 = 1;
pub(super) const NFTA_HOOK_PRIORITY: u16 = 2;
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub(super) const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub const NFTA_SET_TABLE: u16 = 1;
pub const NFTA_SET_NAME: u16 = 2;
pub const NFTA_SET_FLAGS: u16 = 3;
pub(super) const NFTA_SET_KEY_TYPE: u16 = 4;
pub(super) const NFTA_SET_KEY_LEN: u16 = 5;
pub(super) const NFTA_SET_DESC: u16 = 9;
pub(super) const NFTA_SET_ID: u16 = 10;
pub(super) const NFTA_SET_DESC_SIZE: u16 = 1;
pub(super) const NFTA_SET_DESC_CONCAT: u16 = 2;
pub(super) const NFTA_SET_FIELD_LEN: u16 = 1;
pub(super) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(super) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(super) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(super) const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
pub(super) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(super) const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub(super) const NFTA_SET_ELEM_USERDATA: u16 = 6;
pub(super) const NFTA_SET_ELEM_KEY_END: u16 = 10;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
pub(super) const NFTA_DATA_VALUE: u16 = 1;
pub(super) const NFTA_DATA_VERDICT: u16 = 2;
pub(super) const NFTA_VERDICT_CODE: u16 = 1;
pub(super) const NFTA_VERDICT_CHAIN: u16 = 2;
pub(super) const NFTA_EXPR_NAME: u16 = 1;
pub(super) const NFTA_EXPR_DATA: u16 = 2;

// set flags and element flags
pub const NFT_SET_ANONYMOUS: u32 = 0x1;
pub(super) const NFT_SET_CONSTANT: u32 = 0x2;
pub(super) const NFT_SET_INTERVAL: u32 = 0x4;
pub(super) const NFT_SET_CONCAT: u32 = 0x80;
pub(super) const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
/// libnftnl's element userdata `NFTNL_UDATA_SET_ELEM_FLAGS` = `NFTNL_SET_ELEM_F_INTERVAL_OPEN`.
pub(super) const UDATA_INTERVAL_OPEN: [u8; 6] = [1, 4, 1, 0, 0, 0];

// nft data types (`key_type`)
pub(super) const TYPE_IPADDR: u32 = 7;
pub(super) const TYPE_IP6ADDR: u32 = 8;
pub(super) const TYPE_INET_PROTOCOL: u32 = 12;
pub(super) const TYPE_INET_SERVICE: u32 = 13;
pub(super) const TYPE_BITS: u32 = 6;

// registers, verdicts
pub(super) const REG_VERDICT: u32 = 0;
pub(super) const REG_1: u32 = 1;
pub(super) const REG_2: u32 = 2;
pub(super) const REG32_01: u32 = 9;
pub(super) const NF_DROP: u32 = 0;
pub(super) const NF_ACCEPT: u32 = 1;
pub(super) const NFT_JUMP: i32 = -3;

// hooks
pub(super) const NF_INET_PRE_ROUTING: u32 = 0;
pub(super) const NF_INET_LOCAL_IN: u32 = 1;
pub(super) const NF_INET_LOCAL_OUT_HOOK: u32 = 3;
pub(super) const NF_INET_LOCAL_OUT: u32 = 3;

// expressions
pub(super) const META_KEY: u16 = 2;
pub(super) const META_DREG: u16 = 1;
pub(super) const META_SREG: u16 = 3;
pub(super) const NFT_META_PRIORITY: u32 = 2;
pub(super) const NFT_META_MARK: u32 = 3;
pub(super) const CT_DREG: u16 = 1;
pub(super) const CT_KEY: u16 = 2;
pub(super) const CT_SREG: u16 = 4;
pub(super) const NFT_CT_MARK: u32 = 3;
pub(super) const NFT_META_IIFNAME: u32 = 6;
pub(super) const NFT_META_OIFNAME: u32 = 7;
pub(super) const NFT_META_NFPROTO: u32 = 15;
pub(super) const NFT_META_L4PROTO: u32 = 16;
pub(super) const CMP_SREG: u16 = 1;
pub(super) const CMP_OP: u16 = 2;
pub(super) const CMP_DATA: u16 = 3;
pub(super) const NFT_CMP_EQ: u32 = 0;
pub(super) const NFT_CMP_NEQ: u32 = 1;
pub(super) const NFT_CMP_LTE: u32 = 3;
pub(super) const NFT_CMP_GTE: u32 = 5;
pub(super) const PAYLOAD_DREG: u16 = 1;
pub(super) const PAYLOAD_BASE: u16 = 2;
pub(super) const PAYLOAD_OFFSET: u16 = 3;
pub(super) const PAYLOAD_LEN: u16 = 4;
pub(super) const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub(super) const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
pub(super) const LOOKUP_SET: u16 = 1;
pub(super) const LOOKUP_SREG: u16 = 2;
pub(super) const LOOKUP_SET_ID: u16 = 4;
pub(super) const BITWISE_SREG: u16 = 1;
pub(super) const BITWISE_DREG: u16 = 2;
pub(super) const BITWISE_LEN: u16 = 3;
pub(super) const BITWISE_MASK: u16 = 4;
pub(super) const BITWISE_XOR: u16 = 5;
pub(super) const IMMEDIATE_DREG: u16 = 1;
pub(super) const IMMEDIATE_DATA: u16 = 2;
pub(super) const COUNTER_BYTES: u16 = 1;
pub(super) const COUNTER_PACKETS: u16 = 2;
pub(super) const TPROXY_FAMILY: u16 = 1;
pub(super) const TPROXY_REG_PORT: u16 = 3;
pub(super) const REJECT_TYPE: u16 = 1;
pub(super) const REJECT_ICMP_CODE: u16 = 2;
pub(super) const NFT_REJECT_ICMP_UNREACH: u32 = 0;
pub(super) const NFT_REJECT_TCP_RST: u32 = 1;
pub(super) const NFT_REJECT_ICMPX_UNREACH: u32 = 2;

/// Elements per `NEWSETELEM` message: keeps the element list nest below 64 KiB.
pub(super) const ELEMS_PER_MSG: usize = 512;

// ----- attribute writer -----

pub(super) fn put(b: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    let len16 = u16::try_from(len).expect("attribute below 64 KiB");
    b.extend_from_slice(&len16.to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(payload);
    b.resize(b.len() + (len.next_multiple_of(4) - len), 0);
}

pub(super) fn put_str(b: &mut Vec<u8>, ty: u16, s: &str) {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    put(b, ty, &v);
}

pub(super) fn put_be32(b: &mut Vec<u8>, ty: u16, v: u32) {
    put(b, ty, &v.to_be_bytes());
}

pub(super) fn nest(b: &mut Vec<u8>, ty: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = b.len();
    b.extend_from_slice(&[0; 4]);
    f(b);
    let len = u16::try_from(b.len() - start).expect("nest below 64 KiB");
    b[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    b[start + 2..start + 4].copy_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
}

pub(super) fn put_data(b: &mut Vec<u8>, ty: u16, value: &[u8]) {
    nest(b, ty, |b| put(b, NFTA_DATA_VALUE, value));
}

// ----- messages -----

/// One message of a batch: header fields, attributes, and what it is (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub ty: u16,
    pub flags: u16,
    pub family: u8,
    pub res_id: u16,
    pub attrs: Vec<u8>,
    pub what: String,
}

impl Msg {
    pub fn nft(kind: u8, flags: u16, what: impl Into<String>, attrs: Vec<u8>) -> Msg {
        Msg {
            ty: (NFNL_SUBSYS_NFTABLES << 8) | u16::from(kind),
            flags: flags | NLM_F_REQUEST,
            family: NFPROTO_INET,
            res_id: 0,
            attrs,
            what: what.into(),
        }
    }

    pub(super) fn control(ty: u16, what: &str) -> Msg {
        Msg {
            ty,
            flags: NLM_F_REQUEST,
            family: 0, // AF_UNSPEC
            res_id: NFNL_SUBSYS_NFTABLES,
            attrs: Vec::new(),
            what: what.into(),
        }
    }

    /// Appends the message (`nlmsghdr` + `nfgenmsg` + attributes) with sequence number `seq`.
    pub fn write(&self, out: &mut Vec<u8>, seq: u32) {
        let len = 16 + 4 + self.attrs.len();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&self.ty.to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.push(self.family);
        out.push(0); // NFNETLINK_V0
        out.extend_from_slice(&self.res_id.to_be_bytes());
        out.extend_from_slice(&self.attrs);
    }
}

/// One nf_tables transaction: `BATCH_BEGIN`, the messages, `BATCH_END`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub msgs: Vec<Msg>,
}

impl Batch {
    /// The attributes' bytes of all messages: what the kernel has to parse and build.
    pub fn payload_len(&self) -> usize {
        self.msgs.iter().map(|m| m.attrs.len()).sum()
    }

    /// The whole batch with sequence numbers `first..`; message `i` has `first + i`.
    pub fn bytes(&self, first: u32) -> Vec<u8> {
        let mut out = Vec::new();
        Msg::control(NFNL_MSG_BATCH_BEGIN, "batch begin").write(&mut out, first);
        for (i, m) in self.msgs.iter().enumerate() {
            m.write(&mut out, first.wrapping_add(1 + i as u32));
        }
        Msg::control(NFNL_MSG_BATCH_END, "batch end")
            .write(&mut out, first.wrapping_add(1 + self.msgs.len() as u32));
        out
    }

    /// What the message with sequence number `seq` of a batch sent with `first` was.
    pub fn what(&self, first: u32, seq: u32) -> &str {
        match seq.wrapping_sub(first) {
            0 => "batch begin",
            i if (i as usize) <= self.msgs.len() => &self.msgs[i as usize - 1].what,
            _ => "batch end",
        }
    }

    pub(super) fn push(&mut self, kind: u8, flags: u16, what: impl Into<String>, attrs: Vec<u8>) {
        self.msgs.push(Msg::nft(kind, flags, what, attrs));
    }

    pub(super) fn table(&mut self, kind: u8, flags: u16) {
        self.table_named(TABLE, kind, flags);
    }

    /// `add table inet <name>` / `delete table inet <name>`.
    pub(super) fn table_named(&mut self, name: &str, kind: u8, flags: u16) {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_TABLE_NAME, name);
        let verb = if kind == NFT_MSG_DELTABLE {
            "delete"
        } else {
            "add"
        };
        self.push(kind, flags, format!("{verb} table inet {name}"), a);
    }

    pub(super) fn chain(&mut self, kind: u8, name: &str, hook: Option<u32>) {
        self.chain_in(TABLE, kind, name, hook.map(|h| (h, PRIORITY, "filter")));
    }

    /// A chain of table `table`; a base chain with `hook` = (hook number, priority, type).
    pub(super) fn chain_in(
        &mut self,
        table: &str,
        kind: u8,
        name: &str,
        hook: Option<(u32, i32, &str)>,
    ) {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_CHAIN_TABLE, table);
        put_str(&mut a, NFTA_CHAIN_NAME, name);
        if let Some((hooknum, priority, chain_type)) = hook {
            nest(&mut a, NFTA_CHAIN_HOOK, |a| {
                put_be32(a, NFTA_HOOK_HOOKNUM, hooknum);
                put_be32(a, NFTA_HOOK_PRIORITY, priority as u32);
            });
            put_be32(&mut a, NFTA_CHAIN_POLICY, NF_ACCEPT);
            put_str(&mut a, NFTA_CHAIN_TYPE, chain_type);
        }
        let (flags, verb) = if kind == NFT_MSG_DELCHAIN {
            (0, "delete")
        } else {
            (NLM_F_CREATE, "add")
        };
        self.push(kind, flags, format!("{verb} chain {name}"), a);
    }
}

/// Hex dump of a batch for the goldens: one message per line.
pub fn hex_lines(batch: &Batch) -> String {
    let mut out = String::new();
    let mut write = |m: &Msg, seq: u32| {
        let mut v = Vec::new();
        m.write(&mut v, seq);
        out.push_str(&format!("# {}\n", m.what));
        for b in v {
            out.push_str(&format!("{b:02x}"));
        }
        out.push('\n');
    };
    write(&Msg::control(NFNL_MSG_BATCH_BEGIN, "batch begin"), 1);
    for (i, m) in batch.msgs.iter().enumerate() {
        write(m, 2 + i as u32);
    }
    write(
        &Msg::control(NFNL_MSG_BATCH_END, "batch end"),
        2 + batch.msgs.len() as u32,
    );
    out
}

/// Parses [`hex_lines`] back into a batch (the host tier loads the goldens with it).
pub fn from_hex_lines(text: &str) -> Result<Batch, String> {
    let mut msgs = Vec::new();
    let mut what = String::new();
    for line in text.lines() {
        if let Some(w) = line.strip_prefix("# ") {
            what = w.to_string();
            continue;
        }
        let bytes = (0..line.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(line.get(i..i + 2).unwrap_or("x"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| format!("{what}: {e}"))?;
        if bytes.len() < 20 {
            return Err(format!("{what}: message of {} bytes", bytes.len()));
        }
        let ty = u16::from_ne_bytes([bytes[4], bytes[5]]);
        if ty == NFNL_MSG_BATCH_BEGIN || ty == NFNL_MSG_BATCH_END {
            continue;
        }
        msgs.push(Msg {
            ty,
            flags: u16::from_ne_bytes([bytes[6], bytes[7]]),
            family: bytes[16],
            res_id: u16::from_be_bytes([bytes[18], bytes[19]]),
            attrs: bytes[20..].to_vec(),
            what: std::mem::take(&mut what),
        });
    }
    Ok(Batch { msgs })
}
