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
//! messages are one frame each.
//!
//! A shard joins the events of one commit group into a single [`Part::Run`]
//! ([`Part::run`]) for every session that sees all of them: per session the
//! group costs one pointer copy and one or two slices of a `writev`, however
//! many changes it holds, and sessions at the same point of the stream get
//! the same bytes. Over TLS the same slices go to rustls,
//! which encrypts them into records of its own (the one copy encryption
//! needs), each freed once sent.
//!
//! tungstenite still reads, answers pings and writes close frames; the
//! session never lets the two writers interleave within a frame.

use std::io::IoSlice;

use bytes::{BufMut, Bytes, BytesMut};
use gitmind_schema::Codec;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

/// Slices handed to one `writev` at most (Linux's IOV_MAX is 1024).
const MAX_SLICES: usize = 512;

/// WebSocket opcodes of data frames.
const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;

/// What a session's writer takes from its outbox: one message, or a run
/// of messages laid out once for many sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// One message: a JSON envelope, or a binary frame's payload.
    One(Bytes),
    /// Several messages in the form the wire takes them, so that a writer
    /// only points at them: JSON envelopes joined by commas (the inside of
    /// an array), or complete binary frames, headers included.
    Run {
        /// The bytes.
        bytes: Bytes,
        /// How many messages they hold (for the envelope limit).
        messages: usize,
    },
}

impl Part {
    /// Lays out `messages` (encoded in `codec`) as one part: copied once
    /// into a buffer of their own, which the caller shares between its
    /// sessions (one buffer per shard keeps its reference count on that
    /// shard's core).
    pub fn run<'a>(codec: Codec, messages: impl Iterator<Item = &'a Bytes> + Clone) -> Part {
        let (count, len) = messages
            .clone()
            .fold((0, 0), |(n, len), m| (n + 1, len + m.len()));
        let mut out = BytesMut::with_capacity(len + count * MAX_HEADER);
        for (i, message) in messages.enumerate() {
            match codec {
                Codec::Json if i > 0 => out.put_u8(b','),
                Codec::Json => {}
                Codec::Binary => put_header(&mut out, OPCODE_BINARY, message.len()),
            }
            out.extend_from_slice(message);
        }
        Part::Run {
            bytes: out.freeze(),
            messages: count,
        }
    }

    /// Its bytes.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Part::One(bytes) | Part::Run { bytes, .. } => bytes,
        }
    }

    /// How many messages it holds.
    pub fn messages(&self) -> usize {
        match self {
            Part::One(_) => 1,
            Part::Run { messages, .. } => *messages,
        }
    }
}

/// Longest header of a server's frame (RFC 6455 5.2: no mask).
const MAX_HEADER: usize = 10;

/// Appends the header of an unmasked, final frame of `opcode` and `len`
/// payload bytes.
fn put_header(out: &mut impl BufMut, opcode: u8, len: usize) {
    out.put_u8(0x80 | opcode);
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=0xffff => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
}

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

    /// Lays out `parts` in `codec`: JSON as one text frame (one envelope
    /// as it is, several as a JSON array), binary messages as a frame each.
    pub fn lay_out(&mut self, codec: Codec, parts: Vec<Part>) {
        match codec {
            Codec::Json => self.json(parts),
            Codec::Binary => self.binary(parts),
        }
        self.len = self.meta.len() + self.payloads.iter().map(Bytes::len).sum::<usize>();
    }

    fn json(&mut self, parts: Vec<Part>) {
        self.reset();
        let single = parts.iter().map(Part::messages).sum::<usize>() == 1;
        let payload_len: usize = parts.iter().map(|p| p.bytes().len()).sum::<usize>()
            + if single { 0 } else { parts.len() + 1 };
        self.header(OPCODE_TEXT, payload_len);
        if !single {
            self.meta_piece(b"[");
        }
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 {
                self.meta_piece(b",");
            }
            let (Part::One(bytes) | Part::Run { bytes, .. }) = part;
            self.payload(bytes);
        }
        if !single {
            self.meta_piece(b"]");
        }
    }

    fn binary(&mut self, parts: Vec<Part>) {
        self.reset();
        for part in parts {
            match part {
                Part::One(bytes) => {
                    self.header(OPCODE_BINARY, bytes.len());
                    self.payload(bytes);
                }
                // Framed already.
                Part::Run { bytes, .. } => self.payload(bytes),
            }
        }
    }

    fn payload(&mut self, bytes: Bytes) {
        self.pieces.push(Piece::Payload(self.payloads.len()));
        self.payloads.push(bytes);
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
        put_header(&mut self.meta, opcode, len);
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

    /// Frees its buffers (between batches: [`FrameWriter::in_flight`] is
    /// false), for a session gone quiet.
    pub fn trim(&mut self) {
        debug_assert!(!self.in_flight());
        *self = FrameWriter::default();
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

    fn ones(messages: Vec<Bytes>) -> Vec<Part> {
        messages.into_iter().map(Part::One).collect()
    }

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
        w.lay_out(Codec::Json, ones(vec![Bytes::from_static(b"{\"a\":1}")]));
        assert_eq!(flat(&w), b"\x81\x07{\"a\":1}");
        assert_eq!(w.batch_len(), 9);
    }

    #[test]
    fn several_json_envelopes_are_one_array_frame() {
        let mut w = FrameWriter::default();
        w.lay_out(
            Codec::Json,
            ones(vec![Bytes::from_static(b"{}"), Bytes::from_static(b"{}")]),
        );
        assert_eq!(flat(&w), b"\x81\x07[{},{}]");
    }

    #[test]
    fn binary_messages_are_a_frame_each_with_extended_lengths() {
        let mut w = FrameWriter::default();
        let big = Bytes::from(vec![7u8; 300]);
        let huge = Bytes::from(vec![9u8; 70_000]);
        w.lay_out(
            Codec::Binary,
            ones(vec![Bytes::from_static(b"x"), big, huge]),
        );
        let out = flat(&w);
        assert_eq!(&out[..3], b"\x82\x01x");
        assert_eq!(&out[3..7], &[0x82, 126, 0x01, 0x2c]);
        assert_eq!(
            &out[307..317],
            &[0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]
        );
        assert_eq!(out.len(), 3 + 4 + 300 + 10 + 70_000);
    }

    #[test]
    fn a_json_run_joins_into_the_array_around_it() {
        let events = [Bytes::from_static(b"{}"), Bytes::from_static(b"{\"b\":2}")];
        let run = Part::run(Codec::Json, events.iter());
        assert_eq!(run.messages(), 2);
        let mut w = FrameWriter::default();
        w.lay_out(
            Codec::Json,
            vec![Part::One(Bytes::from_static(b"{\"a\":1}")), run],
        );
        assert_eq!(flat(&w), b"\x81\x14[{\"a\":1},{},{\"b\":2}]");
        let mut w = FrameWriter::default();
        w.lay_out(
            Codec::Json,
            vec![Part::run(Codec::Json, events[..1].iter())],
        );
        assert_eq!(
            flat(&w),
            b"\x81\x02{}",
            "a run of one is the envelope alone"
        );
    }

    #[test]
    fn a_binary_run_is_the_frames_its_messages_make_one_by_one() {
        let events = [
            Bytes::from_static(b"x"),
            Bytes::from(vec![7u8; 300]),
            Bytes::from(vec![9u8; 70_000]),
        ];
        let mut each = FrameWriter::default();
        each.lay_out(Codec::Binary, ones(events.to_vec()));
        let mut run = FrameWriter::default();
        run.lay_out(Codec::Binary, vec![Part::run(Codec::Binary, events.iter())]);
        assert_eq!(flat(&run), flat(&each));
        assert_eq!(run.batch_len(), each.batch_len());
        assert_eq!(run.pieces.len(), 1, "one slice for the whole run");
    }

    #[tokio::test]
    async fn what_a_buffering_layer_holds_is_flushed() {
        use tokio::io::AsyncReadExt as _;
        // Like TLS, a BufWriter takes bytes without passing them on.
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let mut stream = tokio::io::BufWriter::new(near);
        let mut w = FrameWriter::default();
        w.lay_out(Codec::Binary, ones(vec![Bytes::from_static(b"x")]));
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
        w.lay_out(
            Codec::Json,
            ones(vec![Bytes::from_static(b"{}"), Bytes::from_static(b"{}")]),
        );
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
