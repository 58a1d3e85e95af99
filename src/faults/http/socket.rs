//! The sockets HTTPChaos opens in a pod's network namespace. A socket belongs to the namespace
//! it was created in, so each is created on a namespace thread ([`Namespace::run_async`]) and
//! then served by tokio on any worker.
//!
//! - The listener: TCP, `IP_TRANSPARENT`/`IPV6_TRANSPARENT` (the `tproxy` rule only hands
//!   packets to a transparent socket), dual-stack `[::]` on a kernel-chosen port (IPv4-only
//!   `0.0.0.0` where the namespace has no IPv6). A connection it accepts keeps the client's
//!   original destination as its local address.
//! - Upstream connections: plain TCP sockets of the namespace connecting to that original
//!   destination. They go out through `lo`, which the interception rule never matches.
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};

use crate::ns::Namespace;

/// `IPV6_TRANSPARENT` (`linux/in6.h`).
const IPV6_TRANSPARENT: libc::c_int = 75;

fn io(e: nix::errno::Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

fn ns_err(e: crate::ns::NsError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// `IPV6_TRANSPARENT` on `fd` (nix has no wrapper for it).
fn ipv6_transparent(fd: &OwnedFd) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is an open socket; the option value is a valid c_int of the given length
    // that outlives the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_IPV6,
            IPV6_TRANSPARENT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Creates the transparent listener (blocking; on a thread inside the namespace).
fn listen_here(backlog: i32) -> std::io::Result<std::net::TcpListener> {
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let v6 = socket::socket(AddressFamily::Inet6, SockType::Stream, flags, None);
    let (fd, addr): (OwnedFd, SockaddrStorage) = match v6 {
        Ok(fd) => {
            socket::setsockopt(&fd, sockopt::Ipv6V6Only, &false).map_err(io)?;
            ipv6_transparent(&fd)?;
            let any = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
            (fd, SockaddrStorage::from(any))
        }
        Err(nix::errno::Errno::EAFNOSUPPORT) => {
            let fd =
                socket::socket(AddressFamily::Inet, SockType::Stream, flags, None).map_err(io)?;
            let any: SocketAddr = "0.0.0.0:0".parse().map_err(std::io::Error::other)?;
            (fd, SockaddrStorage::from(any))
        }
        Err(e) => return Err(io(e)),
    };
    // The IPv4 side of a dual-stack socket is transparent through IP_TRANSPARENT.
    socket::setsockopt(&fd, sockopt::IpTransparent, &true).map_err(io)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(io)?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(io)?;
    socket::listen(&fd, socket::Backlog::new(backlog).map_err(io)?).map_err(io)?;
    // SAFETY: `fd` is an open, bound, listening TCP socket whose ownership moves here.
    Ok(unsafe { std::net::TcpListener::from_raw_fd(fd.into_raw_fd()) })
}

/// A transparent listener in `ns` (non-blocking, ready for `tokio::net::TcpListener::from_std`)
/// and its port.
pub async fn transparent_listener(ns: &Namespace) -> std::io::Result<(std::net::TcpListener, u16)> {
    let l = ns.run_async(|| listen_here(1024)).await.map_err(ns_err)??;
    let port = l.local_addr()?.port();
    Ok((l, port))
}

/// Binds `fd` to `client`'s address (port chosen by the kernel) with `IP_TRANSPARENT` and
/// `SO_MARK` = `mark`.
fn spoof(fd: &OwnedFd, client: SocketAddr, mark: u32) -> std::io::Result<()> {
    if client.is_ipv6() {
        ipv6_transparent(fd)?;
    } else {
        socket::setsockopt(fd, sockopt::IpTransparent, &true).map_err(io)?;
    }
    socket::setsockopt(fd, sockopt::Mark, &mark).map_err(io)?;
    let from = SocketAddr::new(client.ip(), 0);
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(from)).map_err(io)?;
    Ok(())
}

fn tcp_socket(v4: bool) -> std::io::Result<OwnedFd> {
    let family = if v4 {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(io)
}

/// The port `fd` is bound to.
fn bound_port(fd: &OwnedFd) -> Option<u16> {
    let a: SockaddrStorage = socket::getsockname(fd.as_raw_fd()).ok()?;
    a.as_sockaddr_in()
        .map(|s| s.port())
        .or_else(|| a.as_sockaddr_in6().map(|s| s.port()))
}

/// A TCP connection from `ns` to `dest` (the original destination of an intercepted
/// connection). With `from` = (client address, mark) it leaves from the client's address (never
/// from the client's own port: that 4-tuple is the intercepted connection's), so the
/// application sees the real client; the replies come back through `super::route`. Where that
/// cannot be set up, it leaves from the pod's own address.
pub async fn connect_upstream(
    ns: &Namespace,
    dest: SocketAddr,
    from: Option<(SocketAddr, u32)>,
) -> std::io::Result<tokio::net::TcpStream> {
    // Only the socket is made (and bound) in the namespace; tokio connects it.
    let fd = ns
        .run_async(move || {
            if let Some((client, mark)) = from.filter(|(c, _)| c.is_ipv4() == dest.is_ipv4()) {
                for _ in 0..3 {
                    let fd = tcp_socket(dest.is_ipv4())?;
                    match spoof(&fd, client, mark) {
                        Ok(()) if bound_port(&fd) != Some(client.port()) => return Ok(fd),
                        Ok(()) => continue,
                        Err(e) => {
                            tracing::debug!(error = %e, %client, "HTTPChaos: upstream from the pod's address");
                            break;
                        }
                    }
                }
            }
            tcp_socket(dest.is_ipv4())
        })
        .await
        .map_err(ns_err)??;
    // SAFETY: `fd` is an open, unconnected TCP socket whose ownership moves here.
    let std = unsafe { std::net::TcpStream::from_raw_fd(fd.into_raw_fd()) };
    tokio::net::TcpSocket::from_std_stream(std)
        .connect(dest)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_in_the_own_namespace_accepts_and_keeps_the_destination() {
        // Transparency needs CAP_NET_ADMIN; without it this test has nothing to show.
        let ns = match Namespace::of_pid(std::process::id(), crate::ns::NsKind::Net) {
            Ok(ns) => ns,
            Err(_) => return,
        };
        let (l, port) = match transparent_listener(&ns).await {
            Ok(x) => x,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return,
            Err(e) => panic!("{e}"),
        };
        assert_ne!(port, 0);
        let l = tokio::net::TcpListener::from_std(l).unwrap();
        let dest: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (c, a) = tokio::join!(connect_upstream(&ns, dest, None), l.accept());
        let (s, peer) = a.unwrap();
        let c = c.unwrap();
        assert_eq!(s.local_addr().unwrap().port(), port);
        assert_eq!(peer.port(), c.local_addr().unwrap().port());
    }
}
