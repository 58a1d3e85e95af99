//! A blocking `NETLINK_ROUTE` socket: the transport under every qdisc operation.
//!
//! A netlink socket talks to the network namespace it was created in, for its whole life, no
//! matter which thread later uses it. [`in_netns`] creates one on a dedicated OS thread that
//! entered the target namespace and runs the whole operation there, synchronously: one thread,
//! one socket and a few request/reply round trips per call, no async connection task and no hop
//! between threads per message. No tokio worker ever calls `setns` or blocks on the socket.
//!
//! Requests are `netlink-packet-route` messages; replies are matched by sequence number, so a
//! late reply to an earlier request (there is none in practice: every exchange reads until its
//! end) can never be mistaken for the current one.
use std::os::fd::{AsRawFd, OwnedFd};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use nix::sys::socket::{
    sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use std::time::Duration;

use super::{Result, TcError};
use crate::ns::kept::{JobSize, Kept};
use crate::ns::{Namespace, NsId, NsKind};

/// Receive buffer: the kernel sizes dump datagrams to the reader's buffer, up to 32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// A route netlink socket bound to the network namespace it was opened in.
#[derive(Debug)]
pub struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
    /// [`RECV_BUF`] bytes of capacity, filled only as far as the last reply (a kept socket
    /// per namespace must not cost 64 KiB of touched memory each).
    buf: Vec<u8>,
}

/// Runs `f` with a route socket inside `ns` (a network namespace), on a dedicated OS thread that
/// entered it; the thread and the socket end with the call.
pub async fn in_netns<T, F>(ns: &Namespace, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut RouteSocket) -> Result<T> + Send + 'static,
{
    if ns.kind() != NsKind::Net {
        return Err(TcError::invalid(
            "namespace",
            format!("{:?}", ns.kind()),
            "not a network namespace",
        ));
    }
    ns.run_async(move || RouteSocket::open().and_then(|mut s| f(&mut s)))
        .await?
}

/// Route sockets kept per namespace for the faults that come back to it (a qdisc fault's
/// apply, update and undo), on threads of their own (see [`crate::ns::kept`]): closed after
/// [`KEPT_IDLE`] without a job, or [`KEPT_LINGER`] after [`release_kept`].
static KEPT: Kept<RouteSocket> = Kept::new("faultd-rtnl", KEPT_IDLE, KEPT_LINGER);

/// How long an unused kept route socket stays open.
pub const KEPT_IDLE: Duration = Duration::from_secs(10);
/// How long a kept route socket stays open after [`release_kept`] (the namespace's last qdisc
/// fault ended): the controller often recovers and re-applies back to back.
pub const KEPT_LINGER: Duration = Duration::from_secs(1);

/// Runs `f` with the route socket kept for network namespace `id` (in place when the socket is
/// free: qdisc requests are small; see [`crate::ns::kept`]). Without
/// one, `find` gives the namespace (`None`: it is gone, [`TcError::NamespaceGone`]) and a
/// socket is opened in it. A kept socket pins its namespace, so `id` cannot name another
/// namespace meanwhile. `hold`: `f` belongs to a live fault (undoes [`release_kept`]).
pub async fn in_kept_netns<T, F>(
    id: NsId,
    find: impl FnOnce() -> Option<Namespace>,
    hold: bool,
    f: F,
) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut RouteSocket) -> Result<T> + Send + 'static,
{
    let found = || {
        let ns = find().ok_or(TcError::NamespaceGone)?;
        if ns.kind() != NsKind::Net {
            return Err(TcError::invalid(
                "namespace",
                format!("{:?}", ns.kind()),
                "not a network namespace",
            ));
        }
        Ok(ns)
    };
    KEPT.run(id, found, RouteSocket::open, hold, JobSize::Small, f)
        .await
}

/// The namespace's last qdisc fault ended: its kept route socket closes [`KEPT_LINGER`] after
/// the last job unless it is used again.
pub fn release_kept(id: NsId) {
    KEPT.release(id);
}

impl RouteSocket {
    /// Receives one datagram into the buffer's capacity; the buffer then holds what arrived
    /// (at most [`RECV_BUF`] bytes). Returns the datagram's real length (`MSG_TRUNC`), which is
    /// larger than the buffer when the datagram did not fit.
    fn recv_reply(&mut self) -> nix::Result<usize> {
        self.buf.clear();
        let cap = self.buf.capacity();
        // SAFETY: the kernel writes at most `cap` bytes into the vector's allocation, which has
        // room for `cap` bytes; the fd is a socket this value owns.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                cap,
                libc::MSG_TRUNC,
            )
        };
        let n = nix::Error::result(n)? as usize;
        // SAFETY: the kernel initialized the first min(n, cap) bytes (n is the real length
        // with MSG_TRUNC, and only `cap` bytes were copied).
        unsafe { self.buf.set_len(n.min(cap)) };
        Ok(n)
    }

    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<RouteSocket> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(|e| TcError::Socket(e.into()))?;
        Ok(RouteSocket {
            fd,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Opens a socket inside `ns` on a short-lived thread and hands it back: the socket keeps
    /// talking to `ns` from any thread. For callers that already run on a thread of their own
    /// (tests, tools); the daemon uses [`in_netns`].
    pub fn open_in(ns: &Namespace) -> Result<RouteSocket> {
        if ns.kind() != NsKind::Net {
            return Err(TcError::invalid(
                "namespace",
                format!("{:?}", ns.kind()),
                "not a network namespace",
            ));
        }
        ns.run(RouteSocket::open)?
    }

    /// The index of device `name` in the socket's namespace (`SIOCGIFINDEX`), or `None` when there
    /// is no such device. A netlink socket has no ioctls of its own, so the kernel answers the
    /// generic device ioctls for it in the socket's network namespace (`sock_do_ioctl` falls back
    /// to `dev_ioctl(sock_net(sk), ...)`): one syscall, where an `RTM_GETLINK` round trip returns
    /// and decodes the device's full attribute set and statistics. `name` must already be a
    /// valid interface name (at most 15 bytes, no NUL).
    pub fn ifindex(&self, name: &str) -> Result<Option<u32>> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(TcError::invalid(
                "device",
                name,
                "not a valid interface name",
            ));
        }
        // SAFETY: ifreq is plain old data; all-zero is a valid value (empty name, zero union).
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        // SAFETY: the fd is an open socket owned by self; SIOCGIFINDEX reads the NUL-terminated
        // name (the array is zero-filled past the name, which is shorter than IFNAMSIZ) and
        // writes ifr_ifindex inside the ifreq we own for the duration of the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFINDEX, &mut req) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODEV) => Ok(None),
                _ => Err(TcError::Io {
                    op: "look up link",
                    source: e,
                }),
            };
        }
        // SAFETY: SIOCGIFINDEX succeeded, so the kernel filled the ifindex member of the union.
        let index = unsafe { req.ifr_ifru.ifru_ifindex };
        u32::try_from(index)
            .map(Some)
            .map_err(|_| TcError::Protocol {
                op: "look up link",
                detail: format!("negative ifindex {index}"),
            })
    }

    /// Sends a request that expects only an acknowledgement; a negative one becomes
    /// [`TcError::Kernel`].
    pub fn request_ack(
        &mut self,
        op: &'static str,
        mut msg: NetlinkMessage<RouteNetlinkMessage>,
    ) -> Result<()> {
        msg.header.flags |= NLM_F_REQUEST | NLM_F_ACK;
        self.exchange(op, msg).map(|_| ())
    }

    /// Sends a request and collects the messages of its answer (one for a `GET`, many for a
    /// dump when `dump` is set) up to the acknowledgement or the end of the dump.
    pub fn request(
        &mut self,
        op: &'static str,
        mut msg: NetlinkMessage<RouteNetlinkMessage>,
        dump: bool,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        msg.header.flags |= NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
        self.exchange(op, msg)
    }

    fn exchange(
        &mut self,
        op: &'static str,
        mut msg: NetlinkMessage<RouteNetlinkMessage>,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        msg.header.sequence_number = seq;
        msg.header.port_number = 0;
        msg.finalize();
        let mut out_buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out_buf);
        let io = |source: nix::Error| TcError::Io {
            op,
            source: source.into(),
        };
        sendto(
            self.fd.as_raw_fd(),
            &out_buf,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map_err(io)?;

        let mut replies = Vec::new();
        loop {
            let n = loop {
                match self.recv_reply() {
                    Err(nix::Error::EINTR) => continue,
                    r => break r.map_err(io)?,
                }
            };
            if n > self.buf.len() {
                return Err(TcError::Protocol {
                    op,
                    detail: format!("reply of {n} bytes exceeds the {RECV_BUF}-byte buffer"),
                });
            }
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(self.buf[off..off + 4].try_into().expect("4 bytes"))
                    as usize;
                if len < 16 || off + len > n {
                    return Err(TcError::Protocol {
                        op,
                        detail: format!("malformed message of length {len} at offset {off}"),
                    });
                }
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..off + len])
                        .map_err(|e| TcError::Protocol {
                        op,
                        detail: format!("undecodable reply: {e}"),
                    })?;
                off += (len + 3) & !3;
                if reply.header.sequence_number != seq {
                    continue; // not ours (a stale reply or a notification)
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(code) => Err(TcError::Kernel {
                                op,
                                errno: code.get().saturating_neg(),
                            }),
                            None => Ok(replies), // the acknowledgement
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    // Every exchange asks for an ACK or a dump, so answers are read until
                    // one of the two endings above.
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    NetlinkPayload::Noop => {}
                    other => {
                        return Err(TcError::Protocol {
                            op,
                            detail: format!("{other:?}"),
                        })
                    }
                }
            }
        }
    }
}
