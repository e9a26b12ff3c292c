//! `[server]`'s TLS settings: `tls_listeners`, `tls_cert`, `tls_key`, `tls_ca` and
//! `tls_verify_peer`. The files are read and parsed here, as the broker will read them, so that
//! `check-config` (and a reload) reports a missing, unreadable or unparsable certificate or key,
//! or a key that does not fit its certificate, at the setting that names it. Paths are relative
//! to the directory the broker runs in.

use std::path::PathBuf;

use toml::Spanned;

use super::error::{Problem, Source};
use super::model::ServerSection;
use super::settings::check_listener;
use crate::server::tls::{server_config, TlsFile};
use crate::server::TlsFiles;

/// Checks the TLS settings (taking them out of `server`): the TLS listeners and their files.
pub(super) fn check_tls(
    source: &Source<'_>,
    server: &mut ServerSection,
    problems: &mut Vec<Problem>,
) -> (Vec<String>, Option<TlsFiles>) {
    let before = problems.len();
    let mut tls_listeners = Vec::new();
    let listeners = server.tls_listeners.take();
    if let Some(listeners) = &listeners {
        for listener in listeners.get_ref() {
            if let Err(why) = check_listener(listener.get_ref()) {
                problems.push(source.problem(&listener.span(), format!("tls_{why}")));
            }
        }
        tls_listeners = listeners
            .get_ref()
            .iter()
            .map(|l| l.get_ref().clone())
            .collect();
    }
    let (cert, key, ca) = (
        server.tls_cert.take(),
        server.tls_key.take(),
        server.tls_ca.take(),
    );
    let verify_peer = server.tls_verify_peer.take();
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => {
            if let Some(listeners) = listeners.filter(|l| !l.get_ref().is_empty()) {
                problems.push(source.problem(
                    &listeners.span(),
                    "tls_listeners: needs tls_cert and tls_key (the server's certificate and private key, PEM files)",
                ));
            }
            for (name, span) in [
                ("tls_ca", ca.map(|c| c.span())),
                ("tls_verify_peer", verify_peer.map(|v| v.span())),
            ] {
                if let Some(span) = span {
                    problems
                        .push(source.problem(&span, format!("{name}: needs tls_cert and tls_key")));
                }
            }
            return (tls_listeners, None);
        }
        (Some(cert), None) => {
            problems
                .push(source.problem(&cert.span(), "tls_cert: needs tls_key (its private key)"));
            return (tls_listeners, None);
        }
        (None, Some(key)) => {
            problems.push(source.problem(&key.span(), "tls_key: needs tls_cert (its certificate)"));
            return (tls_listeners, None);
        }
    };
    if let Some(verify) = verify_peer
        .as_ref()
        .filter(|v| *v.get_ref() && ca.is_none())
    {
        problems.push(source.problem(
            &verify.span(),
            "tls_verify_peer: needs tls_ca (the CA that client certificates are verified against)",
        ));
    }
    let path = |s: &Spanned<String>| PathBuf::from(s.get_ref());
    let files = TlsFiles {
        cert: path(&cert),
        key: path(&key),
        ca: ca.as_ref().map(path),
        verify_peer: verify_peer.as_ref().is_some_and(|v| *v.get_ref()),
    };
    if problems.len() == before {
        if let Err(e) = server_config(&files) {
            let (name, at) = match (e.file(), &ca) {
                (TlsFile::Cert, _) => ("tls_cert", cert.span()),
                (TlsFile::Key, _) => ("tls_key", key.span()),
                (TlsFile::Ca, Some(ca)) => ("tls_ca", ca.span()),
                (TlsFile::Ca, None) => ("tls_cert", cert.span()),
            };
            problems.push(source.problem(&at, format!("{name}: {e}")));
        }
    }
    (tls_listeners, Some(files))
}
