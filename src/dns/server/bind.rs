//! Binding the `--listen` addresses: a UDP socket per thread (SO_REUSEPORT) and a TCP listener
//! on each, and how each treats the two address families (DESIGN "Answers").
//!
//! `[::]` is dual-stack (IPV6_V6ONLY off: IPv4 clients arrive as v4-mapped addresses) unless an
//! IPv4 address with the same port is listened on too; then it is IPv6-only, so that
//! `--listen 0.0.0.0:53 --listen [::]:53` binds both. A dual-stack `[::]` that cannot be made or
//! bound for want of IPv6 (a kernel without it: `EAFNOSUPPORT`) falls back to `0.0.0.0` on
//! its port. With IPv6 merely switched off (`net.ipv6.conf.*.disable_ipv6 = 1`), `[::]` still
//! binds and serves IPv4 clients, so nothing falls back there.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use nix::errno::Errno;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

use super::super::batch::{enable_packet_info, needs_packet_info};
use super::{BindError, Bound};

/// How a listening address treats the address families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stack {
    /// As the address says: an IPv4 address, or an IPv6 one other than `[::]`.
    Plain,
    /// `[::]` for IPv4 clients too (IPV6_V6ONLY off).
    Dual,
    /// `[::]` for IPv6 only: an IPv4 address has the same port.
    V6Only,
}

/// How `addr`, one of `all`, is bound.
pub(super) fn stack(addr: SocketAddr, all: &[SocketAddr]) -> Stack {
    let wildcard_v6 = addr.is_ipv6() && addr.ip().is_unspecified();
    if !wildcard_v6 {
        Stack::Plain
    } else if addr.port() != 0 && all.iter().any(|a| a.is_ipv4() && a.port() == addr.port()) {
        Stack::V6Only
    } else {
        Stack::Dual
    }
}

/// An error that says the system has no IPv6: a dual-stack `[::]` then serves IPv4 alone.
pub(super) fn no_ipv6(e: &io::Error) -> bool {
    [Errno::EAFNOSUPPORT, Errno::EPROTONOSUPPORT, Errno::EADDRNOTAVAIL]
        .iter()
        .any(|&errno| e.raw_os_error() == Some(errno as i32))
}

/// A socket of `kind` for `addr` as `stack` says, not yet bound.
fn socket(addr: SocketAddr, stack: Stack, kind: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    match stack {
        Stack::Plain => {}
        Stack::Dual => socket.set_only_v6(false)?,
        Stack::V6Only => socket.set_only_v6(true)?,
    }
    Ok(socket)
}

/// A blocking UDP socket on `addr` with SO_REUSEPORT, so that several share one address, a
/// read timeout of `poll`, and each datagram's destination reported when the address is a
/// wildcard ([`needs_packet_info`]).
pub(super) fn udp(addr: SocketAddr, stack: Stack, poll: Duration) -> io::Result<std::net::UdpSocket> {
    let socket = socket(addr, stack, Type::DGRAM, Protocol::UDP)?;
    socket.set_reuse_port(true)?;
    socket.set_read_timeout(Some(poll))?;
    if needs_packet_info(&addr) {
        enable_packet_info(&socket, addr.is_ipv6())?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A TCP listener on `addr` (SO_REUSEADDR and a backlog of 1024, as tokio's `bind`).
pub(super) fn tcp(addr: SocketAddr, stack: Stack) -> io::Result<TcpListener> {
    let socket = socket(addr, stack, Type::STREAM, Protocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Where a dual-stack `[::]` on `port` falls back to without IPv6.
pub(super) fn fallback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
}

/// Binds `addr` as `stack` says: `udp_sockets` UDP sockets (a read timeout of `poll`) and a
/// TCP listener on one port.
pub(super) fn address(addr: SocketAddr, stack: Stack, udp_sockets: usize, poll: Duration) -> io::Result<Bound> {
    let mut last_err = None;
    for _ in 0..16 {
        let first = udp(addr, stack, poll)?;
        let bound = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..udp_sockets.max(1) {
            sockets.push(udp(bound, stack, poll)?);
        }
        match tcp(bound, stack) {
            Ok(tcp) => {
                return Ok(Bound {
                    addr: bound,
                    udp: sockets,
                    tcp,
                });
            }
            Err(e) if addr.port() == 0 => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
}

/// `bind(addr, stack)`, or where a dual-stack `[::]` finds no IPv6, `bind` of `0.0.0.0` on its
/// port (with a warning).
pub(super) fn with_fallback<T>(
    addr: SocketAddr,
    stack: Stack,
    bind: impl Fn(SocketAddr, Stack) -> io::Result<T>,
) -> Result<T, BindError> {
    match bind(addr, stack) {
        Err(e) if stack == Stack::Dual && no_ipv6(&e) => {
            let v4 = fallback(addr.port());
            tracing::warn!(%addr, error = %e, instead = %v4, "no IPv6 here: listening on IPv4 alone");
            bind(v4, Stack::Plain).map_err(|source| BindError { addr: v4, source })
        }
        bound => bound.map_err(|source| BindError { addr, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(text: &[&str]) -> Vec<SocketAddr> {
        text.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn the_wildcard_v6_is_dual_stack_unless_ipv4_has_its_port() {
        let alone = addrs(&["[::]:53"]);
        assert_eq!(stack(alone[0], &alone), Stack::Dual);
        let both = addrs(&["0.0.0.0:53", "[::]:53"]);
        assert_eq!(stack(both[1], &both), Stack::V6Only);
        assert_eq!(stack(both[0], &both), Stack::Plain);
        let loopback = addrs(&["[::]:53", "127.0.0.1:53"]);
        assert_eq!(
            stack(loopback[0], &loopback),
            Stack::V6Only,
            "any IPv4 address on the port"
        );
        let other_port = addrs(&["0.0.0.0:5353", "[::]:53"]);
        assert_eq!(stack(other_port[1], &other_port), Stack::Dual);
        let any_port = addrs(&["0.0.0.0:0", "[::]:0"]);
        assert_eq!(
            stack(any_port[1], &any_port),
            Stack::Dual,
            "port 0 is a port of its own"
        );
        let specific = addrs(&["[::1]:53", "127.0.0.1:53"]);
        assert_eq!(stack(specific[0], &specific), Stack::Plain);
    }

    #[test]
    fn only_a_missing_ipv6_falls_back() {
        for errno in [Errno::EAFNOSUPPORT, Errno::EPROTONOSUPPORT, Errno::EADDRNOTAVAIL] {
            assert!(no_ipv6(&io::Error::from_raw_os_error(errno as i32)), "{errno}");
        }
        for errno in [Errno::EADDRINUSE, Errno::EACCES, Errno::EMFILE] {
            assert!(!no_ipv6(&io::Error::from_raw_os_error(errno as i32)), "{errno}");
        }
        assert_eq!(fallback(53), "0.0.0.0:53".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn a_dual_stack_wildcard_without_ipv6_binds_ipv4_on_its_port() {
        let refused = |errno: Errno| io::Error::from_raw_os_error(errno as i32);
        let tried = std::cell::RefCell::new(Vec::new());
        let tried = &tried;
        let bind = |errno: Errno| {
            move |addr: SocketAddr, stack: Stack| {
                tried.borrow_mut().push((addr.to_string(), stack));
                if addr.is_ipv6() { Err(refused(errno)) } else { Ok(addr) }
            }
        };
        let wildcard: SocketAddr = "[::]:53".parse().unwrap();
        let bound = with_fallback(wildcard, Stack::Dual, bind(Errno::EAFNOSUPPORT)).unwrap();
        assert_eq!(bound.to_string(), "0.0.0.0:53");
        assert_eq!(
            tried.take(),
            [
                ("[::]:53".to_string(), Stack::Dual),
                ("0.0.0.0:53".to_string(), Stack::Plain)
            ]
        );
        // An IPv6-only [::] (an IPv4 listener has the port already), or another error: no fallback.
        let e = with_fallback(wildcard, Stack::V6Only, bind(Errno::EAFNOSUPPORT)).unwrap_err();
        assert_eq!(e.addr, wildcard);
        let e = with_fallback(wildcard, Stack::Dual, bind(Errno::EADDRINUSE)).unwrap_err();
        assert_eq!(
            (e.addr, e.source.raw_os_error()),
            (wildcard, Some(Errno::EADDRINUSE as i32))
        );
        assert_eq!(tried.take().len(), 2, "one attempt each");
    }
}
