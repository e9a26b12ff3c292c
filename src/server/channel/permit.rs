//! Where each method's permissions are checked, in RabbitMQ's order (see `server/access.rs` for
//! what a permission is). Every check here comes before the method touches the topology, so a
//! refused method changes nothing; passive declarations and direct reply-to check nothing, as in
//! RabbitMQ.

use warren_protocol::method::Publish;
use warren_protocol::types::{AMQPValue, FieldTable};

use super::Channels;
use crate::broker::exchange::{Destination, ExchangeKind};
use crate::error::Error;
use crate::server::access::{Perm, Resource};

/// A string argument (`alternate-exchange`, `x-dead-letter-exchange`), if it is one.
fn text_argument<'a>(arguments: &'a FieldTable, key: &str) -> Option<&'a [u8]> {
    match arguments.inner().get(key)? {
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        _ => None,
    }
}

impl Channels {
    /// `perm` on an exchange or queue.
    #[inline]
    pub(super) fn permit(
        &mut self,
        perm: Perm,
        resource: Resource,
        name: &[u8],
    ) -> Result<(), Error> {
        self.session.access.check(perm, resource, name)
    }

    /// A routing or binding key on a topic exchange the user has topic permissions for.
    #[inline]
    pub(super) fn permit_topic(
        &mut self,
        perm: Perm,
        exchange: &[u8],
        key: &[u8],
    ) -> Result<(), Error> {
        if !self.session.access.has_topic_permissions(exchange) {
            return Ok(());
        }
        match self.session.vhost.exchange_kind(exchange) {
            Some(ExchangeKind::Topic) => self.session.access.check_topic(perm, exchange, key),
            _ => Ok(()),
        }
    }

    /// `basic.publish`: write on the exchange (the default one as `amq.default`), and the
    /// routing key against the topic permissions of a topic exchange.
    #[inline]
    pub(super) fn permit_publish(&mut self, publish: &Publish) -> Result<(), Error> {
        let exchange = publish.exchange.as_bytes();
        self.permit(Perm::Write, Resource::Exchange, exchange)?;
        self.permit_topic(Perm::Write, exchange, publish.routing_key.as_bytes())
    }

    /// `exchange.declare` (not passive): configure on the exchange; creating one with an
    /// alternate exchange also needs read on it and write on the alternate. The default
    /// exchange is refused by the vhost (403) without a permission check.
    pub(super) fn permit_exchange_declare(
        &mut self,
        name: &[u8],
        arguments: &FieldTable,
    ) -> Result<(), Error> {
        if name.is_empty() {
            return Ok(());
        }
        self.permit(Perm::Configure, Resource::Exchange, name)?;
        let alternate = text_argument(arguments, "alternate-exchange");
        if let Some(alternate) = alternate {
            if self.session.vhost.exchange_kind(name).is_none() {
                self.permit(Perm::Read, Resource::Exchange, name)?;
                self.permit(Perm::Write, Resource::Exchange, alternate)?;
            }
        }
        Ok(())
    }

    /// `exchange.delete`: configure (the default and `amq.*` exchanges are refused by the vhost
    /// first, as RabbitMQ does).
    pub(super) fn permit_exchange_delete(&mut self, name: &[u8]) -> Result<(), Error> {
        if name.is_empty() || name.starts_with(b"amq.") {
            return Ok(());
        }
        self.permit(Perm::Configure, Resource::Exchange, name)
    }

    /// `queue.declare` (not passive): configure on the queue; creating one with a dead-letter
    /// exchange also needs read on it and write on that exchange.
    pub(super) fn permit_queue_declare(
        &mut self,
        name: &[u8],
        arguments: &FieldTable,
    ) -> Result<(), Error> {
        self.permit(Perm::Configure, Resource::Queue, name)?;
        if let Some(exchange) = text_argument(arguments, "x-dead-letter-exchange") {
            if !self.session.vhost.has_queue(name) {
                self.permit(Perm::Read, Resource::Queue, name)?;
                self.permit(Perm::Write, Resource::Exchange, exchange)?;
            }
        }
        Ok(())
    }

    /// `queue.bind`/`unbind`, `exchange.bind`/`unbind`: write on the destination, read on the
    /// source exchange, and the binding key against the topic permissions of a topic source.
    pub(super) fn permit_binding(
        &mut self,
        source: &[u8],
        destination: &Destination,
        key: &[u8],
    ) -> Result<(), Error> {
        match destination {
            Destination::Queue(queue) => {
                self.permit(Perm::Write, Resource::Queue, queue.as_bytes())?
            }
            Destination::Exchange(exchange) => {
                self.permit(Perm::Write, Resource::Exchange, exchange.as_bytes())?
            }
        }
        self.permit(Perm::Read, Resource::Exchange, source)?;
        self.permit_topic(Perm::Read, source, key)
    }
}
