//! The Gitmind live wire protocol, shared by the server, the client, the
//! load generator and the soak test (ARCHITECTURE.md, "Workspace").
//!
//! - [`message`] and [`model`]: the protocol's messages as Rust types, one
//!   typed payload per message type (docs/protocol.md sections 2 to 10).
//! - [`json`]: the `gitmind.v1.json` codec.
//! - [`binary`]: the `gitmind.v1.bin` codec: FlatBuffers ([`generated`],
//!   from `schema/gitmind.fbs`) compressed with zstd and the dictionary in
//!   `schema/dict/` when that pays.
//! - [`ot`]: text operations and their transformation (docs/protocol.md 4.2),
//!   needed by the server's graph owner and by every optimistic client.
//!
//! No I/O happens here: bytes in, messages out, and back.

pub mod binary;
pub mod error;
pub mod generated;
pub mod json;
pub mod limits;
pub mod message;
pub mod model;
pub mod ot;

pub use error::DecodeError;
pub use limits::Limits;
pub use message::{Body, Envelope, ErrorCode, MessageType};

/// The WebSocket subprotocol of the binary codec.
pub const SUBPROTOCOL_BIN: &str = "gitmind.v1.bin";
/// The WebSocket subprotocol of the JSON codec.
pub const SUBPROTOCOL_JSON: &str = "gitmind.v1.json";
