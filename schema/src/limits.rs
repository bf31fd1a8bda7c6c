//! The limits a decoder enforces (docs/protocol.md section 11), so that no input
//! can make it allocate without bound.

/// Decoder limits; `Default` gives the protocol's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// One frame, before and after decompression, in bytes.
    pub max_frame_bytes: usize,
    /// Envelopes in one frame (and ops in one batch).
    pub max_envelopes: usize,
    /// JSON nesting depth.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 1 << 20,
            max_envelopes: 1000,
            max_depth: 32,
        }
    }
}
