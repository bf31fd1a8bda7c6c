//! The header byte and zstd: one compression and one decompression context
//! per thread, bound once to the shipped [`DICTIONARY`], and decompression
//! that never holds more output than the frame limit allows (see "Bounded
//! work" in the [module documentation](super)).

use std::cell::RefCell;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use zstd::zstd_safe::{
    self, CCtx, CDict, CParameter, DCtx, DDict, DParameter, InBuffer, OutBuffer, ResetDirective,
};

use super::{
    Compression, BUILDER_KEEP_BYTES, BUILDER_START_BYTES, COMPRESS_MIN_BYTES, DICTIONARY,
    HEADER_ZSTD, ZSTD_LEVEL,
};
use crate::error::DecodeError;
use crate::message::ErrorCode;

/// The first output buffer of a frame that does not declare its size.
const STREAM_START_BYTES: usize = 16 * 1024;
/// zstd's smallest window log.
const MIN_WINDOW_LOG: u32 = 10;

thread_local! {
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
pub(super) fn frame_bytes(flat: &[u8], compression: Compression) -> Bytes {
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
pub(super) fn decompress(payload: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::update;
    use super::super::{encode_batch, encode_with};
    use super::*;
    use crate::message::Envelope;

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
    fn window_log_covers_the_limit() {
        assert_eq!(window_log(1 << 20), 20);
        assert_eq!(window_log((1 << 20) + 1), 21);
        assert_eq!(window_log(1), MIN_WINDOW_LOG);
    }
}
