//! The file source: changes are served without restart, a broken file keeps its last good
//! entries, a removed file takes its entries away, and the SOA serial follows the table.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::*;

async fn a_of(client: &mut DnsClient, name: &str) -> (ResponseCode, Vec<String>) {
    let m = ask(client, name, RecordType::A).await;
    (m.metadata.response_code, addresses(&m))
}

/// Waits until `name` answers `want` (rcode and addresses), as the poller picks up a change.
async fn until(client: &DnsClient, name: &'static str, want: (ResponseCode, &[&str])) -> bool {
    let want = (want.0, want.1.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    eventually(Duration::from_secs(5), || {
        let (mut c, want) = (client.clone(), want.clone());
        async move { a_of(&mut c, name).await == want }
    })
    .await
}

#[tokio::test]
async fn changes_apply_without_restart_and_bad_files_lose_nothing() {
    let one = se(
        "bar",
        "httpbin",
        "{hosts: [httpbin.bar.global], addresses: [240.0.0.2]}",
    );
    let server = Server::start(&[
        ("one.yaml", &one),
        (
            ".hidden.yaml",
            &se("x", "h", "{hosts: [hidden.global], addresses: [1.1.1.1]}"),
        ),
        ("notes.txt", "not entries"),
    ])
    .await;
    let mut client = udp_client(server.addr).await;
    assert_eq!(
        a_of(&mut client, "httpbin.bar.global.").await,
        (ResponseCode::NoError, vec!["240.0.0.2".into()])
    );
    assert_eq!(
        a_of(&mut client, "hidden.global.").await.0,
        ResponseCode::NXDomain,
        "dotfiles are not read"
    );
    let serial = server.serial();

    // Edit in place: a changed address and a new host.
    let edited = [
        one.replace("240.0.0.2", "240.0.0.9"),
        se("bar", "extra", "{hosts: [extra.bar.global], addresses: [240.0.0.8]}"),
    ]
    .concat();
    std::fs::write(server.path("one.yaml"), &edited).unwrap();
    let applied = until(&client, "extra.bar.global.", (ResponseCode::NoError, &["240.0.0.8"])).await;
    assert!(applied, "an edited file is served without restart");
    assert_eq!(a_of(&mut client, "httpbin.bar.global.").await.1, ["240.0.0.9"]);
    assert!(server.serial() > serial, "the SOA serial moves with the table");

    // A new file in the directory.
    std::fs::write(
        server.path("two.yml"),
        se("baz", "two", "{hosts: [two.baz.global], addresses: [240.0.0.7]}"),
    )
    .unwrap();
    assert!(until(&client, "two.baz.global.", (ResponseCode::NoError, &["240.0.0.7"])).await);

    // A file that stops parsing keeps its last good entries.
    std::fs::write(server.path("one.yaml"), "spec: [unclosed\n").unwrap();
    std::fs::write(
        server.path("two.yml"),
        se("baz", "two", "{hosts: [two.baz.global], addresses: [240.0.0.6]}"),
    )
    .unwrap();
    assert!(
        until(&client, "two.baz.global.", (ResponseCode::NoError, &["240.0.0.6"])).await,
        "the other file still reloads"
    );
    assert_eq!(
        a_of(&mut client, "httpbin.bar.global.").await.1,
        ["240.0.0.9"],
        "last good entries kept"
    );
    assert_eq!(a_of(&mut client, "extra.bar.global.").await.1, ["240.0.0.8"]);

    // An invalid entry in a file that parses is skipped; the rest of that file loads.
    let mixed = [
        se("bar", "bad", "{hosts: [\"*\"], addresses: [1.1.1.1]}"),
        se("bar", "good", "{hosts: [good.bar.global], addresses: [240.0.0.5]}"),
    ]
    .concat();
    std::fs::write(server.path("one.yaml"), mixed).unwrap();
    assert!(until(&client, "good.bar.global.", (ResponseCode::NoError, &["240.0.0.5"])).await);
    assert_eq!(a_of(&mut client, "httpbin.bar.global.").await.0, ResponseCode::NXDomain);

    // A removed file takes its entries away.
    std::fs::remove_file(server.path("two.yml")).unwrap();
    assert!(until(&client, "two.baz.global.", (ResponseCode::NXDomain, &[])).await);
    server.stop().await;
}
