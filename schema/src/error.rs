//! Decoding failures, each with the protocol error code a client is told.

use crate::message::{ErrorCode, MessageType};

/// A frame or message that could not be taken (docs/protocol.md section 10).
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
    /// The message's type, when it and a valid `id` could be read: a
    /// mutation known this far is settled with `update.rollback`, not
    /// `system.error` (docs/protocol.md section 4.1).
    pub message_type: Option<MessageType>,
}

impl DecodeError {
    /// A failure with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        DecodeError {
            code,
            message: message.into(),
            reference: None,
            message_type: None,
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

    /// The same failure of a message whose type and valid `id` were read.
    pub fn of_message(mut self, id: String, message_type: MessageType) -> Self {
        self.reference = Some(id);
        self.message_type = Some(message_type);
        self
    }

    /// The mutation id this failure settles: `Some` when the message is a
    /// mutation with a valid `id` whose data did not decode. Its outcome is
    /// an `update.rollback` with this error's code as the reason, so an
    /// optimistic client can always settle it (docs/protocol.md 4.1).
    pub fn failed_mutation(&self) -> Option<&str> {
        self.message_type
            .filter(|t| t.is_mutation())
            .and(self.reference.as_deref())
    }
}
