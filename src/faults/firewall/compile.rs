//! Compiling a validated desired state into the [`Table`] faultd renders: ipsets flattened into
//! nft sets per family and key type, chains into rules with their verdicts.
use std::collections::{HashMap, HashSet};

use super::model::*;
use super::rule::{Reject, Rule, SetMatch, Verdict};
use super::validate::*;
use super::FirewallError;

/// The verdicts for `target` on a rule restricted to `family`: one, or two with a
/// `meta nfproto` prefix when the ICMP type differs between IPv4 and IPv6 and the rule is not
/// restricted to one family.
pub(super) fn verdicts(target: Target, family: Family) -> Vec<(Option<Family>, Verdict)> {
    let icmpx = |code: u8, t: &'static str| vec![(None, Verdict::Reject(Reject::Icmpx(code, t)))];
    let split = |v4: (u8, &'static str), v6: (u8, &'static str)| {
        let r4 = Verdict::Reject(Reject::Icmp(v4.0, v4.1));
        let r6 = Verdict::Reject(Reject::Icmpv6(v6.0, v6.1));
        match family {
            Family::V4 => vec![(None, r4)],
            Family::V6 => vec![(None, r6)],
            Family::Any => vec![(Some(Family::V4), r4), (Some(Family::V6), r6)],
        }
    };
    match target {
        Target::Classify(c) => vec![(None, Verdict::Priority(c))],
        Target::Drop => vec![(None, Verdict::Drop)],
        Target::Accept => vec![(None, Verdict::Accept)],
        // Codes: NFT_REJECT_ICMPX_*, ICMP_* (destination unreachable), ICMPV6_* (ditto).
        Target::Reject(r) => match r {
            RejectWith::TcpReset => vec![(None, Verdict::Reject(Reject::TcpReset))],
            RejectWith::PortUnreachable => icmpx(1, "port-unreachable"),
            RejectWith::HostUnreachable => icmpx(2, "host-unreachable"),
            RejectWith::NetUnreachable => icmpx(0, "no-route"),
            RejectWith::AdminProhibited => icmpx(3, "admin-prohibited"),
            // ICMPv6 has no "protocol unreachable" destination-unreachable code.
            RejectWith::ProtoUnreachable => split((2, "prot-unreachable"), (4, "port-unreachable")),
            RejectWith::NetProhibited => split((9, "net-prohibited"), (1, "admin-prohibited")),
            RejectWith::HostProhibited => split((10, "host-prohibited"), (1, "admin-prohibited")),
        },
    }
}

/// An ipset after validation and `list:set` flattening.
#[derive(Debug, Default)]
pub(super) struct Resolved {
    pub(super) nets: Vec<Net>,
    pub(super) net_ports: Vec<(Net, u16)>,
}

impl Resolved {
    /// The set elements of `kind`, normalized and in canonical order.
    pub(super) fn keys(&self, kind: SetKind) -> Vec<(Net, Option<u16>)> {
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
            .map(|(n, p)| (n, Some(p)))
            .collect()
        } else {
            normalize_nets(self.nets.iter().filter(|n| n.v6 == v6).copied().collect())
                .into_iter()
                .map(|n| (n, None))
                .collect()
        }
    }
}

/// One set element in nft syntax.
pub(super) fn element_text((n, p): &(Net, Option<u16>)) -> String {
    match p {
        Some(p) => format!("{} . {p}", n.render()),
        None => n.render(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SetType {
    Net,
    NetPort,
    List,
}

pub(super) fn compile_sets(sets: &[IpSet]) -> Result<Vec<(String, Resolved)>, FirewallError> {
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
pub(super) struct ValidChain<'a> {
    pub(super) chain: &'a Chain,
    pub(super) device: &'a str,
    pub(super) target: Target,
    pub(super) protocol: Option<Protocol>,
    pub(super) sports: Option<Vec<(u16, u16)>>,
    pub(super) dports: Option<Vec<(u16, u16)>>,
    pub(super) flags: Option<(u8, u8)>,
}

pub(super) fn validate_chain<'a>(i: usize, c: &'a Chain) -> Result<ValidChain<'a>, FirewallError> {
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

/// The rules of one chain. Upstream writes one iptables rule per ipset
/// (`-i|-o <device> -m set --match-set <ipset> src,dst|dst,dst ... -j <target>`), or one rule
/// without `-m set` when the chain names no ipset. Here each ipset becomes one rule per
/// non-empty nft set it was split into; an ipset the state does not contain (removed by a later
/// `FlushIPSets`, see [`super::set_firewall`]) matches nothing, so it contributes no rule.
pub(super) fn chain_rules(
    vc: &ValidChain,
    sets: &HashMap<&str, Vec<(SetKind, String)>>,
) -> Vec<Rule> {
    let c = vc.chain;
    // The set match of each rule; `None`: the chain names no ipset and matches everything.
    let mut selectors: Vec<(Family, Option<SetMatch>)> = Vec::new();
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
            // `src,dst` (INPUT) / `dst,dst` (OUTPUT): the address is the source resp.
            // destination, the port of a hash:net,port set is always the destination port.
            selectors.push((
                kind.family(),
                Some(SetMatch {
                    kind: *kind,
                    source: c.direction == Direction::Input,
                    set: nft_name.clone(),
                }),
            ));
        }
    }
    let flags = vc.flags.filter(|(m, _)| *m != 0);
    let mut rules = Vec::new();
    for (family, set) in selectors {
        for (nfproto, verdict) in verdicts(vc.target, family) {
            rules.push(Rule {
                direction: c.direction,
                device: vc.device.to_string(),
                nfproto,
                set: set.clone(),
                protocol: vc.protocol,
                sports: vc.sports.clone(),
                dports: vc.dports.clone(),
                flags,
                verdict,
            });
        }
    }
    rules
}

/// Checks syntax of one part alone (before the target is resolved).
pub fn validate_part(part: &Part) -> Result<(), FirewallError> {
    match part {
        Part::Sets(sets) => compile_sets(sets).map(|_| ()),
        Part::Chains(chains) => validate_chains(chains),
        Part::Classify(list) => list
            .iter()
            .enumerate()
            .try_for_each(|(i, k)| validate_chain(i, &classify_chain(i, k)).map(|_| ())),
    }
}

/// The request-shaped chain a classification compiles like (its DROP is replaced by the class).
pub(super) fn classify_chain(i: usize, k: &Classify) -> Chain {
    Chain {
        name: format!("tc-classify-{i}"),
        direction: Direction::Output,
        ipsets: vec![k.ipset.clone()],
        target: "DROP".into(),
        protocol: k.protocol.clone(),
        source_ports: String::new(),
        destination_ports: String::new(),
        tcp_flags: String::new(),
        device: k.device.clone(),
    }
}

pub(super) fn validate_chains(chains: &[Chain]) -> Result<(), FirewallError> {
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
    if let Some(k) = state
        .classify
        .iter()
        .find(|k| !names.contains(k.ipset.as_str()))
    {
        return Err(FirewallError::MissingIpSet {
            chain: format!("SetTcs filter on device {}", shown(&k.device)),
            ipset: shown(&k.ipset),
        });
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
            let keys = r.keys(kind);
            if keys.is_empty() {
                continue;
            }
            let nft_name = nft_set_name(kind, name);
            kinds.push((kind, nft_name.clone()));
            table.sets.push(NftSet {
                name: nft_name,
                kind,
                elements: keys.iter().map(element_text).collect(),
                keys,
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
    // Classification chains are named `k_<n>`: request chains are all `c_<name>`.
    for (i, k) in state.classify.iter().enumerate() {
        let chain = classify_chain(i, k);
        let mut vc = validate_chain(i, &chain)?;
        vc.target = Target::Classify(k.class);
        table.chains.push(NftChain {
            name: format!("k_{i}"),
            direction: Direction::Output,
            rules: chain_rules(&vc, &by_name),
        });
    }
    Ok(table)
}
