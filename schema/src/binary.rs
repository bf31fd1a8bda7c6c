//! The binary codec (docs/protocol.md 2.2): one header byte, then a FlatBuffer
//! (`schema/gitmind.fbs`, root `Frame`), zstd-compressed with the shipped
//! dictionary when that pays.
//!
//! The API mirrors [`crate::json`]: [`encode`] and [`encode_batch`] make one
//! frame, [`decode`] takes one apart, and a message that fails to decode
//! fails alone, with the same [`ErrorCode`] the JSON codec would give.
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
//! - the FlatBuffer is verified once, with [`VerifierOptions`] derived from
//!   the limits (depth, tables and "apparent size", which also bounds a
//!   buffer that points many times at the same data), before it is read;
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

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use flatbuffers::{
    FlatBufferBuilder, ForwardsUOffset, InvalidFlatbuffer, Vector, VerifierOptions, WIPOffset,
};
use zstd::zstd_safe::{
    self, CCtx, CDict, CParameter, DCtx, DDict, DParameter, InBuffer, OutBuffer, ResetDirective,
};

use crate::error::DecodeError;
use crate::generated as fb;
use crate::json::{is_valid_id, MAX_ID_BYTES};
use crate::limits::Limits;
use crate::message::*;
use crate::model::{
    Edge, EdgeSet, Entity, Node, NodeSet, OpResolution, PropValue, Props, PropsPatch, Resolution,
    TextEdits,
};
use crate::ot::{Component, TextOp, MAX_COMPONENTS};

/// Header bit 0: the payload is one zstd frame made with [`DICTIONARY`].
pub const HEADER_ZSTD: u8 = 0b0000_0001;

/// The zstd dictionary of protocol version 1 (`schema/dict/gitmind-v1.dict`).
///
/// Frames compressed with it can only be read with it: it never changes
/// within a protocol version (see `schema/dict/README.md`).
pub static DICTIONARY: &[u8] = include_bytes!("../dict/gitmind-v1.dict");

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
    BUILDER.with(|cell| {
        let mut builder = cell.borrow_mut();
        builder.reset();
        let list: Vec<_> = envelopes
            .iter()
            .map(|e| put_envelope(&mut builder, e))
            .collect();
        let list = builder.create_vector(&list);
        let root = fb::Frame::create(
            &mut builder,
            &fb::FrameArgs {
                envelopes: Some(list),
            },
        );
        fb::finish_frame_buffer(&mut builder, root);
        let out = frame_bytes(builder.finished_data(), compression);
        if builder.finished_data().len() > BUILDER_KEEP_BYTES {
            // Do not keep a large buffer alive per thread after a big sync.
            *builder = FlatBufferBuilder::with_capacity(BUILDER_START_BYTES);
        }
        out
    })
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
        return decode_flatbuffer(payload, limits);
    }
    let plain = decompress(payload, limits.max_frame_bytes)?;
    decode_flatbuffer(&plain, limits)
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

// ---------------------------------------------------------------- framing and zstd

/// The builder's starting capacity, enough for a typical small batch.
const BUILDER_START_BYTES: usize = 1024;
/// A builder that grew past this is dropped after use.
const BUILDER_KEEP_BYTES: usize = 64 * 1024;
/// The first output buffer of a frame that does not declare its size.
const STREAM_START_BYTES: usize = 16 * 1024;
/// zstd's smallest window log.
const MIN_WINDOW_LOG: u32 = 10;

thread_local! {
    /// One builder per thread, reused so that encoding does not allocate it.
    static BUILDER: RefCell<FlatBufferBuilder<'static>> =
        RefCell::new(FlatBufferBuilder::with_capacity(BUILDER_START_BYTES));
    /// One compression context per thread, bound to the dictionary once.
    static COMPRESSOR: RefCell<Option<Compressor>> = RefCell::new(Compressor::new());
    /// One decompression context per thread, bound to the dictionary once.
    static DECOMPRESSOR: RefCell<Option<DCtx<'static>>> = RefCell::new(new_dctx());
}

/// The dictionary prepared for compression, built once per process.
fn cdict() -> &'static CDict<'static> {
    static CDICT: OnceLock<CDict<'static>> = OnceLock::new();
    CDICT.get_or_init(|| CDict::create(DICTIONARY, ZSTD_LEVEL))
}

/// The dictionary prepared for decompression, built once per process.
fn ddict() -> &'static DDict<'static> {
    static DDICT: OnceLock<DDict<'static>> = OnceLock::new();
    DDICT.get_or_init(|| DDict::create(DICTIONARY))
}

/// A compression context and its reusable output buffer.
struct Compressor {
    cctx: CCtx<'static>,
    scratch: Vec<u8>,
}

impl Compressor {
    /// A context bound to the dictionary; `None` if zstd refuses a
    /// parameter, in which case frames go uncompressed.
    fn new() -> Option<Compressor> {
        let mut cctx = CCtx::create();
        cctx.ref_cdict(cdict()).ok()?;
        // The dictionary is implied by the protocol version: no need to
        // spend bytes naming it. The content size is always written, so
        // that a decoder can refuse an oversized frame before allocating.
        cctx.set_parameter(CParameter::DictIdFlag(false)).ok()?;
        cctx.set_parameter(CParameter::ChecksumFlag(false)).ok()?;
        cctx.set_parameter(CParameter::ContentSizeFlag(true)).ok()?;
        Some(Compressor {
            cctx,
            scratch: Vec::with_capacity(BUILDER_START_BYTES),
        })
    }
}

/// A decompression context bound to the dictionary.
fn new_dctx() -> Option<DCtx<'static>> {
    let mut dctx = DCtx::create();
    dctx.ref_ddict(ddict()).ok()?;
    Some(dctx)
}

/// Puts the header byte before the FlatBuffer, compressing it if asked and
/// if that makes it smaller.
fn frame_bytes(flat: &[u8], compression: Compression) -> Bytes {
    let wanted = match compression {
        Compression::Never => false,
        Compression::Always => true,
        Compression::Auto => flat.len() >= COMPRESS_MIN_BYTES,
    };
    if wanted {
        let compressed = COMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            let c = slot.as_mut()?;
            c.scratch.clear();
            c.scratch.reserve(zstd_safe::compress_bound(flat.len()));
            let n = c.cctx.compress2(&mut c.scratch, flat).ok()?;
            let out = (n < flat.len()).then(|| with_header(HEADER_ZSTD, &c.scratch[..n]));
            if c.scratch.capacity() > BUILDER_KEEP_BYTES {
                // As for the builder: no large buffer kept per thread.
                c.scratch = Vec::with_capacity(BUILDER_START_BYTES);
            }
            out
        });
        if let Some(bytes) = compressed {
            return bytes;
        }
    }
    with_header(0, flat)
}

/// `header` followed by `payload`, in a buffer of exactly that size.
fn with_header(header: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 1);
    out.put_u8(header);
    out.put_slice(payload);
    out.freeze()
}

/// Decompresses one zstd frame without ever holding more than `limit`
/// bytes of output.
fn decompress(payload: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let bad = |what: &str| {
        DecodeError::bad_frame(format!("compressed payload is not one zstd frame: {what}"))
    };
    let frame_len =
        zstd_safe::find_frame_compressed_size(payload).map_err(|_| bad("truncated or corrupt"))?;
    if frame_len != payload.len() {
        return Err(bad("bytes follow the frame"));
    }
    let too_large = |size: &dyn std::fmt::Display| {
        DecodeError::too_large(format!(
            "frame decompresses to {size} bytes, over the limit of {limit} bytes"
        ))
    };
    let declared =
        zstd_safe::get_frame_content_size(payload).map_err(|_| bad("bad frame header"))?;
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let Some(dctx) = slot.as_mut() else {
            return Err(DecodeError::new(
                ErrorCode::Internal,
                "zstd is not available",
            ));
        };
        match declared {
            Some(size) => {
                let size = usize::try_from(size).map_err(|_| too_large(&size))?;
                if size > limit {
                    return Err(too_large(&size));
                }
                // One pass into exactly the declared size: zstd needs no
                // window buffer beyond it, and refuses a frame whose
                // content does not match its declared size.
                let mut out = Vec::with_capacity(size);
                let n = dctx
                    .decompress_using_ddict(&mut out, payload, ddict())
                    .map_err(|_| bad("corrupt data"))?;
                if n != size {
                    return Err(bad("content size does not match"));
                }
                Ok(out)
            }
            None => {
                // Streaming keeps state across calls: start clean, with
                // the window bounded by the limit.
                dctx.reset(ResetDirective::SessionOnly)
                    .map_err(|_| bad("cannot reset the decoder"))?;
                dctx.set_parameter(DParameter::WindowLogMax(window_log(limit)))
                    .map_err(|_| bad("cannot bound the window"))?;
                stream_bounded(dctx, payload, limit).map_err(|e| match e {
                    Stream::TooLarge => too_large(&format_args!("more than {limit}")),
                    Stream::Corrupt => bad("corrupt data"),
                    Stream::Truncated => bad("truncated"),
                })
            }
        }
    })
}

/// Why a streamed decompression stopped.
enum Stream {
    TooLarge,
    Corrupt,
    Truncated,
}

/// Decompresses a frame of unknown size into a buffer that grows, doubling,
/// up to `limit` bytes and never past it.
fn stream_bounded(
    dctx: &mut DCtx<'static>,
    payload: &[u8],
    limit: usize,
) -> Result<Vec<u8>, Stream> {
    let mut out: Vec<u8> = Vec::with_capacity(STREAM_START_BYTES.min(limit));
    let mut input = InBuffer::around(payload);
    loop {
        let (before_in, before_out) = (input.pos(), out.len());
        let pos = out.len();
        let mut output = OutBuffer::around_pos(&mut out, pos);
        let hint = dctx
            .decompress_stream(&mut output, &mut input)
            .map_err(|code| {
                // A frame whose window is over `WindowLogMax` asks for more
                // memory than the limit allows.
                if zstd_safe::get_error_name(code).contains("too much memory") {
                    Stream::TooLarge
                } else {
                    Stream::Corrupt
                }
            })?;
        if hint == 0 {
            return Ok(out);
        }
        if out.len() == out.capacity() {
            if out.capacity() >= limit {
                // Full at the limit: any further output is over it. A call
                // that moved nothing means the frame wants more room.
                if input.pos() == before_in && out.len() == before_out {
                    return Err(Stream::TooLarge);
                }
                continue;
            }
            let grown = out.capacity().saturating_mul(2).clamp(1, limit);
            out.reserve_exact(grown - out.len());
        } else if input.pos() == payload.len() && out.len() == before_out {
            return Err(Stream::Truncated);
        }
    }
}

/// The largest zstd window a frame within `limit` bytes needs.
fn window_log(limit: usize) -> u32 {
    let bits = usize::BITS - limit.saturating_sub(1).leading_zeros();
    bits.clamp(MIN_WINDOW_LOG, 31)
}

/// Verifies the FlatBuffer and reads its envelopes.
fn decode_flatbuffer(
    payload: &[u8],
    limits: &Limits,
) -> Result<Vec<Result<Envelope, DecodeError>>, DecodeError> {
    if payload.len() > limits.max_frame_bytes {
        return Err(DecodeError::too_large(format!(
            "frame of {} bytes is over the limit of {} bytes",
            payload.len(),
            limits.max_frame_bytes
        )));
    }
    let options = verifier_options(limits);
    let frame = fb::root_as_frame_with_opts(&options, payload).map_err(verify_error)?;
    let Some(list) = frame.envelopes() else {
        return Ok(Vec::new());
    };
    if list.len() > limits.max_envelopes {
        return Err(DecodeError::too_large(format!(
            "frame holds {} messages; the limit is {}",
            list.len(),
            limits.max_envelopes
        )));
    }
    Ok(list.iter().map(|e| read_envelope(e, limits)).collect())
}

/// The verifier's bounds for a frame within `limits`.
///
/// - depth: a binary message nests at most one level deeper than its JSON
///   form (the `Frame` table around the envelopes);
/// - tables: a table takes at least 8 bytes (its offset to its vtable and
///   an offset pointing at it), so an honest buffer has at most one per 8
///   bytes; more visits mean shared tables read many times;
/// - apparent size: shared vtables are counted once per table, so an honest
///   buffer's apparent size stays within a few times its real size.
fn verifier_options(limits: &Limits) -> VerifierOptions {
    VerifierOptions {
        max_depth: limits.max_depth.saturating_add(1),
        max_tables: (limits.max_frame_bytes / 8).max(16),
        max_apparent_size: limits.max_frame_bytes.saturating_mul(4).max(1024),
        ignore_missing_null_terminator: false,
    }
}

/// The protocol error for a FlatBuffer the verifier refused.
fn verify_error(e: InvalidFlatbuffer) -> DecodeError {
    match e {
        InvalidFlatbuffer::DepthLimitReached => {
            DecodeError::too_large("FlatBuffer is nested too deep")
        }
        InvalidFlatbuffer::TooManyTables | InvalidFlatbuffer::ApparentSizeTooLarge => {
            DecodeError::too_large("FlatBuffer expands past the frame limit")
        }
        other => {
            let text = other.to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("invalid")
                .trim_end_matches('.');
            DecodeError::bad_frame(format!(
                "payload is not a valid gitmind.v1 FlatBuffer: {}",
                first.to_lowercase()
            ))
        }
    }
}

// ---------------------------------------------------------------- decoding

type R<T> = Result<T, DecodeError>;

/// Types one envelope, by the same rules and in the same order as the JSON
/// codec: type, id, version, then data.
fn read_envelope(e: fb::Envelope<'_>, limits: &Limits) -> R<Envelope> {
    let id = e.id().map(str::to_owned);
    let fail =
        |code, message: String| Err(DecodeError::new(code, message).with_reference(id.clone()));
    let tag = e.data_type();
    let Some(message_type) = message_type(tag) else {
        return fail(
            ErrorCode::UnknownType,
            format!("unknown message type tag {}", tag.0),
        );
    };
    let Some(id_ref) = id.as_deref() else {
        return fail(ErrorCode::Invalid, "message has no `id`".into());
    };
    if !is_valid_id(id_ref) {
        return fail(
            ErrorCode::Invalid,
            format!("`id` must be 1 to {MAX_ID_BYTES} bytes"),
        );
    }
    // From here on the message is known: a mutation is settled with a
    // rollback, whatever else is wrong with it.
    let known = |code, message: String| {
        Err(DecodeError::new(code, message).of_message(id_ref.to_owned(), message_type))
    };
    if let Some(version) = e.version() {
        if version != PROTOCOL_VERSION {
            return known(
                ErrorCode::Invalid,
                format!("unsupported protocol version `{version}`; this server speaks `{PROTOCOL_VERSION}`"),
            );
        }
    }
    let metadata = e.metadata().map(|m| Metadata {
        client_version: own(m.client_version()),
        gonzai_state: own(m.gonzai_state()),
        region: own(m.region()),
    });
    let body = match read_body(&e, limits) {
        Ok(body) => body,
        Err(err) => {
            return known(
                err.code,
                format!("bad `data` for `{}`: {}", message_type.name(), err.message),
            );
        }
    };
    Ok(Envelope {
        id: id.unwrap_or_default(),
        timestamp: e.timestamp(),
        version: own(e.version()),
        user_id: own(e.user_id()),
        session_id: own(e.session_id()),
        seq: e.seq(),
        metadata,
        body,
    })
}

/// The message type of a union tag (`MessageType::ALL[tag - 1]`).
fn message_type(tag: fb::Payload) -> Option<MessageType> {
    let index = usize::from(tag.0).checked_sub(1)?;
    MessageType::ALL.get(index).copied()
}

/// Reads the payload of the envelope's type.
fn read_body(e: &fb::Envelope<'_>, limits: &Limits) -> R<Body> {
    use fb::Payload as P;
    let no_data = || DecodeError::invalid("message has no `data`");
    Ok(match e.data_type() {
        P::NodeCreate => Body::NodeCreate(read_node_create(
            e.data_as_node_create().ok_or_else(no_data)?,
        )?),
        P::NodeUpdate => Body::NodeUpdate(read_node_update(
            e.data_as_node_update().ok_or_else(no_data)?,
        )?),
        P::NodeDelete => Body::NodeDelete(read_node_delete(
            e.data_as_node_delete().ok_or_else(no_data)?,
        )?),
        P::EdgeCreate => Body::EdgeCreate(read_edge_create(
            e.data_as_edge_create().ok_or_else(no_data)?,
        )?),
        P::EdgeUpdate => Body::EdgeUpdate(read_edge_update(
            e.data_as_edge_update().ok_or_else(no_data)?,
        )?),
        P::EdgeDelete => Body::EdgeDelete(read_edge_delete(
            e.data_as_edge_delete().ok_or_else(no_data)?,
        )?),
        P::BatchUpdate => Body::BatchUpdate(read_batch(
            e.data_as_batch_update().ok_or_else(no_data)?,
            limits,
        )?),
        P::GraphSync => Body::GraphSync(read_graph_sync(
            e.data_as_graph_sync().ok_or_else(no_data)?,
            limits,
        )?),
        P::UpdateConfirmed => {
            let d = e.data_as_update_confirmed().ok_or_else(no_data)?;
            Body::UpdateConfirmed(UpdateConfirmed {
                reference: need_str(d.reference(), "ref")?,
                seq: d.seq(),
                commit: need_str(d.commit(), "commit")?,
                rev: d.rev(),
                text: read_text(d.text())?,
            })
        }
        P::UpdateConflictResolved => {
            let d = e.data_as_update_conflict_resolved().ok_or_else(no_data)?;
            let conflicts = need(d.conflicts(), "conflicts")?
                .iter()
                .map(|c| {
                    Ok(Conflict {
                        field: need_str(c.field(), "field")?,
                        seq: c.seq(),
                        user_id: need_str(c.user_id(), "userId")?,
                        index: c.index(),
                    })
                })
                .collect::<R<_>>()?;
            Body::UpdateConflictResolved(UpdateConflictResolved {
                reference: need_str(d.reference(), "ref")?,
                seq: d.seq(),
                commit: need_str(d.commit(), "commit")?,
                rev: d.rev(),
                conflicts,
                resolution: read_resolution(need(d.resolution(), "resolution")?)?,
                text: read_text(d.text())?,
            })
        }
        P::UpdateRollback => {
            let d = e.data_as_update_rollback().ok_or_else(no_data)?;
            let current = match d.current_type() {
                fb::Entity::NONE => None,
                fb::Entity::Node => Some(Entity::Node(read_node(need(
                    d.current_as_node(),
                    "current",
                )?)?)),
                fb::Entity::Edge => Some(Entity::Edge(read_edge(need(
                    d.current_as_edge(),
                    "current",
                )?)?)),
                other => {
                    return Err(DecodeError::invalid(format!(
                        "unknown `current` entity tag {}",
                        other.0
                    )))
                }
            };
            Body::UpdateRollback(UpdateRollback {
                reference: need_str(d.reference(), "ref")?,
                reason: rollback_reason(need(d.reason(), "reason")?)?,
                message: need_str(d.message(), "message")?,
                current,
                index: d.index(),
                retry_after_ms: d.retry_after_ms(),
            })
        }
        P::UserPresence => Body::UserPresence(read_presence(
            e.data_as_user_presence().ok_or_else(no_data)?,
        )?),
        P::CursorMove => {
            Body::CursorMove(read_cursor(e.data_as_cursor_move().ok_or_else(no_data)?)?)
        }
        P::SelectionChange => Body::SelectionChange(read_selection(
            e.data_as_selection_change().ok_or_else(no_data)?,
        )),
        P::RegionSubscribe => {
            let d = e.data_as_region_subscribe().ok_or_else(no_data)?;
            let f = need(d.filter(), "filter")?;
            let bbox = match f.bbox() {
                Some(b) => Some([
                    finite(b.x0(), "bbox")?,
                    finite(b.y0(), "bbox")?,
                    finite(b.x1(), "bbox")?,
                    finite(b.y1(), "bbox")?,
                ]),
                None => None,
            };
            let around = match f.around() {
                Some(a) => Some(Around {
                    id: need_str(a.id(), "around.id")?,
                    depth: a.depth(),
                }),
                None => None,
            };
            Body::RegionSubscribe(RegionSubscribe {
                region_id: need_str(d.region_id(), "regionId")?,
                filter: RegionFilter {
                    all: f.all(),
                    bbox,
                    nodes: strings(f.nodes()),
                    around,
                    prefix: own(f.prefix()),
                },
            })
        }
        P::RegionUnsubscribe => {
            let d = e.data_as_region_unsubscribe().ok_or_else(no_data)?;
            Body::RegionUnsubscribe(RegionUnsubscribe {
                region_id: need_str(d.region_id(), "regionId")?,
            })
        }
        P::RegionSync => {
            let d = e.data_as_region_sync().ok_or_else(no_data)?;
            Body::RegionSync(RegionSync {
                region_id: need_str(d.region_id(), "regionId")?,
                seq: d.seq(),
                nodes: need(d.nodes(), "nodes")?
                    .iter()
                    .map(read_node)
                    .collect::<R<_>>()?,
                edges: need(d.edges(), "edges")?
                    .iter()
                    .map(read_edge)
                    .collect::<R<_>>()?,
            })
        }
        P::RegionEnter => {
            let d = e.data_as_region_enter().ok_or_else(no_data)?;
            Body::RegionEnter(RegionEnter {
                region_id: need_str(d.region_id(), "regionId")?,
                node: read_node(need(d.node(), "node")?)?,
            })
        }
        P::RegionLeave => {
            let d = e.data_as_region_leave().ok_or_else(no_data)?;
            Body::RegionLeave(RegionLeave {
                region_id: need_str(d.region_id(), "regionId")?,
                id: need_str(d.id(), "id")?,
            })
        }
        P::QuerySubscribe => {
            let d = e.data_as_query_subscribe().ok_or_else(no_data)?;
            let q = need(d.query(), "query")?;
            Body::QuerySubscribe(QuerySubscribe {
                query_id: need_str(d.query_id(), "queryId")?,
                query: Query {
                    kind: own(q.kind()),
                    prefix: own(q.prefix()),
                    label_contains: own(q.label_contains()),
                    props: read_props(q.props())?,
                    edge_type: own(q.edge_type()),
                    limit: q.limit(),
                },
            })
        }
        P::QueryUnsubscribe => {
            let d = e.data_as_query_unsubscribe().ok_or_else(no_data)?;
            Body::QueryUnsubscribe(QueryUnsubscribe {
                query_id: need_str(d.query_id(), "queryId")?,
            })
        }
        P::QueryResults => {
            let d = e.data_as_query_results().ok_or_else(no_data)?;
            Body::QueryResults(QueryResults {
                query_id: need_str(d.query_id(), "queryId")?,
                seq: d.seq(),
                results: strings(Some(need(d.results(), "results")?)).unwrap_or_default(),
                added: strings(Some(need(d.added(), "added")?)).unwrap_or_default(),
                removed: strings(Some(need(d.removed(), "removed")?)).unwrap_or_default(),
            })
        }
        P::GonzaiDiscover => {
            let d = e.data_as_gonzai_discover().ok_or_else(no_data)?;
            let ev = need(d.event(), "event")?;
            Body::GonzaiDiscover(GonzaiDiscover {
                event: DiscoverEvent {
                    event_type: need_str(ev.event_type(), "event.type")?,
                    seq: ev.seq(),
                    id: need_str(ev.id(), "event.id")?,
                },
                relevance: finite(d.relevance(), "relevance")?,
                suggestion: need_str(d.suggestion(), "suggestion")?,
                animation: need_str(d.animation(), "animation")?,
            })
        }
        P::GonzaiSuggestion => {
            let d = e.data_as_gonzai_suggestion().ok_or_else(no_data)?;
            let suggestions = match d.suggestions() {
                Some(list) => Some(
                    list.iter()
                        .map(|s| {
                            Ok(Suggestion {
                                target: need_str(s.target(), "target")?,
                                edge_type: need_str(s.edge_type(), "type")?,
                                confidence: finite(s.confidence(), "confidence")?,
                                reason: need_str(s.reason(), "reason")?,
                            })
                        })
                        .collect::<R<_>>()?,
                ),
                None => None,
            };
            Body::GonzaiSuggestion(GonzaiSuggestion {
                for_node: own(d.for_node()),
                limit: d.limit(),
                suggestions,
            })
        }
        P::ChaosTrigger => {
            let d = e.data_as_chaos_trigger().ok_or_else(no_data)?;
            Body::ChaosTrigger(ChaosTrigger {
                intensity: opt_finite(d.intensity(), "intensity")?,
                initiator: own(d.initiator()),
                message: own(d.message()),
            })
        }
        P::SystemHeartbeat => {
            let d = e.data_as_system_heartbeat().ok_or_else(no_data)?;
            Body::SystemHeartbeat(SystemHeartbeat {
                seq: d.seq(),
                server_time: d.server_time(),
            })
        }
        P::SystemError => {
            let d = e.data_as_system_error().ok_or_else(no_data)?;
            Body::SystemError(SystemError {
                code: error_code(need(d.code(), "code")?)?,
                message: need_str(d.message(), "message")?,
                reference: own(d.reference()),
                retry_after_ms: d.retry_after_ms(),
            })
        }
        P::SystemReconnect => {
            let d = e.data_as_system_reconnect().ok_or_else(no_data)?;
            Body::SystemReconnect(SystemReconnect {
                reason: need_str(d.reason(), "reason")?,
                retry_after_ms: d.retry_after_ms(),
            })
        }
        // `read_envelope` checked the tag already.
        other => {
            return Err(DecodeError::new(
                ErrorCode::UnknownType,
                format!("unknown message type tag {}", other.0),
            ))
        }
    })
}

fn read_node_create(d: fb::NodeCreate<'_>) -> R<NodeCreate> {
    Ok(NodeCreate {
        base_seq: d.base_seq(),
        node: read_node(need(d.node(), "node")?)?,
        commit: own(d.commit()),
    })
}

fn read_node_update(d: fb::NodeUpdate<'_>) -> R<NodeUpdate> {
    let set = match d.set() {
        Some(s) => Some(NodeSet {
            kind: own(s.kind()),
            label: own(s.label()),
            content: own(s.content()),
            x: opt_finite(s.x(), "set.x")?,
            y: opt_finite(s.y(), "set.y")?,
            props: read_patch(s.props())?,
        }),
        None => None,
    };
    Ok(NodeUpdate {
        base_seq: d.base_seq(),
        id: need_str(d.id(), "id")?,
        set,
        text: read_text(d.text())?,
        rev: d.rev(),
        updated_at: d.updated_at(),
        updated_by: own(d.updated_by()),
        commit: own(d.commit()),
    })
}

fn read_node_delete(d: fb::NodeDelete<'_>) -> R<NodeDelete> {
    Ok(NodeDelete {
        base_seq: d.base_seq(),
        id: need_str(d.id(), "id")?,
        commit: own(d.commit()),
    })
}

fn read_edge_create(d: fb::EdgeCreate<'_>) -> R<EdgeCreate> {
    Ok(EdgeCreate {
        base_seq: d.base_seq(),
        edge: read_edge(need(d.edge(), "edge")?)?,
        commit: own(d.commit()),
    })
}

fn read_edge_update(d: fb::EdgeUpdate<'_>) -> R<EdgeUpdate> {
    let set = match d.set() {
        Some(s) => Some(EdgeSet {
            confidence: opt_finite(s.confidence(), "set.confidence")?,
            rationale: own(s.rationale()),
            bidirectional: s.bidirectional(),
            props: read_patch(s.props())?,
        }),
        None => None,
    };
    Ok(EdgeUpdate {
        base_seq: d.base_seq(),
        id: own(d.id()),
        source: own(d.source()),
        edge_type: own(d.edge_type()),
        target: own(d.target()),
        set,
        rev: d.rev(),
        updated_at: d.updated_at(),
        updated_by: own(d.updated_by()),
        commit: own(d.commit()),
    })
}

fn read_edge_delete(d: fb::EdgeDelete<'_>) -> R<EdgeDelete> {
    Ok(EdgeDelete {
        base_seq: d.base_seq(),
        id: own(d.id()),
        source: own(d.source()),
        edge_type: own(d.edge_type()),
        target: own(d.target()),
        commit: own(d.commit()),
    })
}

fn read_batch(d: fb::BatchUpdate<'_>, limits: &Limits) -> R<BatchUpdate> {
    use fb::Mutation as M;
    let list = need(d.ops(), "ops")?;
    if list.len() > limits.max_envelopes {
        return Err(DecodeError::too_large(format!(
            "batch holds {} ops; the limit is {}",
            list.len(),
            limits.max_envelopes
        )));
    }
    let mut ops = Vec::with_capacity(list.len());
    for (index, op) in list.iter().enumerate() {
        let missing = || DecodeError::invalid(format!("op {index} has no `data`"));
        let read = match op.op_type() {
            M::NodeCreate => op
                .op_as_node_create()
                .ok_or_else(missing)
                .and_then(read_node_create)
                .map(BatchOp::NodeCreate),
            M::NodeUpdate => op
                .op_as_node_update()
                .ok_or_else(missing)
                .and_then(read_node_update)
                .map(BatchOp::NodeUpdate),
            M::NodeDelete => op
                .op_as_node_delete()
                .ok_or_else(missing)
                .and_then(read_node_delete)
                .map(BatchOp::NodeDelete),
            M::EdgeCreate => op
                .op_as_edge_create()
                .ok_or_else(missing)
                .and_then(read_edge_create)
                .map(BatchOp::EdgeCreate),
            M::EdgeUpdate => op
                .op_as_edge_update()
                .ok_or_else(missing)
                .and_then(read_edge_update)
                .map(BatchOp::EdgeUpdate),
            M::EdgeDelete => op
                .op_as_edge_delete()
                .ok_or_else(missing)
                .and_then(read_edge_delete)
                .map(BatchOp::EdgeDelete),
            other => Err(DecodeError::invalid(format!(
                "op {index} has an unknown type tag {}",
                other.0
            ))),
        };
        ops.push(read.map_err(|e| DecodeError::new(e.code, format!("op {index}: {}", e.message)))?);
    }
    Ok(BatchUpdate {
        base_seq: d.base_seq(),
        ops,
        commit: own(d.commit()),
    })
}

fn read_graph_sync(d: fb::GraphSync<'_>, limits: &Limits) -> R<GraphSync> {
    let mode = match d.mode() {
        Some(fb::SyncMode::Snapshot) => Some(SyncMode::Snapshot),
        Some(fb::SyncMode::Delta) => Some(SyncMode::Delta),
        Some(other) => {
            return Err(DecodeError::invalid(format!(
                "unknown `mode` value {}",
                other.0
            )))
        }
        None => None,
    };
    let nodes = match d.nodes() {
        Some(list) => Some(list.iter().map(read_node).collect::<R<_>>()?),
        None => None,
    };
    let edges = match d.edges() {
        Some(list) => Some(list.iter().map(read_edge).collect::<R<_>>()?),
        None => None,
    };
    let events = match d.events() {
        // A bad event spoils the whole sync, as in JSON.
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, e)| {
                    read_envelope(e, limits)
                        .map_err(|err| DecodeError::invalid(format!("event {i}: {}", err.message)))
                })
                .collect::<R<_>>()?,
        ),
        None => None,
    };
    let presence = match d.presence() {
        Some(list) => Some(
            list.iter()
                .map(|p| {
                    Ok(PresenceState {
                        user_id: need_str(p.user_id(), "userId")?,
                        session_id: need_str(p.session_id(), "sessionId")?,
                        presence: read_presence(need(p.presence(), "presence")?)?,
                        cursor: p.cursor().map(read_cursor).transpose()?,
                        selection: p.selection().map(read_selection),
                    })
                })
                .collect::<R<_>>()?,
        ),
        None => None,
    };
    Ok(GraphSync {
        mode,
        epoch: own(d.epoch()),
        seq: d.seq(),
        since: d.since(),
        nodes,
        edges,
        events,
        presence,
        heartbeat_ms: d.heartbeat_ms(),
        chunk: d.chunk().map(|c| Chunk {
            index: c.index(),
            count: c.count(),
        }),
    })
}

fn read_presence(d: fb::UserPresence<'_>) -> R<UserPresence> {
    let status = match need(d.status(), "status")? {
        fb::PresenceStatus::Active => PresenceStatus::Active,
        fb::PresenceStatus::Idle => PresenceStatus::Idle,
        fb::PresenceStatus::Away => PresenceStatus::Away,
        fb::PresenceStatus::Joined => PresenceStatus::Joined,
        fb::PresenceStatus::Left => PresenceStatus::Left,
        other => {
            return Err(DecodeError::invalid(format!(
                "unknown `status` value {}",
                other.0
            )))
        }
    };
    Ok(UserPresence {
        status,
        focus: own(d.focus()),
        display_name: own(d.display_name()),
        color: own(d.color()),
        chaos_affinity: opt_finite(d.chaos_affinity(), "chaosAffinity")?,
    })
}

fn read_cursor(d: fb::CursorMove<'_>) -> R<CursorMove> {
    Ok(CursorMove {
        x: finite(d.x(), "x")?,
        y: finite(d.y(), "y")?,
        node_id: own(d.node_id()),
    })
}

fn read_selection(d: fb::SelectionChange<'_>) -> SelectionChange {
    SelectionChange {
        nodes: strings(d.nodes()).unwrap_or_default(),
        edges: strings(d.edges()).unwrap_or_default(),
    }
}

fn read_node(n: fb::Node<'_>) -> R<Node> {
    Ok(Node {
        id: need_str(n.id(), "node.id")?,
        kind: own(n.kind()),
        label: own(n.label()),
        content: own(n.content()),
        x: opt_finite(n.x(), "x")?,
        y: opt_finite(n.y(), "y")?,
        props: read_props(n.props())?,
        rev: n.rev(),
        created_at: n.created_at(),
        updated_at: n.updated_at(),
        created_by: own(n.created_by()),
        updated_by: own(n.updated_by()),
    })
}

fn read_edge(e: fb::Edge<'_>) -> R<Edge> {
    Ok(Edge {
        id: own(e.id()),
        source: need_str(e.source(), "edge.source")?,
        edge_type: need_str(e.edge_type(), "edge.type")?,
        target: need_str(e.target(), "edge.target")?,
        confidence: opt_finite(e.confidence(), "confidence")?,
        rationale: own(e.rationale()),
        bidirectional: e.bidirectional(),
        props: read_props(e.props())?,
        rev: e.rev(),
        created_at: e.created_at(),
        updated_at: e.updated_at(),
        created_by: own(e.created_by()),
        updated_by: own(e.updated_by()),
    })
}

fn read_resolution(r: fb::Resolution<'_>) -> R<Resolution> {
    let ops = match r.ops() {
        Some(list) => Some(
            list.iter()
                .map(|o| {
                    Ok(OpResolution {
                        index: o.index(),
                        resolution: read_resolution(need(o.resolution(), "resolution")?)?,
                    })
                })
                .collect::<R<_>>()?,
        ),
        None => None,
    };
    Ok(Resolution {
        kind: own(r.kind()),
        label: own(r.label()),
        content: own(r.content()),
        x: opt_finite(r.x(), "x")?,
        y: opt_finite(r.y(), "y")?,
        confidence: opt_finite(r.confidence(), "confidence")?,
        rationale: own(r.rationale()),
        bidirectional: r.bidirectional(),
        props: read_patch(r.props())?,
        ops,
    })
}

/// A prop's value: `None` when no value is set (a removal in a patch).
fn read_prop_value(p: &fb::Prop<'_>, key: &str) -> R<Option<PropValue>> {
    match (p.string_value(), p.number_value(), p.bool_value()) {
        (None, None, None) => Ok(None),
        (Some(s), None, None) => Ok(Some(PropValue::String(s.to_owned()))),
        (None, Some(n), None) => Ok(Some(PropValue::Number(finite(n, key)?))),
        (None, None, Some(b)) => Ok(Some(PropValue::Bool(b))),
        _ => Err(DecodeError::invalid(format!(
            "property `{key}` has more than one value"
        ))),
    }
}

/// Properties; a key given twice keeps its last value, as in JSON.
fn read_props(list: Option<Vector<'_, ForwardsUOffset<fb::Prop<'_>>>>) -> R<Option<Props>> {
    let Some(list) = list else { return Ok(None) };
    let mut props = BTreeMap::new();
    for p in list.iter() {
        let key = need(p.key(), "property key")?;
        let Some(value) = read_prop_value(&p, key)? else {
            return Err(DecodeError::invalid(format!(
                "property `{key}` has no value"
            )));
        };
        props.insert(key.to_owned(), value);
    }
    Ok(Some(props))
}

/// A properties patch: a key without a value is a removal.
fn read_patch(list: Option<Vector<'_, ForwardsUOffset<fb::Prop<'_>>>>) -> R<Option<PropsPatch>> {
    let Some(list) = list else { return Ok(None) };
    let mut props = BTreeMap::new();
    for p in list.iter() {
        let key = need(p.key(), "property key")?;
        props.insert(key.to_owned(), read_prop_value(&p, key)?);
    }
    Ok(Some(props))
}

/// Text edits; the operation is checked as the JSON reader checks it.
fn read_text(t: Option<fb::TextEdits<'_>>) -> R<Option<TextEdits>> {
    let Some(t) = t else { return Ok(None) };
    let Some(list) = t.content() else {
        return Ok(Some(TextEdits { content: None }));
    };
    if list.len() > MAX_COMPONENTS {
        return Err(DecodeError::invalid(format!(
            "text operation has more than {MAX_COMPONENTS} components"
        )));
    }
    let mut op = TextOp::new();
    let (mut base, mut target) = (0u64, 0u64);
    let overflow = || {
        DecodeError::invalid("text operation is too long: its character counts add up past 64 bits")
    };
    for (index, c) in list.iter().enumerate() {
        match (c.insert(), c.n()) {
            (Some(s), 0) => {
                if s.is_empty() {
                    return Err(DecodeError::invalid(format!(
                        "text operation component {index} is an empty string; an insert must contain text"
                    )));
                }
                target = target
                    .checked_add(s.chars().count() as u64)
                    .ok_or_else(overflow)?;
                op.insert(s);
            }
            (Some(_), _) => {
                return Err(DecodeError::invalid(format!(
                    "text operation component {index} has both a count and an insert"
                )));
            }
            (None, 0) => {
                return Err(DecodeError::invalid(format!(
                    "text operation component {index} is 0; use a positive retain or a negative delete"
                )));
            }
            (None, n) if n > 0 => {
                let n = n.unsigned_abs();
                base = base.checked_add(n).ok_or_else(overflow)?;
                target = target.checked_add(n).ok_or_else(overflow)?;
                op.retain(n);
            }
            (None, n) => {
                let n = n.unsigned_abs();
                base = base.checked_add(n).ok_or_else(overflow)?;
                op.delete(n);
            }
        }
    }
    Ok(Some(TextEdits { content: Some(op) }))
}

fn rollback_reason(r: fb::RollbackReason) -> R<RollbackReason> {
    use fb::RollbackReason as F;
    Ok(match r {
        F::Invalid => RollbackReason::Invalid,
        F::NotFound => RollbackReason::NotFound,
        F::AlreadyExists => RollbackReason::AlreadyExists,
        F::Deleted => RollbackReason::Deleted,
        F::Forbidden => RollbackReason::Forbidden,
        F::RateLimited => RollbackReason::RateLimited,
        F::TooLarge => RollbackReason::TooLarge,
        F::Stale => RollbackReason::Stale,
        F::Unavailable => RollbackReason::Unavailable,
        other => {
            return Err(DecodeError::invalid(format!(
                "unknown `reason` value {}",
                other.0
            )))
        }
    })
}

fn error_code(c: fb::ErrorCode) -> R<ErrorCode> {
    use fb::ErrorCode as F;
    Ok(match c {
        F::BadFrame => ErrorCode::BadFrame,
        F::Invalid => ErrorCode::Invalid,
        F::UnknownType => ErrorCode::UnknownType,
        F::RateLimited => ErrorCode::RateLimited,
        F::TooLarge => ErrorCode::TooLarge,
        F::Forbidden => ErrorCode::Forbidden,
        F::Internal => ErrorCode::Internal,
        other => {
            return Err(DecodeError::invalid(format!(
                "unknown `code` value {}",
                other.0
            )))
        }
    })
}

/// A required field.
fn need<T>(v: Option<T>, field: &str) -> R<T> {
    v.ok_or_else(|| DecodeError::invalid(format!("missing field `{field}`")))
}

/// A required string, owned.
fn need_str(v: Option<&str>, field: &str) -> R<String> {
    need(v, field).map(str::to_owned)
}

/// An optional string, owned.
fn own(v: Option<&str>) -> Option<String> {
    v.map(str::to_owned)
}

/// A list of strings, owned.
fn strings(v: Option<Vector<'_, ForwardsUOffset<&str>>>) -> Option<Vec<String>> {
    v.map(|list| list.iter().map(str::to_owned).collect())
}

/// A number JSON could carry.
fn finite(v: f64, field: &str) -> R<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(DecodeError::invalid(format!(
            "`{field}` is {v}, not a finite number"
        )))
    }
}

fn opt_finite(v: Option<f64>, field: &str) -> R<Option<f64>> {
    v.map(|v| finite(v, field)).transpose()
}

// ---------------------------------------------------------------- encoding

type B<'b> = FlatBufferBuilder<'b>;
type Union = WIPOffset<flatbuffers::UnionWIPOffset>;

fn put_str<'b>(b: &mut B<'b>, s: &Option<String>) -> Option<WIPOffset<&'b str>> {
    s.as_deref().map(|s| b.create_string(s))
}

fn put_strings<'b>(
    b: &mut B<'b>,
    list: &[String],
) -> WIPOffset<Vector<'b, ForwardsUOffset<&'b str>>> {
    let offsets: Vec<_> = list.iter().map(|s| b.create_string(s)).collect();
    b.create_vector(&offsets)
}

fn put_opt_strings<'b>(
    b: &mut B<'b>,
    list: &Option<Vec<String>>,
) -> Option<WIPOffset<Vector<'b, ForwardsUOffset<&'b str>>>> {
    list.as_deref().map(|l| put_strings(b, l))
}

/// A list of strings that reads as empty when absent: left out when empty.
fn put_nonempty_strings<'b>(
    b: &mut B<'b>,
    list: &[String],
) -> Option<WIPOffset<Vector<'b, ForwardsUOffset<&'b str>>>> {
    (!list.is_empty()).then(|| put_strings(b, list))
}

fn put_envelope<'b>(b: &mut B<'b>, e: &Envelope) -> WIPOffset<fb::Envelope<'b>> {
    let id = b.create_string(&e.id);
    let version = put_str(b, &e.version);
    let user_id = put_str(b, &e.user_id);
    let session_id = put_str(b, &e.session_id);
    let metadata = e.metadata.as_ref().map(|m| {
        let client_version = put_str(b, &m.client_version);
        let gonzai_state = put_str(b, &m.gonzai_state);
        let region = put_str(b, &m.region);
        fb::Metadata::create(
            b,
            &fb::MetadataArgs {
                client_version,
                gonzai_state,
                region,
            },
        )
    });
    let (data_type, data) = put_body(b, &e.body);
    fb::Envelope::create(
        b,
        &fb::EnvelopeArgs {
            id: Some(id),
            timestamp: e.timestamp,
            version,
            user_id,
            session_id,
            seq: e.seq,
            metadata,
            data_type,
            data: Some(data),
        },
    )
}

fn put_body(b: &mut B<'_>, body: &Body) -> (fb::Payload, Union) {
    use fb::Payload as P;
    match body {
        Body::NodeCreate(d) => (P::NodeCreate, put_node_create(b, d).as_union_value()),
        Body::NodeUpdate(d) => (P::NodeUpdate, put_node_update(b, d).as_union_value()),
        Body::NodeDelete(d) => (P::NodeDelete, put_node_delete(b, d).as_union_value()),
        Body::EdgeCreate(d) => (P::EdgeCreate, put_edge_create(b, d).as_union_value()),
        Body::EdgeUpdate(d) => (P::EdgeUpdate, put_edge_update(b, d).as_union_value()),
        Body::EdgeDelete(d) => (P::EdgeDelete, put_edge_delete(b, d).as_union_value()),
        Body::BatchUpdate(d) => {
            let ops: Vec<_> = d
                .ops
                .iter()
                .map(|op| {
                    use fb::Mutation as M;
                    let (op_type, op) = match op {
                        BatchOp::NodeCreate(d) => {
                            (M::NodeCreate, put_node_create(b, d).as_union_value())
                        }
                        BatchOp::NodeUpdate(d) => {
                            (M::NodeUpdate, put_node_update(b, d).as_union_value())
                        }
                        BatchOp::NodeDelete(d) => {
                            (M::NodeDelete, put_node_delete(b, d).as_union_value())
                        }
                        BatchOp::EdgeCreate(d) => {
                            (M::EdgeCreate, put_edge_create(b, d).as_union_value())
                        }
                        BatchOp::EdgeUpdate(d) => {
                            (M::EdgeUpdate, put_edge_update(b, d).as_union_value())
                        }
                        BatchOp::EdgeDelete(d) => {
                            (M::EdgeDelete, put_edge_delete(b, d).as_union_value())
                        }
                    };
                    fb::BatchOp::create(
                        b,
                        &fb::BatchOpArgs {
                            op_type,
                            op: Some(op),
                        },
                    )
                })
                .collect();
            let ops = b.create_vector(&ops);
            let commit = put_str(b, &d.commit);
            let t = fb::BatchUpdate::create(
                b,
                &fb::BatchUpdateArgs {
                    base_seq: d.base_seq,
                    ops: Some(ops),
                    commit,
                },
            );
            (P::BatchUpdate, t.as_union_value())
        }
        Body::GraphSync(d) => (P::GraphSync, put_graph_sync(b, d).as_union_value()),
        Body::UpdateConfirmed(d) => {
            let reference = b.create_string(&d.reference);
            let commit = b.create_string(&d.commit);
            let text = put_text(b, &d.text);
            let t = fb::UpdateConfirmed::create(
                b,
                &fb::UpdateConfirmedArgs {
                    reference: Some(reference),
                    seq: d.seq,
                    commit: Some(commit),
                    rev: d.rev,
                    text,
                },
            );
            (P::UpdateConfirmed, t.as_union_value())
        }
        Body::UpdateConflictResolved(d) => {
            let reference = b.create_string(&d.reference);
            let commit = b.create_string(&d.commit);
            let conflicts: Vec<_> = d
                .conflicts
                .iter()
                .map(|c| {
                    let field = b.create_string(&c.field);
                    let user_id = b.create_string(&c.user_id);
                    fb::Conflict::create(
                        b,
                        &fb::ConflictArgs {
                            field: Some(field),
                            seq: c.seq,
                            user_id: Some(user_id),
                            index: c.index,
                        },
                    )
                })
                .collect();
            let conflicts = b.create_vector(&conflicts);
            let resolution = put_resolution(b, &d.resolution);
            let text = put_text(b, &d.text);
            let t = fb::UpdateConflictResolved::create(
                b,
                &fb::UpdateConflictResolvedArgs {
                    reference: Some(reference),
                    seq: d.seq,
                    commit: Some(commit),
                    rev: d.rev,
                    conflicts: Some(conflicts),
                    resolution: Some(resolution),
                    text,
                },
            );
            (P::UpdateConflictResolved, t.as_union_value())
        }
        Body::UpdateRollback(d) => {
            let reference = b.create_string(&d.reference);
            let message = b.create_string(&d.message);
            let (current_type, current) = match &d.current {
                None => (fb::Entity::NONE, None),
                Some(Entity::Node(n)) => (fb::Entity::Node, Some(put_node(b, n).as_union_value())),
                Some(Entity::Edge(e)) => (fb::Entity::Edge, Some(put_edge(b, e).as_union_value())),
            };
            let t = fb::UpdateRollback::create(
                b,
                &fb::UpdateRollbackArgs {
                    reference: Some(reference),
                    reason: Some(put_reason(d.reason)),
                    message: Some(message),
                    current_type,
                    current,
                    index: d.index,
                    retry_after_ms: d.retry_after_ms,
                },
            );
            (P::UpdateRollback, t.as_union_value())
        }
        Body::UserPresence(d) => (P::UserPresence, put_presence(b, d).as_union_value()),
        Body::CursorMove(d) => (P::CursorMove, put_cursor(b, d).as_union_value()),
        Body::SelectionChange(d) => (P::SelectionChange, put_selection(b, d).as_union_value()),
        Body::RegionSubscribe(d) => {
            let region_id = b.create_string(&d.region_id);
            let f = &d.filter;
            let bbox = f.bbox.map(|[x0, y0, x1, y1]| fb::BBox::new(x0, y0, x1, y1));
            let nodes = put_opt_strings(b, &f.nodes);
            let around = f.around.as_ref().map(|a| {
                let id = b.create_string(&a.id);
                fb::Around::create(
                    b,
                    &fb::AroundArgs {
                        id: Some(id),
                        depth: a.depth,
                    },
                )
            });
            let prefix = put_str(b, &f.prefix);
            let filter = fb::RegionFilter::create(
                b,
                &fb::RegionFilterArgs {
                    all: f.all,
                    bbox: bbox.as_ref(),
                    nodes,
                    around,
                    prefix,
                },
            );
            let t = fb::RegionSubscribe::create(
                b,
                &fb::RegionSubscribeArgs {
                    region_id: Some(region_id),
                    filter: Some(filter),
                },
            );
            (P::RegionSubscribe, t.as_union_value())
        }
        Body::RegionUnsubscribe(d) => {
            let region_id = b.create_string(&d.region_id);
            let t = fb::RegionUnsubscribe::create(
                b,
                &fb::RegionUnsubscribeArgs {
                    region_id: Some(region_id),
                },
            );
            (P::RegionUnsubscribe, t.as_union_value())
        }
        Body::RegionSync(d) => {
            let region_id = b.create_string(&d.region_id);
            let nodes: Vec<_> = d.nodes.iter().map(|n| put_node(b, n)).collect();
            let nodes = b.create_vector(&nodes);
            let edges: Vec<_> = d.edges.iter().map(|e| put_edge(b, e)).collect();
            let edges = b.create_vector(&edges);
            let t = fb::RegionSync::create(
                b,
                &fb::RegionSyncArgs {
                    region_id: Some(region_id),
                    seq: d.seq,
                    nodes: Some(nodes),
                    edges: Some(edges),
                },
            );
            (P::RegionSync, t.as_union_value())
        }
        Body::RegionEnter(d) => {
            let region_id = b.create_string(&d.region_id);
            let node = put_node(b, &d.node);
            let t = fb::RegionEnter::create(
                b,
                &fb::RegionEnterArgs {
                    region_id: Some(region_id),
                    node: Some(node),
                },
            );
            (P::RegionEnter, t.as_union_value())
        }
        Body::RegionLeave(d) => {
            let region_id = b.create_string(&d.region_id);
            let id = b.create_string(&d.id);
            let t = fb::RegionLeave::create(
                b,
                &fb::RegionLeaveArgs {
                    region_id: Some(region_id),
                    id: Some(id),
                },
            );
            (P::RegionLeave, t.as_union_value())
        }
        Body::QuerySubscribe(d) => {
            let query_id = b.create_string(&d.query_id);
            let q = &d.query;
            let kind = put_str(b, &q.kind);
            let prefix = put_str(b, &q.prefix);
            let label_contains = put_str(b, &q.label_contains);
            let props = q.props.as_ref().map(|p| put_props(b, p));
            let edge_type = put_str(b, &q.edge_type);
            let query = fb::Query::create(
                b,
                &fb::QueryArgs {
                    kind,
                    prefix,
                    label_contains,
                    props,
                    edge_type,
                    limit: q.limit,
                },
            );
            let t = fb::QuerySubscribe::create(
                b,
                &fb::QuerySubscribeArgs {
                    query_id: Some(query_id),
                    query: Some(query),
                },
            );
            (P::QuerySubscribe, t.as_union_value())
        }
        Body::QueryUnsubscribe(d) => {
            let query_id = b.create_string(&d.query_id);
            let t = fb::QueryUnsubscribe::create(
                b,
                &fb::QueryUnsubscribeArgs {
                    query_id: Some(query_id),
                },
            );
            (P::QueryUnsubscribe, t.as_union_value())
        }
        Body::QueryResults(d) => {
            let query_id = b.create_string(&d.query_id);
            let results = put_strings(b, &d.results);
            let added = put_strings(b, &d.added);
            let removed = put_strings(b, &d.removed);
            let t = fb::QueryResults::create(
                b,
                &fb::QueryResultsArgs {
                    query_id: Some(query_id),
                    seq: d.seq,
                    results: Some(results),
                    added: Some(added),
                    removed: Some(removed),
                },
            );
            (P::QueryResults, t.as_union_value())
        }
        Body::GonzaiDiscover(d) => {
            let event_type = b.create_string(&d.event.event_type);
            let id = b.create_string(&d.event.id);
            let event = fb::DiscoverEvent::create(
                b,
                &fb::DiscoverEventArgs {
                    event_type: Some(event_type),
                    seq: d.event.seq,
                    id: Some(id),
                },
            );
            let suggestion = b.create_string(&d.suggestion);
            let animation = b.create_string(&d.animation);
            let t = fb::GonzaiDiscover::create(
                b,
                &fb::GonzaiDiscoverArgs {
                    event: Some(event),
                    relevance: d.relevance,
                    suggestion: Some(suggestion),
                    animation: Some(animation),
                },
            );
            (P::GonzaiDiscover, t.as_union_value())
        }
        Body::GonzaiSuggestion(d) => {
            let for_node = put_str(b, &d.for_node);
            let suggestions = d.suggestions.as_ref().map(|list| {
                let list: Vec<_> = list
                    .iter()
                    .map(|s| {
                        let target = b.create_string(&s.target);
                        let edge_type = b.create_string(&s.edge_type);
                        let reason = b.create_string(&s.reason);
                        fb::Suggestion::create(
                            b,
                            &fb::SuggestionArgs {
                                target: Some(target),
                                edge_type: Some(edge_type),
                                confidence: s.confidence,
                                reason: Some(reason),
                            },
                        )
                    })
                    .collect();
                b.create_vector(&list)
            });
            let t = fb::GonzaiSuggestion::create(
                b,
                &fb::GonzaiSuggestionArgs {
                    for_node,
                    limit: d.limit,
                    suggestions,
                },
            );
            (P::GonzaiSuggestion, t.as_union_value())
        }
        Body::ChaosTrigger(d) => {
            let initiator = put_str(b, &d.initiator);
            let message = put_str(b, &d.message);
            let t = fb::ChaosTrigger::create(
                b,
                &fb::ChaosTriggerArgs {
                    intensity: d.intensity,
                    initiator,
                    message,
                },
            );
            (P::ChaosTrigger, t.as_union_value())
        }
        Body::SystemHeartbeat(d) => {
            let t = fb::SystemHeartbeat::create(
                b,
                &fb::SystemHeartbeatArgs {
                    seq: d.seq,
                    server_time: d.server_time,
                },
            );
            (P::SystemHeartbeat, t.as_union_value())
        }
        Body::SystemError(d) => {
            let message = b.create_string(&d.message);
            let reference = put_str(b, &d.reference);
            let t = fb::SystemError::create(
                b,
                &fb::SystemErrorArgs {
                    code: Some(put_error_code(d.code)),
                    message: Some(message),
                    reference,
                    retry_after_ms: d.retry_after_ms,
                },
            );
            (P::SystemError, t.as_union_value())
        }
        Body::SystemReconnect(d) => {
            let reason = b.create_string(&d.reason);
            let t = fb::SystemReconnect::create(
                b,
                &fb::SystemReconnectArgs {
                    reason: Some(reason),
                    retry_after_ms: d.retry_after_ms,
                },
            );
            (P::SystemReconnect, t.as_union_value())
        }
    }
}

fn put_node_create<'b>(b: &mut B<'b>, d: &NodeCreate) -> WIPOffset<fb::NodeCreate<'b>> {
    let node = put_node(b, &d.node);
    let commit = put_str(b, &d.commit);
    fb::NodeCreate::create(
        b,
        &fb::NodeCreateArgs {
            base_seq: d.base_seq,
            node: Some(node),
            commit,
        },
    )
}

fn put_node_update<'b>(b: &mut B<'b>, d: &NodeUpdate) -> WIPOffset<fb::NodeUpdate<'b>> {
    let id = b.create_string(&d.id);
    let set = d.set.as_ref().map(|s| {
        let kind = put_str(b, &s.kind);
        let label = put_str(b, &s.label);
        let content = put_str(b, &s.content);
        let props = s.props.as_ref().map(|p| put_patch(b, p));
        fb::NodeSet::create(
            b,
            &fb::NodeSetArgs {
                kind,
                label,
                content,
                x: s.x,
                y: s.y,
                props,
            },
        )
    });
    let text = put_text(b, &d.text);
    let updated_by = put_str(b, &d.updated_by);
    let commit = put_str(b, &d.commit);
    fb::NodeUpdate::create(
        b,
        &fb::NodeUpdateArgs {
            base_seq: d.base_seq,
            id: Some(id),
            set,
            text,
            rev: d.rev,
            updated_at: d.updated_at,
            updated_by,
            commit,
        },
    )
}

fn put_node_delete<'b>(b: &mut B<'b>, d: &NodeDelete) -> WIPOffset<fb::NodeDelete<'b>> {
    let id = b.create_string(&d.id);
    let commit = put_str(b, &d.commit);
    fb::NodeDelete::create(
        b,
        &fb::NodeDeleteArgs {
            base_seq: d.base_seq,
            id: Some(id),
            commit,
        },
    )
}

fn put_edge_create<'b>(b: &mut B<'b>, d: &EdgeCreate) -> WIPOffset<fb::EdgeCreate<'b>> {
    let edge = put_edge(b, &d.edge);
    let commit = put_str(b, &d.commit);
    fb::EdgeCreate::create(
        b,
        &fb::EdgeCreateArgs {
            base_seq: d.base_seq,
            edge: Some(edge),
            commit,
        },
    )
}

fn put_edge_update<'b>(b: &mut B<'b>, d: &EdgeUpdate) -> WIPOffset<fb::EdgeUpdate<'b>> {
    let id = put_str(b, &d.id);
    let source = put_str(b, &d.source);
    let edge_type = put_str(b, &d.edge_type);
    let target = put_str(b, &d.target);
    let set = d.set.as_ref().map(|s| {
        let rationale = put_str(b, &s.rationale);
        let props = s.props.as_ref().map(|p| put_patch(b, p));
        fb::EdgeSet::create(
            b,
            &fb::EdgeSetArgs {
                confidence: s.confidence,
                rationale,
                bidirectional: s.bidirectional,
                props,
            },
        )
    });
    let updated_by = put_str(b, &d.updated_by);
    let commit = put_str(b, &d.commit);
    fb::EdgeUpdate::create(
        b,
        &fb::EdgeUpdateArgs {
            base_seq: d.base_seq,
            id,
            source,
            edge_type,
            target,
            set,
            rev: d.rev,
            updated_at: d.updated_at,
            updated_by,
            commit,
        },
    )
}

fn put_edge_delete<'b>(b: &mut B<'b>, d: &EdgeDelete) -> WIPOffset<fb::EdgeDelete<'b>> {
    let id = put_str(b, &d.id);
    let source = put_str(b, &d.source);
    let edge_type = put_str(b, &d.edge_type);
    let target = put_str(b, &d.target);
    let commit = put_str(b, &d.commit);
    fb::EdgeDelete::create(
        b,
        &fb::EdgeDeleteArgs {
            base_seq: d.base_seq,
            id,
            source,
            edge_type,
            target,
            commit,
        },
    )
}

fn put_graph_sync<'b>(b: &mut B<'b>, d: &GraphSync) -> WIPOffset<fb::GraphSync<'b>> {
    let epoch = put_str(b, &d.epoch);
    let nodes = d.nodes.as_ref().map(|list| {
        let list: Vec<_> = list.iter().map(|n| put_node(b, n)).collect();
        b.create_vector(&list)
    });
    let edges = d.edges.as_ref().map(|list| {
        let list: Vec<_> = list.iter().map(|e| put_edge(b, e)).collect();
        b.create_vector(&list)
    });
    let events = d.events.as_ref().map(|list| {
        let list: Vec<_> = list.iter().map(|e| put_envelope(b, e)).collect();
        b.create_vector(&list)
    });
    let presence = d.presence.as_ref().map(|list| {
        let list: Vec<_> = list
            .iter()
            .map(|p| {
                let user_id = b.create_string(&p.user_id);
                let session_id = b.create_string(&p.session_id);
                let presence = put_presence(b, &p.presence);
                let cursor = p.cursor.as_ref().map(|c| put_cursor(b, c));
                let selection = p.selection.as_ref().map(|s| put_selection(b, s));
                fb::PresenceState::create(
                    b,
                    &fb::PresenceStateArgs {
                        user_id: Some(user_id),
                        session_id: Some(session_id),
                        presence: Some(presence),
                        cursor,
                        selection,
                    },
                )
            })
            .collect();
        b.create_vector(&list)
    });
    let chunk = d.chunk.map(|c| fb::Chunk::new(c.index, c.count));
    let mode = d.mode.map(|m| match m {
        SyncMode::Snapshot => fb::SyncMode::Snapshot,
        SyncMode::Delta => fb::SyncMode::Delta,
    });
    fb::GraphSync::create(
        b,
        &fb::GraphSyncArgs {
            mode,
            epoch,
            seq: d.seq,
            since: d.since,
            nodes,
            edges,
            events,
            presence,
            heartbeat_ms: d.heartbeat_ms,
            chunk: chunk.as_ref(),
        },
    )
}

fn put_presence<'b>(b: &mut B<'b>, d: &UserPresence) -> WIPOffset<fb::UserPresence<'b>> {
    let status = match d.status {
        PresenceStatus::Active => fb::PresenceStatus::Active,
        PresenceStatus::Idle => fb::PresenceStatus::Idle,
        PresenceStatus::Away => fb::PresenceStatus::Away,
        PresenceStatus::Joined => fb::PresenceStatus::Joined,
        PresenceStatus::Left => fb::PresenceStatus::Left,
    };
    let focus = put_str(b, &d.focus);
    let display_name = put_str(b, &d.display_name);
    let color = put_str(b, &d.color);
    fb::UserPresence::create(
        b,
        &fb::UserPresenceArgs {
            status: Some(status),
            focus,
            display_name,
            color,
            chaos_affinity: d.chaos_affinity,
        },
    )
}

fn put_cursor<'b>(b: &mut B<'b>, d: &CursorMove) -> WIPOffset<fb::CursorMove<'b>> {
    let node_id = put_str(b, &d.node_id);
    fb::CursorMove::create(
        b,
        &fb::CursorMoveArgs {
            x: d.x,
            y: d.y,
            node_id,
        },
    )
}

fn put_selection<'b>(b: &mut B<'b>, d: &SelectionChange) -> WIPOffset<fb::SelectionChange<'b>> {
    let nodes = put_nonempty_strings(b, &d.nodes);
    let edges = put_nonempty_strings(b, &d.edges);
    fb::SelectionChange::create(b, &fb::SelectionChangeArgs { nodes, edges })
}

fn put_node<'b>(b: &mut B<'b>, n: &Node) -> WIPOffset<fb::Node<'b>> {
    let id = b.create_string(&n.id);
    let kind = put_str(b, &n.kind);
    let label = put_str(b, &n.label);
    let content = put_str(b, &n.content);
    let props = n.props.as_ref().map(|p| put_props(b, p));
    let created_by = put_str(b, &n.created_by);
    let updated_by = put_str(b, &n.updated_by);
    fb::Node::create(
        b,
        &fb::NodeArgs {
            id: Some(id),
            kind,
            label,
            content,
            x: n.x,
            y: n.y,
            props,
            rev: n.rev,
            created_at: n.created_at,
            updated_at: n.updated_at,
            created_by,
            updated_by,
        },
    )
}

fn put_edge<'b>(b: &mut B<'b>, e: &Edge) -> WIPOffset<fb::Edge<'b>> {
    let id = put_str(b, &e.id);
    let source = b.create_string(&e.source);
    let edge_type = b.create_string(&e.edge_type);
    let target = b.create_string(&e.target);
    let rationale = put_str(b, &e.rationale);
    let props = e.props.as_ref().map(|p| put_props(b, p));
    let created_by = put_str(b, &e.created_by);
    let updated_by = put_str(b, &e.updated_by);
    fb::Edge::create(
        b,
        &fb::EdgeArgs {
            id,
            source: Some(source),
            edge_type: Some(edge_type),
            target: Some(target),
            confidence: e.confidence,
            rationale,
            bidirectional: e.bidirectional,
            props,
            rev: e.rev,
            created_at: e.created_at,
            updated_at: e.updated_at,
            created_by,
            updated_by,
        },
    )
}

fn put_resolution<'b>(b: &mut B<'b>, r: &Resolution) -> WIPOffset<fb::Resolution<'b>> {
    let kind = put_str(b, &r.kind);
    let label = put_str(b, &r.label);
    let content = put_str(b, &r.content);
    let rationale = put_str(b, &r.rationale);
    let props = r.props.as_ref().map(|p| put_patch(b, p));
    let ops = r.ops.as_ref().map(|list| {
        let list: Vec<_> = list
            .iter()
            .map(|o| {
                let resolution = put_resolution(b, &o.resolution);
                fb::OpResolution::create(
                    b,
                    &fb::OpResolutionArgs {
                        index: o.index,
                        resolution: Some(resolution),
                    },
                )
            })
            .collect();
        b.create_vector(&list)
    });
    fb::Resolution::create(
        b,
        &fb::ResolutionArgs {
            kind,
            label,
            content,
            x: r.x,
            y: r.y,
            confidence: r.confidence,
            rationale,
            bidirectional: r.bidirectional,
            props,
            ops,
        },
    )
}

type PropList<'b> = WIPOffset<Vector<'b, ForwardsUOffset<fb::Prop<'b>>>>;

fn put_prop<'b>(b: &mut B<'b>, key: &str, value: Option<&PropValue>) -> WIPOffset<fb::Prop<'b>> {
    let key = b.create_string(key);
    let mut args = fb::PropArgs {
        key: Some(key),
        ..fb::PropArgs::default()
    };
    match value {
        Some(PropValue::String(s)) => args.string_value = Some(b.create_string(s)),
        Some(PropValue::Number(n)) => args.number_value = Some(*n),
        Some(PropValue::Bool(v)) => args.bool_value = Some(*v),
        None => {}
    }
    fb::Prop::create(b, &args)
}

fn put_props<'b>(b: &mut B<'b>, props: &Props) -> PropList<'b> {
    let list: Vec<_> = props.iter().map(|(k, v)| put_prop(b, k, Some(v))).collect();
    b.create_vector(&list)
}

fn put_patch<'b>(b: &mut B<'b>, props: &PropsPatch) -> PropList<'b> {
    let list: Vec<_> = props
        .iter()
        .map(|(k, v)| put_prop(b, k, v.as_ref()))
        .collect();
    b.create_vector(&list)
}

/// Text edits; counts too large for one `long` are split, as JSON splits
/// long deletes, and read back as one component.
fn put_text<'b>(b: &mut B<'b>, t: &Option<TextEdits>) -> Option<WIPOffset<fb::TextEdits<'b>>> {
    let t = t.as_ref()?;
    let content = t.content.as_ref().map(|op| {
        let mut list = Vec::with_capacity(op.components().len());
        for c in op.components() {
            match c {
                Component::Insert(s) => {
                    let insert = b.create_string(s);
                    list.push(fb::TextComponent::create(
                        b,
                        &fb::TextComponentArgs {
                            n: 0,
                            insert: Some(insert),
                        },
                    ));
                }
                Component::Retain(n) => {
                    let mut left = *n;
                    while left > 0 {
                        let chunk = left.min(i64::MAX.unsigned_abs());
                        // `chunk` is at most i64::MAX.
                        let n = i64::try_from(chunk).unwrap_or(i64::MAX);
                        list.push(fb::TextComponent::create(
                            b,
                            &fb::TextComponentArgs { n, insert: None },
                        ));
                        left -= chunk;
                    }
                }
                Component::Delete(n) => {
                    let mut left = *n;
                    while left > 0 {
                        let chunk = left.min(i64::MIN.unsigned_abs());
                        let n = 0i64.checked_sub_unsigned(chunk).unwrap_or(i64::MIN);
                        list.push(fb::TextComponent::create(
                            b,
                            &fb::TextComponentArgs { n, insert: None },
                        ));
                        left -= chunk;
                    }
                }
            }
        }
        b.create_vector(&list)
    });
    Some(fb::TextEdits::create(b, &fb::TextEditsArgs { content }))
}

fn put_reason(r: RollbackReason) -> fb::RollbackReason {
    use fb::RollbackReason as F;
    match r {
        RollbackReason::Invalid => F::Invalid,
        RollbackReason::NotFound => F::NotFound,
        RollbackReason::AlreadyExists => F::AlreadyExists,
        RollbackReason::Deleted => F::Deleted,
        RollbackReason::Forbidden => F::Forbidden,
        RollbackReason::RateLimited => F::RateLimited,
        RollbackReason::TooLarge => F::TooLarge,
        RollbackReason::Stale => F::Stale,
        RollbackReason::Unavailable => F::Unavailable,
    }
}

fn put_error_code(c: ErrorCode) -> fb::ErrorCode {
    use fb::ErrorCode as F;
    match c {
        ErrorCode::BadFrame => F::BadFrame,
        ErrorCode::Invalid => F::Invalid,
        ErrorCode::UnknownType => F::UnknownType,
        ErrorCode::RateLimited => F::RateLimited,
        ErrorCode::TooLarge => F::TooLarge,
        ErrorCode::Forbidden => F::Forbidden,
        ErrorCode::Internal => F::Internal,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::Node;

    fn update() -> Envelope {
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
    fn union_tags_follow_message_type_order() {
        for (i, ty) in MessageType::ALL.iter().enumerate() {
            let tag = fb::Payload(u8::try_from(i + 1).unwrap());
            assert_eq!(tag.variant_name(), Some(format!("{ty:?}").as_str()));
            assert_eq!(message_type(tag), Some(*ty));
        }
        assert_eq!(message_type(fb::Payload::NONE), None);
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
    fn compression_is_kept_only_when_it_pays() {
        let small = [0u8; COMPRESS_MIN_BYTES - 1];
        assert_eq!(frame_bytes(&small, Compression::Auto)[0], 0);
        assert_eq!(frame_bytes(&small, Compression::Always)[0], HEADER_ZSTD);
        let zeros = [0u8; 4 * COMPRESS_MIN_BYTES];
        assert_eq!(frame_bytes(&zeros, Compression::Auto)[0], HEADER_ZSTD);
        assert_eq!(frame_bytes(&zeros, Compression::Never)[0], 0);
        // Incompressible: kept as it is.
        let mut noise = [0u8; 4 * COMPRESS_MIN_BYTES];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for b in &mut noise {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x.to_le_bytes()[0];
        }
        let framed = frame_bytes(&noise, Compression::Always);
        assert_eq!((framed[0], &framed[1..]), (0, &noise[..]));
        let big: Vec<Envelope> = (0..10).map(|_| update()).collect();
        assert!(encode_batch(&big).len() < encode_with(&big, Compression::Never).len());
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
    fn window_log_covers_the_limit() {
        assert_eq!(window_log(1 << 20), 20);
        assert_eq!(window_log((1 << 20) + 1), 21);
        assert_eq!(window_log(1), MIN_WINDOW_LOG);
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
