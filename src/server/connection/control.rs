//! Channel 0 of a connection: the handshake after the protocol header (`start-ok`, `tune-ok`,
//! `open`), the client's `close`, and `update-secret`. Methods of the connection task, out of line
//! from its frame loop: they are rare, and the path of channel frames stays short.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::{info, warn};
use warren_protocol::method::Method;
use warren_protocol::spec::{connection, AMQPClass};

use super::super::access::Access;
use super::super::auth::{LoginRefused, MECHANISMS_WITH_EXTERNAL};
use super::super::channel::{Channels, Session};
use super::super::handshake::{self, client_info, ClientCapabilities};
use super::super::outbox::Mailboxes;
use super::super::registry::Opened;
use super::{Connection, State, CLOSE_TIMEOUT};
use crate::error::Error;

use connection::AMQPMethod as C;

impl Connection {
    /// A method on channel 0, in the state the connection is in.
    #[inline(never)]
    pub(super) fn handle_connection_method(&mut self, method: Method) -> Result<(), Error> {
        let Method::Other(AMQPClass::Connection(method)) = method else {
            return Err(Error::UnexpectedMethod(
                "only connection methods are allowed on channel 0".into(),
            ));
        };
        match (self.state, method) {
            (_, C::Close(close)) => {
                self.closed_by_client(&close);
                Ok(())
            }
            (State::StartOk, C::StartOk(start_ok)) => self.start_ok(&start_ok),
            (State::TuneOk, C::TuneOk(tune_ok)) => {
                self.tuning = handshake::negotiate(self.context.tuning, &tune_ok)?;
                self.state = State::Open;
                Ok(())
            }
            (State::Open, C::Open(open)) => self.open(open.virtual_host.as_str()),
            (State::Running, C::UpdateSecret(update)) => self.update_secret(&update),
            (state, method) => Err(Error::UnexpectedMethod(format!(
                "connection.{} is unexpected in connection state {state:?}",
                method_name(&method)
            ))),
        }
    }

    /// The client closes: `close-ok`, the channels give back what they held, and the client's
    /// further input is discarded until it closes its socket (see [`State::Draining`]).
    fn closed_by_client(&mut self, close: &connection::Close) {
        self.send(C::CloseOk(connection::CloseOk {}));
        self.close_reason = format!(
            "client closed: {} {}",
            close.reply_code,
            close.reply_text.as_str()
        );
        if let Some(mut channels) = self.channels.take() {
            channels.release_all();
        }
        // Its exclusive queues are gone by the time the client reads close-ok (not only once it
        // has closed its socket), so that another connection never finds them still locked.
        if let Some(vhost) = &self.vhost_ref {
            vhost.delete_exclusive(self.id);
        }
        self.state = State::Draining;
        self.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
    }

    /// `connection.start`: SASL EXTERNAL is offered too on a TLS listener that verifies client
    /// certificates. Out of line: once per connection, and kept out of the frame loop.
    #[inline(never)]
    pub(super) fn start(&self) -> connection::Start {
        match &self.tls {
            Some(tls) if tls.external => handshake::start_offering(MECHANISMS_WITH_EXTERNAL),
            _ => handshake::start(),
        }
    }

    /// `start-ok`: the client's capabilities and its login; `tune` when it is let in.
    fn start_ok(&mut self, start_ok: &connection::StartOk) -> Result<(), Error> {
        self.capabilities = ClientCapabilities::from_properties(&start_ok.client_properties);
        self.client = client_info(&start_ok.client_properties);
        let mechanism = start_ok.mechanism.as_str();
        let (peer, now) = (self.peer.ip(), std::time::Instant::now());
        let users = &self.context.users;
        let login = match (&self.tls, mechanism) {
            _ if !self.context.logins.allows(peer, now) => Err(LoginRefused::new(
                mechanism,
                "too many failed logins from this address (throttled)".into(),
            )),
            (Some(tls), "EXTERNAL") if tls.external => {
                users.authenticate_external(tls.common_name.as_deref(), peer)
            }
            (_, mechanism) => users.authenticate(mechanism, start_ok.response.as_bytes(), peer),
        };
        match login {
            Ok(user) => self.user = user,
            Err(refused) => {
                self.context.logins.failed(peer, now);
                warn!(peer = %self.peer, reason = %refused.log_text(), "authentication failed");
                let why = refused.client_text();
                if !self.capabilities.authentication_failure_close {
                    self.finish(&why);
                    return Ok(());
                }
                return Err(Error::AuthFailed(why));
            }
        }
        self.send(C::Tune(handshake::tune(self.context.tuning)));
        self.state = State::TuneOk;
        Ok(())
    }

    /// `connection.open` of a vhost: the channel table is set up and the connection runs.
    fn open(&mut self, name: &str) -> Result<(), Error> {
        if let Some(limit) = self.refuse {
            return Err(Error::NotAllowed(format!(
                "connection refused: node connection limit ({limit}) is reached"
            )));
        }
        let Some(vhost) = self.context.broker.vhost(name) else {
            return Err(Error::VhostNotFound(name.to_owned()));
        };
        let users = &self.context.users;
        let admitted = self.context.tally.admit(
            &self.user,
            name,
            users.max_connections(&self.user),
            vhost.limits().max_connections,
        )?;
        let Some(access) = Access::open(users, &self.user, name) else {
            return Err(Access::vhost_refused(&self.user, name));
        };
        self.admitted = Some(admitted);
        self.handshake = None;
        let session = Session {
            vhost: Arc::clone(&vhost),
            access,
            user: self.user.clone(),
            connection: self.id,
            mailboxes: Mailboxes::new(self.id),
            frame_max: self.tuning.frame_max,
            cancel_notify: self.capabilities.consumer_cancel_notify,
            limits: self.context.limits,
            entry: Arc::clone(&self.entry),
        };
        self.entry.opened(Opened {
            user: self.user.clone(),
            vhost: name.to_owned(),
            client: std::mem::take(&mut self.client),
            channel_max: self.tuning.channel_max,
            frame_max: self.tuning.frame_max,
            heartbeat: self.tuning.heartbeat,
        });
        self.channels = Some(Channels::new(self.tuning.channel_max, session));
        self.vhost_ref = Some(Arc::clone(&vhost));
        self.vhost = name.to_owned();
        self.send(C::OpenOk(connection::OpenOk {}));
        self.state = State::Running;
        self.deadline = self.heartbeat_check_at(Instant::now());
        info!(peer = %self.peer, user = %self.user, vhost = %self.vhost, "connection opened");
        Ok(())
    }

    /// The management API asked this connection to close (320, with its reason).
    pub(super) fn close_requested(&mut self, reason: Option<String>) {
        if let Some(reason) = reason {
            info!(peer = %self.peer, user = %self.user, %reason, "closing the connection (management API)");
            self.close_connection(Error::Forced(reason.clone()).into(), &reason);
        }
    }

    /// The users or vhosts changed (a reload): if this connection's user or vhost is gone, the
    /// connection closes with 320, as RabbitMQ closes them (`user 'u' is deleted`).
    pub(super) fn accounts_changed(&mut self) {
        let vhost_gone = self.vhost_ref.as_ref().is_some_and(|open| {
            self.context
                .broker
                .vhost(&self.vhost)
                .is_none_or(|now| !Arc::ptr_eq(&now, open))
        });
        let reason = if !self.context.users.exists(&self.user) {
            format!("user '{}' is deleted", self.user)
        } else if vhost_gone {
            format!("vhost '{}' is deleted", self.vhost)
        } else {
            return;
        };
        info!(peer = %self.peer, user = %self.user, vhost = %self.vhost, %reason, "closing the connection");
        self.close_connection(Error::Forced(reason.clone()).into(), &reason);
    }

    /// `update-secret` (RabbitMQ's token refresh), checked by the user list (see
    /// `Users::update_secret`): `update-secret-ok`, or a 403 connection close.
    fn update_secret(&mut self, update: &connection::UpdateSecret) -> Result<(), Error> {
        match self.context.users.update_secret(&self.user, self.peer.ip()) {
            Ok(()) => {
                info!(peer = %self.peer, user = %self.user, reason = %update.reason.as_str(), "secret updated");
                self.send(C::UpdateSecretOk(connection::UpdateSecretOk {}));
                Ok(())
            }
            Err(why) => {
                warn!(peer = %self.peer, user = %self.user, reason = %why, "secret update refused");
                Err(Error::AuthFailed(why))
            }
        }
    }
}

fn method_name(method: &connection::AMQPMethod) -> &'static str {
    use connection::AMQPMethod as C;
    match method {
        C::Start(_) => "start",
        C::StartOk(_) => "start-ok",
        C::Secure(_) => "secure",
        C::SecureOk(_) => "secure-ok",
        C::Tune(_) => "tune",
        C::TuneOk(_) => "tune-ok",
        C::Open(_) => "open",
        C::OpenOk(_) => "open-ok",
        C::Close(_) => "close",
        C::CloseOk(_) => "close-ok",
        C::Blocked(_) => "blocked",
        C::Unblocked(_) => "unblocked",
        C::UpdateSecret(_) => "update-secret",
        C::UpdateSecretOk(_) => "update-secret-ok",
    }
}
