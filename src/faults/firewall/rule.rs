//! One compiled rule as structured values: what it matches and what it does. Two renderers
//! consume it: [`Rule::text`] (nft syntax: goldens, doctor output, the manual-cleanup text) and
//! the netlink encoder in [`super::nl`], which emits the expressions nft itself would.
use super::model::{Direction, Family, SetKind};
use super::validate::{render_flags, Protocol};

/// `ip saddr @set`, `ip6 daddr . tcp dport @set`, ...: a lookup in one of the table's sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetMatch {
    pub kind: SetKind,
    /// `saddr` (INPUT) or `daddr` (OUTPUT).
    pub source: bool,
    pub set: String,
}

/// How a rejected packet is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    TcpReset,
    /// `reject with icmpx type <name>` (`NFT_REJECT_ICMPX_UNREACH`, code).
    Icmpx(u8, &'static str),
    /// `reject with icmp type <name>` (IPv4 only; the rule carries `meta nfproto ipv4`).
    Icmp(u8, &'static str),
    /// `reject with icmpv6 type <name>` (IPv6 only).
    Icmpv6(u8, &'static str),
}

/// What a rule does when it matches (after its counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Accept,
    Reject(Reject),
    /// `meta priority set major:minor` (tc class id).
    Priority(u32),
}

/// One rule of a request chain or a classification chain, in the order nft prints its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `iifname` for INPUT, `oifname` for OUTPUT.
    pub direction: Direction,
    pub device: String,
    /// An explicit `meta nfproto` (rules not restricted by a set whose verdict differs per
    /// family).
    pub nfproto: Option<Family>,
    pub set: Option<SetMatch>,
    pub protocol: Option<Protocol>,
    pub sports: Option<Vec<(u16, u16)>>,
    pub dports: Option<Vec<(u16, u16)>>,
    /// TCP flags `(mask, comp)`, only with a non-zero mask.
    pub flags: Option<(u8, u8)>,
    pub verdict: Verdict,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }

    /// The IP protocol number (`meta l4proto`); ICMP matches ICMPv6 too.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => libc::IPPROTO_TCP as u8,
            Protocol::Udp => libc::IPPROTO_UDP as u8,
            Protocol::Icmp => libc::IPPROTO_ICMP as u8,
        }
    }
}

pub(super) fn render_ports(ranges: &[(u16, u16)]) -> String {
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

impl Verdict {
    pub fn text(self) -> String {
        match self {
            Verdict::Drop => "drop".into(),
            Verdict::Accept => "accept".into(),
            Verdict::Reject(Reject::TcpReset) => "reject with tcp reset".into(),
            Verdict::Reject(Reject::Icmpx(_, n)) => format!("reject with icmpx type {n}"),
            Verdict::Reject(Reject::Icmp(_, n)) => format!("reject with icmp type {n}"),
            Verdict::Reject(Reject::Icmpv6(_, n)) => format!("reject with icmpv6 type {n}"),
            Verdict::Priority(c) => {
                format!("meta priority set {:x}:{:x}", c >> 16, c & 0xffff)
            }
        }
    }
}

impl Rule {
    /// The rule in nft syntax.
    pub fn text(&self) -> String {
        let mut words: Vec<String> = Vec::new();
        words.push(match self.direction {
            Direction::Input => format!("iifname \"{}\"", self.device),
            Direction::Output => format!("oifname \"{}\"", self.device),
        });
        match self.nfproto {
            Some(Family::V4) => words.push("meta nfproto ipv4".into()),
            Some(Family::V6) => words.push("meta nfproto ipv6".into()),
            _ => {}
        }
        if let Some(m) = &self.set {
            let ip = if m.kind.family() == Family::V6 {
                "ip6"
            } else {
                "ip"
            };
            let addr = if m.source { "saddr" } else { "daddr" };
            words.push(if m.kind.has_port() {
                format!("{ip} {addr} . tcp dport @{}", m.set)
            } else {
                format!("{ip} {addr} @{}", m.set)
            });
        }
        match self.protocol {
            Some(Protocol::Icmp) => words.push("meta l4proto { icmp, ipv6-icmp }".into()),
            Some(p) => words.push(format!("meta l4proto {}", p.name())),
            None => {}
        }
        if let Some(p) = self.protocol {
            if let Some(r) = &self.sports {
                words.push(format!("{} sport {}", p.name(), render_ports(r)));
            }
            if let Some(r) = &self.dports {
                words.push(format!("{} dport {}", p.name(), render_ports(r)));
            }
        }
        if let Some((m, cmp)) = self.flags {
            words.push(format!(
                "tcp flags & {} == {}",
                render_flags(m),
                render_flags(cmp)
            ));
        }
        words.push("counter".into());
        words.push(self.verdict.text());
        words.join(" ")
    }
}
