//! The connection's one timer: it fires at the earliest of the connection's own deadline (the
//! handshake timeout, the next heartbeat check, the close timeout) and its channels' unacked
//! timeouts. Heartbeats: one is sent every half interval without other output, and the
//! connection is dropped after two intervals without input (not counted while a resource alarm
//! is what keeps its input unread). Owns no state of its own; never touches the socket (a
//! heartbeat goes to the output buffer).

use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;
use warren_protocol::frame::encode_heartbeat;

use super::super::channel::Channels;
use super::{Connection, State};

impl Connection {
    /// When the timer should next fire: the connection's own deadline or an unacked timeout.
    pub(super) fn wake_at(&self) -> Option<Instant> {
        let unacked = self.channels.as_ref().and_then(Channels::next_deadline);
        match (self.deadline, unacked) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the next heartbeat check is due: half the negotiated interval after `now`; `None`
    /// without heartbeats.
    pub(super) fn heartbeat_check_at(&self, now: Instant) -> Option<Instant> {
        match self.tuning.heartbeat {
            0 => None,
            seconds => Some(now + Duration::from_millis(u64::from(seconds) * 500)),
        }
    }

    /// The timer fired: the channels' unacked timeouts, then the connection's own deadline, by
    /// state.
    pub(super) fn on_timer(&mut self) {
        let now = Instant::now();
        if let Some(channels) = &mut self.channels {
            channels.expire(&mut self.write_buf, now);
        }
        if self.deadline.is_none_or(|deadline| deadline > now) {
            return;
        }
        match self.state {
            State::Running => {
                let interval = Duration::from_secs(u64::from(self.tuning.heartbeat));
                if self.blocking() {
                    // Not reading is our doing, not the client's silence.
                    self.last_read = now;
                }
                if now.duration_since(self.last_read) >= interval * 2 {
                    warn!(peer = %self.peer, timeout_s = self.tuning.heartbeat, "missed heartbeats from client");
                    self.finish("missed heartbeats from client");
                    self.write_buf.clear();
                    return;
                }
                if now.duration_since(self.last_write) >= interval / 2 && self.write_buf.is_empty()
                {
                    encode_heartbeat(&mut self.write_buf);
                    self.release_output = true;
                }
                self.deadline = self.heartbeat_check_at(now);
            }
            State::Closing | State::Done => {
                self.finish("timed out waiting for connection.close-ok");
                self.write_buf.clear();
            }
            State::Draining => {
                // The client was told its close is done; it need not close the socket first.
                self.finish("client closed");
            }
            _ => {
                self.finish("handshake timed out");
                self.write_buf.clear();
            }
        }
    }
}

pub(super) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
