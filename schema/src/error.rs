//! Decoding failures, each with the protocol error code a client is told.

use crate::message::ErrorCode;

/// A frame or message that could not be taken (PROTOCOL.md section 10).
///
/// The message is for a person and names what was wrong; it never carries
/// server internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct DecodeError {
    /// The protocol code: `bad_frame`, `invalid`, `unknown_type` or `too_large`.
    pub code: ErrorCode,
    /// What was wrong, in lowercase words.
    pub message: String,
    /// The `id` of the message concerned, when it could be read.
    pub reference: Option<String>,
}

impl DecodeError {
    /// A failure with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        DecodeError {
            code,
            message: message.into(),
            reference: None,
        }
    }

    /// `bad_frame`: the frame does not decode at all.
    pub fn bad_frame(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadFrame, message)
    }

    /// `invalid`: a message of the wrong shape.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }

    /// `too_large`: over a size or count limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }

    /// The same failure, naming the message it concerns.
    pub fn with_reference(mut self, id: Option<String>) -> Self {
        self.reference = id;
        self
    }
}
