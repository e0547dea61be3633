//! Upstream addresses: `--upstream` and the `nameserver` lines of resolv.conf.
//!
//! An IPv6 link-local address names its interface (its zone, RFC 4007 §11: `fe80::1%eth0`);
//! without it the kernel cannot route the datagram (`connect` fails with EINVAL), so the
//! zone is kept as the socket address's scope ID, by interface name or by number.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};

use thiserror::Error;

/// An `--upstream` that is not an IP or IP:PORT, names an interface that does not exist, or
/// could never be dialled: port 0, or a link-local IPv6 address without its interface.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "upstream {0:?} is not a usable IP or IP:PORT (port 1-65535, a link-local IPv6 address with an existing %interface)"
)]
pub struct BadUpstream(pub String);

/// Whether `addr` can be dialled at all: not port 0 (nothing answers there), and a link-local IPv6 address (fe80::/10) only with its zone (RFC 4007 §6: without
/// one, `connect` fails with EINVAL and every forward to it would fail).
fn dialable(addr: &SocketAddr) -> bool {
    let link_local_without_zone = match addr {
        SocketAddr::V6(v6) => (v6.ip().segments()[0] & 0xffc0) == 0xfe80 && v6.scope_id() == 0,
        SocketAddr::V4(_) => false,
    };
    addr.port() != 0 && !link_local_without_zone
}

/// Parses `IP` (port 53) or `IP:PORT` (`[v6]:PORT` for IPv6); an IPv6 address may carry a
/// zone, `fe80::1%eth0` or `[fe80::1%eth0]:53` (an interface name or index).
///
/// # Errors
///
/// [`BadUpstream`] (holding `text`) when `text` is neither form, its zone names no interface
/// of this host, its port is 0, or it is a link-local IPv6 address without a zone.
pub fn parse_upstream(text: &str) -> Result<SocketAddr, BadUpstream> {
    let bad = || BadUpstream(text.into());
    let addr = if let Ok(addr) = text.parse::<SocketAddr>() {
        addr
    } else if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
        let port = port.parse::<u16>().map_err(|_| bad())?;
        host_with_zone(host, port).ok_or_else(bad)?
    } else {
        host_with_zone(text, 53).ok_or_else(bad)?
    };
    if dialable(&addr) { Ok(addr) } else { Err(bad()) }
}

/// `IP` or `IPv6%zone`, at `port`.
fn host_with_zone(host: &str, port: u16) -> Option<SocketAddr> {
    match host.split_once('%') {
        None => host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port)),
        Some((ip, zone)) => {
            let ip = ip.parse::<Ipv6Addr>().ok()?;
            let scope = scope_id(zone)?;
            Some(SocketAddrV6::new(ip, port, 0, scope).into())
        }
    }
}

/// The index of interface `zone` (a name, or already a number).
fn scope_id(zone: &str) -> Option<u32> {
    if let Ok(index) = zone.parse::<u32>() {
        return Some(index);
    }
    if zone.is_empty() {
        return None;
    }
    nix::net::if_::if_nametoindex(zone).ok()
}

/// The address of each `nameserver` line of a resolv.conf (resolv.conf(5)), as written, usable
/// or not.
pub fn resolv_conf_nameserver_words(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "nameserver").then_some(())?;
        words.next()
    })
}

/// The `nameserver` lines of a resolv.conf (resolv.conf(5)), port 53, zones (`%eth0`) kept;
/// a nameserver whose interface does not exist is skipped with a warning.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    resolv_conf_nameserver_words(text)
        .filter_map(|word| {
            let addr = host_with_zone(word, 53);
            if addr.is_none() && word.contains('%') && word.split('%').next()?.parse::<Ipv6Addr>().is_ok() {
                tracing::warn!(nameserver = word, "resolv.conf: no such interface; nameserver skipped");
            }
            let addr = addr?;
            if !dialable(&addr) {
                tracing::warn!(
                    nameserver = word,
                    "resolv.conf: cannot be dialled (a link-local address needs its %interface); nameserver skipped"
                );
                return None;
            }
            Some(addr)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo() -> u32 {
        nix::net::if_::if_nametoindex("lo").expect("every Linux host has lo")
    }

    fn scoped(text: &str, scope: u32) -> SocketAddr {
        let mut addr: SocketAddrV6 = text.parse().unwrap();
        addr.set_scope_id(scope);
        addr.into()
    }

    #[test]
    fn upstream_syntax() {
        assert_eq!(parse_upstream("10.0.0.10"), Ok("10.0.0.10:53".parse().unwrap()));
        assert_eq!(parse_upstream("127.0.0.1:5300"), Ok("127.0.0.1:5300".parse().unwrap()));
        assert_eq!(parse_upstream("::1"), Ok("[::1]:53".parse().unwrap()));
        assert_eq!(parse_upstream("[fd00::a]:5353"), Ok("[fd00::a]:5353".parse().unwrap()));
        assert!(parse_upstream("kube-dns.kube-system").is_err());
        assert!(parse_upstream("1.2.3.4:99999").is_err());
        assert!(parse_upstream("[fe80::1%lo]").is_err(), "brackets need a port");
        assert!(parse_upstream("10.0.0.1%lo").is_err(), "zones are IPv6's");
    }

    #[test]
    fn upstreams_that_could_never_answer_are_refused() {
        for bad in ["fe80::1", "[fe80::1]:53", "febf::1", "127.0.0.1:0", "[::1]:0"] {
            assert_eq!(parse_upstream(bad), Err(BadUpstream(bad.into())), "{bad}");
        }
        assert!(parse_upstream("fec0::1").is_ok(), "not link-local");
        let got = resolv_conf_nameservers("nameserver fe80::1\nnameserver 10.96.0.10\n");
        assert_eq!(got, vec!["10.96.0.10:53".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn link_local_upstreams_keep_their_interface() {
        let lo = lo();
        assert_ne!(lo, 0);
        assert_eq!(parse_upstream("fe80::1%lo"), Ok(scoped("[fe80::1]:53", lo)));
        assert_eq!(parse_upstream("[fe80::1%lo]:5353"), Ok(scoped("[fe80::1]:5353", lo)));
        assert_eq!(parse_upstream("[fe80::1%7]:53"), Ok(scoped("[fe80::1]:53", 7)));
        assert_eq!(parse_upstream("fe80::1%7"), Ok(scoped("[fe80::1]:53", 7)));
        for bad in [
            "fe80::1%no-such-if0",
            "[fe80::1%no-such-if0]:53",
            "fe80::1%",
            "[fe80::1%]:53",
        ] {
            assert_eq!(parse_upstream(bad), Err(BadUpstream(bad.into())), "{bad}");
        }
        let SocketAddr::V6(addr) = parse_upstream("fe80::1%lo").unwrap() else {
            panic!("v6")
        };
        assert_eq!(addr.scope_id(), lo, "dialled on lo, not as [fe80::1]:53");
    }

    #[test]
    fn resolv_conf() {
        let text = "# generated\nsearch default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\n\
                    nameserver fe80::1%lo\nnameserver fe80::2%no-such-if0\nnameserver\noptions ndots:5\n  \
                    nameserver 1.1.1.1\nnameserver bogus\nnameserver fe80::3%3\n";
        let got = resolv_conf_nameservers(text);
        let want: Vec<SocketAddr> = vec![
            "10.96.0.10:53".parse().unwrap(),
            scoped("[fe80::1]:53", lo()),
            "1.1.1.1:53".parse().unwrap(),
            scoped("[fe80::3]:53", 3),
        ];
        assert_eq!(got, want);
    }
}
