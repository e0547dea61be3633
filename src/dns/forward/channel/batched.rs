//! The batched system calls of upstream sockets: datagrams sent together ([`Sends`]) and
//! answers received together ([`Received`]).

use std::cell::RefCell;
use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

use super::super::super::batch::BATCH;
use super::{Channel, Channels, RECV_BATCH, Waiter};

/// Receive buffers for the answers of upstream sockets, one set per thread of the runtime
/// (taken and handled within one poll of a receiving task, so never two at a time).
pub(super) struct Received {
    /// Room for the largest datagram each (pages are touched as answers fill them).
    pub(super) bufs: Vec<Vec<u8>>,
    /// The lengths of the last call's datagrams.
    pub(super) lens: [usize; RECV_BATCH],
    headers: MultiHeaders<()>,
}

impl Received {
    pub(super) fn new() -> Self {
        Received {
            bufs: (0..RECV_BATCH).map(|_| vec![0u8; 65535]).collect(),
            lens: [0; RECV_BATCH],
            headers: MultiHeaders::preallocate(RECV_BATCH, None),
        }
    }

    /// Takes up to [`RECV_BATCH`] datagrams queued on `socket`, without waiting; how many.
    pub(super) fn recv(&mut self, socket: RawFd) -> io::Result<usize> {
        let mut bufs = self.bufs.iter_mut();
        let mut slices: [[IoSliceMut<'_>; 1]; RECV_BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(bufs.next().map_or(&mut [][..], |b| &mut b[..]))]);
        let results = recvmmsg(
            socket,
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        let mut n = 0;
        for (len, msg) in self.lens.iter_mut().zip(results) {
            *len = msg.bytes;
            n += 1;
        }
        Ok(n)
    }
}

thread_local! {
    pub(super) static RECEIVED: RefCell<Option<Received>> = const { RefCell::new(None) };
}

/// Queries registered on one socket whose datagrams are not sent yet: [`Sends::flush`] sends
/// them in one `sendmmsg`, so that a batch of forwards costs one system call (and one wake-up
/// of the upstream) instead of one each. Belongs to one thread (its message headers hold raw
/// pointers); allocates nothing once its buffers have grown. Dropped, it flushes.
pub(in crate::dns::forward) struct Sends<W: Waiter> {
    /// The socket of the queued queries.
    pub(super) channel: Option<Arc<Channel<W>>>,
    /// The pool it is from (its address; only compared).
    owner: usize,
    /// The first `count` are queued datagrams.
    msgs: Vec<Vec<u8>>,
    /// Per queued datagram: its ID and token.
    queued: Vec<(u16, u64)>,
    count: usize,
    /// No address: the socket is connected.
    addrs: Vec<Option<SockaddrStorage>>,
    headers: MultiHeaders<SockaddrStorage>,
}

impl<W: Waiter> Default for Sends<W> {
    fn default() -> Self {
        Sends {
            channel: None,
            owner: 0,
            msgs: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            queued: vec![(0, 0); BATCH],
            count: 0,
            addrs: vec![None; BATCH],
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }
}

impl<W: Waiter> Sends<W> {
    /// Whether a query for `channels` can join those queued.
    pub(super) fn takes_from(&self, channels: &Channels<W>) -> bool {
        self.count == 0 || (self.owner == std::ptr::from_ref(channels) as usize && self.count < BATCH)
    }

    /// Queues `msg`, registered as `id` with `token` on `channel` of `channels`.
    pub(super) fn push(&mut self, channels: &Channels<W>, channel: &Arc<Channel<W>>, id: u16, token: u64, msg: &[u8]) {
        if self.channel.is_none() {
            self.channel = Some(channel.clone());
            self.owner = std::ptr::from_ref(channels) as usize;
        }
        let buf = &mut self.msgs[self.count];
        buf.clear();
        buf.extend_from_slice(msg);
        self.queued[self.count] = (id, token);
        self.count += 1;
    }

    /// Sends what is queued, without waiting; a datagram the system refuses fails its query
    /// (its callback gets the error), unless the query was already answered or failed.
    pub(in crate::dns::forward) fn flush(&mut self) {
        let count = std::mem::take(&mut self.count);
        let Some(channel) = self.channel.take() else { return };
        let mut from = 0;
        while from < count {
            let mut msgs = self.msgs[from..count].iter();
            let slices: [[IoSlice<'_>; 1]; BATCH] =
                std::array::from_fn(|_| [IoSlice::new(msgs.next().map_or(&[][..], |m| &m[..]))]);
            let n = count - from;
            let sent = sendmmsg(
                channel.socket.as_raw_fd(),
                &mut self.headers,
                slices[..n].iter(),
                &self.addrs[..n],
                [],
                MsgFlags::MSG_DONTWAIT,
            )
            .map(|sent| sent.count());
            match sent {
                Ok(sent) if sent > 0 => from += sent,
                failed => {
                    let e = failed.map_or_else(io::Error::from, |_| io::ErrorKind::WouldBlock.into());
                    let (id, token) = self.queued[from];
                    if let Some(done) = channel.forget(id, token) {
                        done.done(Err(e));
                    }
                    from += 1;
                }
            }
        }
    }
}

impl<W: Waiter> Drop for Sends<W> {
    fn drop(&mut self) {
        self.flush();
    }
}
