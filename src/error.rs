//! The broker's one error type, and the one place that maps each error to an AMQP reply code and
//! to its scope: a channel exception (`channel.close`, the connection lives on) or a connection
//! exception (`connection.close`, everything on it goes).
//!
//! Codes and scopes follow the AMQP 0-9-1 spec and what RabbitMQ does for the same fault.

use thiserror::Error;
use warren_protocol::content::ContentError;
use warren_protocol::{FrameError, MethodError};

/// AMQP 0-9-1 reply codes (spec section 1.4.2, plus RabbitMQ's use of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ReplyCode {
    ReplySuccess = 200,
    ContentTooLarge = 311,
    NoRoute = 312,
    NoConsumers = 313,
    ConnectionForced = 320,
    InvalidPath = 402,
    AccessRefused = 403,
    NotFound = 404,
    ResourceLocked = 405,
    PreconditionFailed = 406,
    FrameError = 501,
    SyntaxError = 502,
    CommandInvalid = 503,
    ChannelError = 504,
    UnexpectedFrame = 505,
    ResourceError = 506,
    NotAllowed = 530,
    NotImplemented = 540,
    InternalError = 541,
}

impl ReplyCode {
    /// The spec's name, as RabbitMQ prefixes its reply texts with it.
    pub fn name(self) -> &'static str {
        match self {
            ReplyCode::ReplySuccess => "REPLY_SUCCESS",
            ReplyCode::ContentTooLarge => "CONTENT_TOO_LARGE",
            ReplyCode::NoRoute => "NO_ROUTE",
            ReplyCode::NoConsumers => "NO_CONSUMERS",
            ReplyCode::ConnectionForced => "CONNECTION_FORCED",
            ReplyCode::InvalidPath => "INVALID_PATH",
            ReplyCode::AccessRefused => "ACCESS_REFUSED",
            ReplyCode::NotFound => "NOT_FOUND",
            ReplyCode::ResourceLocked => "RESOURCE_LOCKED",
            ReplyCode::PreconditionFailed => "PRECONDITION_FAILED",
            ReplyCode::FrameError => "FRAME_ERROR",
            ReplyCode::SyntaxError => "SYNTAX_ERROR",
            ReplyCode::CommandInvalid => "COMMAND_INVALID",
            ReplyCode::ChannelError => "CHANNEL_ERROR",
            ReplyCode::UnexpectedFrame => "UNEXPECTED_FRAME",
            ReplyCode::ResourceError => "RESOURCE_ERROR",
            ReplyCode::NotAllowed => "NOT_ALLOWED",
            ReplyCode::NotImplemented => "NOT_IMPLEMENTED",
            ReplyCode::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// Whether an error closes one channel or the whole connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Channel,
    Connection,
}

/// Everything that can go wrong while serving a client.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Method(#[from] MethodError),
    #[error("{0}")]
    Content(#[from] ContentError),
    #[error("heartbeat frame on channel {0}")]
    HeartbeatOnChannel(u16),
    #[error("{0}")]
    UnexpectedFrame(String),
    /// A method the connection's state does not allow (RabbitMQ: "unexpected method in
    /// connection state ..."), or a non-connection method on channel 0.
    #[error("{0}")]
    UnexpectedMethod(String),
    #[error("{0}")]
    CommandInvalid(String),
    #[error("channel {0} is not open")]
    ChannelNotOpen(u16),
    #[error("channel {0} is already open")]
    ChannelAlreadyOpen(u16),
    #[error("channel {channel} exceeds channel_max {channel_max}")]
    ChannelMax { channel: u16, channel_max: u16 },
    #[error("{0}")]
    TuneRejected(String),
    #[error("{0}")]
    AuthFailed(String),
    #[error("vhost {0} not found")]
    VhostNotFound(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    AccessRefused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    ResourceLocked(String),
    #[error("{0}")]
    PreconditionFailed(String),
    /// 530, a connection exception (e.g. a reused consumer tag, as RabbitMQ).
    #[error("{0}")]
    NotAllowed(String),
    #[error("broker is shutting down")]
    Shutdown,
    /// 320: the operator took the connection's user or vhost away (`user 'u' is deleted`).
    #[error("{0}")]
    Forced(String),
    /// The broker failed at something that is not the client's fault (e.g. disk I/O).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The single mapping from errors to reply codes and scopes.
    pub fn reply(&self) -> (ReplyCode, Scope) {
        use ReplyCode as R;
        use Scope::{Channel, Connection};
        match self {
            // RabbitMQ answers method frames it cannot decode (unknown ids, bad arguments) with
            // 501 "cannot decode", like any other frame it cannot make sense of.
            Error::Frame(_) | Error::Method(_) | Error::Content(_) => (R::FrameError, Connection),
            Error::UnexpectedFrame(_) | Error::HeartbeatOnChannel(_) => {
                (R::UnexpectedFrame, Connection)
            }
            Error::UnexpectedMethod(_) => (R::ChannelError, Connection),
            Error::CommandInvalid(_) => (R::CommandInvalid, Connection),
            Error::ChannelNotOpen(_) | Error::ChannelAlreadyOpen(_) => {
                (R::ChannelError, Connection)
            }
            Error::ChannelMax { .. } | Error::TuneRejected(_) | Error::VhostNotFound(_) => {
                (R::NotAllowed, Connection)
            }
            Error::AuthFailed(_) => (R::AccessRefused, Connection),
            // RabbitMQ treats 540 as a hard error, as the spec lists it.
            Error::NotImplemented(_) => (R::NotImplemented, Connection),
            Error::AccessRefused(_) => (R::AccessRefused, Channel),
            Error::NotFound(_) => (R::NotFound, Channel),
            Error::ResourceLocked(_) => (R::ResourceLocked, Channel),
            Error::PreconditionFailed(_) => (R::PreconditionFailed, Channel),
            Error::NotAllowed(_) => (R::NotAllowed, Connection),
            Error::Shutdown | Error::Forced(_) => (R::ConnectionForced, Connection),
            Error::Internal(_) => (R::InternalError, Connection),
        }
    }

    /// The reply text sent to the client: RabbitMQ's `CODE_NAME - detail` form.
    pub fn reply_text(&self) -> String {
        let text = format!("{} - {}", self.reply().0.name(), self);
        // reply-text is a short string.
        if text.len() <= 255 {
            return text;
        }
        // As RabbitMQ: cut to 252 bytes and end with "..." (on a character boundary).
        let mut end = 252;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    }
}

/// An error together with the method that caused it (class id, method id; 0 when no method).
#[derive(Debug)]
pub struct Exception {
    pub error: Error,
    pub class_id: u16,
    pub method_id: u16,
}

impl From<Error> for Exception {
    fn from(error: Error) -> Self {
        Exception {
            error,
            class_id: 0,
            method_id: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_the_spec() {
        let hard = Error::Frame(FrameError::UnknownType(9));
        assert_eq!(hard.reply(), (ReplyCode::FrameError, Scope::Connection));
        let unknown = Error::Method(MethodError::Unknown {
            class_id: 60,
            method_id: 200,
        });
        assert_eq!(unknown.reply(), (ReplyCode::FrameError, Scope::Connection));
        let beat = Error::HeartbeatOnChannel(5);
        assert_eq!(
            beat.reply(),
            (ReplyCode::UnexpectedFrame, Scope::Connection)
        );
        let hard = Error::NotImplemented("basic.recover-async".into());
        assert_eq!(hard.reply(), (ReplyCode::NotImplemented, Scope::Connection));
        let missing = Error::NotFound("no queue 'q' in vhost '/'".into());
        assert_eq!(missing.reply(), (ReplyCode::NotFound, Scope::Channel));
        assert!(hard.reply_text().starts_with("NOT_IMPLEMENTED - "));
        let long = Error::CommandInvalid("x".repeat(400));
        assert_eq!(long.reply_text().len(), 255);
    }
}
