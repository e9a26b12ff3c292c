//! Codec errors. They say what is wrong with the bytes; the broker maps them to AMQP reply codes
//! (in its own `error` module), never this crate.

use thiserror::Error;

/// The frame envelope is malformed: the connection cannot go on (501 FRAME_ERROR in the broker).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame end octet is {found:#04x}, expected 0xce")]
    BadFrameEnd { found: u8 },
    #[error("frame payload of {size} bytes exceeds frame_max {frame_max}")]
    TooLarge { size: u32, frame_max: u32 },
    #[error("unknown frame type {0}")]
    UnknownType(u8),
}

/// A method frame payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MethodError {
    /// Class/method ids that AMQP 0-9-1 does not define.
    #[error("unknown method {class_id}.{method_id}")]
    Unknown { class_id: u16, method_id: u16 },
    /// The arguments do not parse: truncated, trailing bytes, bad UTF-8, bad table.
    #[error("malformed arguments for method {class_id}.{method_id}: {reason}")]
    Syntax {
        class_id: u16,
        method_id: u16,
        reason: &'static str,
    },
}

impl MethodError {
    pub(crate) fn syntax(class_id: u16, method_id: u16, reason: &'static str) -> Self {
        MethodError::Syntax {
            class_id,
            method_id,
            reason,
        }
    }
}
