//! What the benchmarks that query over UDP share.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

/// An A query for `name` (presentation format, no trailing dot).
pub(crate) fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = vec![(id >> 8) as u8, id as u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Asks `server` for `name`'s A record; the address when the answer holds exactly one.
pub(crate) async fn answer(sock: &UdpSocket, server: SocketAddr, id: u16, name: &str) -> Option<Ipv4Addr> {
    sock.send_to(&query(id, name), server).await.ok()?;
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let ancount = u16::from_be_bytes([buf[6], buf[7]]);
    (ancount == 1 && n >= 16).then(|| Ipv4Addr::new(buf[n - 4], buf[n - 3], buf[n - 2], buf[n - 1]))
}
