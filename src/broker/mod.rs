//! The routing core: virtual hosts, exchanges, bindings, queues and consumers.
//!
//! Nothing here touches a socket. Connection tasks call in (declare, bind, publish, consume, ack);
//! queues hand deliveries to consumers through each connection's outbox.

pub mod headers;
pub mod topic;
