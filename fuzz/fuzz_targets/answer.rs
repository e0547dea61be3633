//! Request bytes → response bytes, over UDP and TCP, from a small table with every kind of
//! name (exact, wildcard, empty non-terminal, apex, no address, SRV owners of the examples'
//! named ports, PTR owners in reverse zones). Must never panic; every reply
//! must fit the transport and start with the query's ID.
#![no_main]

use std::sync::{Arc, OnceLock};

use globaldns::dns::answer::{Mode, Outcome, Shuffler, Transport, answer};
use globaldns::serviceentry::yaml;
use globaldns::table::{Live, SourceInput, Table, TableSettings};
use libfuzzer_sys::fuzz_target;

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let text = include_str!("../../deploy/examples/wildcard.yaml").to_owned()
            + "\n---\n"
            + include_str!("../../deploy/examples/dual-stack.yaml")
            + "\n---\n"
            + include_str!("../../deploy/examples/no-address.yaml");
        let entries = yaml::parse(&text, "default").expect("examples parse").entries;
        let name: Arc<str> = "fuzz".into();
        Live::build(&TableSettings::new(&["global", "240.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa"]).unwrap(), &[SourceInput { name: &name, entries: &entries }], 1, true)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let mut rng = Shuffler::new(7);
    for (transport, limit) in [(Transport::Udp, 1232), (Transport::Tcp, 65535)] {
        for forwarding in [false, true] {
            match answer(table(), data, transport, Mode { forwarding }, &mut rng, &mut out) {
                Outcome::Reply => {
                    assert!(out.len() >= 12 && out.len() <= limit);
                    assert_eq!(out[..2], data[..2]);
                    assert_eq!(out[2] & 0x80, 0x80, "a response");
                }
                Outcome::Drop => assert!(data.len() < 12 || data[2] & 0x80 != 0),
                Outcome::Forward => assert!(forwarding),
                Outcome::Transfer => {
                    // An AXFR only over TCP; an IXFR over UDP too (answered with the single SOA).
                    assert!(out.is_empty());
                    let ixfr = globaldns::dns::wire::qtype(data) == Some(251);
                    assert!(transport == Transport::Tcp || ixfr, "an AXFR is never a transfer over UDP");
                }
            }
        }
    }
});
