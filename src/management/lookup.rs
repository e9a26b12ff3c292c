//! Finding what a request names: a vhost (404 when it is not there or the caller may not see
//! it), a queue or exchange name from a path, and the connection id the API acts as. A leaf:
//! every handler module uses it, it uses none of them.

use std::sync::Arc;

use warren_protocol::method::ShortStr;

use super::auth::Caller;
use super::reply::{ApiError, ApiResult};
use super::Management;
use crate::broker::vhost::Vhost;

/// The connection id the API acts as (no AMQP connection has it): queues it declares are
/// never exclusive, and exclusive queues stay their owners'.
pub const API_CONNECTION: u64 = 0;

/// The vhost `name`, or 404.
pub fn vhost_or_404(state: &Management, name: &str) -> ApiResult<Arc<Vhost>> {
    state.broker.vhost(name).ok_or_else(ApiError::not_found)
}

/// The vhost `name` if the caller may see it, else 404 (as RabbitMQ hides what one cannot see).
pub fn visible_vhost(state: &Management, caller: &Caller, name: &str) -> ApiResult<Arc<Vhost>> {
    match caller.sees(state, name) {
        true => vhost_or_404(state, name),
        false => Err(ApiError::not_found()),
    }
}

/// An exchange name from a path: `amq.default` is RabbitMQ's name for the default exchange.
pub fn exchange_name(name: &str) -> ApiResult<ShortStr> {
    match name {
        "amq.default" => Ok(ShortStr::default()),
        name if name.len() > 255 => Err(ApiError::bad_request(
            "exchange name is longer than 255 bytes",
        )),
        name => Ok(ShortStr::copy_from_str(name)),
    }
}

/// A queue name from a path (at most 255 bytes).
pub fn short(name: &str, what: &str) -> ApiResult<ShortStr> {
    match name.len() <= 255 {
        true => Ok(ShortStr::copy_from_str(name)),
        false => Err(ApiError::bad_request(format!(
            "{what} name is longer than 255 bytes"
        ))),
    }
}
