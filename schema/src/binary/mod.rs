//! The binary codec (docs/protocol.md 2.2): one header byte, then a FlatBuffer
//! (`schema/gitmind.fbs`, root `Frame`), zstd-compressed with the shipped
//! dictionary when that pays.
//!
//! The API mirrors [`crate::json`]: [`encode`] and [`encode_batch`] make one
//! frame, [`decode`] takes one apart, and a message that fails to decode
//! fails alone, with the same [`ErrorCode`](crate::ErrorCode) the JSON
//! codec would give.
//!
//! # Bounded work
//!
//! Nothing a peer sends can make the decoder allocate or work without
//! bound:
//!
//! - a compressed payload must be exactly one zstd frame; the size it
//!   declares is checked against [`Limits::max_frame_bytes`] before any
//!   output is allocated, and a frame that declares no size is decompressed
//!   into a buffer that grows only up to that limit. The zstd window is
//!   bounded as well;
//! - the FlatBuffer is verified once, with
//!   [`VerifierOptions`](flatbuffers::VerifierOptions) derived from the
//!   limits (depth, tables and "apparent size", which also bounds a buffer
//!   that points many times at the same data), before it is read;
//! - the envelopes of a frame and the ops of a batch are counted against
//!   [`Limits::max_envelopes`].
//!
//! # Equivalence with JSON
//!
//! Every message has one binary form and back again (the corpus test proves
//! it; `schema/README.md` gives the rules for other implementations). JSON
//! cannot carry NaN or infinity, so the binary decoder refuses them in every
//! number; binary required scalars that are absent read as 0, the value an
//! encoder leaves out. Per message, the checks and codes are the JSON
//! codec's, in its order: a union tag of `NONE` or one this version does not
//! know is `unknown_type`; a missing or bad `id`, another `version`, a
//! missing required field, a bad text operation or an unknown enum value is
//! `invalid`; a batch of more ops than allowed is `too_large`. A union tag
//! whose table is missing breaks the FlatBuffer itself: `bad_frame`.
//!
//! # Layout
//!
//! This module holds the public API; the work is done by `compress` (the
//! header byte, zstd with the dictionary, bounded decompression), `read`
//! (verifying a FlatBuffer and typing its envelopes) and `write`
//! (building the FlatBuffer of envelopes).

use bytes::Bytes;

use crate::error::DecodeError;
use crate::limits::Limits;
use crate::message::Envelope;

mod compress;
mod read;
mod write;

/// Header bit 0: the payload is one zstd frame made with [`DICTIONARY`].
pub const HEADER_ZSTD: u8 = 0b0000_0001;

/// The zstd dictionary of protocol version 1 (`schema/dict/gitmind-v1.dict`).
///
/// Frames compressed with it can only be read with it: it never changes
/// within a protocol version (see `schema/dict/README.md`).
pub static DICTIONARY: &[u8] = include_bytes!("../../dict/gitmind-v1.dict");

/// Payloads smaller than this many bytes are sent uncompressed under
/// [`Compression::Auto`]. Measured (`examples/sizes.rs`, see
/// `perf-reports/codecs.md`): with the dictionary, zstd saves more than
/// half of every real message, the smallest included (about 80 bytes of
/// FlatBuffer); only degenerate frames below this size are not worth the
/// zstd call and its 9 bytes of frame overhead.
pub const COMPRESS_MIN_BYTES: usize = 64;

/// The zstd level used to compress frames. Measured on frames of realistic
/// traffic with the dictionary: level 3 takes about 5% fewer bytes than
/// level 2 and 10% fewer than level 1 for about 1 µs more per frame;
/// level 4 gains nothing more, and level 5 doubles the time. Frames are
/// encoded once and sent to many sessions, so bytes count more than that
/// microsecond (see `perf-reports/codecs.md`).
pub const ZSTD_LEVEL: i32 = 3;

/// Whether [`encode_with`] compresses the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Compress payloads of at least [`COMPRESS_MIN_BYTES`], and keep the
    /// result only when it is smaller (what [`encode`] does).
    #[default]
    Auto,
    /// Never compress.
    Never,
    /// Compress whatever the size, keeping the result only when it is smaller.
    Always,
}

/// Encodes one envelope as a binary frame, compressed when that pays.
pub fn encode(envelope: &Envelope) -> Bytes {
    encode_with(std::slice::from_ref(envelope), Compression::Auto)
}

/// Encodes several envelopes as one binary frame (one `Frame`, one header
/// byte), compressed when that pays.
pub fn encode_batch(envelopes: &[Envelope]) -> Bytes {
    encode_with(envelopes, Compression::Auto)
}

/// Encodes envelopes as one binary frame with the given compression policy
/// (for benchmarks and tests; the codec itself uses [`Compression::Auto`]).
pub fn encode_with(envelopes: &[Envelope], compression: Compression) -> Bytes {
    write::with_frame(envelopes, |flat| compress::frame_bytes(flat, compression))
}

/// Decodes a binary frame into its envelopes.
///
/// # Errors
/// The outer `Err` refuses the whole frame: empty, reserved header bits
/// set, a broken zstd frame or FlatBuffer (`bad_frame`); over the size limit
/// before or after decompression, nested too deep, or more envelopes than
/// allowed (`too_large`). Each inner `Err` is one envelope that could not be
/// taken (`invalid`, `unknown_type`, `too_large`), with its `id` when it had
/// one, as [`crate::json::decode`] gives it.
pub fn decode(
    frame: &[u8],
    limits: &Limits,
) -> Result<Vec<Result<Envelope, DecodeError>>, DecodeError> {
    let Some((&header, payload)) = frame.split_first() else {
        return Err(DecodeError::bad_frame("empty binary frame"));
    };
    if frame.len() > limits.max_frame_bytes {
        return Err(DecodeError::too_large(format!(
            "frame of {} bytes is over the limit of {} bytes",
            frame.len(),
            limits.max_frame_bytes
        )));
    }
    if header & !HEADER_ZSTD != 0 {
        return Err(DecodeError::bad_frame(format!(
            "header byte {header:#04x} sets reserved bits; version 1 uses only bit 0"
        )));
    }
    if header & HEADER_ZSTD == 0 {
        return read::decode_flatbuffer(payload, limits);
    }
    let plain = compress::decompress(payload, limits.max_frame_bytes)?;
    read::decode_flatbuffer(&plain, limits)
}

/// Decodes a frame that must hold exactly one envelope (a convenience for
/// clients and tests).
///
/// # Errors
/// As [`decode`], and `invalid` when the frame holds another number of
/// envelopes.
pub fn decode_one(frame: &[u8], limits: &Limits) -> Result<Envelope, DecodeError> {
    let mut all = decode(frame, limits)?;
    if all.len() != 1 {
        return Err(DecodeError::invalid(format!(
            "expected one message, found {}",
            all.len()
        )));
    }
    all.pop()
        .unwrap_or_else(|| Err(DecodeError::invalid("empty frame")))
}

/// The starting capacity of the per-thread buffers (the FlatBuffer builder,
/// the compressor's output), enough for a typical small batch.
const BUILDER_START_BYTES: usize = 1024;
/// A per-thread buffer that grew past this is dropped after use.
const BUILDER_KEEP_BYTES: usize = 64 * 1024;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::message::{Body, ErrorCode, NodeCreate, NodeUpdate, SystemHeartbeat};
    use crate::model::{Node, NodeSet, PropValue, TextEdits};
    use crate::ot::TextOp;

    pub(super) fn update() -> Envelope {
        let mut props = BTreeMap::new();
        props.insert(
            "section".to_owned(),
            Some(PropValue::String("games".into())),
        );
        props.insert("gone".to_owned(), None);
        Envelope::new(
            "01JDZ8Q5K3V7",
            Body::NodeUpdate(NodeUpdate {
                base_seq: Some(41),
                id: "pkg:0ad".into(),
                set: Some(NodeSet {
                    label: Some("Real-time strategy game".into()),
                    x: Some(12.5),
                    props: Some(props),
                    ..NodeSet::default()
                }),
                ..NodeUpdate::default()
            }),
        )
    }

    #[test]
    fn round_trips_with_every_compression_policy() {
        let env = update();
        for c in [Compression::Auto, Compression::Never, Compression::Always] {
            let bytes = encode_with(std::slice::from_ref(&env), c);
            assert_eq!(
                decode_one(&bytes, &Limits::default()).unwrap(),
                env,
                "{c:?}"
            );
        }
        assert_eq!(
            encode_with(std::slice::from_ref(&env), Compression::Never)[0],
            0
        );
    }

    #[test]
    fn batch_is_one_frame_in_order() {
        let a = update();
        let b = Envelope::new(
            "b",
            Body::SystemHeartbeat(SystemHeartbeat {
                seq: Some(3),
                server_time: None,
            }),
        );
        let bytes = encode_batch(&[a.clone(), b.clone(), a.clone()]);
        let all = decode(&bytes, &Limits::default()).unwrap();
        let all: Vec<_> = all.into_iter().map(Result::unwrap).collect();
        assert_eq!(all, vec![a.clone(), b, a]);
        assert!(decode(&encode_batch(&[]), &Limits::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn text_counts_past_i64_split_and_merge() {
        let mut keep = TextOp::new();
        keep.retain((1 << 63) + 5).insert("é");
        let mut cut = TextOp::new();
        cut.retain(2).delete(u64::MAX - 2);
        for op in [keep, cut] {
            let env = Envelope::new(
                "t",
                Body::NodeUpdate(NodeUpdate {
                    id: "a:b".into(),
                    text: Some(TextEdits { content: Some(op) }),
                    ..NodeUpdate::default()
                }),
            );
            assert_eq!(decode_one(&encode(&env), &Limits::default()).unwrap(), env);
        }
    }

    #[test]
    fn empty_props_and_empty_strings_survive() {
        let env = Envelope::new(
            "e",
            Body::NodeCreate(NodeCreate {
                base_seq: Some(0),
                node: Node {
                    id: "a:b".into(),
                    label: Some(String::new()),
                    props: Some(BTreeMap::new()),
                    ..Node::default()
                },
                commit: None,
            }),
        );
        assert_eq!(decode_one(&encode(&env), &Limits::default()).unwrap(), env);
    }

    #[test]
    fn error_messages_are_lowercase() {
        let mut bad = encode(&update()).to_vec();
        bad.truncate(bad.len() / 2);
        let err = decode(&bad, &Limits::default()).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadFrame);
        assert!(
            err.message.chars().next().unwrap().is_lowercase(),
            "{}",
            err.message
        );
    }
}
