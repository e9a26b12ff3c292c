//! A hand-driven AMQP client over a raw socket, for what real clients cannot produce (garbage,
//! silence, bad frames, exact method sequences). The socket is TCP, or any stream (TLS).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use lapin::BasicProperties;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_protocol::content::{encode_content, encode_properties};
use warren_protocol::frame::{parse_frame, Frame, FrameType, PROTOCOL_HEADER};
use warren_protocol::method::{decode_method, encode_method, Method};
use warren_protocol::spec::{basic, channel, connection, AMQPClass};
use warren_protocol::types::{AMQPValue, FieldTable, LongString};

/// A hand-driven AMQP client over a TCP socket.
pub type RawClient = RawClientOn<TcpStream>;

/// A hand-driven AMQP client over any stream (TCP, TLS).
pub struct RawClientOn<S> {
    pub stream: S,
    buf: BytesMut,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient::over(TcpStream::connect(addr).await.expect("connect"))
    }

    /// Performs the whole handshake as guest, with the given heartbeat; returns the tune offer.
    pub async fn handshake(addr: SocketAddr, heartbeat: u16) -> (RawClient, connection::Tune) {
        let (mut client, tune) = RawClient::login(addr, heartbeat).await;
        client.send_open("/").await;
        let Some((0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)))) =
            client.recv_method().await
        else {
            panic!("expected connection.open-ok");
        };
        (client, tune)
    }

    /// The handshake up to and including `tune-ok` (as guest); `connection.open` is the caller's.
    pub async fn login(addr: SocketAddr, heartbeat: u16) -> (RawClient, connection::Tune) {
        RawClient::login_as(addr, "guest", "guest", heartbeat).await
    }

    /// [`RawClient::login`] as `user` (PLAIN).
    pub async fn login_as(
        addr: SocketAddr,
        user: &str,
        password: &str,
        heartbeat: u16,
    ) -> (RawClient, connection::Tune) {
        let mut client = RawClient::connect(addr).await;
        let response = format!("\0{user}\0{password}");
        let tune = client
            .login_with("PLAIN", response.as_bytes(), heartbeat)
            .await;
        (client, tune)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClientOn<S> {
    /// A client over an established stream (nothing sent yet).
    pub fn over(stream: S) -> RawClientOn<S> {
        RawClientOn {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn send_method(&mut self, channel: u16, method: AMQPClass) {
        let mut out = BytesMut::new();
        encode_method(&mut out, channel, &method);
        self.send(&out).await;
    }

    /// The next frame, or None when the broker closed the socket. Panics after 10 s of silence.
    pub async fn recv(&mut self) -> Option<Frame> {
        self.recv_within(Duration::from_secs(10))
            .await
            .expect("no frame within 10 s")
    }

    /// Ok(None): socket closed; Err: nothing within `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Option<Frame>, ()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(frame) =
                parse_frame(&mut self.buf, 1 << 20).expect("broker sent a bad frame")
            {
                return Ok(Some(frame));
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Reads raw bytes until the socket closes (bounded).
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        let mut all = self.buf.split().to_vec();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), self.stream.read_to_end(&mut all)).await;
        all
    }

    pub async fn recv_method(&mut self) -> Option<(u16, AMQPClass)> {
        loop {
            let frame = self.recv().await?;
            if frame.frame_type != FrameType::Method {
                continue;
            }
            match decode_method(&frame.payload).expect("broker sent a bad method") {
                Method::Other(class) => return Some((frame.channel, class)),
                other => panic!("unexpected fast-path method {other:?}"),
            }
        }
    }

    /// Waits for `connection.close` from the broker and returns its reply code.
    pub async fn expect_connection_close(&mut self) -> u16 {
        self.expect_connection_close_text().await.0
    }

    /// Waits for `connection.close` from the broker and returns its reply code and text.
    pub async fn expect_connection_close_text(&mut self) -> (u16, String) {
        loop {
            match self.recv_method().await {
                Some((0, AMQPClass::Connection(connection::AMQPMethod::Close(close)))) => {
                    return (close.reply_code, close.reply_text.as_str().to_owned())
                }
                Some(_) => continue,
                None => panic!("socket closed without connection.close"),
            }
        }
    }

    /// Sends `channel.open` on `number` (no reply awaited).
    pub async fn send_channel_open(&mut self, number: u16) {
        let open = AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}));
        self.send_method(number, open).await;
    }

    /// Opens channel `number` and waits for its open-ok.
    pub async fn open_channel(&mut self, number: u16) {
        self.send_channel_open(number).await;
        match self.recv_method().await {
            Some((n, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))) if n == number => {}
            other => panic!("expected channel.open-ok, got {other:?}"),
        }
    }

    /// Expects a connection exception with `code`, answers close-ok, and expects the socket to
    /// close.
    pub async fn expect_connection_exception(&mut self, code: u16) {
        assert_eq!(self.expect_connection_close().await, code);
        let close_ok = connection::AMQPMethod::CloseOk(connection::CloseOk {});
        self.send_method(0, AMQPClass::Connection(close_ok)).await;
        assert!(self.recv().await.is_none(), "socket closes after close-ok");
    }

    /// Sends `connection.open` for `vhost`.
    pub async fn send_open(&mut self, vhost: &str) {
        let open = connection::Open {
            virtual_host: vhost.into(),
        };
        self.send_method(0, AMQPClass::Connection(connection::AMQPMethod::Open(open)))
            .await;
    }

    /// The protocol header, then `connection.start`'s mechanisms.
    pub async fn start(&mut self) -> String {
        self.send(&PROTOCOL_HEADER).await;
        let Some((0, AMQPClass::Connection(connection::AMQPMethod::Start(start)))) =
            self.recv_method().await
        else {
            panic!("expected connection.start");
        };
        String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned()
    }

    /// The handshake up to and including `tune-ok`, with this SASL mechanism and response;
    /// `connection.open` is the caller's.
    pub async fn login_with(
        &mut self,
        mechanism: &str,
        response: &[u8],
        heartbeat: u16,
    ) -> connection::Tune {
        self.start().await;
        self.send_start_ok(mechanism, response).await;
        let Some((0, AMQPClass::Connection(connection::AMQPMethod::Tune(tune)))) =
            self.recv_method().await
        else {
            panic!("expected connection.tune");
        };
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat,
            })),
        )
        .await;
        tune
    }

    /// `start-ok` with this SASL mechanism and response (and authentication_failure_close).
    pub async fn send_start_ok(&mut self, mechanism: &str, response: &[u8]) {
        let mut caps = FieldTable::default();
        caps.insert(
            "authentication_failure_close".into(),
            AMQPValue::Boolean(true),
        );
        caps.insert("connection.blocked".into(), AMQPValue::Boolean(true));
        let mut props = FieldTable::default();
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: props,
                mechanism: mechanism.into(),
                response: LongString::from(response.to_vec()),
                locale: "en_US".into(),
            })),
        )
        .await;
    }

    pub async fn send_frame(&mut self, frame_type: FrameType, channel: u16, payload: &[u8]) {
        let mut out = BytesMut::new();
        warren_protocol::frame::encode_frame(&mut out, frame_type, channel, payload);
        self.send(&out).await;
    }
}

// ---------------------------------------------------------------------------------------------
// lapin helpers shared by the integration tests.
// ---------------------------------------------------------------------------------------------

impl<S: AsyncRead + AsyncWrite + Unpin> RawClientOn<S> {
    /// Sends basic.publish with default properties and `body`, split at `frame_max`.
    pub async fn send_publish(
        &mut self,
        channel: u16,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
        frame_max: u32,
    ) {
        let publish = basic::Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory,
            immediate: false,
        };
        let mut out = BytesMut::new();
        encode_method(
            &mut out,
            channel,
            &AMQPClass::Basic(basic::AMQPMethod::Publish(publish)),
        );
        let properties = encode_properties(&BasicProperties::default());
        encode_content(&mut out, channel, &properties, body, frame_max);
        self.send(&out).await;
    }

    /// The next method as decoded, fast-path ones (ack, publish) included; content frames and
    /// heartbeats are skipped. None when the broker closed the socket.
    pub async fn recv_any_method(&mut self) -> Option<(u16, Method)> {
        loop {
            let frame = self.recv().await?;
            if frame.frame_type == FrameType::Method {
                let method = decode_method(&frame.payload).expect("broker sent a bad method");
                return Some((frame.channel, method));
            }
        }
    }
}
