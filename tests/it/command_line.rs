//! The binary: `check`, `records`, `serve` with the README's dig line, environment fallbacks.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn globaldns() -> Command {
    Command::new(env!("CARGO_BIN_EXE_globaldns"))
}

#[test]
fn check_prints_the_table_and_fails_on_invalid_entries() {
    let out = globaldns().arg("check").arg(examples_dir()).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("httpbin.bar.global.\t30\tIN\tA\t240.0.0.2\t; files foo/httpbin-bar (spec.addresses)"),
        "{stdout}"
    );
    assert!(stdout.contains("global.\t30\tIN\tSOA\tns.dns.global. hostmaster.global. "));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("240.1.0.0/24") && stderr.starts_with("warning:"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        [
            se("ns1", "star", "{hosts: [\"*\"]}"),
            se("ns1", "fine", "{hosts: [fine.global], addresses: [1.2.3.4]}"),
        ]
        .concat(),
    )
    .unwrap();
    let out = globaldns().args(["check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("invalid ServiceEntry files/ns1/star") && stderr.contains("\"*\""),
        "{stderr}"
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("fine.global.\t30\tIN\tA\t1.2.3.4")
    );

    let out = globaldns()
        .args(["check", "/nonexistent-globaldns-path"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn records_as_json_and_options_from_the_environment() {
    let out = globaldns()
        .args(["records", "--format", "json"])
        .env("GLOBALDNS_ENTRIES", examples_dir())
        .env("GLOBALDNS_TTL", "77")
        .env("GLOBALDNS_ZONE", "global,example.internal")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ttl"], 77);
    assert_eq!(json["zones"].as_array().unwrap().len(), 2);
    let hosts = json["hosts"].as_array().unwrap();
    let payments = hosts.iter().find(|h| h["name"] == "payments.billing.global").unwrap();
    assert_eq!(payments["a"], serde_json::json!(["240.240.12.7"]));
    assert_eq!(payments["aaaa"], serde_json::json!(["2001:2::f0f0:c07"]));
    assert_eq!(payments["origins"][0]["rule"], "status-addresses");
    assert_eq!(payments["origins"][0]["entry"], "billing/payments");
}

#[test]
fn serve_without_sources_or_with_bad_zones_says_why() {
    let out = globaldns()
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env_remove("GLOBALDNS_ENTRIES")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no sources"));
    let bad_zones: [(&[&str], &str); 5] = [
        (&["."], "root zone"),
        (
            &["in-addr.arpa"],
            "\"in-addr.arpa\" is no reverse zone of an address prefix",
        ),
        (&["300.in-addr.arpa"], "\"300.in-addr.arpa\" is no reverse zone"),
        (&["x.in-addr.arpa"], "\"x.in-addr.arpa\" is no reverse zone"),
        (
            &["global", "bar.global"],
            "zone \"bar.global\" lies inside zone \"global\"",
        ),
    ];
    for (zones, says) in bad_zones {
        let mut serve = globaldns();
        serve.args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
        for zone in zones {
            serve.args(["--zone", zone]);
        }
        serve.arg("--entries").arg(examples_dir());
        let mut child = Child(serve.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            match child.0.try_wait().unwrap() {
                Some(status) => break Some(status),
                None if std::time::Instant::now() > deadline => break None,
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{zones:?} does not start");
        let mut stderr = String::new();
        child.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        assert!(stderr.contains(says), "{zones:?}: {stderr}");
    }
}

/// A spawned `globaldns serve`, killed if the test ends early.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Child {
    /// Starts `serve` on 127.0.0.1:0 with JSON logs; returns it with its DNS port and the log lines.
    fn serve(extra: &[&str]) -> (Child, String, std::io::Lines<BufReader<std::process::ChildStderr>>) {
        let mut child = globaldns()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            // Never forward beyond loopback from a test: a closed local port.
            .args(["--upstream", "127.0.0.1:9", "--forward-timeout", "200ms"])
            .arg("--entries")
            .arg(examples_dir())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = loop {
            let line = lines.next().expect("a start-up log line").unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON logs");
            if let Some(addr) = v["fields"]["dns_addr"].as_str() {
                break addr.parse::<std::net::SocketAddr>().unwrap().port().to_string();
            }
        };
        (Child(child), port, lines)
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "SIGTERM stops the server");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    }
}

fn dig(port: &str, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", port])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// The README's quick start: serve deploy/examples, then its dig line; SIGTERM stops it.
#[test]
fn readme_quick_start_with_dig_and_kdig() {
    require("dig");
    require("kdig");
    let (child, port, _logs) = Child::serve(&[]);
    let text = dig(&port, &["httpbin.bar.global"]);
    assert!(text.contains("status: NOERROR"), "{text}");
    assert!(text.contains("flags: qr aa rd ra;"), "{text}");
    assert!(text.contains("httpbin.bar.global.\t30\tIN\tA\t240.0.0.2"), "{text}");

    let kdig = Command::new("kdig")
        .args(["@127.0.0.1", "-p", &port, "+tcp", "nope.bar.global", "AAAA"])
        .output()
        .unwrap();
    let text = String::from_utf8(kdig.stdout).unwrap();
    assert!(text.contains("status: NXDOMAIN"), "{text}");
    assert!(text.contains("IN\tSOA\tns.dns.global. hostmaster.global."), "{text}");
    assert!(text.contains("(TCP)"), "{text}");

    let mixed = dig(&port, &["+noall", "+answer", "HttpBin.Bar.GLOBAL"]);
    assert_eq!(
        mixed, "HttpBin.Bar.GLOBAL.\t30\tIN\tA\t240.0.0.2\n",
        "0x20: the query's case comes back"
    );
    assert_eq!(dig(&port, &["+short", "x.y.shop.global", "A"]), "240.0.0.10\n");
    child.terminate();
}

/// A log reader that goes away (a restarted log shipper) must not stop the server.
#[test]
fn a_closed_log_pipe_does_not_stop_the_server() {
    require("dig");
    let (child, port, logs) = Child::serve(&[]);
    drop(logs);
    for _ in 0..3 {
        // Out of zone: logs a warning about the dead upstream, which now fails to write; the
        // task that logs it must still answer.
        let text = dig(&port, &["+tries=1", "+time=2", "example.com"]);
        assert!(text.contains("status: SERVFAIL"), "{text}");
    }
    assert_eq!(dig(&port, &["+short", "httpbin.bar.global"]), "240.0.0.2\n");
    child.terminate();
}

/// The `--options` in `text`: `--` and a lower-case word.
fn options(text: &str) -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    for (at, _) in text.match_indices("--") {
        let word: String = text[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if word.starts_with(|c: char| c.is_ascii_lowercase()) {
            found.insert(format!("--{word}"));
        }
    }
    found
}

/// The README's "Command line" block names exactly the options the binary has: none it lacks
/// (a `--udp-sockets` once stood there), and every one of every subcommand.
#[test]
fn the_readme_command_line_names_the_options_the_binary_has() {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("\n## Command line\n")
        .nth(1)
        .expect("a Command line section");
    let block = section.split("```").nth(1).expect("its command line in a code block");
    let mut help = String::new();
    for subcommand in ["serve", "check", "records", "explain"] {
        let out = globaldns().args([subcommand, "--help"]).output().unwrap();
        assert!(out.status.success(), "{subcommand} --help");
        help.push_str(&String::from_utf8(out.stdout).unwrap());
    }
    let (named, has) = (options(block), options(&help));
    let lacking: Vec<_> = named.difference(&has).collect();
    assert!(
        lacking.is_empty(),
        "the README names options the binary lacks: {lacking:?}"
    );
    let undocumented: Vec<_> = has
        .difference(&named)
        .filter(|o| !["--help", "--version"].contains(&o.as_str()))
        .collect();
    assert!(
        undocumented.is_empty(),
        "options missing from the README: {undocumented:?}"
    );
    assert!(named.contains("--listen") && named.contains("--zone"), "{named:?}");
}
