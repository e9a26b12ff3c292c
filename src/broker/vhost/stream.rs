//! Stream queues in a vhost (`x-queue-type: stream`, `broker/stream`): RabbitMQ's checks of
//! their declaration, and opening one on the store (its log lives in the queue's directory).

use std::io;
use std::sync::Arc;

use warren_protocol::method::ShortStr;
use warren_protocol::types::FieldTable;

use super::{QueueDeclare, Vhost, EQUIVALENT_QUEUE_ARGS};
use crate::broker::queue::{Queue, QueueOptions};
use crate::broker::stream::args::{check_stream, Retention, StreamRefused};
use crate::broker::stream::Stream;
use crate::error::Error;

/// RabbitMQ's checks of a stream's declaration ([`check_stream`]), against every queue
/// argument Warren knows (a stream refuses those it does not take).
pub fn check_stream_declaration(
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    arguments: &FieldTable,
) -> Result<(), StreamRefused> {
    let known: Vec<&str> = crate::broker::arguments::known_queue_arguments()
        .chain(EQUIVALENT_QUEUE_ARGS.iter().copied())
        .chain(crate::broker::dedup::ARGUMENTS.iter().copied())
        .collect();
    check_stream(durable, exclusive, auto_delete, arguments, &known)
}

impl Vhost {
    /// A stream's declaration: durable, not exclusive nor auto-delete, and only the arguments
    /// streams take (406 with RabbitMQ's wording otherwise).
    pub(super) fn check_stream(&self, declare: &QueueDeclare) -> Result<(), Error> {
        let checked = check_stream_declaration(
            declare.durable,
            declare.exclusive,
            declare.auto_delete,
            &declare.arguments,
        );
        let (name, vhost) = (&declare.name, &self.name);
        checked.map_err(|refused| {
            Error::PreconditionFailed(match refused {
                StreamRefused::Property(property) => {
                    format!("invalid property '{property}' for queue '{name}' in vhost '{vhost}'")
                }
                StreamRefused::Unsupported(arg) => format!(
                    "invalid arg '{arg}' for queue '{name}' in vhost '{vhost}' of queue type \
                     rabbit_stream_queue"
                ),
                StreamRefused::Invalid { arg, reason } => {
                    format!("invalid arg '{arg}' for queue '{name}' in vhost '{vhost}': {reason}")
                }
            })
        })
    }

    /// Opens (or creates) a stream queue's log in its directory.
    pub(super) fn open_stream(
        &self,
        name: ShortStr,
        options: QueueOptions,
    ) -> io::Result<Arc<Queue>> {
        let Some((store, dir)) = &self.store else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "stream queues need a data directory",
            ));
        };
        let queue_dir = crate::store::queue_dir(dir, name.as_bytes());
        let retention = Retention::from_arguments(&options.arguments);
        let label = String::from_utf8_lossy(name.as_bytes()).into_owned();
        let stream = Stream::open(&label, &queue_dir, Arc::clone(store), retention)?;
        Ok(Arc::new(
            Queue::new(name, options).with_stream(Arc::new(stream)),
        ))
    }
}
