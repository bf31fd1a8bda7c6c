//! Writing WebSocket data frames straight from shared buffers.
//!
//! Events are encoded once into `Bytes` shared by every recipient; going
//! through tungstenite's writer would copy each into a per-connection
//! buffer that keeps its capacity for the life of the connection. Instead
//! a session's writer lays out frame headers (RFC 6455 5.2, unmasked as
//! from a server) around the shared payloads and hands them to the kernel
//! with vectored writes: no copy, few system calls, and no buffer kept
//! while idle. A JSON batch becomes one text frame whose payload is a JSON
//! array built from the parts and the punctuation between them; binary
//! messages are one frame each. Over TLS the same slices go to rustls,
//! which encrypts them into records of its own (the one copy encryption
//! needs), each freed once sent.
//!
//! tungstenite still reads, answers pings and writes close frames; the
//! session never lets the two writers interleave within a frame.

use std::io::IoSlice;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

/// Slices handed to one `writev` at most (Linux's IOV_MAX is 1024).
const MAX_SLICES: usize = 512;

/// WebSocket opcodes of data frames.
const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;

/// One piece of the batch being written.
#[derive(Debug, Clone, Copy)]
enum Piece {
    /// A range of `meta` (a header or JSON punctuation).
    Meta(usize, usize),
    /// One of the payloads.
    Payload(usize),
}

/// A batch of frames being written, and how far the writing has come.
///
/// Cancel safety: [`FrameWriter::drive`] records every byte the kernel
/// takes before it awaits again, so dropping it mid-way loses nothing and
/// a later call resumes where it stopped.
#[derive(Debug, Default)]
pub struct FrameWriter {
    meta: Vec<u8>,
    pieces: Vec<Piece>,
    payloads: Vec<Bytes>,
    /// Next piece to write, and how much of it is written.
    piece: usize,
    offset: usize,
    /// Frame bytes of the batch, for metrics.
    len: usize,
}

impl FrameWriter {
    /// Whether a batch is still being written.
    pub fn in_flight(&self) -> bool {
        self.piece < self.pieces.len()
    }

    /// Bytes (headers included) of the batch last laid out.
    pub fn batch_len(&self) -> usize {
        self.len
    }

    /// Lays out JSON envelopes as one text frame: one envelope as it is,
    /// several as a JSON array.
    pub fn json(&mut self, parts: Vec<Bytes>) {
        self.reset();
        let single = parts.len() == 1;
        let payload_len: usize =
            parts.iter().map(Bytes::len).sum::<usize>() + if single { 0 } else { parts.len() + 1 };
        self.header(OPCODE_TEXT, payload_len);
        if !single {
            self.meta_piece(b"[");
        }
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 {
                self.meta_piece(b",");
            }
            self.pieces.push(Piece::Payload(self.payloads.len()));
            self.payloads.push(part);
        }
        if !single {
            self.meta_piece(b"]");
        }
        self.len = self.meta.len() + self.payloads.iter().map(Bytes::len).sum::<usize>();
    }

    /// Lays out binary messages as one frame each.
    pub fn binary(&mut self, parts: Vec<Bytes>) {
        self.reset();
        for part in parts {
            self.header(OPCODE_BINARY, part.len());
            self.pieces.push(Piece::Payload(self.payloads.len()));
            self.payloads.push(part);
        }
        self.len = self.meta.len() + self.payloads.iter().map(Bytes::len).sum::<usize>();
    }

    /// Writes what is left of the batch, and flushes: over TLS the last
    /// bytes taken may still sit encrypted in the TLS layer until then.
    ///
    /// # Errors
    /// The connection failed.
    ///
    /// # Cancel safety
    /// Cancel safe: progress is kept, see the type's documentation. A
    /// batch fully taken is not written again; what the TLS layer holds goes
    /// out with the next write or flush.
    pub async fn drive<W: AsyncWrite + Unpin>(&mut self, stream: &mut W) -> std::io::Result<()> {
        while self.in_flight() {
            let mut slices = Vec::with_capacity(MAX_SLICES.min(self.pieces.len() - self.piece));
            for (i, piece) in self.pieces[self.piece..]
                .iter()
                .take(MAX_SLICES)
                .enumerate()
            {
                let bytes = match *piece {
                    Piece::Meta(start, end) => &self.meta[start..end],
                    Piece::Payload(p) => &self.payloads[p][..],
                };
                slices.push(IoSlice::new(if i == 0 {
                    &bytes[self.offset..]
                } else {
                    bytes
                }));
            }
            let written = stream.write_vectored(&slices).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.advance(written);
        }
        self.release();
        stream.flush().await
    }

    fn advance(&mut self, mut written: usize) {
        while written > 0 && self.in_flight() {
            let len = match self.pieces[self.piece] {
                Piece::Meta(start, end) => end - start,
                Piece::Payload(p) => self.payloads[p].len(),
            };
            let left = len - self.offset;
            if written >= left {
                written -= left;
                self.piece += 1;
                self.offset = 0;
            } else {
                self.offset += written;
                written = 0;
            }
        }
    }

    fn header(&mut self, opcode: u8, len: usize) {
        let start = self.meta.len();
        self.meta.push(0x80 | opcode);
        match len {
            0..=125 => self.meta.push(len as u8),
            126..=0xffff => {
                self.meta.push(126);
                self.meta.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                self.meta.push(127);
                self.meta.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        self.pieces.push(Piece::Meta(start, self.meta.len()));
    }

    fn meta_piece(&mut self, bytes: &[u8]) {
        let start = self.meta.len();
        self.meta.extend_from_slice(bytes);
        self.pieces.push(Piece::Meta(start, self.meta.len()));
    }

    fn reset(&mut self) {
        self.meta.clear();
        self.pieces.clear();
        self.payloads.clear();
        self.piece = 0;
        self.offset = 0;
    }

    /// Drops the shared payloads and any large buffers once written, so an
    /// idle session holds nothing.
    fn release(&mut self) {
        self.payloads.clear();
        if self.pieces.capacity() > 64 {
            self.pieces = Vec::new();
            self.meta = Vec::new();
            self.payloads = Vec::new();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn flat(writer: &FrameWriter) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in &writer.pieces {
            match *piece {
                Piece::Meta(s, e) => out.extend_from_slice(&writer.meta[s..e]),
                Piece::Payload(p) => out.extend_from_slice(&writer.payloads[p]),
            }
        }
        out
    }

    #[test]
    fn one_json_envelope_is_one_text_frame_as_it_is() {
        let mut w = FrameWriter::default();
        w.json(vec![Bytes::from_static(b"{\"a\":1}")]);
        assert_eq!(flat(&w), b"\x81\x07{\"a\":1}");
        assert_eq!(w.batch_len(), 9);
    }

    #[test]
    fn several_json_envelopes_are_one_array_frame() {
        let mut w = FrameWriter::default();
        w.json(vec![Bytes::from_static(b"{}"), Bytes::from_static(b"{}")]);
        assert_eq!(flat(&w), b"\x81\x07[{},{}]");
    }

    #[test]
    fn binary_messages_are_a_frame_each_with_extended_lengths() {
        let mut w = FrameWriter::default();
        let big = Bytes::from(vec![7u8; 300]);
        let huge = Bytes::from(vec![9u8; 70_000]);
        w.binary(vec![Bytes::from_static(b"x"), big, huge]);
        let out = flat(&w);
        assert_eq!(&out[..3], b"\x82\x01x");
        assert_eq!(&out[3..7], &[0x82, 126, 0x01, 0x2c]);
        assert_eq!(
            &out[307..317],
            &[0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]
        );
        assert_eq!(out.len(), 3 + 4 + 300 + 10 + 70_000);
    }

    #[tokio::test]
    async fn what_a_buffering_layer_holds_is_flushed() {
        use tokio::io::AsyncReadExt as _;
        // Like TLS, a BufWriter takes bytes without passing them on.
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let mut stream = tokio::io::BufWriter::new(near);
        let mut w = FrameWriter::default();
        w.binary(vec![Bytes::from_static(b"x")]);
        w.drive(&mut stream).await.unwrap();
        let mut frame = [0u8; 3];
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            far.read_exact(&mut frame),
        );
        assert!(matches!(read.await, Ok(Ok(3))), "the frame was not flushed");
        assert_eq!(&frame, b"\x82\x01x");
    }

    #[test]
    fn progress_is_kept_across_partial_writes() {
        let mut w = FrameWriter::default();
        w.json(vec![Bytes::from_static(b"{}"), Bytes::from_static(b"{}")]);
        w.advance(4);
        assert_eq!(
            (w.piece, w.offset),
            (2, 1),
            "header and '[' written, one byte into the first part"
        );
        w.advance(100);
        assert!(!w.in_flight());
    }
}
