//! AMQP over TLS (`tls_listeners`) against an in-process broker, with certificates made at test
//! time: PLAIN over TLS with a publish and a get of a body larger than TLS records and than the
//! transport's buffers; SASL EXTERNAL with a client certificate whose common name is a user,
//! refused for an unknown name or without a certificate; `tls_verify_peer` refusing a client
//! without a certificate; a plain AMQP client on the TLS port closed while the broker serves on.
//! The clients are tokio-rustls under the raw AMQP client of `common/raw.rs`, and lapin (its
//! rustls backend with ring, as `amqps://` URIs trusting the test CA): PLAIN with publisher
//! confirms and a consumer, EXTERNAL with a PEM client certificate (lapin's
//! `OwnedIdentity::PKCS8`: a certificate chain and a PKCS#8 key, both PEM), an unknown common name
//! refused, and a broker whose certificate the given CA did not sign refused by lapin.
//!
//! lapin's rustls backend keeps the public (webpki) roots beside the given CA: the dev-dependency
//! needs one root-store feature for lapin to speak TLS at all, and webpki's is the one that reads
//! nothing from the machine. Without it lapin connects in plain text to an `amqps://` URI, which
//! these tests would see as the broker refusing the connection.

mod common;
#[path = "common/pki.rs"]
mod pki;
#[path = "common/warren_process.rs"]
mod warren_process;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use warren::server::{Password, Permission, TlsFiles, User, Users};
use warren::{Server, ServerOptions};
use warren_protocol::frame::{FrameType, PROTOCOL_HEADER};
use warren_protocol::spec::{basic, channel, connection, queue, AMQPClass};

use common::{
    confirm_channel, consume, declare_queue, publish_confirmed, within, RawClient, RawClientOn,
};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
use pki::{tls_connect, Pem, Pki};

/// A broker with one plain and one TLS listener; users `guest` and `app` (a password for PLAIN,
/// unused by EXTERNAL).
struct TlsBroker {
    plain: SocketAddr,
    tls: SocketAddr,
    pki: Pki,
    _data: warren_process::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(test: &str, with_ca: bool, verify_peer: bool) -> TlsBroker {
    let pki = Pki::new(test, "Warren test CA");
    let (cert, key, ca) = pki.server_files();
    let data = warren_process::TempDir::new(&format!("{test}-data"));
    let mut users = Users::default().list();
    users.push(User {
        name: "app".into(),
        password: Password::Plain("secret".into()),
        loopback_only: false,
        tags: Vec::new(),
        max_connections: None,
    });
    let options = ServerOptions {
        listen: "127.0.0.1:0".into(),
        data_dir: data.path().to_owned(),
        tls_listeners: vec!["127.0.0.1:0".into()],
        tls: Some(TlsFiles {
            cert,
            key,
            ca: with_ca.then_some(ca),
            verify_peer,
        }),
        users: Users::with_permissions(
            users,
            vec![Permission::full("guest", "/"), Permission::full("app", "/")],
        ),
        ..ServerOptions::default()
    };
    let server = Server::bind(options).await.expect("bind");
    let plain = server.local_addr().expect("plain address");
    let tls = server.tls_addrs().expect("TLS addresses")[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    TlsBroker {
        plain,
        tls,
        pki,
        _data: data,
        _stop: stop,
    }
}

impl TlsBroker {
    async fn client(
        &self,
        cert: Option<&Pem>,
    ) -> RawClientOn<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let stream = within(
            "TLS connect",
            tls_connect(self.tls, &self.pki.ca_pem(), cert),
        )
        .await
        .expect("TLS handshake");
        RawClientOn::over(stream)
    }
}

impl TlsBroker {
    /// An `amqps://` URI for lapin: `user:password@` for PLAIN, or `None` for EXTERNAL.
    fn amqps_uri(&self, login: Option<(&str, &str)>) -> String {
        let port = self.tls.port();
        match login {
            Some((user, password)) => format!("amqps://{user}:{password}@127.0.0.1:{port}/%2f"),
            None => format!("amqps://127.0.0.1:{port}/%2f?auth_mechanism=external"),
        }
    }

    /// lapin over TLS to this broker, trusting `ca_pem`, presenting `cert` if given.
    async fn lapin(
        &self,
        login: Option<(&str, &str)>,
        ca_pem: String,
        cert: Option<&Pem>,
    ) -> lapin::Result<Connection> {
        let config = OwnedTLSConfig {
            cert_chain: Some(ca_pem),
            identity: cert.map(|pem| OwnedIdentity::PKCS8 {
                pem: pem.cert.clone().into_bytes(),
                key: pem.key.clone().into_bytes(),
            }),
        };
        let runtime = lapin::runtime::default_runtime().expect("lapin's tokio runtime");
        within(
            "lapin over TLS",
            Connection::connect_with_config(
                &self.amqps_uri(login),
                ConnectionProperties::default(),
                config,
                runtime,
            ),
        )
        .await
    }
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    }
}

/// Publishes `body` with a confirm on a new confirm channel of `connection` and consumes it back.
async fn lapin_round_trip(connection: &Connection, test: &str, body: &[u8]) -> Vec<u8> {
    let channel = confirm_channel(connection).await;
    let queue = declare_queue(&channel, test, exclusive()).await;
    publish_confirmed(&channel, "", &queue, body, Default::default()).await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let delivery = deliveries.next().await;
    within("basic.ack", delivery.ack(BasicAckOptions::default()))
        .await
        .expect("basic.ack");
    delivery.data
}

async fn open_vhost<S: AsyncRead + AsyncWrite + Unpin>(client: &mut RawClientOn<S>) {
    client.send_open("/").await;
    match client.recv_method().await {
        Some((0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)))) => {}
        other => panic!("expected connection.open-ok, got {other:?}"),
    }
}

/// Declares `name`, publishes `body` to it and gets it back with basic.get.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut RawClientOn<S>,
    name: &str,
    body: &[u8],
    frame_max: u32,
) -> Vec<u8> {
    client.open_channel(1).await;
    let declare = queue::Declare {
        queue: name.into(),
        exclusive: true,
        ..Default::default()
    };
    let declare = AMQPClass::Queue(queue::AMQPMethod::Declare(declare));
    client.send_method(1, declare).await;
    match client.recv_method().await {
        Some((1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)))) => {}
        other => panic!("expected queue.declare-ok, got {other:?}"),
    }
    client
        .send_publish(1, "", name, false, body, frame_max)
        .await;
    let get = basic::Get {
        queue: name.into(),
        no_ack: true,
    };
    client
        .send_method(1, AMQPClass::Basic(basic::AMQPMethod::Get(get)))
        .await;
    let mut size = None;
    let mut received = Vec::new();
    loop {
        let frame = client.recv().await.expect("the message");
        match frame.frame_type {
            FrameType::Header => {
                let bytes: [u8; 8] = frame.payload[4..12].try_into().expect("body size");
                size = Some(u64::from_be_bytes(bytes) as usize);
            }
            FrameType::Body => received.extend_from_slice(&frame.payload),
            _ => {}
        }
        if size.is_some_and(|size| received.len() >= size) {
            return received;
        }
    }
}

#[tokio::test]
async fn plain_login_over_tls_round_trips_a_large_message() {
    let broker = start("tls-plain", false, false).await;
    let mut client = broker.client(None).await;
    let tune = client.login_with("PLAIN", b"\0guest\0guest", 0).await;
    open_vhost(&mut client).await;
    // Larger than a TLS record (16 KiB), the broker's read chunk and rustls's buffers.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let got = round_trip(&mut client, "tls-q", &body, tune.frame_max).await;
    assert!(got == body, "the body came back changed");
    client.send_channel_open(2).await;
    match client.recv_method().await {
        Some((2, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))) => {}
        other => panic!("expected channel.open-ok, got {other:?}"),
    }
}

#[tokio::test]
async fn external_is_offered_only_with_a_ca() {
    let without = start("tls-no-ca", false, false).await;
    let mut client = without.client(None).await;
    assert_eq!(client.start().await, "PLAIN AMQPLAIN");
    let with = start("tls-ca", true, false).await;
    let mut client = with.client(None).await;
    assert_eq!(client.start().await, "PLAIN AMQPLAIN EXTERNAL");
    // Never on the plain listener.
    let mut plain = RawClient::connect(with.plain).await;
    assert_eq!(plain.start().await, "PLAIN AMQPLAIN");
}

#[tokio::test]
async fn external_logs_in_the_certificates_common_name() {
    let broker = start("tls-external", true, true).await;
    let app = broker.pki.issue("app", false);
    let mut client = broker.client(Some(&app)).await;
    let tune = client.login_with("EXTERNAL", b"", 0).await;
    open_vhost(&mut client).await;
    let got = round_trip(&mut client, "external-q", b"hello", tune.frame_max).await;
    assert_eq!(got, b"hello");
}

#[tokio::test]
async fn external_refuses_an_unknown_common_name() {
    let broker = start("tls-external-unknown", true, true).await;
    let stranger = broker.pki.issue("stranger", false);
    let mut client = broker.client(Some(&stranger)).await;
    client.start().await;
    client.send_start_ok("EXTERNAL", b"").await;
    client.expect_connection_exception(403).await;
}

#[tokio::test]
async fn external_without_a_certificate_is_refused() {
    let broker = start("tls-external-none", true, false).await;
    let mut client = broker.client(None).await;
    client.start().await;
    client.send_start_ok("EXTERNAL", b"").await;
    client.expect_connection_exception(403).await;
    // PLAIN still works on the same listener.
    let mut client = broker.client(None).await;
    client.login_with("PLAIN", b"\0app\0secret", 0).await;
    open_vhost(&mut client).await;
}

#[tokio::test]
async fn verify_peer_refuses_a_client_without_a_certificate() {
    let broker = start("tls-verify-peer", true, true).await;
    // TLS 1.3: the client's handshake may end before the broker has judged its (empty)
    // certificate; then the refusal arrives as an alert at its first read.
    if let Ok(stream) = tls_connect(broker.tls, &broker.pki.ca_pem(), None).await {
        let mut client = RawClientOn::over(stream);
        client.send(&PROTOCOL_HEADER).await;
        let mut byte = [0u8; 1];
        let read = within("refusal", client.stream.read(&mut byte)).await;
        assert!(
            matches!(read, Err(_) | Ok(0)),
            "the broker answered a client without a certificate: {read:?}"
        );
    }
    let ok = broker.pki.issue("guest", false);
    let mut client = broker.client(Some(&ok)).await;
    client.login_with("EXTERNAL", b"", 0).await;
    open_vhost(&mut client).await;
}

#[tokio::test]
async fn a_plain_client_on_the_tls_port_is_closed_and_the_broker_serves_on() {
    let broker = start("tls-plain-client", false, false).await;
    let mut plain = RawClient::connect(broker.tls).await;
    plain.send(&PROTOCOL_HEADER).await;
    let answer = plain.read_to_close().await;
    assert!(
        !answer.starts_with(b"AMQP") && answer.len() < 64,
        "a plain client got {answer:?}"
    );
    // Silence on the TLS port does not hold anything either (closed by the handshake timeout,
    // which this test does not wait for).
    let _silent = tokio::net::TcpStream::connect(broker.tls)
        .await
        .expect("connect");
    let mut client = broker.client(None).await;
    client.login_with("PLAIN", b"\0guest\0guest", 0).await;
    open_vhost(&mut client).await;
    let (mut plain, _) = RawClient::handshake(broker.plain, 0).await;
    plain.open_channel(1).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn lapin_plain_login_over_tls_publishes_with_confirms_and_consumes() {
    let broker = start("tls-lapin-plain", false, false).await;
    let connection = broker
        .lapin(Some(("guest", "guest")), broker.pki.ca_pem(), None)
        .await
        .expect("lapin over TLS with PLAIN");
    assert!(connection.status().connected());
    // Larger than a TLS record and than lapin's frame size: several records and body frames.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let got = lapin_round_trip(&connection, "tls-lapin-q", &body).await;
    assert!(got == body, "the body came back changed");
    within("connection.close", connection.close(200, "done".into()))
        .await
        .expect("connection.close");
}

#[tokio::test]
async fn lapin_external_logs_in_with_a_client_certificate() {
    let broker = start("tls-lapin-external", true, true).await;
    let app = broker.pki.issue("app", false);
    let connection = broker
        .lapin(None, broker.pki.ca_pem(), Some(&app))
        .await
        .expect("lapin over TLS with EXTERNAL");
    let got = lapin_round_trip(&connection, "tls-lapin-external-q", b"hello").await;
    assert_eq!(got, b"hello");
    within("connection.close", connection.close(200, "done".into()))
        .await
        .expect("connection.close");
}

#[tokio::test]
async fn lapin_external_with_an_unknown_common_name_is_refused() {
    let broker = start("tls-lapin-external-unknown", true, true).await;
    let stranger = broker.pki.issue("stranger", false);
    let err = broker
        .lapin(None, broker.pki.ca_pem(), Some(&stranger))
        .await
        .expect_err("an unknown common name must not log in");
    let text = format!("{err:?}");
    assert!(
        text.contains("403") || text.contains("ACCESS_REFUSED") || text.contains("AccessRefused"),
        "{text}"
    );
}

#[tokio::test]
async fn lapin_refuses_a_broker_its_ca_did_not_sign() {
    let broker = start("tls-lapin-other-ca", false, false).await;
    let other = Pki::new("tls-lapin-other-ca-pki", "Another CA");
    let refused = broker
        .lapin(Some(("guest", "guest")), other.ca_pem(), None)
        .await;
    let err = refused.expect_err("lapin accepted a certificate its CA did not sign");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    // The broker serves on.
    let connection = broker
        .lapin(Some(("guest", "guest")), broker.pki.ca_pem(), None)
        .await
        .expect("lapin over TLS with the right CA");
    assert!(connection.status().connected());
}
