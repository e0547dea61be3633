//! Answers larger than the transport allows, as real clients see them: a musl stub resolver
//! (no TCP retry before musl 1.2.4, so Alpine ≤ 3.17 pods) and `dig` get TC=1 with every
//! whole record that fits 512 bytes over UDP; over TCP an RRset too large for one message is
//! served with the records that fit, and TC is never set.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use crate::support::*;

/// Bytes of a name in wire format (`a.b` → `\x01a\x01b\x00`).
fn wire_len(name: &str) -> usize {
    name.trim_end_matches('.').len() + 2
}

/// How many A records (16 bytes each, owner compressed) fit `limit` bytes after the header,
/// the question for `name` and an OPT record of 11 bytes when `edns`.
fn a_records_that_fit(name: &str, limit: usize, edns: bool) -> usize {
    (limit - 12 - (wire_len(name) + 4) - if edns { 11 } else { 0 }) / 16
}

/// An entry giving `host` `n` IPv4 addresses (10.64.0.1 on); the addresses.
fn host_with(host: &str, n: u32) -> (String, Vec<String>) {
    let addresses: Vec<String> = (0..n).map(|i| Ipv4Addr::from(0x0A40_0001 + i).to_string()).collect();
    let entry = se(
        "ns1",
        "many",
        &format!("{{hosts: [{host}], addresses: [{}]}}", addresses.join(", ")),
    );
    (entry, addresses)
}

/// What `dig` printed: the flags, the ANSWER count, and the addresses of the answer section.
struct Dig {
    flags: Vec<String>,
    answer_count: usize,
    addresses: Vec<String>,
    size: usize,
}

fn parse_dig(text: &str) -> Dig {
    let header = text
        .lines()
        .find(|l| l.starts_with(";; flags:"))
        .unwrap_or_else(|| panic!("no header in dig's output: {text}"));
    let (flags, counts) = header[";; flags:".len()..].split_once(';').unwrap();
    let answer_count = counts
        .split(',')
        .find_map(|c| c.trim().strip_prefix("ANSWER: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ANSWER count: {header}"));
    let addresses = text
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| l.split_once("\tIN\tA\t").map(|(_, a)| a.trim().to_string()))
        .collect();
    let size = text
        .lines()
        .find_map(|l| l.strip_prefix(";; MSG SIZE  rcvd: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no message size: {text}"));
    Dig {
        flags: flags.split_whitespace().map(str::to_string).collect(),
        answer_count,
        addresses,
        size,
    }
}

/// Checks `got` are distinct addresses of `all`.
fn distinct_of(got: &[String], all: &[String]) {
    let set: std::collections::BTreeSet<&String> = got.iter().collect();
    assert_eq!(set.len(), got.len(), "no address twice: {got:?}");
    for a in got {
        assert!(all.contains(a), "{a} is not the host's");
    }
}

/// Whether this process can make mount and network namespaces (root, as in CI). Outside CI a
/// machine that cannot is told so; with `CI=true` it fails.
fn namespaces_allowed() -> bool {
    let ok = Command::new("unshare")
        .args(["--mount", "--net", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "`unshare --mount --net` fails: the musl test needs root (CI runs as root)"
        );
        eprintln!("SKIPPED: `unshare --mount --net` fails here (not root); CI runs this test");
    }
    ok
}

/// Inside its own mount and network namespace: loopback up, a resolv.conf naming 127.0.0.1
/// bind-mounted over /etc/resolv.conf (in that namespace only: the machine's file is never
/// touched), the real binary on 127.0.0.1:53 (musl asks no other port), then musl's
/// getaddrinfo and `dig +noedns +ignore` for `$1` (once `dig` gets one of its addresses, so
/// the server answers); their output lands in `$2`.
const NAMESPACE_SCRIPT: &str = r#"
set -eu
name=$1 dir=$2 bin=$3
ip link set lo up
mount --bind "$dir/resolv.conf" /etc/resolv.conf
"$bin" serve --listen 127.0.0.1:53 --admin 127.0.0.1:0 --upstream 127.0.0.1:9 \
    --entries "$dir/entries" 2>"$dir/server.log" &
server=$!
trap 'kill $server' EXIT
tries=0
until dig +tries=1 +time=1 @127.0.0.1 "$name" A +short | grep -q '^10\.64\.'; do
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] || { echo "globaldns did not answer" >&2; exit 3; }
    sleep 0.1
done
"$dir/getaddrinfo" "$name" >"$dir/getaddrinfo.out" 2>&1 || true
dig +noedns +ignore +tries=1 @127.0.0.1 "$name" A >"$dir/dig.out"
"#;

/// A host with 40 addresses: over UDP without EDNS, 40 × 16 bytes do not fit 512. musl 1.2.3
/// must get the records that fit (it said "does not resolve" when they came back empty).
#[test]
fn musl_getaddrinfo_and_dig_get_the_records_that_fit_512_bytes() {
    for tool in ["musl-gcc", "unshare", "ip", "mount", "dig"] {
        require(tool);
    }
    if !namespaces_allowed() {
        return;
    }
    let name = "alpine.ns1.global";
    let (entry, addresses) = host_with(name, 40);
    let fit = a_records_that_fit(name, 512, false);
    assert!(fit < 40, "the answer must be too large for 512 bytes");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("entries")).unwrap();
    std::fs::write(d.join("entries/se.yaml"), entry).unwrap();
    std::fs::write(
        d.join("resolv.conf"),
        "nameserver 127.0.0.1\noptions attempts:1 timeout:2\n",
    )
    .unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/getaddrinfo.c");
    let built = Command::new("musl-gcc")
        .args(["-static", "-O2", "-o"])
        .arg(d.join("getaddrinfo"))
        .arg(&source)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "musl-gcc: {}",
        String::from_utf8_lossy(&built.stderr)
    );

    let run = Command::new("timeout")
        .args([
            "60",
            "unshare",
            "--mount",
            "--net",
            "sh",
            "-c",
            NAMESPACE_SCRIPT,
            "sh",
            name,
        ])
        .arg(d)
        .arg(env!("CARGO_BIN_EXE_globaldns"))
        .output()
        .unwrap();
    let server_log = std::fs::read_to_string(d.join("server.log")).unwrap_or_default();
    assert!(
        run.status.success(),
        "namespace script: {:?}\n{}\nserver log:\n{server_log}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );

    let musl = std::fs::read_to_string(d.join("getaddrinfo.out")).unwrap();
    let lines: Vec<String> = musl.lines().map(str::to_string).collect();
    let (count, got) = lines.split_last().expect("getaddrinfo printed something");
    assert_eq!(
        count,
        &format!("count {fit}"),
        "musl's getaddrinfo gets every address that fits 512 bytes: {musl}"
    );
    distinct_of(got, &addresses);

    let dig = std::fs::read_to_string(d.join("dig.out")).unwrap();
    let answer = parse_dig(&dig);
    assert!(answer.flags.contains(&"tc".to_string()), "TC=1: {dig}");
    assert_eq!(answer.answer_count, fit, "{dig}");
    assert_eq!(answer.addresses.len(), fit, "{dig}");
    distinct_of(&answer.addresses, &addresses);
    assert!(answer.size <= 512, "{dig}");
}

/// A host with 5 000 addresses: more than one 65 535-byte message holds. Over TCP the answer
/// has no TC (a client could not act on it) and every record that fits.
#[tokio::test]
async fn dig_over_tcp_gets_the_records_that_fit_one_message_without_tc() {
    require("dig");
    let name = "huge.ns1.global";
    let (entry, addresses) = host_with(name, 5000);
    let server = Server::start(&[("se.yaml", &entry)]).await;
    for edns in [true, false] {
        let edns_flag = if edns { "+edns=0" } else { "+noedns" };
        let text = dig_at(server.addr, &["+tcp", "+tries=1", "+time=5", edns_flag, name, "A"]).await;
        let answer = parse_dig(&text);
        let fit = a_records_that_fit(name, 65535, edns);
        assert!(fit < 5000);
        let head: String = text.lines().take(12).collect::<Vec<_>>().join("\n");
        assert!(!answer.flags.contains(&"tc".to_string()), "no TC over TCP: {head}");
        assert_eq!(answer.answer_count, fit, "edns={edns}: {head}");
        assert_eq!(answer.addresses.len(), fit, "edns={edns}");
        distinct_of(&answer.addresses, &addresses);
        assert!(answer.size <= 65535);
    }
    server.stop().await;
}
