//! The nft batch text. Layout of the table (one per network namespace):
//!
//! ```text
//! table inet faultd {
//!     chain owner_<fault id> { }                  # which fault record wrote this table
//!     set v4_<ipset> { type ipv4_addr; flags interval; elements = { ... } }
//!     set v6_<ipset> { ... }                       # the IPv6 entries of the same ipset
//!     set v4port_<ipset> { type ipv4_addr . inet_service; flags interval; ... }
//!     chain input  { type filter hook input  priority -10; policy accept; jump c_<chain> ... }
//!     chain output { type filter hook output priority -10; policy accept; jump c_<chain> ... }
//!     chain c_<chain> { <one rule per ipset and family> }
//! }
//! ```
//!
//! Priority -10: after conntrack (-200) and mangle (-150), so the rules see packets as upstream's
//! rules in iptables' filter table do (after NAT in OUTPUT too), but before that filter table
//! (0), where CNI plugins, kube-proxy and iptables-nft put their rules. A separate nft base chain
//! is also not bypassed by an `ACCEPT` elsewhere: an accept ends only its own base chain, every
//! base chain on the hook still sees the packet (upstream's `CHAOS-INPUT` jump sits inside
//! `INPUT`, where a CNI rule placed before it can accept the packet first, #4280). Works the same
//! whether the host's iptables is legacy or nft: both are hooked into netfilter side by side.
//!
//! Every batch is one nft transaction: `add table` + `delete table` + the full table replaces
//! whatever was there atomically; nothing in between is ever visible to packets.
use std::fmt::Write as _;

use super::model::{Direction, Table};
use super::FirewallError;

/// The table's family and name: one private table per network namespace.
pub const FAMILY: &str = "inet";
pub const TABLE: &str = "faultd";
/// Base chain priority (see the module docs).
pub const PRIORITY: i32 = -10;
/// Name prefix of the marker chain that records which fault wrote the table.
pub const OWNER_PREFIX: &str = "owner_";

/// Fault ids are UUIDs; anything else is refused before it is written into a batch.
pub fn validate_owner(id: &str) -> Result<(), FirewallError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(FirewallError::Internal(format!(
            "fault id {id:?} cannot name an nft chain"
        )));
    }
    Ok(())
}

/// The owner marker chain of fault `id`.
pub fn owner_chain(id: &str) -> String {
    format!("{OWNER_PREFIX}{id}")
}

/// `table inet faultd { ... }` for `table`, owned by fault `owner`.
pub fn render_table(table: &Table, owner: &str) -> Result<String, FirewallError> {
    validate_owner(owner)?;
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "table {FAMILY} {TABLE} {{");
    let _ = writeln!(s, "\tchain {} {{", owner_chain(owner));
    let _ = writeln!(s, "\t}}");
    for set in &table.sets {
        let _ = writeln!(s, "\tset {} {{", set.name);
        let _ = writeln!(s, "\t\ttype {}", set.kind.nft_type());
        let _ = writeln!(s, "\t\tflags interval");
        let _ = writeln!(s, "\t\telements = {{ {} }}", set.elements.join(", "));
        let _ = writeln!(s, "\t}}");
    }
    for (base, hook, dir) in [
        ("input", "input", Direction::Input),
        ("output", "output", Direction::Output),
    ] {
        let jumps: Vec<&str> = table
            .chains
            .iter()
            .filter(|c| c.direction == dir)
            .map(|c| c.name.as_str())
            .collect();
        if jumps.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\tchain {base} {{");
        let _ = writeln!(
            s,
            "\t\ttype filter hook {hook} priority {PRIORITY}; policy accept;"
        );
        for j in jumps {
            let _ = writeln!(s, "\t\tjump {j}");
        }
        let _ = writeln!(s, "\t}}");
    }
    for c in &table.chains {
        let _ = writeln!(s, "\tchain {} {{", c.name);
        for r in &c.rules {
            let _ = writeln!(s, "\t\t{}", r.text());
        }
        let _ = writeln!(s, "\t}}");
    }
    s.push_str("}\n");
    Ok(s)
}

/// The batch that replaces the table atomically (`add` makes the `delete` succeed when the
/// table is absent).
pub fn apply_batch(table: &Table, owner: &str) -> Result<String, FirewallError> {
    Ok(format!(
        "add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n{}",
        render_table(table, owner)?
    ))
}

/// Deletes the table only if fault `owner` wrote it: deleting the owner chain fails (and with it
/// the whole transaction) when the table is absent or belongs to another fault.
pub fn delete_owned_batch(owner: &str) -> Result<String, FirewallError> {
    validate_owner(owner)?;
    Ok(format!(
        "delete chain {FAMILY} {TABLE} {}\ndelete table {FAMILY} {TABLE}\n",
        owner_chain(owner)
    ))
}

/// Deletes the table whoever wrote it; succeeds when it is absent (`faultd doctor --fix`).
pub const DELETE_ANY_BATCH: &str = "add table inet faultd\ndelete table inet faultd\n";

/// The chain names and rule counts the table must show when read back.
pub fn expected_layout(
    table: &Table,
    owner: &str,
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeMap<String, usize>,
) {
    let sets = table.sets.iter().map(|s| s.name.clone()).collect();
    let mut chains = std::collections::BTreeMap::new();
    chains.insert(owner_chain(owner), 0);
    for (base, dir) in [("input", Direction::Input), ("output", Direction::Output)] {
        let n = table.chains.iter().filter(|c| c.direction == dir).count();
        if n > 0 {
            chains.insert(base.to_string(), n);
        }
    }
    for c in &table.chains {
        chains.insert(c.name.clone(), c.rules.len());
    }
    (sets, chains)
}
