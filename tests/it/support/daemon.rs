//! Daemons the tests start (Knot, NSD, unbound, dnsmasq): killed when the test ends, on
//! loopback ports chosen free for both UDP and TCP.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A daemon killed when the test ends.
pub(crate) struct Daemon(pub(crate) Child, pub(crate) &'static str);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Distinct loopback ports free for both UDP and TCP right now. They are held until all are
/// chosen: ports picked one at a time can repeat, and Knot and unbound bind with SO_REUSEPORT,
/// so two daemons on one port would silently share its queries.
pub(crate) fn free_ports<const N: usize>() -> [u16; N] {
    let mut held = Vec::new();
    while held.len() < N {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
            held.push((port, udp, tcp));
        }
    }
    std::array::from_fn(|i| held[i].0)
}

pub(crate) fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Daemon {
    let log = std::fs::File::create(log).unwrap();
    let child = cmd
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Daemon(child, name)
}
