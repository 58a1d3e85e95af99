//! HTTPChaos's interception table: `table inet faultd_http`, one `tproxy` rule per proxied
//! port in a pod's network namespace, built as one nf_tables netlink batch like faultd's
//! firewall table (same socket per namespace, same owner-marker chain).
//!
//! ```text
//! table inet faultd_http {
//!     chain owner_<fault id> {
//!     }
//!     chain pre {
//!         type filter hook prerouting priority mangle; policy accept;
//!         iifname != "lo" meta l4proto tcp tcp dport 80 tproxy to :15080 accept
//!     }
//! }
//! ```
//!
//! `tproxy to :L` (no address, family unspecified: IPv4 and IPv6 in one rule) hands a packet to
//! the transparent socket listening on port L of the packet's own destination address or the
//! wildcard. With no such socket the expression does not match and the packet goes on to the
//! application: the interception **fails open** when faultd's listener is gone. Packets from
//! `lo` are never intercepted, so the proxy's own connections to the application pass.
use std::fmt::Write as _;

use super::nl::{cmp, expr, immediate_verdict, meta_load, payload, Batch};
use super::nlwire::*;
use super::render::{owner_chain, validate_owner};
use super::FirewallError;

/// The table's name.
pub const HTTP_TABLE: &str = "faultd_http";
/// The base chain of the interception.
pub const PRE_CHAIN: &str = "pre";
/// The output chain that saves and restores the proxy's mark (see `faults::http::route`).
pub const OUT_CHAIN: &str = "out";
/// `priority mangle`.
pub const MANGLE: i32 = -150;

/// What the table intercepts: TCP to these ports (not from `lo`) goes to `listener`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Interception {
    pub ports: Vec<u16>,
    pub listener: u16,
    /// The mark of the proxy's upstream connections, when the proxy connects from the
    /// client's address: copied into conntrack on the way out and back onto the
    /// application's replies (so they are routed to the proxy, not to the client).
    #[serde(default)]
    pub mark: Option<u32>,
}

/// The table as nft prints it (`nft list table inet faultd_http`).
pub fn render(i: &Interception, owner: &str) -> Result<String, FirewallError> {
    validate_owner(owner)?;
    let mut s = String::new();
    let _ = writeln!(s, "table inet {HTTP_TABLE} {{");
    let _ = writeln!(s, "\tchain {} {{\n\t}}\n", owner_chain(owner));
    let _ = writeln!(s, "\tchain {PRE_CHAIN} {{");
    let _ = writeln!(
        s,
        "\t\ttype filter hook prerouting priority mangle; policy accept;"
    );
    for p in &i.ports {
        let _ = writeln!(
            s,
            "\t\tiifname != \"lo\" meta l4proto tcp tcp dport {p} tproxy to :{} accept",
            i.listener
        );
    }
    let _ = writeln!(s, "\t}}");
    if let Some(m) = i.mark {
        let _ = writeln!(s, "\n\tchain {OUT_CHAIN} {{");
        let _ = writeln!(
            s,
            "\t\ttype route hook output priority mangle; policy accept;"
        );
        let _ = writeln!(s, "\t\tmeta mark {m:#010x} ct mark set meta mark");
        let _ = writeln!(s, "\t\tct mark {m:#010x} meta mark set ct mark");
        let _ = writeln!(s, "\t}}");
    }
    let _ = writeln!(s, "}}");
    Ok(s)
}

/// Replaces the table atomically (`NEWTABLE`, `DELTABLE`, then the whole table).
pub fn apply_batch(i: &Interception, owner: &str) -> Result<Batch, FirewallError> {
    validate_owner(owner)?;
    if i.ports.is_empty() || i.ports.contains(&0) || i.listener == 0 {
        return Err(FirewallError::Internal(format!(
            "an interception needs ports and a listener port: {i:?}"
        )));
    }
    let mut b = Batch::default();
    b.table_named(HTTP_TABLE, NFT_MSG_NEWTABLE, NLM_F_CREATE);
    b.table_named(HTTP_TABLE, NFT_MSG_DELTABLE, 0);
    b.table_named(HTTP_TABLE, NFT_MSG_NEWTABLE, NLM_F_CREATE);
    b.chain_in(HTTP_TABLE, NFT_MSG_NEWCHAIN, &owner_chain(owner), None);
    b.chain_in(
        HTTP_TABLE,
        NFT_MSG_NEWCHAIN,
        PRE_CHAIN,
        Some((NF_INET_PRE_ROUTING, MANGLE, "filter")),
    );
    if i.mark.is_some() {
        b.chain_in(
            HTTP_TABLE,
            NFT_MSG_NEWCHAIN,
            OUT_CHAIN,
            Some((NF_INET_LOCAL_OUT_HOOK, MANGLE, "route")),
        );
    }
    for p in &i.ports {
        let mut e = Vec::new();
        meta_load(&mut e, NFT_META_IIFNAME);
        let mut lo = [0u8; 16];
        lo[..2].copy_from_slice(b"lo");
        cmp(&mut e, NFT_CMP_NEQ, &lo);
        meta_load(&mut e, NFT_META_L4PROTO);
        cmp(&mut e, NFT_CMP_EQ, &[libc::IPPROTO_TCP as u8]);
        payload(&mut e, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, REG_1);
        cmp(&mut e, NFT_CMP_EQ, &p.to_be_bytes());
        expr(&mut e, "immediate", |b| {
            put_be32(b, IMMEDIATE_DREG, REG_1);
            put_data(b, IMMEDIATE_DATA, &i.listener.to_be_bytes());
        });
        expr(&mut e, "tproxy", |b| {
            // NFPROTO_UNSPEC: both families, no address register.
            put_be32(b, TPROXY_FAMILY, 0);
            put_be32(b, TPROXY_REG_PORT, REG_1);
        });
        immediate_verdict(&mut e, NF_ACCEPT, None);
        let mut a = Vec::new();
        put_str(&mut a, NFTA_RULE_TABLE, HTTP_TABLE);
        put_str(&mut a, NFTA_RULE_CHAIN, PRE_CHAIN);
        nest(&mut a, NFTA_RULE_EXPRESSIONS, |x| x.extend_from_slice(&e));
        b.push(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            format!(
                "add rule {PRE_CHAIN}: tcp dport {p} tproxy to :{}",
                i.listener
            ),
            a,
        );
    }
    if let Some(m) = i.mark {
        let ct = |e: &mut Vec<u8>, set: bool| {
            expr(e, "ct", |b| {
                put_be32(b, CT_KEY, NFT_CT_MARK);
                put_be32(b, if set { CT_SREG } else { CT_DREG }, REG_1);
            })
        };
        let meta_set = |e: &mut Vec<u8>| {
            expr(e, "meta", |b| {
                put_be32(b, META_KEY, NFT_META_MARK);
                put_be32(b, META_SREG, REG_1);
            })
        };
        // meta mark M ct mark set meta mark
        let mut save = Vec::new();
        meta_load(&mut save, NFT_META_MARK);
        cmp(&mut save, NFT_CMP_EQ, &m.to_ne_bytes());
        meta_load(&mut save, NFT_META_MARK);
        ct(&mut save, true);
        // ct mark M meta mark set ct mark
        let mut restore = Vec::new();
        ct(&mut restore, false);
        cmp(&mut restore, NFT_CMP_EQ, &m.to_ne_bytes());
        ct(&mut restore, false);
        meta_set(&mut restore);
        for (e, what) in [
            (save, "save the proxy's mark"),
            (restore, "restore it on replies"),
        ] {
            let mut a = Vec::new();
            put_str(&mut a, NFTA_RULE_TABLE, HTTP_TABLE);
            put_str(&mut a, NFTA_RULE_CHAIN, OUT_CHAIN);
            nest(&mut a, NFTA_RULE_EXPRESSIONS, |x| x.extend_from_slice(&e));
            b.push(
                NFT_MSG_NEWRULE,
                NLM_F_CREATE | NLM_F_APPEND,
                format!("add rule {OUT_CHAIN}: {what}"),
                a,
            );
        }
    }
    Ok(b)
}

/// Deletes the table, as a whole failing (`ENOENT`) unless fault `owner` wrote it.
pub fn delete_owned_batch(owner: &str) -> Result<Batch, FirewallError> {
    validate_owner(owner)?;
    let mut b = Batch::default();
    b.chain_in(HTTP_TABLE, NFT_MSG_DELCHAIN, &owner_chain(owner), None);
    b.table_named(HTTP_TABLE, NFT_MSG_DELTABLE, 0);
    Ok(b)
}

/// Scans `namespaces` for `table inet faultd_http` whose owner marker names none of `owners`
/// (doctor); with `fix`, deletes them. `(namespace, label, owners found, removed)`.
pub async fn stray_tables(
    namespaces: &[(crate::ns::NsId, crate::ns::Namespace, String)],
    owners: &std::collections::HashSet<String>,
    fix: bool,
) -> Vec<(crate::ns::NsId, String, Vec<String>, bool)> {
    let mut out = Vec::new();
    for (id, ns, label) in namespaces {
        let Ok(Some(found)) = super::conn::with_socket_once(ns, |s| s.owners_in(HTTP_TABLE)).await
        else {
            continue;
        };
        if found.iter().any(|o| owners.contains(o)) {
            continue;
        }
        let removed = fix && {
            let mut b = Batch::default();
            b.table_named(HTTP_TABLE, NFT_MSG_DELTABLE, 0);
            super::commit(ns, "remove", b).await.is_ok()
        };
        out.push((*id, label.clone(), found, removed));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: &str = "0123abcd-0000-4000-8000-0000000000ff";

    #[test]
    fn the_table_renders_as_nft_lists_it() {
        let i = Interception {
            ports: vec![80, 8080],
            listener: 15080,
            mark: Some(0xfa17),
        };
        let t = render(&i, OWNER).unwrap();
        assert!(t.contains("\tchain out {\n\t\ttype route hook output priority mangle; policy accept;\n\t\tmeta mark 0x0000fa17 ct mark set meta mark\n\t\tct mark 0x0000fa17 meta mark set ct mark\n"), "{t}");
        assert!(
            t.starts_with("table inet faultd_http {\n\tchain owner_"),
            "{t}"
        );
        assert!(
            t.contains(
                "\t\tiifname != \"lo\" meta l4proto tcp tcp dport 8080 tproxy to :15080 accept\n"
            ),
            "{t}"
        );
        assert!(render(&i, "bad id!").is_err());
    }

    #[test]
    fn the_batch_replaces_the_table_with_one_rule_per_port() {
        let i = Interception {
            ports: vec![80, 443],
            listener: 15080,
            mark: None,
        };
        let b = apply_batch(&i, OWNER).unwrap();
        let what: Vec<&str> = b.msgs.iter().map(|m| m.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "add table inet faultd_http",
                "delete table inet faultd_http",
                "add table inet faultd_http",
                &format!("add chain owner_{OWNER}"),
                "add chain pre",
                "add rule pre: tcp dport 80 tproxy to :15080",
                "add rule pre: tcp dport 443 tproxy to :15080",
            ]
        );
        // The rule carries the tproxy expression with the port register and no family.
        let rule = &b.msgs[5].attrs;
        let hay = rule.windows(7).any(|w| w == b"tproxy\0");
        assert!(hay);
        assert!(rule.windows(2).any(|w| w == 15080u16.to_be_bytes()));
        assert!(apply_batch(
            &Interception {
                ports: vec![],
                listener: 1,
                mark: None,
            },
            OWNER
        )
        .is_err());
        assert!(apply_batch(
            &Interception {
                ports: vec![80],
                listener: 0,
                mark: None,
            },
            OWNER
        )
        .is_err());
        let d = delete_owned_batch(OWNER).unwrap();
        assert_eq!(d.msgs.len(), 2);
        assert_eq!(d.msgs[1].what, "delete table inet faultd_http");
    }
}
