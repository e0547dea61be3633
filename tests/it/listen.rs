//! Where globaldns listens and where its replies come from, over real sockets with dig and
//! hickory, against the real binary: a wildcard listener answers from the address each query
//! was sent to (in-zone and forwarded, IPv4 and IPv6, a dual-stack socket's IPv4 clients
//! included); `--listen` is repeatable, defaults to a dual-stack `[::]:53`, and serves IPv4
//! where IPv6 is switched off.
//!
//! Tests that need a second IPv6 address or port 53 run in a network namespace of their own:
//! a thread that `unshare`s one and starts every socket, process and thread from it. That
//! needs root (CI has it); elsewhere, outside CI, such a test says loudly that it skipped.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::rr::{DNSClass, Name, RecordType};
use nix::sched::{CloneFlags, unshare};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::get;
use crate::support::*;
use crate::upstream::{Behaviour, Upstream};

/// The entry.
const IN_ZONE: &str = "svc-a.ns1.global";
const IN_ZONE_ADDRESS: &str = "10.10.0.1";
/// Forwarded to the test's upstream, which answers every name with this address.
const FORWARDED: &str = "forwarded.example";
const FORWARDED_ADDRESS: &str = "192.0.2.1";

fn entries() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = se("ns1", "svc-a", "{hosts: [svc-a.ns1.global], addresses: [10.10.0.1]}");
    std::fs::write(dir.path().join("se.yaml"), text).unwrap();
    dir
}

/// A running `globaldns serve`, killed when dropped.
struct Globaldns {
    child: Child,
    /// The `dns_addrs` it logged as bound, as logged.
    bound: String,
    /// The first bound address.
    addr: SocketAddr,
    _entries: TempDir,
}

impl Globaldns {
    /// Starts `serve` with `args`, the entries above and `upstream`; waits until it serves.
    async fn start(args: &[&str], upstream: SocketAddr) -> Globaldns {
        let entries = entries();
        let mut child = Command::new(env!("CARGO_BIN_EXE_globaldns"))
            .arg("serve")
            .args(args)
            .args(if args.contains(&"--admin") {
                &[][..]
            } else {
                &["--admin", "127.0.0.1:0"]
            })
            .args(["--log-format", "json", "--entries"])
            .arg(entries.path())
            .args(["--upstream", &upstream.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let (addr, bound) = loop {
            let line = lines.next_line().await.unwrap();
            let Some(line) = line else {
                panic!("globaldns {args:?} did not start:\n{}", seen.join("\n"));
            };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            seen.push(line);
            if let Some(addr) = v["fields"]["dns_addr"].as_str() {
                let bound = v["fields"]["dns_addrs"].as_str().unwrap_or(addr).to_owned();
                break (addr.parse().unwrap(), bound);
            }
        };
        // Keep reading, so that logging never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Globaldns {
            child,
            bound,
            addr,
            _entries: entries,
        }
    }
}

impl Globaldns {
    /// Kills it and waits until it is gone, its sockets closed.
    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// dig from `from` to `server`: the answer's addresses on NOERROR, else what dig said.
async fn dig(from: &str, server: &str, port: u16, name: &str) -> Result<Vec<String>, String> {
    let out = Command::new("dig")
        .args(["-b", from, &format!("@{server}"), "-p", &port.to_string()])
        .args(["+time=1", "+tries=2", "+noall", "+comments", "+answer", name])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !text.contains("status: NOERROR") {
        return Err(text);
    }
    Ok(text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect())
}

/// hickory's UDP client from `from` (port chosen) to `server`: the answer's addresses, or the
/// error (hickory drops a reply from any other address than `server`, then times out).
async fn hickory(from: &str, server: SocketAddr, name: &str) -> Result<Vec<String>, String> {
    let bind = SocketAddr::new(from.parse().unwrap(), 0);
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_bind_addr(Some(bind))
        .with_timeout(Some(Duration::from_secs(2)))
        .build();
    let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);
    let name = Name::from_str(name).unwrap();
    match client.query(name, DNSClass::IN, RecordType::A).await {
        Ok(response) => Ok(addresses(&response.into_message())),
        Err(e) => Err(e.to_string()),
    }
}

/// Both clients, from `from` to `server` at `port`, for the in-zone and the forwarded name.
async fn both_clients_answered(from: &str, server: &str, port: u16) {
    let server_addr = SocketAddr::new(server.parse().unwrap(), port);
    for (name, address) in [(IN_ZONE, IN_ZONE_ADDRESS), (FORWARDED, FORWARDED_ADDRESS)] {
        let by_dig = dig(from, server, port, name).await;
        assert_eq!(by_dig, Ok(vec![address.to_owned()]), "dig -b {from} @{server} {name}");
        let by_hickory = hickory(from, server_addr, name).await;
        assert_eq!(
            by_hickory,
            Ok(vec![address.to_owned()]),
            "hickory {from} → {server} {name}"
        );
    }
}

/// Runs `body` on a thread in a network namespace of its own (loopback up), on a runtime made
/// there, so that every socket, process and thread it makes is in that namespace. Skips loudly
/// where namespaces cannot be made (not root), unless CI=true.
fn in_netns<F, Fut>(test: &str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    require("dig");
    require("ip");
    let thread = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET)?;
        ip(&["link", "set", "lo", "up"]);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(body());
        nix::Result::Ok(())
    });
    match thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) if std::env::var("CI").as_deref() != Ok("true") => {
            // Straight to the process's stderr: the test harness keeps eprintln! of a passing
            // test to itself.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: cannot make a network namespace ({e}); run as root, as CI does"
            );
        }
        Ok(Err(e)) => panic!("{test}: cannot make a network namespace ({e}); CI runs the tests as root"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// `ip ARGS` in the calling thread's network namespace.
fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The case: a server on 0.0.0.0 asked at 127.0.0.2 and 127.0.0.53 by a client whose
/// address is 127.0.0.1 used to answer from 127.0.0.1, and both clients dropped it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_listener_replies_from_the_address_asked() {
    require("dig");
    let up = Upstream::start(Behaviour::Answer).await;
    let server = Globaldns::start(&["--listen", "0.0.0.0:0"], up.addr).await;
    let port = server.addr.port();
    for asked in ["127.0.0.2", "127.0.0.53", "127.0.0.1"] {
        both_clients_answered("127.0.0.1", asked, port).await;
    }
}

/// Listeners bound to one address each, second ones of the host: the system, not packet info
/// (which such a socket does without), sends the replies from the address asked.
#[test]
fn listeners_on_one_address_reply_from_it() {
    in_netns("listeners_on_one_address_reply_from_it", || async {
        ip(&["-6", "addr", "add", "fd00::53/128", "dev", "lo", "nodad"]);
        let up = Upstream::start(Behaviour::Answer).await;
        let server = Globaldns::start(&["--listen", "127.0.0.2:53", "--listen", "[fd00::53]:53"], up.addr).await;
        assert_eq!(server.bound, "[127.0.0.2:53, [fd00::53]:53]");
        both_clients_answered("127.0.0.1", "127.0.0.2", 53).await;
        both_clients_answered("::1", "fd00::53", 53).await;
    });
}

/// `[::ffff:0.0.0.0]` is IPv4's wildcard on an IPv6 socket: its replies must leave from the
/// address asked (packet info), not from the one routing picks (found by a tester: a query
/// to 127.0.0.2 was answered from 127.0.0.1, which dig and hickory drop).
#[test]
fn a_v4_mapped_wildcard_listener_replies_from_the_address_asked() {
    in_netns(
        "a_v4_mapped_wildcard_listener_replies_from_the_address_asked",
        || async {
            let up = Upstream::start(Behaviour::Answer).await;
            let server = Globaldns::start(&["--listen", "[::ffff:0.0.0.0]:53"], up.addr).await;
            assert_eq!(server.bound, "[[::ffff:0.0.0.0]:53]");
            both_clients_answered("127.0.0.1", "127.0.0.2", 53).await;
        },
    );
}

/// IPv6 on a second address of the host, and the IPv4 clients of the same dual-stack socket
/// (v4-mapped), in-zone and forwarded.
#[test]
fn a_dual_stack_listener_replies_from_the_address_asked_ipv6_and_ipv4() {
    in_netns(
        "a_dual_stack_listener_replies_from_the_address_asked_ipv6_and_ipv4",
        || async {
            ip(&["-6", "addr", "add", "fd00::53/128", "dev", "lo", "nodad"]);
            let up = Upstream::start(Behaviour::Answer).await;
            let server = Globaldns::start(&["--listen", "[::]:53"], up.addr).await;
            assert_eq!(server.bound, "[[::]:53]");
            both_clients_answered("::1", "fd00::53", 53).await;
            both_clients_answered("::1", "::1", 53).await;
            both_clients_answered("127.0.0.1", "127.0.0.2", 53).await;
        },
    );
}

/// No `--listen`: `[::]:53`, dual-stack, answering on ::1 and 127.0.0.1; and the admin endpoint
/// on `[::]`, as deploy/ runs it, for probes of either family.
#[test]
fn the_default_listener_answers_ipv6_and_ipv4() {
    in_netns("the_default_listener_answers_ipv6_and_ipv4", || async {
        let up = Upstream::start(Behaviour::Answer).await;
        let server = Globaldns::start(&["--admin", "[::]:8080"], up.addr).await;
        assert_eq!(server.bound, "[[::]:53]", "the default");
        both_clients_answered("::1", "::1", 53).await;
        both_clients_answered("127.0.0.1", "127.0.0.1", 53).await;
        both_clients_answered("127.0.0.1", "127.0.0.2", 53).await;
        for admin in ["[::1]:8080", "127.0.0.1:8080"] {
            assert_eq!(get(admin.parse().unwrap(), "/healthz").await.0, 200, "{admin}");
        }
    });
}

/// With IPv6 switched off (as `sysctl net.ipv6.conf.all.disable_ipv6=1` does on hosts without
/// IPv6) the `[::]` socket is still made and bound, so nothing falls back: it serves the IPv4
/// clients, from the address each asked. (Only a kernel without IPv6 refuses the socket, with
/// EAFNOSUPPORT; the fallback to 0.0.0.0 is tested on that error in `server::bind`.)
#[test]
fn the_default_listener_serves_ipv4_with_ipv6_switched_off() {
    in_netns("the_default_listener_serves_ipv4_with_ipv6_switched_off", || async {
        for conf in ["all", "default", "lo"] {
            let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
            std::fs::write(&path, "1").unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "1", "{path}");
        }
        let up = Upstream::start(Behaviour::Answer).await;
        let server = Globaldns::start(&[], up.addr).await;
        assert_eq!(server.bound, "[[::]:53]", "the dual-stack socket binds without IPv6");
        both_clients_answered("127.0.0.1", "127.0.0.1", 53).await;
        both_clients_answered("127.0.0.1", "127.0.0.2", 53).await;
        assert!(
            dig("127.0.0.1", "::1", 53, IN_ZONE).await.is_err(),
            "IPv6 is off in this namespace"
        );
    });
}

/// Several `--listen` addresses on one port: loopback of each family, and both wildcards (then
/// `[::]` is IPv6-only, else the second bind would fail).
#[test]
fn ipv4_and_ipv6_listeners_share_a_port() {
    in_netns("ipv4_and_ipv6_listeners_share_a_port", || async {
        let up = Upstream::start(Behaviour::Answer).await;
        for (listen, bound) in [
            (["127.0.0.1:53", "[::1]:53"], "[127.0.0.1:53, [::1]:53]"),
            (["0.0.0.0:53", "[::]:53"], "[0.0.0.0:53, [::]:53]"),
        ] {
            let server = Globaldns::start(&["--listen", listen[0], "--listen", listen[1]], up.addr).await;
            assert_eq!(server.bound, bound);
            both_clients_answered("127.0.0.1", "127.0.0.1", 53).await;
            both_clients_answered("::1", "::1", 53).await;
            if listen[0] == "0.0.0.0:53" {
                both_clients_answered("127.0.0.1", "127.0.0.2", 53).await;
            }
            server.stop().await; // the next one binds the same port
        }
    });
}
