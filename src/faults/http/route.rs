//! The policy route that brings the application's replies back to faultd's proxy when the
//! proxy connects upstream from the client's own address (so the application sees the real
//! client): the proxy's upstream sockets carry [`MARK`] (`SO_MARK`); `table inet faultd_http`
//! copies it into the connection's conntrack mark and back onto the application's replies
//! (a `route` chain, so the replies are routed again); this module's rule sends marked packets
//! to table [`TABLE`], whose one `local` route delivers them on `lo` to the proxy's socket:
//!
//! ```text
//! ip rule add fwmark 0xfa17 lookup 64023 priority 9017      (and ip -6 rule ...)
//! ip route add local 0.0.0.0/0 dev lo table 64023           (and ::/0)
//! ```
//!
//! The recipe is the inbound-TPROXY one service meshes use. The rule and routes belong to
//! faultd's interception table: a fault adds them (idempotently) before the table, and an undo
//! removes them only when no `faultd_http` table is left in the namespace.
use netlink_packet_core::{NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::tc::socket::RouteSocket;
use crate::tc::TcError;

/// The packet and conntrack mark of the proxy's upstream connections.
pub const MARK: u32 = 0xfa17;
/// The routing table with the `local` routes.
pub const TABLE: u32 = 64023;
/// The rule's priority: after `local` (0), before `main` (32766).
pub const PRIORITY: u32 = 9017;

const FAMILIES: [AddressFamily; 2] = [AddressFamily::Inet, AddressFamily::Inet6];

fn rule(family: AddressFamily) -> RuleMessage {
    let mut r = RuleMessage::default();
    r.header.family = family;
    r.header.action = RuleAction::ToTable;
    r.attributes = vec![
        RuleAttribute::Priority(PRIORITY),
        RuleAttribute::FwMark(MARK),
        RuleAttribute::FwMask(u32::MAX),
        RuleAttribute::Table(TABLE),
    ];
    r
}

fn route(family: AddressFamily, lo: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header = RouteHeader {
        address_family: family,
        table: RouteHeader::RT_TABLE_UNSPEC,
        protocol: RouteProtocol::Boot,
        scope: RouteScope::Host,
        kind: RouteType::Local,
        ..Default::default()
    };
    let any: std::net::IpAddr = if family == AddressFamily::Inet {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    m.attributes = vec![
        RouteAttribute::Table(TABLE),
        RouteAttribute::Destination(RouteAddress::from(any)),
        RouteAttribute::Oif(lo),
    ];
    m
}

fn new(msg: RouteNetlinkMessage) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut m = NetlinkMessage::from(msg);
    m.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    m
}

/// Whether a failure only says "already there" / "already gone" / "no such family here".
fn benign(e: &TcError, ok: &[i32]) -> bool {
    matches!(e, TcError::Kernel { errno, .. } if ok.contains(errno))
}

/// Adds the rule and the `local` route for IPv4 and IPv6 (already present is fine; a
/// namespace without IPv6 gets IPv4 only).
pub fn install(s: &mut RouteSocket) -> Result<(), TcError> {
    let lo = s
        .ifindex("lo")?
        .ok_or(TcError::LinkNotFound { name: "lo".into() })?;
    for f in FAMILIES {
        let v6 = f == AddressFamily::Inet6;
        let skip = [libc::EEXIST, libc::EAFNOSUPPORT];
        for (op, msg) in [
            (
                "add the HTTPChaos policy rule",
                RouteNetlinkMessage::NewRule(rule(f)),
            ),
            (
                "add the HTTPChaos local route",
                RouteNetlinkMessage::NewRoute(route(f, lo)),
            ),
        ] {
            match s.request_ack(op, new(msg)) {
                Ok(()) => {}
                Err(e) if benign(&e, &skip) => {}
                // IPv6 disabled in the namespace.
                Err(e) if v6 && benign(&e, &[libc::EACCES, libc::EOPNOTSUPP]) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Removes the rule and the routes (absent is fine).
pub fn remove(s: &mut RouteSocket) -> Result<(), TcError> {
    let lo = s.ifindex("lo")?.unwrap_or(1);
    for f in FAMILIES {
        for (op, msg) in [
            (
                "delete the HTTPChaos policy rule",
                RouteNetlinkMessage::DelRule(rule(f)),
            ),
            (
                "delete the HTTPChaos local route",
                RouteNetlinkMessage::DelRoute(route(f, lo)),
            ),
        ] {
            let mut m = NetlinkMessage::from(msg);
            m.header.flags = NLM_F_REQUEST | NLM_F_ACK;
            match s.request_ack(op, m) {
                Ok(()) => {}
                Err(e) if benign(&e, &[libc::ENOENT, libc::ESRCH, libc::EAFNOSUPPORT]) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Whether faultd's rule is present (IPv4).
pub fn present(s: &mut RouteSocket) -> Result<bool, TcError> {
    let mut dump = RuleMessage::default();
    dump.header.family = AddressFamily::Inet;
    let msg = NetlinkMessage::from(RouteNetlinkMessage::GetRule(dump));
    let rules = s.request("list rules", msg, true)?;
    Ok(rules.iter().any(|m| match m {
        RouteNetlinkMessage::NewRule(r) => {
            r.attributes.contains(&RuleAttribute::FwMark(MARK))
                && r.attributes.contains(&RuleAttribute::Table(TABLE))
        }
        _ => false,
    }))
}
