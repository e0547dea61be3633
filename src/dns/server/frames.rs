//! DNS messages read from a TCP stream: each behind a two-byte length (RFC 1035 §4.2.2,
//! RFC 7766 §8), taken from one buffer that grows to the largest message seen (64 KiB + 2 at
//! most) and is reused.
//!
//! Reading ([`Frames::fill`]) is one `read`, so it is cancel-safe: a `select!` may drop it
//! without losing bytes, and a message split across reads is put together again.

use std::io;
use std::ops::Range;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The buffer's first size: most queries are a few dozen bytes.
const FIRST: usize = 4096;

/// Bytes read and not yet taken.
#[derive(Debug)]
pub(super) struct Frames {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for Frames {
    fn default() -> Self {
        Frames {
            buf: vec![0; FIRST],
            start: 0,
            end: 0,
        }
    }
}

impl Frames {
    /// The next whole message read, if any: its place in [`Frames::get`] until the next
    /// [`Frames::fill`].
    pub(super) fn next(&mut self) -> Option<Range<usize>> {
        let have = &self.buf[self.start..self.end];
        let len = u16::from_be_bytes([*have.first()?, *have.get(1)?]) as usize;
        if have.len() < 2 + len {
            return None;
        }
        let message = self.start + 2..self.start + 2 + len;
        self.start = message.end;
        Some(message)
    }

    /// The bytes at `range` (from [`Frames::next`]).
    pub(super) fn get(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Reads once more from `reader`, with room for the whole of the message begun; the bytes
    /// read (0: end of stream).
    pub(super) async fn fill(&mut self, reader: &mut (impl AsyncRead + Unpin)) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let need = match self.buf[..self.end] {
            [hi, lo, ..] => 2 + u16::from_be_bytes([hi, lo]) as usize,
            _ => 2,
        };
        if self.buf.len() < need.max(self.end + 1) {
            self.buf.resize(need.max(self.end + 1), 0);
        }
        let n = reader.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Whether part of a message has been read.
    #[cfg(test)]
    pub(super) fn partial(&self) -> bool {
        self.start < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_split_and_joined_across_reads() {
        let big = vec![7u8; 5000];
        let mut wire = Vec::new();
        for m in [&b"abc"[..], &b""[..], &big, &b"z"[..]] {
            wire.extend_from_slice(&(m.len() as u16).to_be_bytes());
            wire.extend_from_slice(m);
        }
        for chunk in [1, 2, 3, 7, 4096, wire.len()] {
            // At most `chunk` bytes in the pipe: each read gets that many or fewer.
            let (mut tx, mut rx) = tokio::io::duplex(chunk);
            let all = wire.clone();
            let writer = tokio::spawn(async move { tokio::io::AsyncWriteExt::write_all(&mut tx, &all).await });
            let mut frames = Frames::default();
            let mut got = Vec::new();
            while frames.fill(&mut rx).await.unwrap() > 0 {
                while let Some(m) = frames.next() {
                    got.push(frames.get(m).to_vec());
                }
            }
            writer.await.unwrap().unwrap();
            assert!(!frames.partial(), "nothing left over");
            assert_eq!(
                got,
                [b"abc".to_vec(), vec![], big.clone(), b"z".to_vec()],
                "chunks of {chunk}"
            );
        }
    }
}
