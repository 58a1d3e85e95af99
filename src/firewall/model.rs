//! The desired state of one network namespace (upstream's ipsets and chains, as the controller
//! sends them) and its validation into a [`Table`]: the nft sets and chains faultd renders.
//!
//! Everything a request carries is checked here before any of it can reach nft's input: names
//! against a small charset, addresses parsed as `IpAddr/prefix`, ports as numbers, TCP flags,
//! protocols and targets against fixed lists, devices as interface names. The rendered text
//! only ever contains values re-printed from the parsed form (numbers, addresses, names that
//! passed the charset check), never the request's own bytes otherwise.
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::FirewallError;

/// ipset names: the kernel's limit is 31 bytes (`IPSET_MAXNAMELEN` minus the NUL).
pub const MAX_IPSET_NAME: usize = 31;
/// iptables chain names: 28 bytes (`XT_EXTENSION_MAXNAMELEN` minus the NUL).
pub const MAX_CHAIN_NAME: usize = 28;
/// Linux interface names: 15 bytes (`IFNAMSIZ` minus the NUL).
pub const MAX_DEVICE: usize = 15;
/// Upper bounds that keep one batch reasonable (upstream has none).
pub const MAX_IPSETS: usize = 1024;
pub const MAX_CHAINS: usize = 1024;
pub const MAX_ELEMENTS: usize = 65_536;
pub const MAX_REFS: usize = 64;
/// iptables' multiport limit.
pub const MAX_PORT_ITEMS: usize = 15;
/// The device upstream uses when `device` is empty.
pub const DEFAULT_DEVICE: &str = "eth0";

/// One `pb.CidrAndPort`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CidrAndPort {
    pub cidr: String,
    pub port: u32,
}

/// One `pb.IPSet`, as the server layer decoded it. `set_type` is `hash:net` (`cidrs`),
/// `hash:net,port` (`cidr_and_ports`) or `list:set` (`set_names`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpSet {
    pub name: String,
    #[serde(rename = "type")]
    pub set_type: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidr_and_ports: Vec<CidrAndPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_names: Vec<String>,
}

/// `pb.Chain.Direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Input,
    Output,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Input => "INPUT",
            Direction::Output => "OUTPUT",
        }
    }
}

/// One `pb.Chain`, as the server layer decoded it. The string fields use iptables syntax, as
/// upstream splices them into an iptables command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub name: String,
    pub direction: Direction,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipsets: Vec<String>,
    pub target: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_ports: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination_ports: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tcp_flags: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
}

/// What one RPC replaces: `FlushIPSets` carries every ipset of the pod, `SetIptablesChains`
/// every chain.
#[derive(Debug, Clone)]
pub enum Part {
    Sets(Vec<IpSet>),
    Chains(Vec<Chain>),
}

/// Everything faultd keeps in one network namespace: the last ipsets and the last chains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    #[serde(default)]
    pub sets: Vec<IpSet>,
    #[serde(default)]
    pub chains: Vec<Chain>,
}

impl DesiredState {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty() && self.chains.is_empty()
    }

    /// This state with `part` replaced.
    pub fn with(&self, part: Part) -> DesiredState {
        match part {
            Part::Sets(sets) => DesiredState {
                sets,
                chains: self.chains.clone(),
            },
            Part::Chains(chains) => DesiredState {
                sets: self.sets.clone(),
                chains,
            },
        }
    }
}

// ----- the compiled form -----

/// Which kind of nft set one ipset becomes (nft sets hold one address family and one key type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetKind {
    /// `hash:net`, IPv4 networks.
    Net4,
    /// `hash:net`, IPv6 networks.
    Net6,
    /// `hash:net,port`, IPv4 network . TCP port.
    NetPort4,
    /// `hash:net,port`, IPv6 network . TCP port.
    NetPort6,
}

impl SetKind {
    pub const ALL: [SetKind; 4] = [
        SetKind::Net4,
        SetKind::Net6,
        SetKind::NetPort4,
        SetKind::NetPort6,
    ];

    /// nft name prefix: every nft name faultd writes starts with a fixed ASCII word, so no
    /// request name can collide with an nft keyword or look like a number or address.
    pub fn prefix(self) -> &'static str {
        match self {
            SetKind::Net4 => "v4_",
            SetKind::Net6 => "v6_",
            SetKind::NetPort4 => "v4port_",
            SetKind::NetPort6 => "v6port_",
        }
    }

    pub fn nft_type(self) -> &'static str {
        match self {
            SetKind::Net4 => "ipv4_addr",
            SetKind::Net6 => "ipv6_addr",
            SetKind::NetPort4 => "ipv4_addr . inet_service",
            SetKind::NetPort6 => "ipv6_addr . inet_service",
        }
    }

    pub fn family(self) -> Family {
        match self {
            SetKind::Net4 | SetKind::NetPort4 => Family::V4,
            SetKind::Net6 | SetKind::NetPort6 => Family::V6,
        }
    }

    fn has_port(self) -> bool {
        matches!(self, SetKind::NetPort4 | SetKind::NetPort6)
    }
}

/// The address family a rule is restricted to (by its set match), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
    Any,
}

/// A named nft set with its elements, already in nft syntax and in canonical order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftSet {
    pub name: String,
    pub kind: SetKind,
    pub elements: Vec<String>,
}

/// A regular nft chain jumped to from the `input` or `output` base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftChain {
    pub name: String,
    pub direction: Direction,
    pub rules: Vec<String>,
}

/// The whole `table inet faultd`, minus its owner marker (see [`super::render`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub sets: Vec<NftSet>,
    /// In request order: the order of the jumps in the base chains, as upstream's order of
    /// `-A CHAOS-INPUT -j <chain>`.
    pub chains: Vec<NftChain>,
}

impl Table {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty() && self.chains.is_empty()
    }
}

/// The nft name of a request chain.
pub fn nft_chain_name(name: &str) -> String {
    format!("c_{name}")
}

/// The nft name of one kind of an ipset.
pub fn nft_set_name(kind: SetKind, name: &str) -> String {
    format!("{}{name}", kind.prefix())
}

// ----- validation helpers -----

fn shown(v: &str) -> String {
    let mut s: String = v.chars().take(64).collect();
    if s.len() < v.len() {
        s.push('…');
    }
    format!("{s:?}")
}

fn invalid(field: impl Into<String>, value: &str, reason: impl Into<String>) -> FirewallError {
    FirewallError::Invalid {
        field: field.into(),
        value: shown(value),
        reason: reason.into(),
    }
}

/// ipset names: 1-31 bytes of `[A-Za-z0-9_.-]`.
pub fn validate_ipset_name(field: &str, name: &str) -> Result<(), FirewallError> {
    if name.is_empty() || name.len() > MAX_IPSET_NAME || !name.bytes().all(name_byte) {
        return Err(invalid(
            field,
            name,
            format!("an ipset name is 1-{MAX_IPSET_NAME} characters of A-Z a-z 0-9 _ . -"),
        ));
    }
    Ok(())
}

/// Chain names: 1-28 bytes of `[A-Za-z0-9_.-/]` (the controller sends `INPUT/<hash>`).
pub fn validate_chain_name(field: &str, name: &str) -> Result<(), FirewallError> {
    if name.is_empty()
        || name.len() > MAX_CHAIN_NAME
        || !name.bytes().all(|b| name_byte(b) || b == b'/')
    {
        return Err(invalid(
            field,
            name,
            format!("a chain name is 1-{MAX_CHAIN_NAME} characters of A-Z a-z 0-9 _ . - /"),
        ));
    }
    Ok(())
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Interface names as faultd accepts them: 1-15 bytes of `[A-Za-z0-9_.-]`, not `.` or `..`.
/// (Linux allows more, such as quotes; faultd does not put those in a ruleset.)
pub fn validate_device(field: &str, dev: &str) -> Result<(), FirewallError> {
    if dev.is_empty()
        || dev.len() > MAX_DEVICE
        || dev == "."
        || dev == ".."
        || !dev.bytes().all(name_byte)
    {
        return Err(invalid(
            field,
            dev,
            format!("an interface name is 1-{MAX_DEVICE} characters of A-Z a-z 0-9 _ . -"),
        ));
    }
    Ok(())
}

/// A network: address with host bits cleared, and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Net {
    bits: u128,
    prefix: u8,
    v6: bool,
}

impl Net {
    fn width(self) -> u8 {
        if self.v6 {
            128
        } else {
            32
        }
    }

    fn contains(self, other: Net) -> bool {
        self.v6 == other.v6
            && self.prefix <= other.prefix
            && other.bits & mask(self.prefix, self.width()) == self.bits
    }

    fn render(self) -> String {
        let addr: IpAddr = if self.v6 {
            IpAddr::V6(self.bits.into())
        } else {
            IpAddr::V4((self.bits as u32).into())
        };
        if self.prefix == self.width() {
            addr.to_string()
        } else {
            format!("{addr}/{}", self.prefix)
        }
    }
}

fn mask(prefix: u8, width: u8) -> u128 {
    let full: u128 = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    if prefix == 0 {
        0
    } else {
        (full << (width - prefix)) & full
    }
}

/// `a.b.c.d`, `a.b.c.d/n`, an IPv6 address or `addr/n`; host bits are cleared like ipset does.
fn parse_cidr(field: &str, s: &str) -> Result<Net, FirewallError> {
    let bad = |why: &str| invalid(field, s, why);
    if s.is_empty() || s.len() > 64 || !s.is_ascii() {
        return Err(bad(
            "expected an IP address or CIDR (a.b.c.d/n or an IPv6 prefix)",
        ));
    }
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad("not an IP address or CIDR"))?;
    let (bits, width, v6) = match ip {
        IpAddr::V4(a) => (u32::from(a) as u128, 32u8, false),
        IpAddr::V6(a) => (u128::from(a), 128u8, true),
    };
    let prefix = match prefix {
        None => width,
        Some(p) => {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("the prefix length must be a number"));
            }
            let n: u8 = p.parse().map_err(|_| bad("prefix length out of range"))?;
            if n > width {
                return Err(bad(&format!(
                    "prefix length {n} is longer than the {width}-bit address"
                )));
            }
            n
        }
    };
    Ok(Net {
        bits: bits & mask(prefix, width),
        prefix,
        v6,
    })
}

/// Sorts and drops networks covered by another one (nft interval sets refuse overlaps; CIDRs
/// either nest or are disjoint, so this leaves disjoint intervals).
fn normalize_nets(mut nets: Vec<Net>) -> Vec<Net> {
    nets.sort();
    nets.dedup();
    let mut out: Vec<Net> = Vec::with_capacity(nets.len());
    for n in nets {
        if out.last().is_some_and(|last| last.contains(n)) {
            continue;
        }
        out.push(n);
    }
    out
}

/// The same for `(network, port)` pairs: overlap only matters between equal ports.
fn normalize_net_ports(pairs: Vec<(Net, u16)>) -> Vec<(Net, u16)> {
    let mut by_port: HashMap<u16, Vec<Net>> = HashMap::new();
    for (n, p) in pairs {
        by_port.entry(p).or_default().push(n);
    }
    let mut out: Vec<(Net, u16)> = by_port
        .into_iter()
        .flat_map(|(p, nets)| normalize_nets(nets).into_iter().map(move |n| (n, p)))
        .collect();
    out.sort();
    out
}

/// One port item: a number 1-65535.
fn parse_port(field: &str, whole: &str, s: &str) -> Result<u16, FirewallError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            field,
            whole,
            "ports are numbers 1-65535 (service names are not accepted)",
        ));
    }
    match s.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(invalid(field, whole, "ports are 1-65535")),
    }
}

/// iptables port syntax: `80`, `80:90`, `:1024` (1-1024), `1024:` (1024-65535), or a comma list
/// of those (multiport, at most 15 items). Returns merged, sorted ranges.
pub fn parse_ports(field: &str, s: &str) -> Result<Vec<(u16, u16)>, FirewallError> {
    let items: Vec<&str> = s.split(',').collect();
    if items.len() > MAX_PORT_ITEMS {
        return Err(invalid(
            field,
            s,
            format!("at most {MAX_PORT_ITEMS} ports or ranges (iptables multiport)"),
        ));
    }
    let mut ranges = Vec::with_capacity(items.len());
    for item in items {
        let r = match item.split_once(':') {
            None => {
                let p = parse_port(field, s, item)?;
                (p, p)
            }
            Some((a, b)) => {
                let lo = if a.is_empty() {
                    1
                } else {
                    parse_port(field, s, a)?
                };
                let hi = if b.is_empty() {
                    65535
                } else {
                    parse_port(field, s, b)?
                };
                if a.is_empty() && b.is_empty() {
                    return Err(invalid(field, s, "empty port range"));
                }
                if lo > hi {
                    return Err(invalid(
                        field,
                        s,
                        format!("port range {lo}:{hi} is reversed"),
                    ));
                }
                (lo, hi)
            }
        };
        ranges.push(r);
    }
    ranges.sort();
    let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo as u32 <= last.1 as u32 + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    Ok(merged)
}

/// TCP flags in nft's order with their iptables names.
const TCP_FLAGS: [(&str, &str, u8); 6] = [
    ("FIN", "fin", 0x01),
    ("SYN", "syn", 0x02),
    ("RST", "rst", 0x04),
    ("PSH", "psh", 0x08),
    ("ACK", "ack", 0x10),
    ("URG", "urg", 0x20),
];

fn parse_flag_list(field: &str, whole: &str, s: &str) -> Result<u8, FirewallError> {
    let mut bits = 0u8;
    for name in s.split(',') {
        let upper = name.to_ascii_uppercase();
        bits |= match upper.as_str() {
            "ALL" => 0x3f,
            "NONE" => 0,
            _ => TCP_FLAGS
                .iter()
                .find(|(n, _, _)| *n == upper)
                .map(|(_, _, b)| *b)
                .ok_or_else(|| {
                    invalid(
                        field,
                        whole,
                        "TCP flags are SYN ACK FIN RST URG PSH ALL NONE, comma separated",
                    )
                })?,
        };
    }
    Ok(bits)
}

/// iptables `--tcp-flags` syntax: `MASK COMP`, e.g. `SYN,ACK SYN`.
pub fn parse_tcp_flags(field: &str, s: &str) -> Result<(u8, u8), FirewallError> {
    let parts: Vec<&str> = s.split(' ').filter(|p| !p.is_empty()).collect();
    if parts.len() != 2 || !s.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(invalid(
            field,
            s,
            "expected \"MASK COMP\", two comma lists of TCP flags (e.g. \"SYN,ACK SYN\")",
        ));
    }
    let m = parse_flag_list(field, s, parts[0])?;
    let c = parse_flag_list(field, s, parts[1])?;
    if c & !m != 0 {
        return Err(invalid(
            field,
            s,
            "the flags that must be set are not all in the mask, so the rule could never match",
        ));
    }
    Ok((m, c))
}

fn render_flags(bits: u8) -> String {
    let names: Vec<&str> = TCP_FLAGS
        .iter()
        .filter(|(_, _, b)| bits & b != 0)
        .map(|(_, n, _)| *n)
        .collect();
    match names.len() {
        0 => "0x0".into(),
        1 => names[0].into(),
        _ => format!("({})", names.join(" | ")),
    }
}

/// `pb.Chain.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
}

/// `""` and `all` mean any protocol, like iptables' `-p all`.
pub fn parse_protocol(field: &str, s: &str) -> Result<Option<Protocol>, FirewallError> {
    match s.to_ascii_lowercase().as_str() {
        "" | "all" => Ok(None),
        "tcp" => Ok(Some(Protocol::Tcp)),
        "udp" => Ok(Some(Protocol::Udp)),
        "icmp" => Ok(Some(Protocol::Icmp)),
        _ => Err(invalid(field, s, "the protocol is tcp, udp, icmp or all")),
    }
}

/// What `REJECT --reject-with X` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectWith {
    TcpReset,
    PortUnreachable,
    HostUnreachable,
    NetUnreachable,
    ProtoUnreachable,
    NetProhibited,
    HostProhibited,
    AdminProhibited,
}

/// A chain target. Anything not on this list is refused: upstream splices the target into an
/// iptables command line, faultd maps each allowed one to an nft verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Drop,
    Accept,
    Reject(RejectWith),
}

/// `DROP`, `ACCEPT`, `REJECT` or `REJECT --reject-with <type>` with iptables' IPv4 types and
/// their abbreviations.
pub fn parse_target(field: &str, s: &str) -> Result<Target, FirewallError> {
    let bad = || {
        invalid(
            field,
            s,
            "the target is DROP, ACCEPT, REJECT or REJECT --reject-with tcp-reset|icmp-port-unreachable|icmp-host-unreachable|icmp-net-unreachable|icmp-proto-unreachable|icmp-net-prohibited|icmp-host-prohibited|icmp-admin-prohibited",
        )
    };
    if !s.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(bad());
    }
    let words: Vec<&str> = s.split(' ').filter(|w| !w.is_empty()).collect();
    let with = match words.as_slice() {
        ["DROP"] => return Ok(Target::Drop),
        ["ACCEPT"] => return Ok(Target::Accept),
        ["REJECT"] => return Ok(Target::Reject(RejectWith::PortUnreachable)),
        ["REJECT", "--reject-with", w] => *w,
        _ => return Err(bad()),
    };
    let r = match with {
        "tcp-reset" | "tcp-rst" => RejectWith::TcpReset,
        "icmp-port-unreachable" | "port-unreach" => RejectWith::PortUnreachable,
        "icmp-host-unreachable" | "host-unreach" => RejectWith::HostUnreachable,
        "icmp-net-unreachable" | "net-unreach" => RejectWith::NetUnreachable,
        "icmp-proto-unreachable" | "proto-unreach" => RejectWith::ProtoUnreachable,
        "icmp-net-prohibited" | "net-prohib" => RejectWith::NetProhibited,
        "icmp-host-prohibited" | "host-prohib" => RejectWith::HostProhibited,
        "icmp-admin-prohibited" | "admin-prohib" => RejectWith::AdminProhibited,
        _ => return Err(bad()),
    };
    Ok(Target::Reject(r))
}

/// The nft verdicts for `target` on a rule restricted to `family`: one, or two with a
/// `meta nfproto` prefix when the ICMP type differs between IPv4 and IPv6 and the rule is not
/// restricted to one family.
fn verdicts(target: Target, family: Family) -> Vec<(Option<&'static str>, String)> {
    let icmpx = |t: &str| vec![(None, format!("reject with icmpx type {t}"))];
    let split = |v4: &str, v6: &str| match family {
        Family::V4 => vec![(None, format!("reject with icmp type {v4}"))],
        Family::V6 => vec![(None, format!("reject with icmpv6 type {v6}"))],
        Family::Any => vec![
            (
                Some("meta nfproto ipv4"),
                format!("reject with icmp type {v4}"),
            ),
            (
                Some("meta nfproto ipv6"),
                format!("reject with icmpv6 type {v6}"),
            ),
        ],
    };
    match target {
        Target::Drop => vec![(None, "drop".into())],
        Target::Accept => vec![(None, "accept".into())],
        Target::Reject(r) => match r {
            RejectWith::TcpReset => vec![(None, "reject with tcp reset".into())],
            RejectWith::PortUnreachable => icmpx("port-unreachable"),
            RejectWith::HostUnreachable => icmpx("host-unreachable"),
            RejectWith::NetUnreachable => icmpx("no-route"),
            RejectWith::AdminProhibited => icmpx("admin-prohibited"),
            // ICMPv6 has no "protocol unreachable" destination-unreachable code.
            RejectWith::ProtoUnreachable => split("prot-unreachable", "port-unreachable"),
            RejectWith::NetProhibited => split("net-prohibited", "admin-prohibited"),
            RejectWith::HostProhibited => split("host-prohibited", "admin-prohibited"),
        },
    }
}

/// An ipset after validation and `list:set` flattening.
#[derive(Debug, Default)]
struct Resolved {
    nets: Vec<Net>,
    net_ports: Vec<(Net, u16)>,
}

impl Resolved {
    fn elements(&self, kind: SetKind) -> Vec<String> {
        let v6 = kind.family() == Family::V6;
        if kind.has_port() {
            normalize_net_ports(
                self.net_ports
                    .iter()
                    .filter(|(n, _)| n.v6 == v6)
                    .copied()
                    .collect(),
            )
            .into_iter()
            .map(|(n, p)| format!("{} . {p}", n.render()))
            .collect()
        } else {
            normalize_nets(self.nets.iter().filter(|n| n.v6 == v6).copied().collect())
                .into_iter()
                .map(Net::render)
                .collect()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetType {
    Net,
    NetPort,
    List,
}

fn compile_sets(sets: &[IpSet]) -> Result<Vec<(String, Resolved)>, FirewallError> {
    if sets.len() > MAX_IPSETS {
        return Err(invalid(
            "ipsets",
            &sets.len().to_string(),
            format!("at most {MAX_IPSETS} ipsets"),
        ));
    }
    let mut types: HashMap<&str, SetType> = HashMap::new();
    for (i, s) in sets.iter().enumerate() {
        validate_ipset_name(&format!("ipsets[{i}].name"), &s.name)?;
        let field = |f: &str| format!("ipsets[{i}] ({}).{f}", s.name);
        let t = match s.set_type.as_str() {
            "hash:net" => SetType::Net,
            "hash:net,port" => SetType::NetPort,
            "list:set" => SetType::List,
            other => {
                return Err(invalid(
                    field("type"),
                    other,
                    "the ipset type is hash:net, hash:net,port or list:set",
                ))
            }
        };
        let (wrong, which) = match t {
            SetType::Net => (
                !s.cidr_and_ports.is_empty() || !s.set_names.is_empty(),
                "cidrs",
            ),
            SetType::NetPort => (
                !s.cidrs.is_empty() || !s.set_names.is_empty(),
                "cidr_and_ports",
            ),
            SetType::List => (
                !s.cidrs.is_empty() || !s.cidr_and_ports.is_empty(),
                "set_names",
            ),
        };
        if wrong {
            return Err(invalid(
                field("type"),
                &s.set_type,
                format!("a {} ipset carries only {which}", s.set_type),
            ));
        }
        let n = s.cidrs.len() + s.cidr_and_ports.len();
        if n > MAX_ELEMENTS || s.set_names.len() > MAX_REFS {
            return Err(invalid(
                field("elements"),
                &n.max(s.set_names.len()).to_string(),
                format!("at most {MAX_ELEMENTS} entries and {MAX_REFS} member sets per ipset"),
            ));
        }
        if types.insert(&s.name, t).is_some() {
            return Err(invalid(
                format!("ipsets[{i}].name"),
                &s.name,
                "the ipset name appears twice",
            ));
        }
    }
    let mut resolved: HashMap<&str, Resolved> = HashMap::new();
    for (i, s) in sets.iter().enumerate() {
        let mut r = Resolved::default();
        for (j, c) in s.cidrs.iter().enumerate() {
            r.nets.push(parse_cidr(
                &format!("ipsets[{i}] ({}).cidrs[{j}]", s.name),
                c,
            )?);
        }
        for (j, cp) in s.cidr_and_ports.iter().enumerate() {
            let field = format!("ipsets[{i}] ({}).cidr_and_ports[{j}]", s.name);
            let net = parse_cidr(&field, &cp.cidr)?;
            let port = u16::try_from(cp.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid(&field, &cp.port.to_string(), "ports are 1-65535"))?;
            r.net_ports.push((net, port));
        }
        resolved.insert(&s.name, r);
    }
    // list:set: the union of its members, which must be hash:net or hash:net,port sets of the
    // same request (ipset refuses a list:set inside a list:set).
    for (i, s) in sets.iter().enumerate() {
        if types[s.name.as_str()] != SetType::List {
            continue;
        }
        let mut r = Resolved::default();
        for (j, m) in s.set_names.iter().enumerate() {
            let field = format!("ipsets[{i}] ({}).set_names[{j}]", s.name);
            validate_ipset_name(&field, m)?;
            match types.get(m.as_str()) {
                None => {
                    return Err(invalid(
                        field,
                        m,
                        "a list:set member must be another ipset of the same request",
                    ))
                }
                Some(SetType::List) => {
                    return Err(invalid(
                        field,
                        m,
                        "a list:set cannot contain another list:set",
                    ))
                }
                Some(_) => {
                    let member = &resolved[m.as_str()];
                    r.nets.extend_from_slice(&member.nets);
                    r.net_ports.extend_from_slice(&member.net_ports);
                }
            }
        }
        resolved.insert(&s.name, r);
    }
    Ok(sets
        .iter()
        .map(|s| {
            let r = resolved.remove(s.name.as_str()).unwrap_or_default();
            (s.name.clone(), r)
        })
        .collect())
}

/// A chain after validation.
#[derive(Debug)]
struct ValidChain<'a> {
    chain: &'a Chain,
    device: &'a str,
    target: Target,
    protocol: Option<Protocol>,
    sports: Option<Vec<(u16, u16)>>,
    dports: Option<Vec<(u16, u16)>>,
    flags: Option<(u8, u8)>,
}

fn validate_chain<'a>(i: usize, c: &'a Chain) -> Result<ValidChain<'a>, FirewallError> {
    validate_chain_name(&format!("chains[{i}].name"), &c.name)?;
    let field = |f: &str| format!("chains[{i}] ({}).{f}", c.name);
    let device = if c.device.is_empty() {
        DEFAULT_DEVICE
    } else {
        c.device.as_str()
    };
    validate_device(&field("device"), device)?;
    if c.ipsets.len() > MAX_REFS {
        return Err(invalid(
            field("ipsets"),
            &c.ipsets.len().to_string(),
            format!("at most {MAX_REFS} ipsets per chain"),
        ));
    }
    for (j, s) in c.ipsets.iter().enumerate() {
        validate_ipset_name(&field(&format!("ipsets[{j}]")), s)?;
    }
    let target = parse_target(&field("target"), &c.target)?;
    let protocol = parse_protocol(&field("protocol"), &c.protocol)?;
    let ports = |f: &str, s: &str| -> Result<Option<Vec<(u16, u16)>>, FirewallError> {
        if s.is_empty() {
            return Ok(None);
        }
        if !matches!(protocol, Some(Protocol::Tcp | Protocol::Udp)) {
            return Err(invalid(
                field(f),
                s,
                "ports need protocol tcp or udp (iptables refuses --sport/--dport without -p)",
            ));
        }
        parse_ports(&field(f), s).map(Some)
    };
    let sports = ports("source_ports", &c.source_ports)?;
    let dports = ports("destination_ports", &c.destination_ports)?;
    let flags = if c.tcp_flags.is_empty() {
        None
    } else if protocol != Some(Protocol::Tcp) {
        return Err(invalid(
            field("tcp_flags"),
            &c.tcp_flags,
            "TCP flags need protocol tcp",
        ));
    } else {
        Some(parse_tcp_flags(&field("tcp_flags"), &c.tcp_flags)?)
    };
    if target == Target::Reject(RejectWith::TcpReset) && protocol != Some(Protocol::Tcp) {
        return Err(invalid(
            field("target"),
            &c.target,
            "REJECT --reject-with tcp-reset needs protocol tcp (as in iptables)",
        ));
    }
    Ok(ValidChain {
        chain: c,
        device,
        target,
        protocol,
        sports,
        dports,
        flags,
    })
}

fn render_ports(ranges: &[(u16, u16)]) -> String {
    let item = |(lo, hi): &(u16, u16)| {
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        }
    };
    match ranges {
        [one] => item(one),
        many => format!(
            "{{ {} }}",
            many.iter().map(item).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The rules of one chain. Upstream writes one iptables rule per ipset
/// (`-i|-o <device> -m set --match-set <ipset> src,dst|dst,dst ... -j <target>`), or one rule
/// without `-m set` when the chain names no ipset. Here each ipset becomes one rule per
/// non-empty nft set it was split into; an ipset the state does not contain (removed by a later
/// `FlushIPSets`, see [`super::set_firewall`]) matches nothing, so it contributes no rule.
fn chain_rules(vc: &ValidChain, sets: &HashMap<&str, Vec<(SetKind, String)>>) -> Vec<String> {
    let c = vc.chain;
    let (iface, addr) = match c.direction {
        Direction::Input => (format!("iifname \"{}\"", vc.device), "saddr"),
        Direction::Output => (format!("oifname \"{}\"", vc.device), "daddr"),
    };
    let mut matches: Vec<String> = Vec::new();
    let proto = vc.protocol.map(|p| match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
    });
    match vc.protocol {
        Some(Protocol::Icmp) => matches.push("meta l4proto { icmp, ipv6-icmp }".into()),
        Some(_) => matches.push(format!("meta l4proto {}", proto.unwrap_or_default())),
        None => {}
    }
    if let (Some(p), Some(r)) = (proto, &vc.sports) {
        matches.push(format!("{p} sport {}", render_ports(r)));
    }
    if let (Some(p), Some(r)) = (proto, &vc.dports) {
        matches.push(format!("{p} dport {}", render_ports(r)));
    }
    if let Some((m, cmp)) = vc.flags {
        if m != 0 {
            matches.push(format!(
                "tcp flags & {} == {}",
                render_flags(m),
                render_flags(cmp)
            ));
        }
    }
    // (family, set match) per rule.
    let mut selectors: Vec<(Family, Option<String>)> = Vec::new();
    if c.ipsets.is_empty() {
        selectors.push((Family::Any, None));
    }
    let mut seen = HashSet::new();
    for name in &c.ipsets {
        if !seen.insert(name.as_str()) {
            continue;
        }
        for (kind, nft_name) in sets.get(name.as_str()).into_iter().flatten() {
            // hash:net,port entries are TCP ports (ipset's default protocol): no match for a
            // chain restricted to another protocol.
            if kind.has_port() && matches!(vc.protocol, Some(Protocol::Udp | Protocol::Icmp)) {
                continue;
            }
            let ip = if kind.family() == Family::V6 {
                "ip6"
            } else {
                "ip"
            };
            // `src,dst` (INPUT) / `dst,dst` (OUTPUT): the address is the source resp.
            // destination, the port of a hash:net,port set is always the destination port.
            let m = if kind.has_port() {
                format!("{ip} {addr} . tcp dport @{nft_name}")
            } else {
                format!("{ip} {addr} @{nft_name}")
            };
            selectors.push((kind.family(), Some(m)));
        }
    }
    let mut rules = Vec::new();
    for (family, set_match) in selectors {
        for (nfproto, verdict) in verdicts(vc.target, family) {
            let mut words: Vec<&str> = vec![&iface];
            words.extend(nfproto);
            if let Some(m) = &set_match {
                words.push(m);
            }
            words.extend(matches.iter().map(String::as_str));
            words.push("counter");
            words.push(&verdict);
            rules.push(words.join(" "));
        }
    }
    rules
}

/// Checks syntax of one part alone (before the target is resolved).
pub fn validate_part(part: &Part) -> Result<(), FirewallError> {
    match part {
        Part::Sets(sets) => compile_sets(sets).map(|_| ()),
        Part::Chains(chains) => validate_chains(chains),
    }
}

fn validate_chains(chains: &[Chain]) -> Result<(), FirewallError> {
    if chains.len() > MAX_CHAINS {
        return Err(invalid(
            "chains",
            &chains.len().to_string(),
            format!("at most {MAX_CHAINS} chains"),
        ));
    }
    let mut names = HashSet::new();
    for (i, c) in chains.iter().enumerate() {
        validate_chain(i, c)?;
        if !names.insert(c.name.as_str()) {
            return Err(invalid(
                format!("chains[{i}].name"),
                &c.name,
                "the chain name appears twice",
            ));
        }
    }
    Ok(())
}

/// Every ipset a chain names must exist: `SetIptablesChains` after `FlushIPSets`, as upstream
/// (`iptables -m set --match-set` fails on a missing set).
pub fn check_references(state: &DesiredState) -> Result<(), FirewallError> {
    let names: HashSet<&str> = state.sets.iter().map(|s| s.name.as_str()).collect();
    for c in &state.chains {
        if let Some(missing) = c.ipsets.iter().find(|s| !names.contains(s.as_str())) {
            return Err(FirewallError::MissingIpSet {
                chain: shown(&c.name),
                ipset: shown(missing),
            });
        }
    }
    Ok(())
}

/// Validates the whole state and builds the table. Deterministic: the same state always gives
/// the same table (set elements sorted, sets and chains in request order).
pub fn compile(state: &DesiredState) -> Result<Table, FirewallError> {
    validate_chains(&state.chains)?;
    let resolved = compile_sets(&state.sets)?;
    let mut table = Table::default();
    let mut by_name: HashMap<&str, Vec<(SetKind, String)>> = HashMap::new();
    for (name, r) in &resolved {
        let mut kinds = Vec::new();
        for kind in SetKind::ALL {
            let elements = r.elements(kind);
            if elements.is_empty() {
                continue;
            }
            let nft_name = nft_set_name(kind, name);
            kinds.push((kind, nft_name.clone()));
            table.sets.push(NftSet {
                name: nft_name,
                kind,
                elements,
            });
        }
        by_name.insert(name.as_str(), kinds);
    }
    for (i, c) in state.chains.iter().enumerate() {
        let vc = validate_chain(i, c)?;
        table.chains.push(NftChain {
            name: nft_chain_name(&c.name),
            direction: c.direction,
            rules: chain_rules(&vc, &by_name),
        });
    }
    Ok(table)
}
