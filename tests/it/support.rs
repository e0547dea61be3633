//! Shared pieces: a server started on a temporary directory of entry files, clients, tools,
//! daemons ([`daemon`], [`knot`]).

pub(crate) mod daemon;
pub(crate) mod knot;

pub(crate) use daemon::{Daemon, free_ports, spawn};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use globaldns::app::{self, Running, ServeConfig};
use globaldns::dns::forward::ForwardSettings;
use globaldns::dns::server::Limits;
use globaldns::table::TableSettings;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{entry_files, loopback};

/// A ServiceEntry document.
pub(crate) fn se(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"
    )
}

/// The repository's deploy/examples.
pub(crate) fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples")
}

/// A server serving a temporary directory of entry files.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) dir: TempDir,
    running: Option<Running>,
}

impl Server {
    /// Writes `files` into a new directory and serves it on 127.0.0.1:0, no forwarding.
    pub(crate) async fn start(files: &[(&str, &str)]) -> Server {
        Server::start_forwarding(files, None).await
    }

    /// The same, forwarding other names as `forward` says.
    pub(crate) async fn start_forwarding(files: &[(&str, &str)], forward: Option<ForwardSettings>) -> Server {
        Server::start_with(files, forward, Limits::default()).await
    }

    /// The same, with listener `limits`.
    pub(crate) async fn start_with(files: &[(&str, &str)], forward: Option<ForwardSettings>, limits: Limits) -> Server {
        Server::start_table(files, TableSettings::new(&["global"]).unwrap(), forward, limits).await
    }

    /// The same, with table `settings` (zones, TTLs, …).
    pub(crate) async fn start_table(
        files: &[(&str, &str)],
        settings: TableSettings,
        forward: Option<ForwardSettings>,
        limits: Limits,
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let config = ServeConfig {
            table: settings,
            limits,
            forward,
            ..loopback(entry_files(dir.path()))
        };
        let running = app::start(config).await.expect("server starts");
        Server {
            addr: running.dns_addr(),
            dir,
            running: Some(running),
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn admin_addr(&self) -> SocketAddr {
        self.running.as_ref().unwrap().admin_addr().expect("admin endpoint")
    }

    pub(crate) fn serial(&self) -> u32 {
        self.table().versions()[0].serial
    }

    /// The table it serves now.
    pub(crate) fn table(&self) -> std::sync::Arc<globaldns::table::Table> {
        self.running.as_ref().unwrap().table()
    }

    /// Stops the server and waits for every task to end.
    pub(crate) async fn stop(mut self) {
        let running = self.running.take().unwrap();
        running.shutdown_token().cancel();
        tokio::time::timeout(Duration::from_secs(5), running.wait())
            .await
            .expect("server stops");
    }
}

pub(crate) type DnsClient = Client<TokioRuntimeProvider>;

pub(crate) async fn udp_client(addr: SocketAddr) -> DnsClient {
    let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default()).build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);
    client
}

pub(crate) async fn tcp_client(addr: SocketAddr) -> DnsClient {
    let (stream, sender) = TcpClientStream::new(addr, None, None, TokioRuntimeProvider::default());
    let (client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), sender);
    tokio::spawn(bg);
    client
}

/// One query through a hickory client; the whole response message.
pub(crate) async fn ask(client: &mut DnsClient, name: &str, qtype: RecordType) -> Message {
    let name = Name::from_str(name).unwrap();
    client
        .query(name, DNSClass::IN, qtype)
        .await
        .expect("a response")
        .into_message()
}

/// Records as `owner ttl TYPE data`.
pub(crate) fn records(rs: &[hickory_proto::rr::Record]) -> Vec<String> {
    rs.iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect()
}

/// Addresses of the answer, sorted.
pub(crate) fn addresses(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

/// Fails loudly when a tool is missing: `scripts/test` installs it.
pub(crate) fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is missing: run scripts/test, which installs what the tests need"
    );
}

/// `kdig @server -p PORT ARGS…`, without blocking the runtime; what it prints.
pub(crate) async fn kdig_at(server: SocketAddr, args: &[&str]) -> String {
    ask_with("kdig", server, args).await
}

/// `dig @server -p PORT ARGS…`, without blocking the runtime; what it prints.
pub(crate) async fn dig_at(server: SocketAddr, args: &[&str]) -> String {
    ask_with("dig", server, args).await
}

/// `PROGRAM @server -p PORT ARGS…` (dig and kdig take the same), what it prints.
async fn ask_with(program: &str, server: SocketAddr, args: &[&str]) -> String {
    let out = tokio::process::Command::new(program)
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(args)
        .output()
        .await
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `check` until it holds or `within` passes.
pub(crate) async fn eventually<F: FnMut() -> Fut, Fut: std::future::Future<Output = bool>>(
    within: Duration,
    mut check: F,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}

/// Forward settings for `upstreams` with short timeouts.
pub(crate) fn forwarding(upstreams: &[SocketAddr]) -> ForwardSettings {
    ForwardSettings {
        upstreams: upstreams.to_vec(),
        attempt_timeout: Duration::from_millis(300),
        budget: Duration::from_millis(1500),
        max_in_flight: 64,
    }
}

/// Query bytes with RD set, and an OPT advertising 1232 bytes when `edns`.
pub(crate) fn query_bytes(id: u16, name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// `GET path` → (status, body).
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    // HTTP/1.0: the body ends with the connection, never chunked (Prometheus's replies too).
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of a metric line `name{labels} value`.
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}
