use std::collections::HashSet;
use std::sync::atomic::AtomicUsize;

use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use super::*;

/// A test's waiter: the query it waits for (a copy: its question is what counts) and what to
/// do with the outcome.
struct Recorded {
    query: Vec<u8>,
    done: Callback,
}

/// What a test does with a query's outcome ([`Waiter::done`]).
type Callback = Box<dyn FnOnce(io::Result<Option<&mut [u8]>>) + Send>;

impl Waiter for Recorded {
    fn query(&self) -> &[u8] {
        &self.query
    }

    fn done(self, result: io::Result<Option<&mut [u8]>>) {
        (self.done)(result)
    }
}

type Channels = super::Channels<Recorded>;

fn query(name: &[u8]) -> Vec<u8> {
    let mut q = vec![0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(name);
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}

/// An upstream that echoes each query back as a response, and records source ports;
/// `mangle` may spoil the echo.
async fn upstream(mangle: fn(&mut Vec<u8>)) -> (SocketAddr, Arc<Mutex<Vec<u16>>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let ports = Arc::new(Mutex::new(Vec::new()));
    let seen = ports.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            seen.lock().unwrap().push(from.port());
            let mut reply = buf[..n].to_vec();
            reply[2] |= 0x80;
            mangle(&mut reply);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    (addr, ports)
}

fn assert_nothing_waits(channels: &Channels, why: &str) {
    for slot in &channels.slots {
        if let Some(c) = slot.lock().unwrap().as_ref() {
            let state = c.state();
            let ticks = usize::from(state.ticking);
            assert!(state.pending.is_empty() && state.timers.len() == ticks, "{why}");
        }
    }
}

/// What a callback got: the answer, `None` (timed out) or the error's kind.
type Outcome = Result<Option<Vec<u8>>, io::ErrorKind>;

/// A waiter for `query` that sends what it got to `tx`.
fn recorder(query: &[u8], tx: oneshot::Sender<Outcome>) -> Recorded {
    Recorded {
        query: query.to_vec(),
        done: Box::new(move |result| {
            let _ = tx.send(result.map(|a| a.map(|a| a.to_vec())).map_err(|e| e.kind()));
        }),
    }
}

/// Starts `msg` on `channels` and waits for its callback; the outcome and when it came.
async fn exchange(channels: &Channels, msg: &mut [u8], timeout: Duration) -> (Outcome, Duration) {
    let (tx, rx) = oneshot::channel();
    let begun = Instant::now();
    let done = recorder(msg, tx);
    if let Err((e, done)) = channels.start(msg, timeout, done) {
        done.done(Err(e));
    }
    let outcome = rx.await.expect("the callback is called");
    (outcome, begun.elapsed())
}

#[tokio::test]
async fn answers_by_id_on_rotating_random_ports() {
    let (addr, ports) = upstream(|_| {}).await;
    let channels = Channels::new(addr, tokio::runtime::Handle::current());
    let total = SLOTS * MAX_USES as usize + 200;
    for i in 0..total {
        let mut msg = query(if i % 2 == 0 { b"\x01a\x00" } else { b"\x01b\x00" });
        let (answer, _) = exchange(&channels, &mut msg, Duration::from_secs(2)).await;
        let answer = answer.expect("no error").expect("answered");
        assert_eq!(answer[..2], msg[..2], "the answer to this query");
        assert_eq!(answer[12..], msg[12..]);
    }
    let distinct: HashSet<u16> = ports.lock().unwrap().iter().copied().collect();
    assert!(
        distinct.len() > SLOTS,
        "sockets are replaced after {MAX_USES} queries: {} ports",
        distinct.len()
    );
    assert_nothing_waits(&channels, "nothing left waiting");
}

#[tokio::test]
async fn an_answer_to_another_question_is_not_taken_and_nothing_leaks() {
    let (addr, _) = upstream(|reply| reply[13] = b'z').await;
    let channels = Channels::new(addr, tokio::runtime::Handle::current());
    let mut msg = query(b"\x01a\x00");
    let (answer, _) = exchange(&channels, &mut msg, Duration::from_millis(200)).await;
    assert_eq!(answer, Ok(None), "times out rather than take a wrong answer");
    assert_nothing_waits(&channels, "the timed-out query is forgotten");
}

#[tokio::test]
async fn a_closed_upstream_port_fails_fast() {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let channels = Channels::new(closed, tokio::runtime::Handle::current());
    let mut msg = query(b"\x01a\x00");
    let (outcome, took) = exchange(&channels, &mut msg, Duration::from_secs(5)).await;
    assert_eq!(outcome, Err(io::ErrorKind::ConnectionRefused));
    assert!(took < Duration::from_secs(2), "not after the timeout: {took:?}");
    assert_nothing_waits(&channels, "nothing left waiting");
}

/// On the paused clock a deadline is exact: every callback of a silent upstream comes at
/// its deadline however long the receiving task idled before, and every answer of a live
/// one at once, while sockets are replaced every few queries.
#[tokio::test(start_paused = true)]
async fn deadlines_are_kept_after_idling_on_the_paused_clock() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (live, _) = upstream(|_| {}).await;
    let rotation = Rotation {
        max_age: Duration::from_millis(700),
        max_uses: 5,
    };
    let runtime = tokio::runtime::Handle::current();
    let silent = Channels::rotating(silent.local_addr().unwrap(), runtime.clone(), rotation);
    let live = Channels::rotating(live, runtime, rotation);
    let mut waits = Vec::new();
    for round in 0..300u64 {
        // Idle gaps from none to longer than any timeout, and a few queries at once.
        tokio::time::sleep(Duration::from_millis(round * 37 % 450)).await;
        for k in 0..1 + round % 3 {
            let timeout = Duration::from_millis(1 + (round * 13 + k * 101) % 300);
            let (tx, rx) = oneshot::channel();
            let mut msg = query(b"\x01s\x00");
            let deadline = Instant::now() + timeout;
            let done = recorder(&msg, tx);
            if let Err((e, done)) = silent.start(&mut msg, timeout, done) {
                done.done(Err(e));
            }
            waits.push(tokio::spawn(async move {
                let outcome = rx.await.expect("called");
                (
                    outcome,
                    Instant::now().saturating_duration_since(deadline),
                    Instant::now() < deadline,
                )
            }));
            let (answer, took) = exchange(&live, &mut query(b"\x01l\x00"), Duration::from_secs(1)).await;
            assert!(matches!(answer, Ok(Some(_))), "{answer:?}");
            assert_eq!(took, Duration::ZERO, "answered at once");
        }
    }
    for wait in waits {
        let (outcome, late, early) = wait.await.unwrap();
        assert_eq!(outcome, Ok(None), "timed out");
        assert!(!early, "not before its deadline");
        assert!(late <= Duration::from_millis(1), "at its deadline, not {late:?} after");
    }
    assert_nothing_waits(&silent, "nothing left waiting");
}

/// A socket taken from its slot just before it was replaced, whose receiving task has
/// ended since, refuses the query (which then goes to another socket) rather than leave it
/// waiting on a socket nobody reads.
#[tokio::test]
async fn a_socket_closed_after_it_was_taken_refuses_queries() {
    let (addr, _) = upstream(|_| {}).await;
    let rotation = Rotation {
        max_age: MAX_AGE,
        max_uses: 1,
    };
    let channels = Channels::rotating(addr, tokio::runtime::Handle::current(), rotation);
    let taken = channels.channel(0).unwrap();
    let _replacement = channels.channel(0).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await; // its receiving task ends
    assert!(taken.state().closed, "retired and idle: closed");
    let (tx, rx) = oneshot::channel();
    let mut msg = query(b"\x01a\x00");
    let done = recorder(&msg, tx);
    let refused = taken.start(&mut msg, channels.random(), Instant::now(), done);
    assert!(matches!(refused, Err(Refused::Closed(_))), "refused");
    drop(refused);
    assert!(rx.await.is_err(), "the callback came back uncalled");
    let (answer, _) = exchange(&channels, &mut query(b"\x01a\x00"), Duration::from_secs(2)).await;
    assert!(matches!(answer, Ok(Some(_))), "answered on a fresh socket: {answer:?}");
}

/// An upstream on a thread of its own that echoes each query back as a response, and records
/// source ports.
/// The queries queued on one `Sends` wait for its flush, then leave together from one socket
/// and are each answered.
#[tokio::test]
async fn a_batch_leaves_together_from_one_socket() {
    let (addr, ports) = echo_thread();
    let channels = Channels::new(addr, tokio::runtime::Handle::current());
    let mut sends = Sends::default();
    let mut answers = Vec::new();
    for k in 0..8u8 {
        let (tx, rx) = oneshot::channel();
        let mut msg = query(&[1, b'a' + k, 0]);
        let done = recorder(&msg, tx);
        if let Err((e, done)) = channels.queue(&mut msg, Duration::from_secs(5), done, &mut sends) {
            done.done(Err(e));
        }
        answers.push((msg, rx));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(ports.lock().unwrap().is_empty(), "nothing sent before the flush");
    sends.flush();
    for (msg, rx) in answers {
        let answer = rx.await.unwrap().expect("answered").expect("not timed out");
        assert_eq!(answer[..2], msg[..2], "the answer to its own query");
        assert_eq!(answer[12..], msg[12..]);
    }
    let ports = ports.lock().unwrap();
    assert_eq!(ports.len(), 8, "each sent once");
    assert!(ports.iter().all(|&p| p == ports[0]), "from one socket: {ports:?}");
    drop(ports);
    assert_nothing_waits(&channels, "nothing left waiting");
}

fn echo_thread() -> (SocketAddr, Arc<Mutex<Vec<u16>>>) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let ports = Arc::new(Mutex::new(Vec::new()));
    let seen = ports.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            seen.lock().unwrap().push(from.port());
            buf[2] |= 0x80;
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    (addr, ports)
}

/// Threads (as the UDP threads are) hammer registration while sockets are replaced every
/// few queries and their receiving tasks go idle and end: every callback is called, answers
/// answered, timeouts no later than 50 ms after their deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_races_neither_retirement_nor_idling() {
    const THREADS: usize = 2;
    const LATE: Duration = Duration::from_millis(50);
    let (live, ports) = echo_thread();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let rotation = Rotation {
        max_age: Duration::from_millis(30),
        max_uses: 3,
    };
    let runtime = tokio::runtime::Handle::current();
    let live = Arc::new(Channels::rotating(live, runtime.clone(), rotation));
    let silent = Arc::new(Channels::rotating(silent.local_addr().unwrap(), runtime, rotation));
    let started = Arc::new(AtomicUsize::new(0));
    // (answered, how late after its deadline, which upstream) per callback.
    let outcomes = Arc::new(Mutex::new(Vec::<(Outcome, Duration, bool)>::new()));
    let until = std::time::Instant::now() + Duration::from_millis(1000);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (live, silent, started, outcomes) = (live.clone(), silent.clone(), started.clone(), outcomes.clone());
            std::thread::spawn(move || {
                let mut i = t as u64;
                // Half the bursts go out together (one socket held across them, as a UDP
                // thread's batch), half one by one.
                let mut sends = Sends::default();
                while std::time::Instant::now() < until {
                    i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let together = i & 1 == 0;
                    for k in 0..1 + (i >> 62) {
                        let to_live = (i >> 40).wrapping_add(k) % 2 == 0;
                        let timeout = if to_live {
                            Duration::from_secs(2)
                        } else {
                            Duration::from_millis(1 + (i >> 50) % 20)
                        };
                        let deadline = std::time::Instant::now() + timeout;
                        let outcomes = outcomes.clone();
                        let mut msg = query(b"\x01r\x00");
                        let done = Recorded {
                            query: msg.clone(),
                            done: Box::new(move |result| {
                                let late = std::time::Instant::now().saturating_duration_since(deadline);
                                let outcome = result.map(|a| a.map(|a| a.to_vec())).map_err(|e| e.kind());
                                outcomes.lock().unwrap().push((outcome, late, to_live));
                            }),
                        };
                        let channels = if to_live { &live } else { &silent };
                        started.fetch_add(1, Ordering::Relaxed);
                        let started = if together {
                            channels.queue(&mut msg, timeout, done, &mut sends)
                        } else {
                            channels.start(&mut msg, timeout, done)
                        };
                        if let Err((e, done)) = started {
                            done.done(Err(e));
                        }
                    }
                    sends.flush();
                    // Pauses, so that receiving tasks go idle (and retired ones end).
                    std::thread::sleep(Duration::from_micros((i >> 32) % 3000));
                }
            })
        })
        .collect();
    for thread in threads {
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
    }
    let started = started.load(Ordering::Relaxed);
    let all_called = eventually(Duration::from_secs(5), || outcomes.lock().unwrap().len() >= started).await;
    let outcomes = outcomes.lock().unwrap();
    assert!(
        all_called,
        "lost: {} of {started} callbacks never called",
        started - outcomes.len()
    );
    assert_eq!(outcomes.len(), started, "each called once");
    let mut latest = Duration::ZERO;
    for (outcome, late, to_live) in outcomes.iter() {
        if *to_live {
            assert!(matches!(outcome, Ok(Some(_))), "the live upstream answers: {outcome:?}");
        } else {
            assert_eq!(*outcome, Ok(None), "the silent one times out");
            latest = latest.max(*late);
        }
    }
    assert!(latest <= LATE, "a timeout came {latest:?} after its deadline");
    let replaced = ports.lock().unwrap().iter().copied().collect::<HashSet<u16>>().len();
    assert!(
        started > 1000 && replaced > 100,
        "{started} queries on {replaced} sockets"
    );
    assert_nothing_waits(&live, "nothing left waiting");
    assert_nothing_waits(&silent, "nothing left waiting");
}

async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while !check() {
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// The events the runtime's poller (`epoll`, Linux) waits for on `fd`, from the poller's
/// `/proc/self/fdinfo` (`tfd: FD events: MASK`).
fn polled_events(fd: std::os::fd::RawFd) -> Option<u32> {
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let poller = std::fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:[eventpoll]");
        let fdinfo = format!("/proc/self/fdinfo/{}", entry.file_name().to_string_lossy());
        let Some(info) = poller.then(|| std::fs::read_to_string(fdinfo).ok()).flatten() else {
            continue;
        };
        for line in info.lines() {
            let mut words = line.split_whitespace();
            if words.next() == Some("tfd:") && words.next() == Some(&fd.to_string()) && words.next() == Some("events:")
            {
                return words.next().and_then(|mask| u32::from_str_radix(mask, 16).ok());
            }
        }
    }
    None
}

/// An upstream socket is polled for reading only: polled for writing (edge-triggered
/// EPOLLOUT), each datagram sent on it woke a runtime thread once its buffer space came back,
/// a context switch per forward at moderate rates (pinned, 2 000 q/s: 3.4 → 2.5 a forward).
#[tokio::test]
async fn upstream_sockets_are_not_polled_for_writing() {
    let (addr, _) = echo_thread();
    let channels = Channels::new(addr, tokio::runtime::Handle::current());
    let (answer, _) = exchange(&channels, &mut query(b"\x01a\x00"), Duration::from_secs(5)).await;
    answer.expect("no error").expect("answered");
    let slots = channels.slots.iter().filter_map(|s| s.lock().unwrap().clone());
    let fds: Vec<_> = slots.map(|c| c.socket.as_raw_fd()).collect();
    assert_eq!(fds.len(), 1, "one socket opened");
    let events = polled_events(fds[0]).expect("the socket is in the runtime's poller");
    assert_ne!(events & 0x001, 0, "EPOLLIN: {events:#x}");
    assert_eq!(events & 0x004, 0, "no EPOLLOUT: {events:#x}");
}
