//! What the benchmarks that query over UDP share.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

mod wire;

pub(crate) use wire::query;

/// Asks `server` for `name`'s A record; the address when the answer holds exactly one.
pub(crate) async fn answer(sock: &UdpSocket, server: SocketAddr, id: u16, name: &str) -> Option<Ipv4Addr> {
    sock.send_to(&query(id, name, 1, false), server).await.ok()?;
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let ancount = u16::from_be_bytes([buf[6], buf[7]]);
    (ancount == 1 && n >= 16).then(|| Ipv4Addr::new(buf[n - 4], buf[n - 3], buf[n - 2], buf[n - 1]))
}
