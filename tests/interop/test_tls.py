"""pika over TLS (Python's ssl module) against `tls_listeners`, with certificates made at test
time by the `cryptography` package: a CA, a server certificate for localhost and 127.0.0.1, and
client certificates whose common name is (or is not) a configured user.

Covered: PLAIN over TLS with a publish and a get; SASL EXTERNAL with a client certificate whose
CN is a user; EXTERNAL refused for an unknown CN; tls_verify_peer refusing a client without a
certificate; a plain AMQP client on the TLS port refused while the broker serves on.
"""

import datetime
import ipaddress
import ssl

import pika
import pika.credentials
import pika.exceptions
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import free_port, running_broker

pytestmark = pytest.mark.warren_only


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Warren interop"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


class Pki:
    """A CA and the certificates it signs, as PEM files in `directory`."""

    def __init__(self, directory):
        self.directory = directory
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(_name("Warren interop CA"))
            .issuer_name(_name("Warren interop CA"))
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), critical=False
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_path = self._write("ca.pem", self.ca.public_bytes(serialization.Encoding.PEM))

    def _write(self, name: str, data: bytes):
        path = self.directory / name
        path.write_bytes(data)
        return path

    def issue(self, common_name: str, server: bool):
        """A certificate and key signed by the CA: (cert path, key path)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
        )
        if server:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return (
            self._write(f"{common_name}.pem", cert.public_bytes(serialization.Encoding.PEM)),
            self._write(f"{common_name}.key", key_pem),
        )


@pytest.fixture
def pki(tmp_path):
    directory = tmp_path / "pki"
    directory.mkdir()
    return Pki(directory)


@pytest.fixture
def tls_broker(tmp_path, pki):
    """A factory: a broker with a TLS listener (verify_peer as asked) and users guest and app;
    yields (broker, TLS port)."""
    brokers = []

    def start(verify_peer: bool):
        cert, key = pki.issue("warren-interop-server", server=True)
        port = free_port()
        config = tmp_path / f"warren-{len(brokers)}.toml"
        config.write_text(
            f"""
[server]
tls_listeners = ["127.0.0.1:{port}"]
tls_cert = "{cert}"
tls_key = "{key}"
tls_ca = "{pki.ca_path}"
tls_verify_peer = {"true" if verify_peer else "false"}

[[users]]
name = "guest"
password = "guest"

[[users]]
name = "app"
password = "app-secret"

[[permissions]]
user = "guest"
configure = ".*"
write = ".*"
read = ".*"

[[permissions]]
user = "app"
configure = ".*"
write = ".*"
read = ".*"
"""
        )
        context = running_broker(tmp_path / f"tls-broker-{len(brokers)}", ["--config", str(config)])
        broker = context.__enter__()
        brokers.append(context)
        return broker, port

    yield start
    for context in reversed(brokers):
        context.__exit__(None, None, None)


def tls_params(port, pki, client=None, **kwargs):
    context = ssl.create_default_context(cafile=str(pki.ca_path))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    kwargs.setdefault("socket_timeout", 5)
    kwargs.setdefault("stack_timeout", 10)
    kwargs.setdefault("connection_attempts", 1)
    return pika.ConnectionParameters(
        host="127.0.0.1",
        port=port,
        ssl_options=pika.SSLOptions(context, server_hostname="localhost"),
        **kwargs,
    )


def round_trip(connection):
    channel = connection.channel()
    channel.confirm_delivery()
    queue = channel.queue_declare("", exclusive=True).method.queue
    body = bytes(range(256)) * 1000
    channel.basic_publish("", queue, body)
    method, _, got = channel.basic_get(queue, auto_ack=True)
    assert method is not None and got == body


def test_plain_login_over_tls(tls_broker, pki):
    broker, port = tls_broker(verify_peer=False)
    connection = pika.BlockingConnection(tls_params(port, pki))
    try:
        round_trip(connection)
    finally:
        connection.close()


def test_external_logs_in_the_certificates_common_name(tls_broker, pki):
    broker, port = tls_broker(verify_peer=True)
    params = tls_params(
        port, pki, client=pki.issue("app", server=False), credentials=pika.credentials.ExternalCredentials()
    )
    connection = pika.BlockingConnection(params)
    try:
        round_trip(connection)
    finally:
        connection.close()
    assert "user=app" in broker.log()


def test_external_refuses_an_unknown_common_name(tls_broker, pki):
    broker, port = tls_broker(verify_peer=True)
    params = tls_params(
        port, pki, client=pki.issue("stranger", server=False), credentials=pika.credentials.ExternalCredentials()
    )
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(params)
    assert "authentication failed" in broker.log()


def test_verify_peer_refuses_a_client_without_a_certificate(tls_broker, pki):
    broker, port = tls_broker(verify_peer=True)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        connection = pika.BlockingConnection(tls_params(port, pki))
        connection.close()
    # One with a certificate still gets in (PLAIN, the certificate only opens the door).
    connection = pika.BlockingConnection(tls_params(port, pki, client=pki.issue("guest", server=False)))
    connection.close()


def test_a_plain_client_on_the_tls_port_is_refused_and_the_broker_serves_on(tls_broker, pki):
    broker, port = tls_broker(verify_peer=False)
    plain = pika.ConnectionParameters(host="127.0.0.1", port=port, socket_timeout=5, stack_timeout=10, connection_attempts=1)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(plain)
    connection = pika.BlockingConnection(tls_params(port, pki))
    try:
        round_trip(connection)
    finally:
        connection.close()
    assert "TLS handshake failed" in broker.log()
    broker.connect().close()
