//! The exchange and queue classes: declare, delete, bind, unbind, purge. Each method is checked
//! and applied by the vhost's topology; this file only translates between the wire methods and
//! the topology's calls, and fills in the shortcuts of the spec (a server-named queue, and ""
//! meaning the channel's last declared queue). A reply to a change of something durable is
//! sent once the change is on disk, without holding up the frames that follow (`held.rs`).

use bytes::BytesMut;
use warren_protocol::method::ShortStr;
use warren_protocol::spec::{exchange, queue, AMQPClass};

use super::Channels;
use crate::broker::exchange::Destination;
use crate::broker::vhost::{ExchangeDeclare, QueueDeclare, Unsaved};
use crate::error::Error;
use crate::server::access::{Perm, Resource};

fn short(s: &warren_protocol::types::ShortString) -> ShortStr {
    ShortStr::copy_from_str(s.as_str())
}

impl Channels {
    pub(super) fn exchange_method(
        &mut self,
        out: &mut BytesMut,
        number: u16,
        method: exchange::AMQPMethod,
    ) -> Result<(), Error> {
        use exchange::AMQPMethod as X;
        self.open(number)?;
        let connection = self.session.connection;
        let (reply, nowait, unsaved) = match method {
            X::Declare(declare) => {
                if !declare.passive {
                    let name = declare.exchange.as_str().as_bytes();
                    self.permit_exchange_declare(name, &declare.arguments)?;
                }
                let unsaved = self
                    .session
                    .vhost
                    .declare_exchange_unsaved(ExchangeDeclare {
                        name: short(&declare.exchange),
                        kind: declare.kind.as_str().to_owned(),
                        passive: declare.passive,
                        durable: declare.durable,
                        auto_delete: declare.auto_delete,
                        internal: declare.internal,
                        arguments: declare.arguments,
                    })?;
                (
                    X::DeclareOk(exchange::DeclareOk {}),
                    declare.nowait,
                    unsaved,
                )
            }
            X::Delete(delete) => {
                self.permit_exchange_delete(delete.exchange.as_str().as_bytes())?;
                let vhost = &self.session.vhost;
                let unsaved =
                    vhost.delete_exchange_unsaved(&short(&delete.exchange), delete.if_unused)?;
                (X::DeleteOk(exchange::DeleteOk {}), delete.nowait, unsaved)
            }
            X::Bind(bind) => {
                let destination = Destination::Exchange(short(&bind.destination));
                let (source, key) = (&bind.source, &bind.routing_key);
                self.permit_binding(
                    source.as_str().as_bytes(),
                    &destination,
                    key.as_str().as_bytes(),
                )?;
                let unsaved = self.session.vhost.bind_unsaved(
                    &short(&bind.source),
                    destination,
                    short(&bind.routing_key),
                    &bind.arguments,
                    connection,
                )?;
                (X::BindOk(exchange::BindOk {}), bind.nowait, unsaved)
            }
            X::Unbind(unbind) => {
                let destination = Destination::Exchange(short(&unbind.destination));
                let (source, key) = (&unbind.source, &unbind.routing_key);
                self.permit_binding(
                    source.as_str().as_bytes(),
                    &destination,
                    key.as_str().as_bytes(),
                )?;
                let unsaved = self.session.vhost.unbind_unsaved(
                    &short(&unbind.source),
                    destination,
                    short(&unbind.routing_key),
                    &unbind.arguments,
                    connection,
                )?;
                (X::UnbindOk(exchange::UnbindOk {}), unbind.nowait, unsaved)
            }
            _ => {
                return Err(Error::CommandInvalid(
                    "this exchange method is not sent by clients".into(),
                ))
            }
        };
        let reply = (!nowait).then_some(AMQPClass::Exchange(reply));
        self.reply_saved(out, number, reply, unsaved);
        Ok(())
    }

    pub(super) fn queue_method(
        &mut self,
        out: &mut BytesMut,
        number: u16,
        method: queue::AMQPMethod,
    ) -> Result<(), Error> {
        use queue::AMQPMethod as Q;
        let connection = self.session.connection;
        let (reply, nowait, unsaved) = match method {
            Q::Declare(declare) => {
                let nowait = declare.nowait;
                let (ok, unsaved) = self.declare_queue(number, declare)?;
                (Q::DeclareOk(ok), nowait, unsaved)
            }
            Q::Bind(bind) => {
                let name = self.queue_name(number, bind.queue.as_str())?;
                let routing_key =
                    self.routing_key_shortcut(number, &bind.queue, &bind.routing_key)?;
                let destination = Destination::Queue(name);
                let source = bind.exchange.as_str().as_bytes();
                self.permit_binding(source, &destination, routing_key.as_bytes())?;
                let unsaved = self.session.vhost.bind_unsaved(
                    &short(&bind.exchange),
                    destination,
                    routing_key,
                    &bind.arguments,
                    connection,
                )?;
                (Q::BindOk(queue::BindOk {}), bind.nowait, unsaved)
            }
            Q::Unbind(unbind) => {
                let name = self.queue_name(number, unbind.queue.as_str())?;
                let routing_key =
                    self.routing_key_shortcut(number, &unbind.queue, &unbind.routing_key)?;
                let destination = Destination::Queue(name);
                let source = unbind.exchange.as_str().as_bytes();
                self.permit_binding(source, &destination, routing_key.as_bytes())?;
                let unsaved = self.session.vhost.unbind_unsaved(
                    &short(&unbind.exchange),
                    destination,
                    routing_key,
                    &unbind.arguments,
                    connection,
                )?;
                (Q::UnbindOk(queue::UnbindOk {}), false, unsaved)
            }
            Q::Purge(purge) => {
                let name = self.queue_name(number, purge.queue.as_str())?;
                self.permit(Perm::Read, Resource::Queue, name.as_bytes())?;
                let queue = self.session.vhost.queue(&name, connection)?;
                if queue.stream().is_some() {
                    return Err(Error::NotImplemented(format!(
                        "queue.purge not supported by stream queues queue '{name}' in vhost '{}'",
                        self.session.vhost.name
                    )));
                }
                let message_count = queue.purge();
                let ok = queue::PurgeOk { message_count };
                (Q::PurgeOk(ok), purge.nowait, Unsaved::default())
            }
            Q::Delete(delete) => {
                let name = self.queue_name(number, delete.queue.as_str())?;
                self.permit(Perm::Configure, Resource::Queue, name.as_bytes())?;
                let (message_count, consumers, unsaved) = self.session.vhost.delete_queue_unsaved(
                    &name,
                    delete.if_unused,
                    delete.if_empty,
                    connection,
                )?;
                // Every consumer's connection (this one included) hears of it through its outbox.
                for consumer in consumers {
                    consumer.cancel();
                }
                let ok = queue::DeleteOk { message_count };
                (Q::DeleteOk(ok), delete.nowait, unsaved)
            }
            _ => {
                return Err(Error::CommandInvalid(
                    "this queue method is not sent by clients".into(),
                ))
            }
        };
        let reply = (!nowait).then_some(AMQPClass::Queue(reply));
        self.reply_saved(out, number, reply, unsaved);
        Ok(())
    }

    /// `queue.declare`: "" names a new server-named queue (`amq.gen-…`); the declared name is
    /// remembered as the channel's last queue. Its reply waits for what it left unsaved.
    fn declare_queue(
        &mut self,
        number: u16,
        declare: queue::Declare,
    ) -> Result<(queue::DeclareOk, Unsaved), Error> {
        let server_named = declare.queue.as_str().is_empty() && !declare.passive;
        let name = match declare.queue.as_str() {
            "" if !declare.passive => self.session.vhost.generate_name("amq.gen-"),
            name => self.queue_name(number, name)?,
        };
        if !declare.passive {
            self.permit_queue_declare(name.as_bytes(), &declare.arguments)?;
        }
        let (declared, unsaved) = self.session.vhost.declare_queue_unsaved(
            QueueDeclare {
                name: name.clone(),
                server_named,
                passive: declare.passive,
                durable: declare.durable,
                exclusive: declare.exclusive,
                auto_delete: declare.auto_delete,
                arguments: declare.arguments,
            },
            self.session.connection,
        )?;
        self.open(number)?.last_queue = Some(name.clone());
        let ok = queue::DeclareOk {
            queue: name.as_str().into(),
            message_count: declared.message_count,
            consumer_count: declared.consumer_count,
        };
        Ok((ok, unsaved))
    }

    /// The spec's shortcut: binding the last declared queue ("") with an empty routing key binds
    /// it with its own name.
    fn routing_key_shortcut(
        &mut self,
        number: u16,
        queue: &warren_protocol::types::ShortString,
        routing_key: &warren_protocol::types::ShortString,
    ) -> Result<ShortStr, Error> {
        if queue.as_str().is_empty() && routing_key.as_str().is_empty() {
            return self.queue_name(number, "");
        }
        Ok(short(routing_key))
    }
}
