//! STAND-IN until the binary codec lands (branch `binary`).
#![allow(missing_docs)]
use crate::{json, DecodeError, Envelope, Limits};
use bytes::Bytes;

pub fn encode(envelope: &Envelope) -> Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(&json::encode(envelope));
    v.into()
}

pub fn decode(
    frame: &[u8],
    limits: &Limits,
) -> Result<Vec<Result<Envelope, DecodeError>>, DecodeError> {
    let Some((0, rest)) = frame.split_first() else {
        return Err(DecodeError::bad_frame("bad header"));
    };
    let text = std::str::from_utf8(rest).map_err(|_| DecodeError::bad_frame("utf8"))?;
    json::decode(text, limits)
}
