//! The Gitmind live wire protocol, shared by the server, the client, the
//! load generator and the soak test (docs/architecture.md, "Crates").
//!
//! - [`codec`]: the two codecs as one [`Codec`] type, their subprotocol
//!   names, and [`PerCodec`] for what is kept once per codec.
//! - [`message`] and [`model`]: the protocol's messages as Rust types, one
//!   typed payload per message type (docs/protocol.md sections 2 to 10).
//! - [`json`]: the `gitmind.v1.json` codec.
//! - [`binary`]: the `gitmind.v1.bin` codec: FlatBuffers ([`generated`],
//!   from `schema/gitmind.fbs`) compressed with zstd and the dictionary in
//!   `schema/dict/` when that pays.
//! - [`ot`]: text operations and their transformation (docs/protocol.md 4.2),
//!   needed by the server's graph owner and by every optimistic client.
//! - [`error`]: why a message did not decode, with its protocol code.
//! - [`limits`]: how large a frame, a batch or a field may be.
//!
//! No I/O happens here: bytes in, messages out, and back.

pub mod binary;
pub mod codec;
pub mod error;
pub mod generated;
pub mod json;
pub mod limits;
pub mod message;
pub mod model;
pub mod ot;

pub use codec::{Codec, PerCodec, SUBPROTOCOL_BIN, SUBPROTOCOL_JSON};
pub use error::DecodeError;
pub use limits::Limits;
pub use message::{Body, Envelope, ErrorCode, MessageType};
