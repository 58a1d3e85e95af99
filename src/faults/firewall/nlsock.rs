//! A blocking `NETLINK_NETFILTER` socket: sends one nf_tables batch per call and reads the table
//! back through `GETTABLE`/`GETCHAIN`/`GETSET`/`GETRULE` dumps.
//!
//! A netlink socket talks to the network namespace it was created in for its whole life, so it
//! is opened on a namespace thread ([`crate::ns::Namespace::run_async`]) and then used from
//! faultd's own per-namespace thread ([`super::conn`]); no tokio worker ever blocks on it.
//!
//! The kernel handles a batch inside `sendmsg` and queues its answers before the call returns.
//! Only the batch's last command asks for an acknowledgement (per-message ACKs of a large batch
//! could overflow the receive buffer); errors are always sent, each carrying the sequence number
//! of the message that failed, which [`Batch::what`] turns back into "add set v4_x" and the like.
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};

use super::nl::Msg;
use super::nlwire::*;
use super::render::{OWNER_PREFIX, TABLE};
use super::FirewallError;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP: u16 = 0x300;
/// Dump datagrams are sized to the reader's buffer (up to 32 KiB by default).
const RECV_BUF: usize = 64 * 1024;
/// A kernel that has not answered by then never will.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// What the kernel shows of `table inet faultd`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Fault ids of the owner marker chains (one when faultd wrote the table).
    pub owners: Vec<String>,
    /// Named sets (anonymous ones belong to their rules).
    pub sets: BTreeSet<String>,
    /// Chain name → number of rules.
    pub chains: BTreeMap<String, usize>,
}

impl Listing {
    /// The fault that wrote the table, if exactly one marker is there.
    pub fn owner(&self) -> Option<&str> {
        match self.owners.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// Whether faultd's table exists in a namespace, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableState {
    Absent,
    Present(Listing),
}

/// A netfilter netlink socket bound to the network namespace it was opened in.
#[derive(Debug)]
pub struct NfSocket {
    fd: OwnedFd,
    seq: u32,
    sndbuf: usize,
    buf: Vec<u8>,
}

fn io_err(op: &str, e: impl std::fmt::Display) -> FirewallError {
    FirewallError::Io {
        op: op.into(),
        message: e.to_string(),
    }
}

/// The attributes of one message after its `nfgenmsg`: `(type without flags, payload)`.
fn attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= buf.len() {
        let len = usize::from(u16::from_ne_bytes([buf[off], buf[off + 1]]));
        let kind = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & 0x3fff;
        if len < 4 || off + len > buf.len() {
            break;
        }
        out.push((kind, &buf[off + 4..off + len]));
        off += len.next_multiple_of(4);
    }
    out
}

fn attr_str<'a>(a: &[(u16, &'a [u8])], ty: u16) -> Option<&'a str> {
    let v = a.iter().find(|(t, _)| *t == ty)?.1;
    std::str::from_utf8(v.split(|b| *b == 0).next().unwrap_or(v)).ok()
}

fn attr_be32(a: &[(u16, &[u8])], ty: u16) -> Option<u32> {
    let v = a.iter().find(|(t, _)| *t == ty)?.1;
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// One received message: type, sequence number, body after the `nlmsghdr`.
struct Reply<'a> {
    ty: u16,
    seq: u32,
    body: &'a [u8],
}

fn split(buf: &[u8]) -> Result<Vec<Reply<'_>>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        if len < 16 || off + len > buf.len() {
            return Err(format!("malformed message of length {len} at offset {off}"));
        }
        out.push(Reply {
            ty: u16::from_ne_bytes([buf[off + 4], buf[off + 5]]),
            seq: u32::from_ne_bytes(buf[off + 8..off + 12].try_into().expect("4 bytes")),
            body: &buf[off + 16..off + len],
        });
        off += len.next_multiple_of(4);
    }
    Ok(out)
}

/// `NLMSG_ERROR`: the (negative) errno, 0 for an acknowledgement, and the failed message's seq.
fn error_of(body: &[u8]) -> Option<(i32, u32)> {
    let code = i32::from_ne_bytes(body.get(..4)?.try_into().ok()?);
    let seq = u32::from_ne_bytes(body.get(12..16)?.try_into().ok()?);
    Some((code, seq))
}

impl NfSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<NfSocket, FirewallError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(|e| match e {
            nix::Error::EPROTONOSUPPORT | nix::Error::EAFNOSUPPORT => FirewallError::Kernel {
                op: "open".into(),
                what: "netfilter netlink socket".into(),
                errno: e as i32,
            },
            e => io_err("open", e),
        })?;
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(RECV_TIMEOUT.as_secs() as _, 0),
        )
        .map_err(|e| io_err("open", e))?;
        Ok(NfSocket {
            fd,
            seq: 0,
            sndbuf: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    fn next_seqs(&mut self, n: u32) -> u32 {
        let first = self.seq.wrapping_add(1).max(1);
        self.seq = first.wrapping_add(n);
        first
    }

    fn send(&mut self, op: &str, bytes: &[u8]) -> Result<(), FirewallError> {
        // netlink refuses a datagram larger than the send buffer; large tables need more.
        if bytes.len() + 4096 > self.sndbuf.max(200 * 1024) {
            let want = bytes.len() * 2;
            setsockopt(&self.fd, sockopt::SndBufForce, &want)
                .or_else(|_| setsockopt(&self.fd, sockopt::SndBuf, &want))
                .map_err(|e| io_err(op, e))?;
            self.sndbuf = want;
        }
        loop {
            match sendto(
                self.fd.as_raw_fd(),
                bytes,
                &NetlinkAddr::new(0, 0),
                MsgFlags::empty(),
            ) {
                Err(nix::Error::EINTR) => continue,
                r => return r.map(|_| ()).map_err(|e| io_err(op, e)),
            }
        }
    }

    fn recv(&mut self, op: &str, flags: MsgFlags) -> Result<Option<usize>, FirewallError> {
        loop {
            match recv(
                self.fd.as_raw_fd(),
                &mut self.buf,
                flags | MsgFlags::MSG_TRUNC,
            ) {
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EAGAIN) if flags.contains(MsgFlags::MSG_DONTWAIT) => {
                    return Ok(None)
                }
                Err(nix::Error::EAGAIN) => {
                    return Err(io_err(op, "no answer from the kernel in time"))
                }
                Err(e) => return Err(io_err(op, e)),
                Ok(n) if n > self.buf.len() => {
                    return Err(io_err(
                        op,
                        format!("answer of {n} bytes exceeds the buffer"),
                    ))
                }
                Ok(n) => return Ok(Some(n)),
            }
        }
    }

    /// Sends `batch` as one transaction. The first error the kernel reports fails the call
    /// (and the kernel has then applied nothing).
    pub fn commit(&mut self, op: &str, batch: &Batch) -> Result<(), FirewallError> {
        let n = batch.msgs.len() as u32;
        let first = self.next_seqs(n + 2);
        let mut b = batch.clone();
        if let Some(last) = b.msgs.last_mut() {
            last.flags |= NLM_F_ACK;
        }
        let last = first.wrapping_add(n);
        self.send(op, &b.bytes(first))?;
        let mut failed: Option<(i32, u32)> = None;
        let mut acked = false;
        while !acked {
            // After an error only what is already queued is read: later messages may not be
            // answered at all.
            let flags = if failed.is_some() {
                MsgFlags::MSG_DONTWAIT
            } else {
                MsgFlags::empty()
            };
            let Some(len) = self.recv(op, flags)? else {
                break;
            };
            for r in split(&self.buf[..len]).map_err(|e| io_err(op, e))? {
                if r.ty != NLMSG_ERROR {
                    continue;
                }
                let Some((code, seq)) = error_of(r.body) else {
                    continue;
                };
                if seq.wrapping_sub(first) > n + 1 {
                    continue; // not this batch
                }
                if code != 0 {
                    failed.get_or_insert((code, seq));
                } else if seq == last {
                    acked = true;
                }
            }
        }
        match failed {
            Some((code, seq)) => Err(FirewallError::Kernel {
                op: op.into(),
                what: b.what(first, seq).to_string(),
                errno: code.saturating_neg(),
            }),
            None => Ok(()),
        }
    }

    /// One request; returns the attributes of every object message answered (a dump with
    /// `dump`, else the single object) or the kernel's errno.
    fn get(
        &mut self,
        op: &str,
        kind: u8,
        dump: bool,
        attrs_in: Vec<u8>,
    ) -> Result<Result<Vec<Vec<u8>>, i32>, FirewallError> {
        let seq = self.next_seqs(0);
        let flags = if dump { NLM_F_DUMP } else { NLM_F_ACK };
        let mut bytes = Vec::new();
        Msg::nft(kind, flags, op, attrs_in).write(&mut bytes, seq);
        self.send(op, &bytes)?;
        let mut out = Vec::new();
        loop {
            let Some(len) = self.recv(op, MsgFlags::empty())? else {
                continue;
            };
            for r in split(&self.buf[..len]).map_err(|e| io_err(op, e))? {
                if r.seq != seq {
                    continue;
                }
                match r.ty {
                    NLMSG_DONE => return Ok(Ok(out)),
                    NLMSG_ERROR => {
                        let (code, _) = error_of(r.body)
                            .ok_or_else(|| io_err(op, "truncated error message"))?;
                        return Ok(if code == 0 { Ok(out) } else { Err(-code) });
                    }
                    _ => out.push(r.body.get(4..).unwrap_or_default().to_vec()),
                }
            }
        }
    }

    /// Whether chain `name` exists in `table inet faultd` (one `GETCHAIN`; `ENOENT` means the
    /// table or the chain is absent).
    pub fn has_chain(&mut self, name: &str) -> Result<bool, FirewallError> {
        self.has_chain_in(TABLE, name)
    }

    /// Whether chain `name` exists in `table inet <table>`.
    pub fn has_chain_in(&mut self, table: &str, name: &str) -> Result<bool, FirewallError> {
        let op = format!("read back table inet {table}");
        let op = op.as_str();
        let mut a = Vec::new();
        nest_str(&mut a, NFTA_CHAIN_TABLE, table);
        nest_str(&mut a, NFTA_CHAIN_NAME, name);
        match self.get(op, NFT_MSG_GETCHAIN, false, a)? {
            Ok(_) => Ok(true),
            Err(libc::ENOENT) => Ok(false),
            Err(errno) => Err(FirewallError::Kernel {
                op: op.into(),
                what: format!("get chain {name}"),
                errno,
            }),
        }
    }

    /// Whether `table inet <name>` exists.
    pub fn has_table(&mut self, name: &str) -> Result<bool, FirewallError> {
        let op = format!("read back table inet {name}");
        let mut a = Vec::new();
        nest_str(&mut a, NFTA_TABLE_NAME, name);
        match self.get(&op, NFT_MSG_GETTABLE, false, a)? {
            Ok(_) => Ok(true),
            Err(libc::ENOENT) => Ok(false),
            Err(errno) => Err(FirewallError::Kernel {
                op,
                what: "get table".into(),
                errno,
            }),
        }
    }

    /// Whether `table inet faultd` exists, and its chains (name → 0) with the owner markers.
    fn chains(&mut self, op: &str) -> Result<Option<Listing>, FirewallError> {
        self.chains_in(TABLE, op)
    }

    /// Whether `table inet <table>` exists, and its chains (name → 0) with the owner markers.
    fn chains_in(&mut self, table: &str, op: &str) -> Result<Option<Listing>, FirewallError> {
        let kernel = |what: &str, errno: i32| FirewallError::Kernel {
            op: op.into(),
            what: what.into(),
            errno,
        };
        let mut name = Vec::new();
        nest_str(&mut name, NFTA_TABLE_NAME, table);
        match self.get(op, NFT_MSG_GETTABLE, false, name)? {
            Ok(_) => {}
            Err(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(kernel("get table", e)),
        }
        let mut l = Listing::default();
        // The kernel dumps every chain of the family; the table filter is applied here.
        let chains = match self.get(op, NFT_MSG_GETCHAIN, true, Vec::new())? {
            Ok(c) => c,
            Err(e) => return Err(kernel("dump chains", e)),
        };
        for c in &chains {
            let a = attrs(c);
            if attr_str(&a, NFTA_CHAIN_TABLE) != Some(table) {
                continue;
            }
            if let Some(name) = attr_str(&a, NFTA_CHAIN_NAME) {
                l.chains.entry(name.to_string()).or_insert(0);
                if let Some(id) = name.strip_prefix(OWNER_PREFIX) {
                    l.owners.push(id.to_string());
                }
            }
        }
        Ok(Some(l))
    }

    /// The owner markers of `table inet faultd`; `None` when the table is absent.
    pub fn owners(&mut self) -> Result<Option<Vec<String>>, FirewallError> {
        Ok(self
            .chains("read back table inet faultd")?
            .map(|l| l.owners))
    }

    /// The owner markers of `table inet <table>`; `None` when the table is absent.
    pub fn owners_in(&mut self, table: &str) -> Result<Option<Vec<String>>, FirewallError> {
        let op = format!("read back table inet {table}");
        Ok(self.chains_in(table, &op)?.map(|l| l.owners))
    }

    /// Reads `table inet faultd` back: its owner markers, named sets and rule counts.
    pub fn table_state(&mut self) -> Result<TableState, FirewallError> {
        let op = "read back table inet faultd";
        let kernel = |what: &str, errno: i32| FirewallError::Kernel {
            op: op.into(),
            what: what.into(),
            errno,
        };
        let Some(mut l) = self.chains(op)? else {
            return Ok(TableState::Absent);
        };
        let mut table = Vec::new();
        nest_str(&mut table, NFTA_SET_TABLE, TABLE);
        let sets = match self.get(op, NFT_MSG_GETSET, true, table.clone())? {
            Ok(s) => s,
            Err(libc::ENOENT) => return Ok(TableState::Absent), // deleted meanwhile
            Err(e) => return Err(kernel("dump sets", e)),
        };
        for s in &sets {
            let a = attrs(s);
            let anonymous = attr_be32(&a, NFTA_SET_FLAGS).unwrap_or(0) & NFT_SET_ANONYMOUS != 0;
            if attr_str(&a, NFTA_SET_TABLE) != Some(TABLE) || anonymous {
                continue;
            }
            if let Some(name) = attr_str(&a, NFTA_SET_NAME) {
                l.sets.insert(name.to_string());
            }
        }
        let rules = match self.get(op, NFT_MSG_GETRULE, true, table)? {
            Ok(r) => r,
            Err(libc::ENOENT) => return Ok(TableState::Absent),
            Err(e) => return Err(kernel("dump rules", e)),
        };
        for r in &rules {
            let a = attrs(r);
            if attr_str(&a, NFTA_RULE_TABLE) != Some(TABLE) {
                continue;
            }
            if let Some(chain) = attr_str(&a, NFTA_RULE_CHAIN) {
                *l.chains.entry(chain.to_string()).or_insert(0) += 1;
            }
        }
        Ok(TableState::Present(l))
    }
}

/// A NUL-terminated string attribute (table names in requests).
fn nest_str(b: &mut Vec<u8>, ty: u16, s: &str) {
    let len = 4 + s.len() + 1;
    b.extend_from_slice(&(len as u16).to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(s.as_bytes());
    b.push(0);
    b.resize(b.len() + (len.next_multiple_of(4) - len), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_and_errors_parse() {
        let mut b = Vec::new();
        nest_str(&mut b, 1, "faultd");
        nest_str(&mut b, 3, "owner_x");
        let a = attrs(&b);
        assert_eq!(attr_str(&a, 1), Some("faultd"));
        assert_eq!(attr_str(&a, 3), Some("owner_x"));
        assert_eq!(attr_str(&a, 2), None);
        let mut e = (-2i32).to_ne_bytes().to_vec();
        e.extend_from_slice(&[0; 8]);
        e.extend_from_slice(&7u32.to_ne_bytes());
        assert_eq!(error_of(&e), Some((-2, 7)));
        assert_eq!(error_of(&e[..8]), None);
    }
}
