//! The connection handshake's pure parts: what the server announces in `connection.start` and
//! `connection.tune`, and how the client's `tune-ok` is checked. No I/O here; the connection task
//! drives the sequence `start -> start-ok -> tune -> tune-ok -> open -> open-ok`.

use warren_protocol::frame::FRAME_MIN_SIZE;
use warren_protocol::spec::connection;
use warren_protocol::types::{AMQPValue, FieldTable, LongString};

use super::auth::MECHANISMS;
use crate::error::Error;

/// What the server offers in `connection.tune`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    pub channel_max: u16,
    pub frame_max: u32,
    /// Seconds; 0 disables heartbeats.
    pub heartbeat: u16,
}

impl Default for Tuning {
    /// RabbitMQ's defaults.
    fn default() -> Self {
        Tuning {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        }
    }
}

/// `connection.start`, announcing Warren and the RabbitMQ extensions it supports.
pub fn start() -> connection::Start {
    start_offering(MECHANISMS)
}

/// [`start`] with other SASL mechanisms (space-separated), e.g. with EXTERNAL on TLS.
pub fn start_offering(mechanisms: &str) -> connection::Start {
    let mut capabilities = FieldTable::default();
    for capability in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        capabilities.insert(capability.into(), AMQPValue::Boolean(true));
    }
    let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
    let mut properties = FieldTable::default();
    properties.insert("product".into(), text("Warren"));
    properties.insert("version".into(), text(env!("CARGO_PKG_VERSION")));
    properties.insert("platform".into(), text("Rust"));
    properties.insert("information".into(), text("An AMQP 0-9-1 message broker"));
    properties.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: properties,
        mechanisms: LongString::from(mechanisms.as_bytes().to_vec()),
        locales: LongString::from(b"en_US".to_vec()),
    }
}

/// `connection.tune` for the server's limits.
pub fn tune(offer: Tuning) -> connection::Tune {
    connection::Tune {
        channel_max: offer.channel_max,
        frame_max: offer.frame_max,
        heartbeat: offer.heartbeat,
    }
}

/// Checks the client's `tune-ok` against the offer and returns the limits the connection runs
/// with. A 0 for channel_max or frame_max means "no limit of mine": the server's applies. The
/// client's heartbeat is final (0 disables), as in RabbitMQ.
pub fn negotiate(offer: Tuning, ok: &connection::TuneOk) -> Result<Tuning, Error> {
    let channel_max = match ok.channel_max {
        0 => offer.channel_max,
        n if n > offer.channel_max => {
            return Err(Error::TuneRejected(format!(
                "negotiated channel_max = {n} is higher than the maximum allowed value ({})",
                offer.channel_max
            )))
        }
        n => n,
    };
    let frame_max = match ok.frame_max {
        0 => offer.frame_max,
        n if n < FRAME_MIN_SIZE => {
            return Err(Error::TuneRejected(format!(
                "frame_max={n} < {FRAME_MIN_SIZE} min size"
            )))
        }
        n if n > offer.frame_max => {
            return Err(Error::TuneRejected(format!(
                "frame_max={n} > {} max size",
                offer.frame_max
            )))
        }
        n => n,
    };
    Ok(Tuning {
        channel_max,
        frame_max,
        heartbeat: ok.heartbeat,
    })
}

/// The client capabilities Warren acts on, read from `start-ok`'s client-properties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCapabilities {
    pub authentication_failure_close: bool,
    pub connection_blocked: bool,
    pub consumer_cancel_notify: bool,
}

impl ClientCapabilities {
    pub fn from_properties(properties: &FieldTable) -> ClientCapabilities {
        let Some(AMQPValue::FieldTable(caps)) = properties.inner().get("capabilities") else {
            return ClientCapabilities::default();
        };
        let flag = |name: &str| matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true)));
        ClientCapabilities {
            authentication_failure_close: flag("authentication_failure_close"),
            connection_blocked: flag("connection.blocked"),
            consumer_cancel_notify: flag("consumer_cancel_notify"),
        }
    }
}

/// The text fields of `client_properties` the management API shows (product, version,
/// platform, information, connection_name), each cut to 255 bytes.
pub fn client_info(properties: &FieldTable) -> Vec<(String, String)> {
    const SHOWN: [&str; 5] = [
        "product",
        "version",
        "platform",
        "information",
        "connection_name",
    ];
    SHOWN
        .iter()
        .filter_map(|name| {
            let text = crate::broker::values::text(properties.inner().get(*name)?)?;
            let text = String::from_utf8_lossy(&text[..text.len().min(255)]).into_owned();
            Some(((*name).to_owned(), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(channel_max: u16, frame_max: u32, heartbeat: u16) -> connection::TuneOk {
        connection::TuneOk {
            channel_max,
            frame_max,
            heartbeat,
        }
    }

    #[test]
    fn zero_means_the_servers_limit() {
        let offer = Tuning::default();
        assert_eq!(
            negotiate(offer, &ok(0, 0, 0)).unwrap(),
            Tuning {
                heartbeat: 0,
                ..offer
            }
        );
        let t = negotiate(offer, &ok(10, 8192, 5)).unwrap();
        assert_eq!((t.channel_max, t.frame_max, t.heartbeat), (10, 8192, 5));
    }

    #[test]
    fn out_of_range_is_refused() {
        let offer = Tuning::default();
        assert!(negotiate(offer, &ok(0, 4095, 0)).is_err());
        assert!(negotiate(offer, &ok(0, offer.frame_max + 1, 0)).is_err());
        assert!(negotiate(offer, &ok(offer.channel_max + 1, 0, 0)).is_err());
        assert!(negotiate(offer, &ok(0, 4096, 0)).is_ok());
    }

    #[test]
    fn start_announces_capabilities() {
        let start = start();
        let Some(AMQPValue::FieldTable(caps)) = start.server_properties.inner().get("capabilities")
        else {
            panic!("no capabilities table");
        };
        assert_eq!(caps.inner().len(), 8);
        assert_eq!(start.mechanisms.as_bytes(), b"PLAIN AMQPLAIN");
    }
}
