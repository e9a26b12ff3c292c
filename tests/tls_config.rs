//! The TLS settings of the real `warren` binary: `check-config` points at each bad one (with
//! file:line:column), and SIGHUP rereads the certificate: new connections get the new one, and
//! a bad one leaves the old one in force.

mod common;
#[path = "common/pki.rs"]
mod pki;
#[path = "common/warren_process.rs"]
mod warren_process;

use std::net::SocketAddr;
use std::path::Path;

use common::{within, RawClientOn};
use pki::{server_certificate, tls_connect, Pki};
use warren_process::{free_port, run_warren, WarrenProcess};

/// `check-config` on `text` (written beside the PEM files): exit code and stderr.
fn check(pki: &Pki, text: &str) -> (Option<i32>, String) {
    let file = pki.write("warren.toml", text);
    let output = run_warren(&["check-config", file.to_str().expect("a UTF-8 path")]);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn server_section(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[server]\ntls_listeners = [\"127.0.0.1:5671\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}",
        cert.display(),
        key.display()
    )
}

#[test]
fn check_config_reports_bad_tls_settings() {
    let pki = Pki::new("tls-check", "Warren test CA");
    let (cert, key, ca) = pki.server_files();
    let garbage = pki.write("garbage.pem", "not a certificate\n");
    let other_key = pki.write("other.key", &pki.issue("other", true).key);
    let missing = pki.dir.path().join("missing.pem");

    let extra = format!("tls_ca = \"{}\"\ntls_verify_peer = true\n", ca.display());
    let (code, out) = check(&pki, &server_section(&cert, &key, &extra));
    assert_eq!(code, Some(0), "{out}");

    let (code, out) = check(&pki, "[server]\ntls_listeners = [\"127.0.0.1:5671\"]\n");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("warren.toml:2:17: tls_listeners: needs tls_cert and tls_key"),
        "{out}"
    );

    let cases = [
        (
            server_section(&missing, &key, ""),
            "3:12: tls_cert: cannot read",
        ),
        (server_section(&garbage, &key, ""), "3:12: tls_cert:"),
        (server_section(&cert, &garbage, ""), "4:11: tls_key:"),
        (server_section(&cert, &other_key, ""), "4:11: tls_key:"),
        (
            server_section(&cert, &key, "tls_verify_peer = true\n"),
            "5:19: tls_verify_peer: needs tls_ca",
        ),
        (
            server_section(
                &cert,
                &key,
                &format!("tls_ca = \"{}\"\n", garbage.display()),
            ),
            "5:10: tls_ca:",
        ),
        (
            "[server]\ntls_listeners = [\"nowhere\"]\n".to_owned(),
            "2:18: tls_listeners: 'nowhere' is not an address",
        ),
    ];
    for (text, expected) in cases {
        let (code, out) = check(&pki, &text);
        assert_eq!(code, Some(2), "{text}\n{out}");
        assert!(
            out.contains(expected),
            "{text}\nexpected '{expected}' in:\n{out}"
        );
    }
}

/// The certificate the broker presents to a new TLS connection.
async fn presented(addr: SocketAddr, ca: &str) -> Vec<u8> {
    let stream = within("TLS connect", tls_connect(addr, ca, None))
        .await
        .expect("TLS handshake");
    let certificate = server_certificate(&stream);
    // And AMQP is served behind it.
    let mut client = RawClientOn::over(stream);
    client.login_with("PLAIN", b"\0guest\0guest", 0).await;
    certificate
}

#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let pki = Pki::new("tls-reload", "Warren test CA");
    let ca = pki.ca_pem();
    let (cert, key, _) = pki.server_files();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
    let config = pki.write(
        "warren.toml",
        &format!(
            "[server]\ntls_listeners = [\"{addr}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    let data = warren_process::TempDir::new("tls-reload-data");
    let broker = WarrenProcess::start(&config, data.path());
    broker.wait_for_log("over TLS", 1).await;
    let first = presented(addr, &ca).await;

    let renewed = pki.issue("warren-test-server-renewed", true);
    std::fs::write(&cert, &renewed.cert).expect("write the new certificate");
    std::fs::write(&key, &renewed.key).expect("write the new key");
    broker.hangup();
    broker.wait_for_log("TLS certificate reloaded", 1).await;
    let second = presented(addr, &ca).await;
    assert_ne!(
        first, second,
        "a new connection still got the old certificate"
    );

    std::fs::write(&cert, "garbage\n").expect("break the certificate");
    broker.hangup();
    let log = broker.wait_for_log("nothing was changed", 1).await;
    assert!(log.contains("tls_cert:"), "{log}");
    assert_eq!(
        presented(addr, &ca).await,
        second,
        "the certificate in force changed"
    );

    // A plain client on the TLS port: closed, logged with its address.
    let mut plain = common::RawClient::connect(addr).await;
    plain.send(&warren_protocol::frame::PROTOCOL_HEADER).await;
    plain.read_to_close().await;
    broker.wait_for_log("TLS handshake failed", 1).await;
    assert!(broker.stop().await, "warren did not stop cleanly");
}
