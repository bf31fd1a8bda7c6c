//! The two codecs of protocol version 1 (docs/protocol.md 2), as one type
//! that the server, the client and every tool share: its subprotocol name,
//! how it encodes, and [`PerCodec`] for anything kept once per codec
//! (counters, an event encoded once for each codec in use).

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use crate::{binary, json, Envelope};

/// The WebSocket subprotocol of the binary codec.
pub const SUBPROTOCOL_BIN: &str = "gitmind.v1.bin";
/// The WebSocket subprotocol of the JSON codec.
pub const SUBPROTOCOL_JSON: &str = "gitmind.v1.json";

/// A wire codec, chosen by the WebSocket subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Codec {
    /// `gitmind.v1.bin`: binary frames, FlatBuffers, zstd-compressed where
    /// it pays.
    #[default]
    #[cfg_attr(feature = "clap", value(name = "bin"))]
    Binary,
    /// `gitmind.v1.json`: text frames.
    Json,
}

impl Codec {
    /// Both codecs.
    pub const ALL: [Codec; 2] = [Codec::Binary, Codec::Json];

    /// The subprotocol name that selects this codec.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Codec::Binary => SUBPROTOCOL_BIN,
            Codec::Json => SUBPROTOCOL_JSON,
        }
    }

    /// The codec a subprotocol name selects, if any.
    pub fn from_subprotocol(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.subprotocol() == name)
    }

    /// Encodes one envelope as a frame of this codec.
    pub fn encode(self, envelope: &Envelope) -> Bytes {
        match self {
            Codec::Binary => binary::encode(envelope),
            Codec::Json => json::encode(envelope),
        }
    }

    /// Encodes several envelopes as one frame of this codec.
    pub fn encode_batch(self, envelopes: &[Envelope]) -> Bytes {
        match self {
            Codec::Binary => binary::encode_batch(envelopes),
            Codec::Json => json::encode_batch(envelopes),
        }
    }

    /// The short name used on command lines and in reports: `bin` or `json`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Binary => "bin",
            Codec::Json => "json",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name given is neither `bin` nor `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec {0:?}: expected `bin` or `json`")]
pub struct UnknownCodec(pub String);

impl FromStr for Codec {
    type Err = UnknownCodec;

    /// `bin` (or `binary`) and `json`, or a subprotocol name.
    fn from_str(s: &str) -> Result<Codec, UnknownCodec> {
        match s {
            "bin" | "binary" => Ok(Codec::Binary),
            "json" => Ok(Codec::Json),
            _ => Codec::from_subprotocol(s).ok_or_else(|| UnknownCodec(s.to_owned())),
        }
    }
}

/// One value per codec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerCodec<T> {
    /// The binary codec's.
    pub bin: T,
    /// The JSON codec's.
    pub json: T,
}

impl<T> PerCodec<T> {
    /// Builds each codec's value with `f`.
    pub fn from_fn(mut f: impl FnMut(Codec) -> T) -> Self {
        PerCodec {
            bin: f(Codec::Binary),
            json: f(Codec::Json),
        }
    }

    /// The value of `codec`.
    pub fn get(&self, codec: Codec) -> &T {
        match codec {
            Codec::Binary => &self.bin,
            Codec::Json => &self.json,
        }
    }

    /// The value of `codec`, to change.
    pub fn get_mut(&mut self, codec: Codec) -> &mut T {
        match codec {
            Codec::Binary => &mut self.bin,
            Codec::Json => &mut self.json,
        }
    }
}

impl<T> std::ops::Index<Codec> for PerCodec<T> {
    type Output = T;

    fn index(&self, codec: Codec) -> &T {
        self.get(codec)
    }
}

impl<T> std::ops::IndexMut<Codec> for PerCodec<T> {
    fn index_mut(&mut self, codec: Codec) -> &mut T {
        self.get_mut(codec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for codec in Codec::ALL {
            assert_eq!(codec.name().parse::<Codec>(), Ok(codec));
            assert_eq!(codec.subprotocol().parse::<Codec>(), Ok(codec));
            assert_eq!(Codec::from_subprotocol(codec.subprotocol()), Some(codec));
        }
        assert!("gitmind.v2.bin".parse::<Codec>().is_err());
    }

    #[test]
    fn per_codec_indexes_by_codec() {
        let mut counts = PerCodec::from_fn(|c| c.name().len());
        counts[Codec::Json] += 10;
        assert_eq!((counts[Codec::Binary], counts[Codec::Json]), (3, 14));
    }
}
