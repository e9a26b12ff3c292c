//! A connection's byte stream: plain TCP, or TLS over TCP. Either way the connection task sees
//! the same readiness model as a bare `TcpStream` (`readable`, `try_read_buf`, `writable`,
//! `try_write`), so its loop, its buffers and plain TCP's hot path stay as they are.
//!
//! TLS: the handshake is tokio-rustls's (bounded by the handshake timeout); then the socket and
//! the rustls session are taken apart and driven sans-IO here: records read when the socket is
//! readable and decrypted into the caller's buffer; plaintext encrypted and written as far as the
//! socket takes it. Two things differ from TCP and the connection task minds them: decrypted
//! bytes can wait inside rustls while the socket is not readable (`readable` resolves at once
//! then), and encrypted bytes can wait inside rustls once the caller's buffer is empty
//! (`wants_write`). Closing sends `close_notify`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConnection;

use super::tls::{common_name, TlsState};

/// The stream of one connection.
pub(crate) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

/// What the TLS handshake established about the client, for SASL EXTERNAL.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsPeer {
    /// EXTERNAL is offered: the listener verifies client certificates against a CA.
    pub(crate) external: bool,
    /// The verified client certificate's subject common name, if it sent one.
    pub(crate) common_name: Option<String>,
}

/// TCP with a rustls session over it, past the handshake.
pub(crate) struct TlsStream {
    tcp: TcpStream,
    session: ServerConnection,
    /// Decrypted bytes rustls holds that the caller has not taken yet.
    plaintext: usize,
    /// The client sent `close_notify` or closed the socket: once `plaintext` is taken, reads
    /// return 0.
    closed: bool,
}

/// Runs the TLS handshake on an accepted socket, within `timeout`. The error says why it failed
/// (for the log): a client that does not speak TLS ends here.
pub(crate) async fn accept_tls(
    tcp: TcpStream,
    tls: Arc<TlsState>,
    timeout: Duration,
) -> Result<(Transport, TlsPeer), String> {
    let stream = match tokio::time::timeout(timeout, tls.acceptor.accept(tcp)).await {
        Err(_) => return Err(format!("no TLS handshake within {timeout:?}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(stream)) => stream,
    };
    let (tcp, mut session) = stream.into_inner();
    let peer = TlsPeer {
        external: tls.external,
        common_name: session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| common_name(leaf)),
    };
    // Application data that came with the handshake's last flight is already decrypted.
    let state = session.process_new_packets().map_err(|e| e.to_string())?;
    let stream = TlsStream {
        tcp,
        plaintext: state.plaintext_bytes_to_read(),
        closed: state.peer_has_closed(),
        session,
    };
    Ok((Transport::Tls(Box::new(stream)), peer))
}

impl Transport {
    /// Resolves when [`Transport::try_read_buf`] has something to say (or an error).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        match self {
            Transport::Plain(tcp) => tcp.readable().await,
            Transport::Tls(tls) if tls.plaintext > 0 || tls.closed => Ok(()),
            Transport::Tls(tls) => tls.tcp.readable().await,
        }
    }

    /// Resolves when the socket may take more output.
    pub(crate) async fn writable(&self) -> io::Result<()> {
        match self {
            Transport::Plain(tcp) => tcp.writable().await,
            Transport::Tls(tls) => tls.tcp.writable().await,
        }
    }

    /// Output is waiting inside the transport (encrypted, not yet taken by the socket).
    #[inline]
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => tls.session.wants_write(),
        }
    }

    /// Appends what can be read now to `buf`: `Ok(0)` at the end of the stream, `WouldBlock`
    /// when there is nothing yet.
    #[inline]
    pub(crate) fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.try_read_buf(buf),
            Transport::Tls(tls) => tls.read(buf),
        }
    }

    /// Takes as much of `buf` as the socket takes now (`WouldBlock` when nothing).
    #[inline]
    pub(crate) fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.try_write(buf),
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    /// Ends our side: `close_notify` for TLS (best effort), then FIN rather than a reset, so
    /// the client reads the last frames we sent.
    pub(crate) async fn shutdown(&mut self) {
        let tcp = match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(tls) => {
                tls.session.send_close_notify();
                let _ = tls.flush_tls();
                &mut tls.tcp
            }
        };
        let _ = tcp.shutdown().await;
    }
}

/// Most plaintext taken in one read (about what one TCP read of the plain path takes).
const READ_LIMIT: usize = 64 * 1024;

impl TlsStream {
    fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut taken = 0;
        loop {
            if self.plaintext > 0 {
                taken += self.take_plaintext(buf)?;
                if buf.len() == buf.capacity() || taken >= READ_LIMIT {
                    return Ok(taken);
                }
                continue;
            }
            if self.closed {
                return Ok(taken);
            }
            match self.session.read_tls(&mut Socket(&self.tcp)) {
                Ok(0) => self.closed = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && taken > 0 => return Ok(taken),
                Err(e) => return Err(e),
            }
            let state = match self.session.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // The alert rustls queued, if the socket takes it.
                    let _ = self.flush_tls();
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            self.plaintext = state.plaintext_bytes_to_read();
            self.closed |= state.peer_has_closed();
        }
    }

    /// Moves decrypted bytes into `buf`'s spare capacity (reserving some if it has none).
    fn take_plaintext(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        use std::io::Read;
        let start = buf.len();
        if buf.capacity() == start {
            buf.reserve(self.plaintext.min(READ_LIMIT));
        }
        let n = self.plaintext.min(buf.capacity() - start);
        buf.resize(start + n, 0);
        let read = self.session.reader().read(&mut buf[start..]);
        let got = *read.as_ref().unwrap_or(&0);
        buf.truncate(start + got);
        let got = read?;
        // rustls said how much it had; should it give less, ask it again after the next read.
        self.plaintext = match got {
            0 => 0,
            got => self.plaintext.saturating_sub(got),
        };
        Ok(got)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut written = 0;
        loop {
            match self.flush_tls() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && written > 0 => {
                    return Ok(written)
                }
                Err(e) => return Err(e),
            }
            if written == buf.len() {
                return Ok(written);
            }
            let accepted = io::Write::write(&mut self.session.writer(), &buf[written..])?;
            if accepted == 0 {
                return Ok(written);
            }
            written += accepted;
        }
    }

    /// Writes the encrypted bytes rustls holds; `WouldBlock` when the socket is full first.
    fn flush_tls(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            if self.session.write_tls(&mut Socket(&self.tcp))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }
}

/// Blocking-style `Read`/`Write` over a non-blocking tokio socket, for rustls: `WouldBlock`
/// goes back to the caller (and clears tokio's readiness, as `try_read`/`try_write` do).
struct Socket<'a>(&'a TcpStream);

impl io::Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl io::Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
