//! The process's limit on open files (`RLIMIT_NOFILE`): read it, and raise the soft limit to the
//! hard one at start (a broker with many queues and connections needs descriptors; the soft
//! limit is often far below what the hard limit allows). Never lowers a limit and never touches
//! the hard limit.

use std::io;

/// (soft, hard) limits on open files; `None` if they cannot be read. `RLIM_INFINITY` reads as
/// `u64::MAX`.
pub fn current() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, which lives for the call.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (read == 0).then(|| (to_u64(limit.rlim_cur), to_u64(limit.rlim_max)))
}

#[allow(clippy::useless_conversion)] // rlim_t is u64 on Linux, not everywhere
fn to_u64(value: libc::rlim_t) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// Raises the soft limit on open files to the hard limit, and logs both (before and after).
/// Returns the (soft, hard) limits in force afterwards.
pub fn raise() -> io::Result<(u64, u64)> {
    let (soft, hard) = current().ok_or_else(io::Error::last_os_error)?;
    if soft >= hard {
        tracing::info!(soft, hard, "open file limit (RLIMIT_NOFILE)");
        return Ok((soft, hard));
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads the struct it is given, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        let e = io::Error::last_os_error();
        tracing::warn!(soft, hard, error = %e, "cannot raise the open file limit (RLIMIT_NOFILE)");
        return Ok((soft, hard));
    }
    let (now, hard) = current().unwrap_or((soft, hard));
    tracing::info!(
        soft = now,
        hard,
        was = soft,
        "open file limit (RLIMIT_NOFILE) raised to the hard limit"
    );
    Ok((now, hard))
}
