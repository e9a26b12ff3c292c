//! How a connection ends: a channel or connection exception answered by its scope, the server's
//! `connection.close` and the wait (bounded by [`CLOSE_TIMEOUT`]) for `close-ok`, an end without
//! further protocol exchange ([`Connection::finish`]), and the teardown after the I/O loop, where
//! everything the connection held goes back to its queues. The client's own `close` is in
//! `control.rs`. Never waits on the socket.

use tokio::time::Instant;
use tracing::{debug, warn};
use warren_protocol::frame::{Frame, FrameType};
use warren_protocol::method::{decode_method, Method};
use warren_protocol::spec::{connection, AMQPClass};

use super::super::channel::return_mail;
use super::inbox::Inbox;
use super::{Connection, State, CLOSE_TIMEOUT};
use crate::error::{Exception, ReplyCode, Scope};

impl Connection {
    /// Reacts to a channel or connection exception according to its scope.
    pub(super) fn exception(&mut self, channel: u16, exception: Exception) {
        let (code, scope) = exception.error.reply();
        match scope {
            Scope::Channel if channel != 0 => {
                match code {
                    // A refused permission is the operator's business too.
                    ReplyCode::AccessRefused => {
                        warn!(peer = %self.peer, user = %self.user, channel, code = code as u16, error = %exception.error, "channel exception")
                    }
                    _ => {
                        debug!(peer = %self.peer, channel, code = code as u16, error = %exception.error, "channel exception")
                    }
                }
                if let Some(channels) = &mut self.channels {
                    channels.close_with(&mut self.write_buf, channel, &exception);
                }
            }
            _ => {
                let reason = exception.error.reply_text();
                self.close_connection(exception, &reason);
            }
        }
    }

    /// Sends `connection.close` and waits (bounded) for `close-ok`.
    pub(super) fn close_connection(&mut self, exception: Exception, reason: &str) {
        let (code, _) = exception.error.reply();
        if code != ReplyCode::ConnectionForced {
            warn!(peer = %self.peer, code = code as u16, error = %exception.error, "connection exception");
        }
        self.close_reason = reason.to_owned();
        if self.state == State::ProtocolHeader {
            self.state = State::Done;
        } else {
            self.send(connection::AMQPMethod::Close(connection::Close {
                reply_code: code as u16,
                reply_text: exception.error.reply_text().into(),
                class_id: exception.class_id,
                method_id: exception.method_id,
            }));
            self.state = State::Closing;
        }
        if let Some(mut channels) = self.channels.take() {
            channels.release_all();
        }
        self.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
    }

    pub(super) fn handle_while_closing(&mut self, frame: Frame) -> Result<(), Exception> {
        if frame.frame_type != FrameType::Method || frame.channel != 0 {
            return Ok(());
        }
        match decode_method(&frame.payload) {
            Ok(Method::Other(AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)))) => {
                self.state = State::Done;
            }
            Ok(Method::Other(AMQPClass::Connection(connection::AMQPMethod::Close(_)))) => {
                self.send(connection::AMQPMethod::CloseOk(connection::CloseOk {}));
                self.state = State::Done;
            }
            _ => {}
        }
        Ok(())
    }

    /// Ends the connection without further protocol exchange.
    pub(super) fn finish(&mut self, reason: &str) {
        if self.close_reason.is_empty() {
            self.close_reason = reason.to_owned();
        }
        self.state = State::Done;
        self.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
    }

    /// After the I/O loop: every channel gives back what it held, deliveries still in the
    /// outbox go back to their queues, and the connection's exclusive queues are deleted.
    pub(super) fn teardown(&mut self, inbox: &mut Inbox) {
        if let Some(mut channels) = self.channels.take() {
            channels.release_all();
        }
        // Consumers are gone from their queues now, so nothing new arrives after this.
        if let Some(mail) = &mut inbox.mail {
            return_mail(mail);
        }
        if let Some(vhost) = self.vhost_ref.take() {
            vhost.delete_exclusive(self.id);
        }
    }
}
