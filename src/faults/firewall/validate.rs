//! Validation of every value a partition request carries: names against a small charset,
//! addresses parsed as `IpAddr/prefix`, ports as numbers, TCP flags, protocols and targets
//! against fixed lists, devices as interface names.
use std::collections::HashMap;
use std::net::IpAddr;

use super::model::*;
use super::FirewallError;

pub(super) fn shown(v: &str) -> String {
    let mut s: String = v.chars().take(64).collect();
    if s.len() < v.len() {
        s.push('…');
    }
    format!("{s:?}")
}

pub(super) fn invalid(
    field: impl Into<String>,
    value: &str,
    reason: impl Into<String>,
) -> FirewallError {
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

pub(super) fn name_byte(b: u8) -> bool {
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
pub(super) struct Net {
    pub(super) bits: u128,
    pub(super) prefix: u8,
    pub(super) v6: bool,
}

impl Net {
    pub(super) fn width(self) -> u8 {
        if self.v6 {
            128
        } else {
            32
        }
    }

    pub(super) fn contains(self, other: Net) -> bool {
        self.v6 == other.v6
            && self.prefix <= other.prefix
            && other.bits & mask(self.prefix, self.width()) == self.bits
    }

    pub(super) fn render(self) -> String {
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

pub(super) fn mask(prefix: u8, width: u8) -> u128 {
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
pub(super) fn parse_cidr(field: &str, s: &str) -> Result<Net, FirewallError> {
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
pub(super) fn normalize_nets(mut nets: Vec<Net>) -> Vec<Net> {
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
pub(super) fn normalize_net_ports(pairs: Vec<(Net, u16)>) -> Vec<(Net, u16)> {
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
pub(super) fn parse_port(field: &str, whole: &str, s: &str) -> Result<u16, FirewallError> {
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
pub(super) const TCP_FLAGS: [(&str, &str, u8); 6] = [
    ("FIN", "fin", 0x01),
    ("SYN", "syn", 0x02),
    ("RST", "rst", 0x04),
    ("PSH", "psh", 0x08),
    ("ACK", "ack", 0x10),
    ("URG", "urg", 0x20),
];

pub(super) fn parse_flag_list(field: &str, whole: &str, s: &str) -> Result<u8, FirewallError> {
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

pub(super) fn render_flags(bits: u8) -> String {
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
    /// `meta priority set major:minor` (only from [`Classify`], never from a request).
    Classify(u32),
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
