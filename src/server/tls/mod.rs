//! TLS for the listeners that ask for it (`tls_listeners`): the certificate, key and CA read from
//! PEM files into a rustls server configuration, held behind a handle that a reload swaps (new
//! connections get the new certificate; open ones keep theirs). Also what a client certificate
//! tells the SASL EXTERNAL mechanism: its subject's common name (`subject.rs`).
//!
//! Never touches a socket: the handshake and the encrypted stream are `server::transport`'s.
//! rustls with the ring provider only (no OpenSSL, no aws-lc).

mod subject;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

pub use subject::common_name;

/// The PEM files of a TLS listener, as the configuration names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (leaf first).
    pub cert: PathBuf,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificates that client certificates are verified against; with one, clients
    /// are asked for a certificate and SASL EXTERNAL is offered.
    pub ca: Option<PathBuf>,
    /// Refuse clients that present no certificate (needs `ca`).
    pub verify_peer: bool,
}

/// Which of the files a [`TlsError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    Key,
    Ca,
}

/// Why a TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read '{path}': {source}")]
    Read {
        file: TlsFile,
        path: PathBuf,
        source: io::Error,
    },
    #[error("'{path}' holds no PEM {what}")]
    Empty {
        file: TlsFile,
        path: PathBuf,
        what: &'static str,
    },
    #[error("'{path}' is not valid PEM: {reason}")]
    Pem {
        file: TlsFile,
        path: PathBuf,
        reason: String,
    },
    #[error("'{path}': {reason}")]
    Rejected {
        file: TlsFile,
        path: PathBuf,
        reason: String,
    },
    #[error("tls_verify_peer needs tls_ca (the CA that client certificates are verified against)")]
    VerifyPeerWithoutCa,
}

impl TlsError {
    /// The file at fault (the CA for a peer verification without one).
    pub fn file(&self) -> TlsFile {
        match self {
            TlsError::Read { file, .. }
            | TlsError::Empty { file, .. }
            | TlsError::Pem { file, .. }
            | TlsError::Rejected { file, .. } => *file,
            TlsError::VerifyPeerWithoutCa => TlsFile::Ca,
        }
    }
}

/// What a TLS listener accepts with at the moment.
pub(crate) struct TlsState {
    pub(crate) acceptor: TlsAcceptor,
    /// Client certificates are verified against a CA: SASL EXTERNAL is offered.
    pub(crate) external: bool,
}

/// The TLS configuration in force: a shared handle, so that a reload reaches every listener's
/// next handshake.
#[derive(Clone)]
pub struct TlsSetup {
    current: Arc<RwLock<Arc<TlsState>>>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("external", &self.current.read().external)
            .finish_non_exhaustive()
    }
}

impl TlsSetup {
    /// Reads the files.
    pub fn load(files: &TlsFiles) -> Result<TlsSetup, TlsError> {
        let state = state(files)?;
        Ok(TlsSetup {
            current: Arc::new(RwLock::new(Arc::new(state))),
        })
    }

    /// Reads the files again; on error the configuration in force stays.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), TlsError> {
        let state = state(files)?;
        *self.current.write() = Arc::new(state);
        Ok(())
    }

    /// What a new connection is accepted with.
    pub(crate) fn current(&self) -> Arc<TlsState> {
        Arc::clone(&self.current.read())
    }
}

fn state(files: &TlsFiles) -> Result<TlsState, TlsError> {
    let config = server_config(files)?;
    Ok(TlsState {
        acceptor: TlsAcceptor::from(config),
        external: files.ca.is_some(),
    })
}

/// The rustls configuration for `files`: every file read and checked (the key must match the
/// certificate).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(TlsFile::Cert, &files.cert)?;
    let key = private_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rejected {
            file: TlsFile::Cert,
            path: files.cert.clone(),
            reason: e.to_string(),
        })?;
    let builder = match &files.ca {
        None if files.verify_peer => return Err(TlsError::VerifyPeerWithoutCa),
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(TlsFile::Ca, ca)? {
                roots.add(cert).map_err(|e| TlsError::Rejected {
                    file: TlsFile::Ca,
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match files.verify_peer {
                true => verifier,
                false => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|e| TlsError::Rejected {
                file: TlsFile::Ca,
                path: ca.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rejected {
            file: TlsFile::Key,
            path: files.key.clone(),
            reason: format!("does not fit the certificate: {e}"),
        })?;
    Ok(Arc::new(config))
}

fn read(file: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        file,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file (at least one).
fn certificates(file: TlsFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(file, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            file,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            file,
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(TlsFile::Key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            file: TlsFile::Key,
            path: path.to_owned(),
            what: "private key",
        },
        e => TlsError::Pem {
            file: TlsFile::Key,
            path: path.to_owned(),
            reason: e.to_string(),
        },
    })
}
