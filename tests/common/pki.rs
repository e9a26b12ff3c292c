//! Certificates made at test time (rcgen): a CA, server certificates for 127.0.0.1 and
//! localhost, client certificates with a given common name, written as PEM files into a
//! temporary directory; and a TLS client (tokio-rustls) that trusts the CA, with or without a
//! client certificate.
//!
//! Included with `#[path = "common/pki.rs"] mod pki;` (beside `warren_process.rs`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::warren_process::TempDir;

/// A PEM certificate and its private key.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A test CA and the directory its files go to.
pub struct Pki {
    pub dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(test: &str, ca_name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name = name(ca_name);
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        Pki {
            dir: TempDir::new(test),
            ca,
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate signed by this CA: a server's (127.0.0.1, localhost) or a client's.
    pub fn issue(&self, common_name: &str, server: bool) -> Pem {
        let sans = match server {
            true => vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            false => Vec::new(),
        };
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name = name(common_name);
        params.extended_key_usages = vec![match server {
            true => ExtendedKeyUsagePurpose::ServerAuth,
            false => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Writes `contents` to `name` in the directory; its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write a PEM file");
        path
    }

    /// Writes the CA and a server certificate and key (`server.pem`, `server.key`, `ca.pem`).
    pub fn server_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        let server = self.issue("warren-test-server", true);
        (
            self.write("server.pem", &server.cert),
            self.write("server.key", &server.key),
            self.write("ca.pem", &self.ca_pem()),
        )
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Warren tests");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Connects over TLS to `addr`, trusting `ca_pem`, presenting `client` if given.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<&Pem>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let chain = CertificateDer::pem_slice_iter(pem.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client certificate PEM");
            let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).expect("client key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
    };
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("a server name");
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// The DER of the certificate the server presented on `stream`.
pub fn server_certificate(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.to_vec())
        .expect("the server's certificate")
}
