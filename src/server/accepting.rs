//! The accept loop's bookkeeping: which listener is polled first, and the failed accepts (out of
//! file descriptors and the like), logged once per burst. Never touches a socket.

use std::io;
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// Where the listeners' round robin is, and the failed accepts: a burst of them (out of
/// descriptors, accepts fail and succeed in turn as connections close) is logged once, a warning
/// and then a note once accepting works again, and not again for [`ACCEPT_QUIET`].
#[derive(Default)]
pub(super) struct Accepting {
    pub(super) turn: usize,
    /// Failed accepts since accepting last worked after a warning.
    failures: u64,
    warned: Option<Instant>,
    told_recovered: bool,
}

/// How long after warning of failed accepts they are not logged again.
const ACCEPT_QUIET: Duration = Duration::from_secs(10);

impl Accepting {
    pub(super) fn failed(&mut self, e: &io::Error) {
        self.failures += 1;
        if self.warned.is_some_and(|at| at.elapsed() < ACCEPT_QUIET) {
            return;
        }
        self.warned = Some(Instant::now());
        self.told_recovered = false;
        if crate::store::files::is_out_of_descriptors(e) {
            let (soft, hard) = crate::store::fd_limit::current().unwrap_or((0, 0));
            warn!(error = %e, soft_limit = soft, hard_limit = hard,
                "accept failed: out of file descriptors; new connections wait until some close \
                 (retrying every 100 ms; logged again at most every 10 s)");
        } else {
            warn!(error = %e, "accept failed; retrying every 100 ms (logged again at most every 10 s)");
        }
    }

    pub(super) fn succeeded(&mut self) {
        if self.failures > 0 && !self.told_recovered {
            info!(failed = self.failures, "accepting connections again");
            self.told_recovered = true;
            self.failures = 0;
        }
    }
}
