//! An upstream DNS server the tests control: it answers, or is slow, silent, truncating or
//! spoofed, or is killed, and it records what it received.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, NS, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// How the upstream behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// Answer at once.
    Answer,
    /// Answer after a delay.
    Slow(Duration),
    /// Never answer.
    Silent,
    /// Over UDP: an empty answer with TC=1; over TCP: the full answer.
    Truncate,
    /// First a reply with a wrong ID, then one with a wrong question, then the real one.
    Spoof,
    /// First a reply whose QTYPE differs from the query's only in the ASCII case bit of its
    /// low byte (0x0041 → 0x0061), with another address, then the real one.
    OtherType,
}

#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Every query received, with whether it came over TCP.
    pub(crate) queries: Vec<(Message, bool)>,
    /// The exact bytes of the last answer sent.
    pub(crate) last_answer: Vec<u8>,
}

/// The upstream: UDP and TCP on one loopback port.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    pub(crate) behaviour: Arc<Mutex<Behaviour>>,
    pub(crate) seen: Arc<Mutex<Seen>>,
    /// The tasks that own its sockets.
    tasks: [tokio::task::AbortHandle; 2],
}

/// The answer the upstream gives: rcode from the first label (`nxdomain.…`, `refused.…`),
/// one A record, an NS in authority, a TXT in additional, EDNS echoed; flags RA, AD.
pub(crate) fn answer_for(query: &Message) -> Message {
    let mut m = Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.authentic_data = true;
    let q = query.queries[0].clone();
    let name = q.name().clone();
    let first = name
        .iter()
        .next()
        .map(|l| String::from_utf8_lossy(l).to_lowercase())
        .unwrap_or_default();
    m.metadata.response_code = match first.as_str() {
        "nxdomain" => ResponseCode::NXDomain,
        "refused" => ResponseCode::Refused,
        _ => ResponseCode::NoError,
    };
    m.add_query(q);
    if m.metadata.response_code == ResponseCode::NoError {
        m.add_answer(Record::from_rdata(name.clone(), 42, RData::A(A::new(192, 0, 2, 1))));
    }
    let ns = Name::from_ascii("ns.upstream.test.").unwrap();
    m.add_authority(Record::from_rdata(Name::root(), 77, RData::NS(NS(ns))));
    m.add_additional(Record::from_rdata(
        name,
        5,
        RData::TXT(TXT::new(vec!["from upstream".into()])),
    ));
    if query.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(4000);
        m.set_edns(e);
    }
    m
}

impl Upstream {
    pub(crate) async fn start(behaviour: Behaviour) -> Upstream {
        // A port free for UDP may be taken for TCP (another test's connection): try another.
        let mut tries = 0;
        let (udp, addr, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            match TcpListener::bind(addr).await {
                Ok(tcp) => break (udp, addr, tcp),
                Err(_) if tries < 16 => tries += 1,
                Err(e) => panic!("no port free for both UDP and TCP: {e}"),
            }
        };
        let behaviour = Arc::new(Mutex::new(behaviour));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (b, s) = (behaviour.clone(), seen.clone());
        let udp_task = tokio::spawn(async move {
            let udp = Arc::new(udp);
            let mut buf = vec![0u8; 65535];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                s.lock().unwrap().queries.push((query.clone(), false));
                let behaviour = *b.lock().unwrap();
                let (udp, s) = (udp.clone(), s.clone());
                tokio::spawn(async move {
                    for reply in replies(&query, behaviour, false).await {
                        s.lock().unwrap().last_answer = reply.clone();
                        let _ = udp.send_to(&reply, peer).await;
                    }
                });
            }
        });
        let (b, s) = (behaviour.clone(), seen.clone());
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = tcp.accept().await else {
                    return;
                };
                let (b, s) = (b.clone(), s.clone());
                tokio::spawn(async move {
                    while let Ok(len) = stream.read_u16().await {
                        let mut buf = vec![0u8; len as usize];
                        if stream.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        let Ok(query) = Message::from_vec(&buf) else { return };
                        s.lock().unwrap().queries.push((query.clone(), true));
                        let behaviour = *b.lock().unwrap();
                        for reply in replies(&query, behaviour, true).await {
                            s.lock().unwrap().last_answer = reply.clone();
                            let framed = [&(reply.len() as u16).to_be_bytes()[..], &reply].concat();
                            if stream.write_all(&framed).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            behaviour,
            seen,
            tasks: [udp_task.abort_handle(), tcp_task.abort_handle()],
        }
    }

    /// Stops it for good: its sockets close (a datagram to its port then gets an ICMP port
    /// unreachable back; connections that are open stay so).
    pub(crate) fn kill(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }

    pub(crate) fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub(crate) fn queries(&self) -> Vec<(Message, bool)> {
        self.seen.lock().unwrap().queries.clone()
    }

    pub(crate) fn last_answer(&self) -> Vec<u8> {
        self.seen.lock().unwrap().last_answer.clone()
    }
}

async fn replies(query: &Message, behaviour: Behaviour, tcp: bool) -> Vec<Vec<u8>> {
    let full = answer_for(query);
    match behaviour {
        Behaviour::Answer => vec![full.to_vec().unwrap()],
        Behaviour::Slow(delay) => {
            tokio::time::sleep(delay).await;
            vec![full.to_vec().unwrap()]
        }
        Behaviour::Silent => vec![],
        Behaviour::Truncate if tcp => vec![full.to_vec().unwrap()],
        Behaviour::Truncate => {
            let mut m = Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
            m.metadata.truncation = true;
            m.add_query(query.queries[0].clone());
            vec![m.to_vec().unwrap()]
        }
        Behaviour::Spoof => {
            let mut wrong_id = full.clone();
            wrong_id.metadata.id = query.metadata.id.wrapping_add(1);
            wrong_id.answers[0] =
                Record::from_rdata(wrong_id.answers[0].name.clone(), 42, RData::A(A::new(6, 6, 6, 6)));
            let mut wrong_question = wrong_id.clone();
            wrong_question.metadata.id = query.metadata.id;
            wrong_question.queries[0].set_name(Name::from_ascii("evil.example.").unwrap());
            vec![
                wrong_id.to_vec().unwrap(),
                wrong_question.to_vec().unwrap(),
                full.to_vec().unwrap(),
            ]
        }
        Behaviour::OtherType => {
            let mut other = full.clone();
            let qtype = u16::from(other.queries[0].query_type());
            other.queries[0].set_query_type(RecordType::from(qtype ^ 0x20));
            other.answers[0] = Record::from_rdata(other.answers[0].name.clone(), 42, RData::A(A::new(6, 6, 6, 6)));
            vec![other.to_vec().unwrap(), full.to_vec().unwrap()]
        }
    }
}
